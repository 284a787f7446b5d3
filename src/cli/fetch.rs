//! `token-rotator fetch`: the controller's exchange, once, from manifests on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::manifest::{self, ManifestError, secret_data};
use super::private_file;
use crate::api::{self, ALLOWED_TOKEN_HOSTS_ANNOTATION, ProviderCredential, SpecError};
use crate::provider::{
    FetchError, GrantRequest, GrantType, HttpPolicy, IssuedToken, Param, TokenClient,
};

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The ProviderCredential manifest.
    #[arg(short = 'f', long = "filename")]
    pub manifest: PathBuf,
    /// The credentials Secret manifest (data base64 or stringData), for a ProviderCredential
    /// with spec.credentials.secretRef.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// A ServiceAccount token for a ProviderCredential with spec.credentials.serviceAccount,
    /// e.g. from `kubectl create token NAME --audience AUDIENCE`: its audience must be the
    /// spec's. The operator mints one per request; here it is read from the file.
    #[arg(long)]
    pub service_account_token_file: Option<PathBuf>,
    /// Permit a plain http:// token endpoint (local testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Permit a token endpoint at a link-local address (169.254.0.0/16, fe80::/10).
    #[arg(long)]
    pub allow_link_local_token_endpoints: bool,
    /// Write the credentials Secret back here with the new refresh token (and without a spent
    /// authorization code), so the refresh chain is not lost.
    #[arg(long)]
    pub state_out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchCommandError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("InvalidSpec: {0}")]
    Spec(#[from] SpecError),
    #[error("{}: {source}", .source.class().reason())]
    Fetch {
        #[from]
        source: FetchError,
    },
    #[error(
        "Refused: this request spends a one-time {0}; the refresh token in the answer would be lost. Re-run with --state-out <file>"
    )]
    WouldLoseChain(&'static str),
    #[error("cannot write {path}: {source}")]
    WriteState {
        path: String,
        source: std::io::Error,
    },
    #[error("InvalidSpec: this ProviderCredential {0}")]
    MissingInput(&'static str),
    #[error("cannot read {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("AudienceRefused: {0}")]
    TokenAudience(crate::rotation::service_account::AudienceError),
}

/// The one JSON object printed on success.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchSummary {
    pub token_type: String,
    pub expires_at: String,
    pub lifetime_seconds: u64,
    pub lifetime_source: &'static str,
    pub has_refresh_token: bool,
    pub fingerprint: String,
}

impl FetchSummary {
    pub fn of(token: &IssuedToken) -> Self {
        FetchSummary {
            token_type: token.token_type.clone(),
            expires_at: token.expires_at.to_string(),
            lifetime_seconds: token.lifetime_seconds,
            lifetime_source: token.lifetime_source.as_str(),
            has_refresh_token: token.refresh.new_token().is_some()
                || matches!(token.refresh, crate::provider::RefreshOutcome::Kept),
            fingerprint: token.fingerprint(),
        }
    }
}

pub async fn run(args: &FetchArgs) -> Result<FetchSummary, FetchCommandError> {
    let resource: ProviderCredential = manifest::read(&args.manifest)?;
    let config = api::provider_config(&resource.spec)?;
    if let Some(sa) = &config.service_account {
        return run_as_service_account(args, &resource, &config, sa).await;
    }
    let credentials_path = args
        .credentials
        .as_ref()
        .ok_or(FetchCommandError::MissingInput(
            "names a credentials Secret: give its manifest with --credentials",
        ))?;
    let credentials_secret: Secret = manifest::read(credentials_path)?;
    let data = secret_data(&credentials_secret);
    let mut credentials = api::credentials_from_data(&resource.spec, &data);

    let seed = credentials.remove(Param::RefreshToken);
    let grant = match seed {
        Some(token) if config.supports_refresh => GrantRequest::Refresh(token),
        _ => GrantRequest::Primary,
    };
    let spends = match (&grant, config.grant) {
        (GrantRequest::Refresh(_), _) => Some("refresh token"),
        (GrantRequest::Primary, GrantType::AuthorizationCode) => Some("authorization code"),
        _ => None,
    };
    if let (Some(what), None) = (spends, &args.state_out) {
        return Err(FetchCommandError::WouldLoseChain(what));
    }

    let client = TokenClient::new(HttpPolicy {
        allow_http: args.allow_http,
        allowed_hosts: None,
        allow_link_local: args.allow_link_local_token_endpoints,
    });
    let token = client.fetch(&config, &credentials, &grant).await?;

    if let Some(path) = &args.state_out {
        let refresh = token
            .refresh
            .new_token()
            .map(|t| t.expose_secret().to_string());
        let kept = match &grant {
            GrantRequest::Refresh(old) => Some(old.expose_secret().to_string()),
            GrantRequest::Primary => None,
        };
        if let Some(refresh_token) = refresh.or(kept) {
            let key = credentials.key_name(Param::RefreshToken).to_string();
            let code_key = credentials.key_name(Param::Code).to_string();
            let manifest =
                state_manifest(&credentials_secret, data, &key, &code_key, &refresh_token);
            private_file::write_new(path, &manifest).map_err(|source| {
                FetchCommandError::WriteState {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
    }
    Ok(FetchSummary::of(&token))
}

/// A ServiceAccount-authenticated resource, with a token from a file: checked as the operator
/// would mint it (the spec's one audience, not the Kubernetes API's), then one request.
async fn run_as_service_account(
    args: &FetchArgs,
    resource: &ProviderCredential,
    config: &crate::provider::ProviderConfig,
    sa: &crate::provider::config::ServiceAccountSettings,
) -> Result<FetchSummary, FetchCommandError> {
    let path = args
        .service_account_token_file
        .as_ref()
        .ok_or(FetchCommandError::MissingInput(
            "authenticates as a ServiceAccount: give a token of it with --service-account-token-file (kubectl create token NAME --audience AUDIENCE > FILE)",
        ))?;
    let token = read_token_file(path)?;
    crate::rotation::service_account::token_for_audience(&token, &sa.audience)
        .map_err(FetchCommandError::TokenAudience)?;
    let mut credentials = api::credentials_from_spec(&resource.spec);
    credentials.insert(
        Param::ServiceAccountToken,
        Param::ServiceAccountToken.oauth_name(),
        token,
    );
    let client = TokenClient::new(HttpPolicy {
        allow_http: args.allow_http,
        allowed_hosts: None,
        allow_link_local: args.allow_link_local_token_endpoints,
    });
    let token = client
        .fetch(config, &credentials, &GrantRequest::Primary)
        .await?;
    Ok(FetchSummary::of(&token))
}

/// Longer than any ServiceAccount token (a few KiB with bound claims).
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

fn read_token_file(path: &std::path::Path) -> Result<String, FetchCommandError> {
    use std::io::Read;
    let failed = |source| FetchCommandError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(failed)?
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(failed(std::io::Error::other(
            "larger than any ServiceAccount token (16 KiB)",
        )));
    }
    Ok(text.trim().to_string())
}

/// The credentials Secret again, with the spent code removed and the refresh token set, so
/// `kubectl apply -f` hands the chain to the operator as a seed. Its labels and host pin are
/// the original's: the opt-in label is its owner's to give, never added here.
pub(super) fn state_manifest(
    original: &Secret,
    mut data: BTreeMap<String, Vec<u8>>,
    refresh_key: &str,
    code_key: &str,
    refresh_token: &str,
) -> String {
    data.remove(code_key);
    data.insert(refresh_key.to_string(), refresh_token.as_bytes().to_vec());
    let secret = Secret {
        metadata: ObjectMeta {
            name: original.metadata.name.clone(),
            namespace: original.metadata.namespace.clone(),
            labels: original.metadata.labels.clone(),
            annotations: original
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get_key_value(ALLOWED_TOKEN_HOSTS_ANNOTATION))
                .map(|(k, v)| BTreeMap::from([(k.clone(), v.clone())])),
            ..ObjectMeta::default()
        },
        type_: original.type_.clone(),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    };
    // k8s-openapi writes apiVersion and kind itself; adding them again would make the
    // manifest invalid YAML (duplicate keys).
    serde_saphyr::to_string(&secret).expect("a Secret always serialises")
}

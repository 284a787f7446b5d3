//! `token-rotator authorize`: a person's consent for the authorizationCode grant, once. The
//! code is spent through the same client as `fetch` and the controller; the refresh token it
//! yields goes where the operator reads its seed (the credentials Secret) and is never
//! printed. It obeys the operator's rules with the person's rights: a credentials Secret
//! that did not opt in is not used (and never labelled here), its owner's host pin holds,
//! and the token endpoint passes the operator's transport checks before the consent starts.

mod callback;
mod consent;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use secrecy::ExposeSecret;

use self::callback::{Arrival, CallbackError, Listener};
use self::consent::Consent;
use super::fetch::{FetchSummary, state_manifest};
use super::manifest::{self, ManifestError};
use super::private_file;
use super::refresh::parse_timeout;
use crate::api::{self, ProviderCredential, SpecError};
use crate::provider::{FetchError, GrantRequest, HttpPolicy, Param, TokenClient};
use crate::rotation::{Blocked, CredentialsView, usable_credentials};
use crate::secrets::credentials_view;

const FIELD_MANAGER: &str = "token-rotator-authorize";

#[derive(Debug, clap::Args)]
pub struct AuthorizeArgs {
    /// The ProviderCredential in the cluster (through the kubeconfig); or use -f.
    #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
    pub name: Option<String>,
    /// A ProviderCredential manifest file instead of a resource in the cluster.
    #[arg(short = 'f', long = "filename")]
    pub manifest: Option<PathBuf>,
    /// The namespace (default: the manifest's, else the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The credentials Secret manifest (default: the Secret spec.credentials.secretRef names,
    /// read from the cluster).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Write the credentials Secret with the refresh token to this file (mode 0600) instead
    /// of applying it to the cluster.
    #[arg(long)]
    pub state_out: Option<PathBuf>,
    /// Open the authorization URL in the default browser too.
    #[arg(long)]
    pub open: bool,
    /// How long to wait for the consent (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Permit plain http:// authorization and token endpoints (local testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Permit a token endpoint at a link-local address (169.254.0.0/16, fe80::/10).
    #[arg(long)]
    pub allow_link_local_token_endpoints: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("InvalidSpec: {0}")]
    Spec(#[from] SpecError),
    #[error(
        "spec.grant.authorizationUrl must be https:// (http:// only with --allow-http, for local testing)"
    )]
    InsecureAuthorizationUrl,
    #[error(
        "the credentials have no {0}: the authorization request names the client (add it to the credentials Secret)"
    )]
    MissingClientId(String),
    #[error(
        "this resource authenticates as a ServiceAccount (spec.credentials.serviceAccount); authorize needs a credentials Secret to hold the code and refresh token"
    )]
    NoCredentialsSecret,
    /// The operator's own rule for credentials Secrets (opt-in label, the owner's host pin).
    #[error("{}: {}", .0.reason().reason(), .0)]
    Credentials(Blocked),
    /// The operator's transport checks on the token endpoint, before the consent.
    #[error("{}: {source}", .source.class().reason())]
    Endpoint { source: FetchError },
    #[error(
        "cannot reach Kubernetes ({0}); check KUBECONFIG or ~/.kube/config, or use -f, --credentials and --state-out"
    )]
    Connect(#[source] kube::Error),
    #[error("{what} {namespace}/{name}: {source}")]
    Cluster {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Callback(#[from] CallbackError),
    #[error("{}: spending the authorization code failed: {source}", .source.class().reason())]
    Fetch {
        #[from]
        source: FetchError,
    },
    #[error(
        "the provider issued an access token but no refresh token: the operator could not renew it, so nothing was stored"
    )]
    NoRefreshToken,
    #[error("cannot write {path}: {source}")]
    WriteState {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "credentials Secret {namespace}/{name} kept changing while the refresh token was written; it was not stored"
    )]
    Contended { namespace: String, name: String },
}

/// Where the refresh token went.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeSummary {
    #[serde(flatten)]
    pub token: FetchSummary,
    pub stored_in: String,
}

/// The resource and the credentials Secret, from files or from the cluster.
struct Inputs {
    resource: ProviderCredential,
    namespace: String,
    credentials: Secret,
    client: Option<Client>,
}

async fn inputs(args: &AuthorizeArgs) -> Result<Inputs, AuthorizeError> {
    let file_resource = match &args.manifest {
        Some(path) => Some(manifest::read::<ProviderCredential>(path)?),
        None => None,
    };
    let file_credentials = match &args.credentials {
        Some(path) => Some(manifest::read::<Secret>(path)?),
        None => None,
    };
    // Files only (-f, --credentials, --state-out): no cluster is needed at all.
    let needs_cluster =
        file_resource.is_none() || file_credentials.is_none() || args.state_out.is_none();
    let client = if needs_cluster {
        Some(
            Client::try_default()
                .await
                .map_err(AuthorizeError::Connect)?,
        )
    } else {
        None
    };
    let namespace = args
        .namespace
        .clone()
        .or_else(|| file_resource.as_ref().and_then(|r| r.namespace()))
        .or_else(|| client.as_ref().map(|c| c.default_namespace().to_string()))
        .unwrap_or_else(|| "default".into());
    let resource = match (file_resource, &args.name, &client) {
        (Some(r), _, _) => r,
        (None, Some(name), Some(client)) => {
            let api: Api<ProviderCredential> = Api::namespaced(client.clone(), &namespace);
            api.get(name)
                .await
                .map_err(|source| AuthorizeError::Cluster {
                    what: "ProviderCredential",
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?
        }
        _ => unreachable!("clap requires NAME or -f, and a cluster is connected without -f"),
    };
    let credentials = match (file_credentials, &client) {
        (Some(s), _) => s,
        (None, Some(client)) => {
            let name = resource
                .spec
                .credentials
                .secret_name()
                .ok_or(AuthorizeError::NoCredentialsSecret)?
                .to_string();
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            api.get(&name)
                .await
                .map_err(|source| AuthorizeError::Cluster {
                    what: "credentials Secret",
                    namespace: namespace.clone(),
                    name,
                    source: Box::new(source),
                })?
        }
        (None, None) => unreachable!("a cluster is connected without --credentials"),
    };
    Ok(Inputs {
        resource,
        namespace,
        credentials,
        client,
    })
}

pub async fn run(args: &AuthorizeArgs) -> Result<AuthorizeSummary, AuthorizeError> {
    let Inputs {
        resource,
        namespace,
        credentials: credentials_secret,
        client,
    } = inputs(args).await?;
    let settings = api::authorization_settings(&resource.spec)?;
    let config = api::provider_config(&resource.spec)?;
    if settings.authorization_url.scheme() != "https"
        && !(args.allow_http && settings.authorization_url.scheme() == "http")
    {
        return Err(AuthorizeError::InsecureAuthorizationUrl);
    }
    let view = credentials_view(Some(&credentials_secret));
    let (data, token_client) = preflight(&resource, &view, &config.token_url, args)?;
    let mut credentials = api::credentials_from_data(&resource.spec, data);
    let client_id = credentials
        .get(Param::ClientId)
        .ok_or_else(|| {
            AuthorizeError::MissingClientId(credentials.key_name(Param::ClientId).into())
        })?
        .expose_secret()
        .to_string();

    let consent = Arc::new(Consent::new(&settings, &client_id));
    // Listen before showing the URL: the browser may come back at once.
    let listener = match Arrival::of(&settings.redirect_uri) {
        Arrival::Loopback { addrs, path } => Some(Listener::bind(&addrs, path).await?),
        Arrival::Pasted => None,
    };
    show_destinations(&settings.authorization_url, &config.token_url, &consent);
    eprintln!(
        "Open this address in a browser and consent for {}:\n\n  {}\n",
        // A manifest file may name anything.
        super::terminal_safe(&format!("{namespace}/{}", resource.name_any())),
        consent.url
    );
    if args.open {
        open_browser(consent.url.as_str());
    }
    let code = match listener {
        Some(listener) => {
            eprintln!(
                "Waiting for the browser to return to {} …",
                settings.redirect_uri
            );
            listener.code(consent.clone(), args.timeout).await?
        }
        None => callback::pasted(consent.clone(), args.timeout).await?,
    };

    // The same exchange the controller makes: the code (and PKCE verifier) as the primary
    // grant. A refresh token in the credentials would not be spent: this is a new chain.
    credentials.remove(Param::RefreshToken);
    let code_key = credentials.key_name(Param::Code).to_string();
    credentials.insert(Param::Code, code_key.clone(), code.expose_secret());
    if let Some(verifier) = &consent.verifier {
        credentials.insert(
            Param::CodeVerifier,
            Param::CodeVerifier.oauth_name(),
            verifier.expose_secret(),
        );
    }
    let token = token_client
        .fetch(&config, &credentials, &GrantRequest::Primary)
        .await?;
    let refresh = token
        .refresh
        .new_token()
        .ok_or(AuthorizeError::NoRefreshToken)?;
    let refresh_key = credentials.key_name(Param::RefreshToken).to_string();

    let secret_name = credentials_secret.name_any();
    let stored_in = match (&args.state_out, client) {
        (Some(path), _) => {
            let text = state_manifest(
                &credentials_secret,
                data.clone(),
                &refresh_key,
                &code_key,
                refresh.expose_secret(),
            );
            private_file::write_new(path, &text).map_err(|source| AuthorizeError::WriteState {
                path: path.display().to_string(),
                source,
            })?;
            format!("file {} (key {refresh_key})", path.display())
        }
        (None, Some(client)) => {
            store_seed(
                &client,
                &namespace,
                &secret_name,
                &config.token_url,
                &refresh_key,
                refresh.expose_secret(),
            )
            .await?;
            format!("Secret {namespace}/{secret_name} (key {refresh_key})")
        }
        (None, None) => unreachable!("a cluster is connected without --state-out"),
    };
    Ok(AuthorizeSummary {
        token: FetchSummary::of(&token),
        stored_in,
    })
}

/// The operator's own rules, applied before anything is sent: an answer for a Secret that did
/// not opt in, or for a host its owner did not allow, would be spent in vain at best, and send
/// the client secret where its owner refused at worst. Then the operator's transport checks
/// (https unless allowed, no link-local address).
fn preflight<'v>(
    resource: &ProviderCredential,
    view: &'v CredentialsView,
    token_url: &url::Url,
    args: &AuthorizeArgs,
) -> Result<(&'v BTreeMap<String, Vec<u8>>, TokenClient), AuthorizeError> {
    let creds_name = resource
        .spec
        .credentials
        .secret_name()
        .ok_or(AuthorizeError::NoCredentialsSecret)?;
    let data =
        usable_credentials(creds_name, view, token_url).map_err(AuthorizeError::Credentials)?;
    let token_client = TokenClient::new(HttpPolicy {
        allow_http: args.allow_http,
        allowed_hosts: None,
        allow_link_local: args.allow_link_local_token_endpoints,
    });
    token_client
        .check_endpoint(token_url)
        .map_err(|source| AuthorizeError::Endpoint { source })?;
    Ok((data, token_client))
}

/// Where the consent happens and where the code and the client's credentials will go, shown
/// before the person sends anything anywhere.
fn show_destinations(authorization_url: &url::Url, token_url: &url::Url, consent: &Consent) {
    eprintln!(
        "Authorization server: {} (your browser consents there)",
        authority(authorization_url)
    );
    let verifier = if consent.verifier.is_some() {
        ", the PKCE verifier"
    } else {
        ""
    };
    eprintln!(
        "Token endpoint: {} (the code{verifier} and the client's credentials go there, nowhere else)",
        authority(token_url),
    );
}

/// Attempts at writing the refresh token while others change the Secret.
const STORE_ATTEMPTS: usize = 5;

/// Writes the refresh token alone into the credentials Secret (every other key and all
/// metadata stay as their owners wrote them), at the resourceVersion of a copy that still
/// opted in and still allows the token host: the owner may have withdrawn either while the
/// person was in the browser.
async fn store_seed(
    client: &Client,
    namespace: &str,
    name: &str,
    token_url: &url::Url,
    key: &str,
    refresh_token: &str,
) -> Result<(), AuthorizeError> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(refresh_token);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let cluster = |source| AuthorizeError::Cluster {
        what: "credentials Secret",
        namespace: namespace.into(),
        name: name.into(),
        source: Box::new(source),
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for _ in 0..STORE_ATTEMPTS {
        let secret = api.get(name).await.map_err(cluster)?;
        usable_credentials(name, &credentials_view(Some(&secret)), token_url)
            .map_err(AuthorizeError::Credentials)?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": secret.resource_version()},
            "data": {key: encoded},
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => return Err(cluster(source)),
        }
    }
    Err(AuthorizeError::Contended {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// `host[:port]` of a URL, and whether it is plain http.
fn authority(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let plain = if url.scheme() == "http" {
        " (plain http)"
    } else {
        ""
    };
    super::terminal_safe(&format!("{host}{port}{plain}"))
}

/// Best effort: the URL is printed either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        eprintln!("could not start {opener} ({e}); open the address by hand");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{ALLOWED_TOKEN_HOSTS_ANNOTATION, CREDENTIALS_LABEL};

    fn resource(token_url: &str) -> ProviderCredential {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "preset": "retently",
                "tokenEndpoint": {"url": token_url},
                "credentials": {"secretRef": {"name": "creds"}},
                "target": {"secretName": "t"},
                "grant": {"redirectUri": "http://127.0.0.1:8400/cb"}
            }
        }))
        .expect("a valid ProviderCredential")
    }

    fn secret(labelled: bool, pin: Option<&str>) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        if labelled {
            s.metadata.labels = Some(BTreeMap::from([(CREDENTIALS_LABEL.into(), "true".into())]));
        }
        if let Some(hosts) = pin {
            s.metadata.annotations = Some(BTreeMap::from([(
                ALLOWED_TOKEN_HOSTS_ANNOTATION.into(),
                hosts.into(),
            )]));
        }
        s.string_data = Some(BTreeMap::from([("client_id".into(), "c".into())]));
        s
    }

    fn args(allow_http: bool) -> AuthorizeArgs {
        AuthorizeArgs {
            name: Some("r".into()),
            manifest: None,
            namespace: None,
            credentials: None,
            state_out: None,
            open: false,
            timeout: Duration::from_secs(1),
            allow_http,
            allow_link_local_token_endpoints: false,
        }
    }

    /// The reason a preflight refused with, or "ok".
    fn preflight_of(url: &str, secret: &Secret, allow_http: bool) -> String {
        let pc = resource(url);
        let token_url: url::Url = url.parse().unwrap();
        let view = credentials_view(Some(secret));
        match preflight(&pc, &view, &token_url, &args(allow_http)) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_operators_rules_hold_before_the_consent() {
        let https = "https://Tokens.Example.com/token";
        assert_eq!(preflight_of(https, &secret(true, None), false), "ok");
        let unlabelled = preflight_of(https, &secret(false, None), false);
        assert!(
            unlabelled.starts_with("CredentialsNotLabelled: ")
                && unlabelled
                    .contains("kubectl label secret creds tokenrotator.dev/credentials=true"),
            "{unlabelled}"
        );
        // A pin on a Secret that did not opt in does not make it usable.
        assert!(
            preflight_of(https, &secret(false, Some("tokens.example.com")), false)
                .starts_with("CredentialsNotLabelled: ")
        );
        assert_eq!(
            preflight_of(
                https,
                &secret(true, Some("other.example.com, tokens.example.com")),
                false
            ),
            "ok",
            "host names compare without case"
        );
        let pinned = preflight_of(https, &secret(true, Some("other.example.com")), false);
        assert!(
            pinned.starts_with("TokenHostNotAllowed: ") && pinned.contains("other.example.com"),
            "{pinned}"
        );
        let http = preflight_of("http://127.0.0.1:1/token", &secret(true, None), false);
        assert!(http.contains("plain http"), "{http}");
        assert_eq!(
            preflight_of("http://127.0.0.1:1/token", &secret(true, None), true),
            "ok"
        );
        let link_local = preflight_of("https://169.254.169.254/token", &secret(true, None), false);
        assert!(link_local.contains("link-local"), "{link_local}");
    }

    #[test]
    fn hosts_are_shown_with_their_port_and_plain_http_said() {
        let shown = |u: &str| authority(&u.parse().unwrap());
        assert_eq!(
            shown("https://auth.example.com/authorize"),
            "auth.example.com"
        );
        assert_eq!(
            shown("https://auth.example.com:8443/a"),
            "auth.example.com:8443"
        );
        assert_eq!(shown("http://[::1]:9000/token"), "[::1]:9000 (plain http)");
    }
}

//! Minting a ServiceAccount token (spec.credentials.serviceAccount) right before a token
//! request: a GET of the ServiceAccount's metadata (consent: its opt-in label and its owner's
//! pins, decided by `rotation::service_account`), then one TokenRequest for the chosen
//! audience and lifetime. The token lives in memory for that one request only: never
//! written, logged or reported.

use std::borrow::Cow;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::provider::config::ServiceAccountSettings;
use crate::provider::{Credentials, Param};
use crate::rotation::StoreFailure;
use crate::rotation::service_account::{self as rules, MintFailure, ServiceAccountSeen};

/// The credentials a request sends: the plan's, plus a freshly minted ServiceAccount token
/// when the resource authenticates as one. Nothing is minted (and no request may be sent)
/// when consent is missing or the TokenRequest fails.
pub async fn credentials_for<'p>(
    client: &Client,
    namespace: &str,
    config: &crate::provider::ProviderConfig,
    credentials: &'p Credentials,
) -> Result<Cow<'p, Credentials>, StoreFailure> {
    let Some(sa) = &config.service_account else {
        return Ok(Cow::Borrowed(credentials));
    };
    let token = mint(client, namespace, sa, &config.token_url).await?;
    let mut with_token = credentials.clone();
    with_token.insert(
        Param::ServiceAccountToken,
        Param::ServiceAccountToken.oauth_name(),
        token,
    );
    Ok(Cow::Owned(with_token))
}

async fn mint(
    client: &Client,
    namespace: &str,
    sa: &ServiceAccountSettings,
    token_url: &url::Url,
) -> Result<String, StoreFailure> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let failed = |e: kube::Error| rules::mint_failed(classify(&e), &sa.name, namespace);
    let seen = api
        .get_metadata_opt(&sa.name)
        .await
        .map_err(failed)?
        .map(|m| ServiceAccountSeen::from_metadata(m.labels(), m.annotations()));
    let audiences = api_audiences(client).await;
    rules::consent(sa, seen.as_ref(), token_url, &audiences)?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![sa.audience.clone()]),
            expiration_seconds: Some(sa.lifetime_seconds.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = api
        .create_token_request(&sa.name, &PostParams::default(), &request)
        .await
        .map_err(failed)?;
    debug!(service_account = %sa.name, "ServiceAccount token minted");
    // Taken out of the answer at once; the answer itself is dropped here.
    match answer.status.and_then(|s| s.token) {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(rules::mint_failed(
            MintFailure::Other("the answer held no token".into()),
            &sa.name,
            namespace,
        )),
    }
}

fn classify(error: &kube::Error) -> MintFailure {
    match error {
        kube::Error::Api(status) if status.code == 403 => MintFailure::Forbidden,
        kube::Error::Api(status) if status.code == 404 => MintFailure::NotFound,
        other => MintFailure::Other(crate::secrets::short_api_error(other)),
    }
}

/// The cluster's own API audiences, learned once per process from the service-account
/// issuer's discovery document (the API server accepts tokens for its issuer unless told
/// otherwise). Not learned: only the usual ones are refused, and it is tried again next time.
async fn api_audiences(client: &Client) -> Vec<String> {
    static LEARNED: OnceCell<Vec<String>> = OnceCell::const_new();
    let learned = LEARNED
        .get_or_try_init(|| async {
            let request = kube::core::Request::new("/.well-known")
                .get("openid-configuration", &Default::default())
                .map_err(|e| e.to_string())?;
            let text = client
                .request_text(request)
                .await
                .map_err(|e| crate::secrets::short_api_error(&e))?;
            let document: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match document["issuer"].as_str() {
                Some(issuer) => Ok(vec![issuer.to_string()]),
                None => Err("no issuer in the discovery document".to_string()),
            }
        })
        .await;
    match learned {
        Ok(audiences) => audiences.clone(),
        Err(error) => {
            warn!(%error, "the cluster's API audience could not be learned; only the usual ones are refused");
            Vec::new()
        }
    }
}

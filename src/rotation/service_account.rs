//! Authenticating as a ServiceAccount (spec.credentials.serviceAccount): whether its owner
//! consented to this use, and what the status says when its token cannot be had. The token
//! is minted by the controller right before each token request; every rule about it is here.

use std::collections::BTreeMap;

use crate::api::{ALLOWED_AUDIENCES_ANNOTATION, ALLOWED_TOKEN_HOSTS_ANNOTATION, CREDENTIALS_LABEL};
use crate::conditions::Reason;
use crate::provider::config::ServiceAccountSettings;

use super::status::StoreFailure;

/// Audiences the Kubernetes API accepts on most clusters, refused whatever the discovery
/// document says: a token minted for one of them would work against the API server.
pub const USUAL_API_AUDIENCES: [&str; 3] = [
    "https://kubernetes.default.svc.cluster.local",
    "https://kubernetes.default.svc",
    "kubernetes.default.svc",
];

/// A ServiceAccount's metadata, as far as consent goes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServiceAccountSeen {
    /// The opt-in label `tokenrotator.dev/credentials=true`, as on credentials Secrets.
    pub opted_in: bool,
    /// Its owner's pin of token hosts (`tokenrotator.dev/allowed-token-hosts`).
    pub allowed_hosts: Option<Vec<String>>,
    /// Its owner's pin of audiences (`tokenrotator.dev/allowed-audiences`).
    pub allowed_audiences: Option<Vec<String>>,
}

impl ServiceAccountSeen {
    pub fn from_metadata(
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Self {
        let list = |key: &str| {
            annotations.get(key).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect()
            })
        };
        ServiceAccountSeen {
            opted_in: labels.get(CREDENTIALS_LABEL).map(String::as_str) == Some("true"),
            allowed_hosts: list(ALLOWED_TOKEN_HOSTS_ANNOTATION),
            allowed_audiences: list(ALLOWED_AUDIENCES_ANNOTATION),
        }
    }
}

/// Whether a token of this ServiceAccount may be minted for this audience and sent to this
/// host: it exists, opted in, the audience is not the cluster's own API audience, and its
/// owner's pins (if any) allow both. Anything else is a failure that names the fix; no token
/// is minted and no request sent.
pub fn consent(
    sa: &ServiceAccountSettings,
    seen: Option<&ServiceAccountSeen>,
    token_url: &url::Url,
    api_audiences: &[String],
) -> Result<(), StoreFailure> {
    let name = &sa.name;
    let Some(seen) = seen else {
        return Err(not_found(name));
    };
    let is_api_audience = api_audiences
        .iter()
        .map(String::as_str)
        .chain(USUAL_API_AUDIENCES)
        .any(|a| a == sa.audience);
    if is_api_audience {
        return Err(failure(
            Reason::AudienceRefused,
            format!(
                "spec.credentials.serviceAccount.audience `{}` is the cluster's own API audience: a token for it would work against the Kubernetes API, so none is minted. Set the audience the token endpoint expects",
                sa.audience
            ),
            false,
        ));
    }
    if !seen.opted_in {
        return Err(failure(
            Reason::ServiceAccountNotLabelled,
            format!(
                "ServiceAccount {name} lacks the label {CREDENTIALS_LABEL}=true; its owner adds it (kubectl label serviceaccount {name} {CREDENTIALS_LABEL}=true) to let the operator mint its tokens"
            ),
            true,
        ));
    }
    if let Some(allowed) = &seen.allowed_audiences
        && !allowed.contains(&sa.audience)
    {
        return Err(failure(
            Reason::AudienceRefused,
            format!(
                "the owner of ServiceAccount {name} allows tokens only for {} (annotation {ALLOWED_AUDIENCES_ANNOTATION}); spec.credentials.serviceAccount.audience is `{}`. Fix the audience, or ask the ServiceAccount's owner to add it",
                allowed.join(", "),
                sa.audience
            ),
            // No watch shows its owner's change: looked at again with backoff.
            true,
        ));
    }
    let host = token_url.host_str().unwrap_or_default();
    if let Some(allowed) = &seen.allowed_hosts
        && !allowed.iter().any(|h| h.eq_ignore_ascii_case(host))
    {
        return Err(failure(
            Reason::TokenHostNotAllowed,
            format!(
                "the owner of ServiceAccount {name} allows its tokens to go only to {} (annotation {ALLOWED_TOKEN_HOSTS_ANNOTATION}); spec.tokenEndpoint.url points at {host}. Fix the URL, or ask the ServiceAccount's owner to add the host",
                allowed.join(", ")
            ),
            true,
        ));
    }
    Ok(())
}

/// A ServiceAccount token given by hand (`token-rotator fetch`) is used only as the operator
/// would mint it: for exactly the spec's audience, never one the Kubernetes API accepts. Its
/// claims are read, not verified (the provider verifies them); the error never quotes it.
pub fn token_for_audience(token: &str, audience: &str) -> Result<(), AudienceError> {
    use base64::Engine;
    if USUAL_API_AUDIENCES.contains(&audience) {
        return Err(AudienceError::ApiAudience(audience.into()));
    }
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or(AudienceError::NotAJwt)?;
    let one = match &claims["aud"] {
        serde_json::Value::String(a) => Some(a.as_str()),
        serde_json::Value::Array(a) if a.len() == 1 => a[0].as_str(),
        _ => None,
    };
    match one {
        Some(a) if a == audience => Ok(()),
        _ => Err(AudienceError::Other(audience.into())),
    }
}

/// Why a ServiceAccount token given by hand is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    #[error(
        "`{0}` is the Kubernetes API's audience: a token for it works against the API server; use the audience the token endpoint expects"
    )]
    ApiAudience(String),
    #[error("the file does not hold a JWT (a ServiceAccount token)")]
    NotAJwt,
    /// The token is for another audience (or several).
    #[error(
        "the token's audience must be exactly spec.credentials.serviceAccount.audience `{0}` (kubectl create token NAME --audience '{0}')"
    )]
    Other(String),
}

/// Why the TokenRequest API gave no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintFailure {
    /// 403: the operator may not create tokens for this ServiceAccount.
    Forbidden,
    /// 404: the ServiceAccount is gone.
    NotFound,
    /// Anything else (the API's short error, which never holds a token).
    Other(String),
}

/// The status of a resource whose ServiceAccount token could not be minted.
pub fn mint_failed(failure_kind: MintFailure, sa: &str, namespace: &str) -> StoreFailure {
    match failure_kind {
        MintFailure::NotFound => not_found(sa),
        MintFailure::Forbidden => failure(
            Reason::TokenRequestForbidden,
            format!(
                "the operator may not request tokens for ServiceAccount {sa}: grant it create on serviceaccounts/token for this account, e.g. kubectl -n {namespace} create role token-rotator-{sa} --verb=create --resource=serviceaccounts/token --resource-name={sa} && kubectl -n {namespace} create rolebinding token-rotator-{sa} --role=token-rotator-{sa} --serviceaccount=<operator namespace>:<operator ServiceAccount> (the chart's cluster-wide mode grants it everywhere)"
            ),
            true,
        ),
        MintFailure::Other(error) => failure(
            Reason::TokenRequestFailed,
            format!(
                "the TokenRequest for ServiceAccount {sa} failed: {error}; retried with backoff"
            ),
            true,
        ),
    }
}

fn not_found(sa: &str) -> StoreFailure {
    failure(
        Reason::ServiceAccountNotFound,
        format!(
            "ServiceAccount {sa} (spec.credentials.serviceAccount.name) not found in this namespace; create it with the label {CREDENTIALS_LABEL}=true"
        ),
        true,
    )
}

fn failure(reason: Reason, message: String, retry: bool) -> StoreFailure {
    StoreFailure {
        reason,
        message,
        retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ErrorClass;
    use crate::rotation::settle::retried_with_backoff;

    fn sa(audience: &str) -> ServiceAccountSettings {
        ServiceAccountSettings {
            name: "billing".into(),
            audience: audience.into(),
            lifetime_seconds: 600,
        }
    }

    fn seen(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ServiceAccountSeen {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ServiceAccountSeen::from_metadata(&map(labels), &map(annotations))
    }

    const OPTED_IN: [(&str, &str); 1] = [(CREDENTIALS_LABEL, "true")];

    fn url() -> url::Url {
        url::Url::parse("https://idp.example.test/realms/r/protocol/openid-connect/token").unwrap()
    }

    #[test]
    fn an_opted_in_account_for_another_audience_may_be_used() {
        let s = seen(&OPTED_IN, &[]);
        assert_eq!(
            consent(
                &sa("https://idp.example.test/realms/r"),
                Some(&s),
                &url(),
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn missing_or_not_opted_in_accounts_are_refused() {
        let refused = |s: Option<&ServiceAccountSeen>| {
            consent(&sa("https://idp.example.test/realms/r"), s, &url(), &[])
                .unwrap_err()
                .reason
        };
        assert_eq!(refused(None), Reason::ServiceAccountNotFound);
        assert_eq!(
            refused(Some(&seen(&[], &[]))),
            Reason::ServiceAccountNotLabelled
        );
        assert_eq!(
            refused(Some(&seen(&[(CREDENTIALS_LABEL, "yes")], &[]))),
            Reason::ServiceAccountNotLabelled
        );
    }

    #[test]
    fn the_api_audience_is_refused_even_for_an_opted_in_account() {
        let s = seen(&OPTED_IN, &[]);
        let discovered = vec!["https://127.0.0.1:6443".to_string()];
        for audience in ["https://127.0.0.1:6443", "https://kubernetes.default.svc"] {
            let failure = consent(&sa(audience), Some(&s), &url(), &discovered).unwrap_err();
            assert_eq!(failure.reason, Reason::AudienceRefused);
            assert!(!failure.retry, "only a spec change helps");
        }
    }

    #[test]
    fn the_owner_pins_audiences_and_hosts() {
        let pinned = seen(
            &OPTED_IN,
            &[
                (ALLOWED_AUDIENCES_ANNOTATION, "api://AzureADTokenExchange"),
                (
                    ALLOWED_TOKEN_HOSTS_ANNOTATION,
                    "login.example.test, IDP.example.test",
                ),
            ],
        );
        let audience = |a: &str| consent(&sa(a), Some(&pinned), &url(), &[]);
        assert_eq!(audience("api://AzureADTokenExchange"), Ok(()));
        assert_eq!(
            audience("https://idp.example.test/realms/r")
                .unwrap_err()
                .reason,
            Reason::AudienceRefused
        );
        let elsewhere = url::Url::parse("https://evil.example.test/token").unwrap();
        assert_eq!(
            consent(
                &sa("api://AzureADTokenExchange"),
                Some(&pinned),
                &elsewhere,
                &[]
            )
            .unwrap_err()
            .reason,
            Reason::TokenHostNotAllowed
        );
    }

    #[test]
    fn a_token_given_by_hand_must_be_for_the_spec_audience_only() {
        use base64::Engine;
        let jwt = |claims: serde_json::Value| {
            let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            format!(
                "{}.{}.sig",
                e(br#"{"alg":"ES256"}"#),
                e(claims.to_string().as_bytes())
            )
        };
        let aud = "https://idp.example.test/realms/r";
        assert_eq!(
            token_for_audience(&jwt(serde_json::json!({"aud": [aud]})), aud),
            Ok(())
        );
        for wrong in [
            serde_json::json!({"aud": ["https://other.example.test"]}),
            serde_json::json!({"aud": [aud, "https://kubernetes.default.svc"]}),
            serde_json::json!({"sub": "x"}),
        ] {
            assert!(token_for_audience(&jwt(wrong), aud).is_err());
        }
        assert!(token_for_audience("not a jwt", aud).is_err());
        let api = "https://kubernetes.default.svc";
        assert!(
            token_for_audience(&jwt(serde_json::json!({"aud": [api]})), api)
                .unwrap_err()
                .to_string()
                .contains("Kubernetes API")
        );
    }

    #[test]
    fn a_rejected_service_account_token_is_retried_a_rejected_secret_is_not() {
        assert!(retried_with_backoff(ErrorClass::CredentialsRejected, true));
        assert!(!retried_with_backoff(
            ErrorClass::CredentialsRejected,
            false
        ));
        assert!(retried_with_backoff(ErrorClass::ProviderUnavailable, false));
        // A request the provider finds malformed stays a spec problem either way.
        assert!(!retried_with_backoff(ErrorClass::RequestRejected, true));
        assert!(!retried_with_backoff(ErrorClass::Configuration, true));
    }

    #[test]
    fn a_forbidden_token_request_says_which_role_to_create() {
        let failure = mint_failed(MintFailure::Forbidden, "billing", "team-a");
        assert_eq!(failure.reason, Reason::TokenRequestForbidden);
        assert!(failure.retry);
        assert!(
            failure.message.contains("kubectl -n team-a create role")
                && failure
                    .message
                    .contains("--resource=serviceaccounts/token --resource-name=billing"),
            "{}",
            failure.message
        );
        assert_eq!(
            mint_failed(MintFailure::NotFound, "billing", "team-a").reason,
            Reason::ServiceAccountNotFound
        );
    }
}

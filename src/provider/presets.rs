//! Named defaults for the seed providers. A preset only fills the common model; nothing here is
//! a separate code path, so a new provider needs a manifest, not a code change.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::{BodyEncoding, ClientAuthentication, GrantType, Limits, ResponseMapping};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Rently: client credentials, form body with client id/secret, `expires_in` ≈ 1 day.
    Rently,
    /// Carrental API: JSON `{"userName","password"}`, answer `token` / `expiresIn` (a string).
    Carrental,
    /// Retently: authorization code, client id/secret in the body, rotating refresh tokens.
    Retently,
    /// Reltio: password grant with HTTP Basic client authentication, `expires_in` as a string.
    Reltio,
    /// A Google service account: the JWT bearer grant signed with the key of its JSON key file
    /// (`iss` its client_email, `scope` from spec.grant.scope), no client authentication.
    Google,
    /// Keycloak's federated-jwt clients, with spec.credentials.serviceAccount: the
    /// ServiceAccount token as the client assertion, for the realm's issuer URL (the token
    /// URL without /protocol/openid-connect/token), never a client_id.
    Keycloak,
    /// Microsoft Entra ID federated identity credentials, with spec.credentials.serviceAccount:
    /// the ServiceAccount token as the client assertion for api://AzureADTokenExchange, with
    /// spec.credentials.clientId (required) and a scope ending in /.default.
    Entra,
    /// Google's Security Token Service (workload identity federation), with
    /// spec.credentials.serviceAccount: RFC 8693 token exchange, the ServiceAccount's audience
    /// (the workload identity provider) as the `audience` parameter, an access token asked for.
    #[serde(rename = "googleSts")]
    GoogleSts,
}

/// What a preset assumes of a ServiceAccount-authenticated resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadIdentity {
    /// Keycloak: the token's audience is the realm's issuer URL, from the token URL.
    Keycloak,
    /// Entra ID: audience api://AzureADTokenExchange, a client id, a `/.default` scope.
    Entra,
    /// Google STS: the token's audience is sent as the `audience` parameter too.
    GoogleSts,
}

/// The dialect fields a preset (or the plain OAuth default) provides, before spec overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialectDefaults {
    pub grant: GrantType,
    pub client_authentication: ClientAuthentication,
    pub encoding: BodyEncoding,
    pub send_grant_type: bool,
    pub field_names: BTreeMap<String, String>,
    pub response: ResponseMapping,
    pub limits: Limits,
    pub supports_refresh: bool,
    pub requests_per_second: Option<u32>,
    /// Where a person consents for the authorizationCode grant (`token-rotator authorize`).
    pub authorization_url: Option<&'static str>,
    /// Whether the authorization request carries a PKCE challenge (RFC 7636, S256).
    pub pkce: bool,
    /// The JWT bearer grant's `sub` defaults to its `iss` (RFC 7523 §3), but not for Google.
    pub assertion_subject_is_issuer: bool,
    /// A preset for a ServiceAccount-authenticated resource (it needs one).
    pub workload_identity: Option<WorkloadIdentity>,
}

impl DialectDefaults {
    /// RFC 6749 defaults, used without a preset.
    pub fn oauth() -> Self {
        DialectDefaults {
            grant: GrantType::ClientCredentials,
            client_authentication: ClientAuthentication::Basic,
            encoding: BodyEncoding::Form,
            send_grant_type: true,
            field_names: BTreeMap::new(),
            response: ResponseMapping::default(),
            limits: Limits::default(),
            supports_refresh: true,
            requests_per_second: None,
            authorization_url: None,
            // OAuth 2.0 Security BCP (RFC 9700 §2.1.1): clients use PKCE; servers that do not
            // know it ignore the extra parameters.
            pkce: true,
            assertion_subject_is_issuer: true,
            workload_identity: None,
        }
    }
}

impl Preset {
    pub fn defaults(self) -> DialectDefaults {
        let oauth = DialectDefaults::oauth();
        match self {
            Preset::Rently => DialectDefaults {
                grant: GrantType::ClientCredentials,
                client_authentication: ClientAuthentication::Body,
                response: ResponseMapping {
                    default_lifetime: Duration::from_secs(86399),
                    ..ResponseMapping::default()
                },
                supports_refresh: false,
                ..oauth
            },
            Preset::Carrental => DialectDefaults {
                grant: GrantType::Password,
                client_authentication: ClientAuthentication::None,
                encoding: BodyEncoding::Json,
                send_grant_type: false,
                field_names: BTreeMap::from([("username".to_string(), "userName".to_string())]),
                response: ResponseMapping {
                    access_token: "/token".into(),
                    token_type: "/type".into(),
                    refresh_token: "/refresh_token".into(),
                    expires_in: "/expiresIn".into(),
                    expires_at: Some("/expires".into()),
                    default_lifetime: Duration::from_secs(3600),
                },
                supports_refresh: false,
                ..oauth
            },
            Preset::Retently => DialectDefaults {
                grant: GrantType::AuthorizationCode,
                client_authentication: ClientAuthentication::Body,
                response: ResponseMapping {
                    default_lifetime: Duration::from_secs(21600),
                    ..ResponseMapping::default()
                },
                // "Method details: URL: https://app.retently.com/api/oauth/authorize"; its
                // document names no PKCE parameters.
                authorization_url: Some("https://app.retently.com/api/oauth/authorize"),
                pkce: false,
                ..oauth
            },
            // https://developers.google.com/identity/protocols/oauth2/service-account#httprest
            Preset::Google => DialectDefaults {
                grant: GrantType::JwtBearer,
                client_authentication: ClientAuthentication::None,
                // The client id is the assertion's issuer, not a request parameter.
                field_names: BTreeMap::from([("client_id".to_string(), String::new())]),
                supports_refresh: false,
                assertion_subject_is_issuer: false,
                ..oauth
            },
            // Keycloak 26.4+: "Signed JWT - Federated"; it refuses a client_id that differs
            // from the token's sub.
            Preset::Keycloak => DialectDefaults {
                client_authentication: ClientAuthentication::ServiceAccountToken,
                field_names: BTreeMap::from([("client_id".to_string(), String::new())]),
                workload_identity: Some(WorkloadIdentity::Keycloak),
                ..oauth
            },
            // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
            Preset::Entra => DialectDefaults {
                client_authentication: ClientAuthentication::ServiceAccountToken,
                supports_refresh: false,
                workload_identity: Some(WorkloadIdentity::Entra),
                ..oauth
            },
            // https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token
            Preset::GoogleSts => DialectDefaults {
                grant: GrantType::TokenExchange,
                client_authentication: ClientAuthentication::None,
                supports_refresh: false,
                workload_identity: Some(WorkloadIdentity::GoogleSts),
                ..oauth
            },
            Preset::Reltio => DialectDefaults {
                grant: GrantType::Password,
                client_authentication: ClientAuthentication::Basic,
                // "a limit of 10 GET token requests per second", else HTTP 429.
                requests_per_second: Some(10),
                ..oauth
            },
        }
    }
}

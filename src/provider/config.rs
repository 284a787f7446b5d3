//! The resolved token dialect: everything needed to build one token request and read the answer.
//! Presets and the `ProviderCredential` spec both produce this one model.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The OAuth grant used to obtain a token without a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GrantType {
    /// `grant_type=client_credentials` with the client id and secret.
    ClientCredentials,
    /// `grant_type=password` (resource-owner password) with username and password.
    Password,
    /// `grant_type=authorization_code` with a one-time `code` and `redirect_uri`.
    AuthorizationCode,
    /// The JWT bearer grant (RFC 7523 §2.1): a JWT signed with the private key is the grant
    /// (with spec.credentials.serviceAccount: the ServiceAccount token is).
    JwtBearer,
    /// RFC 8693 token exchange: the ServiceAccount token is the `subject_token`
    /// (spec.credentials.serviceAccount only); audience, resource and requested_token_type go
    /// in spec.grant.extraParameters.
    TokenExchange,
}

impl GrantType {
    pub fn wire_value(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::JwtBearer => super::assertion::JWT_BEARER_GRANT,
            GrantType::TokenExchange => TOKEN_EXCHANGE_GRANT,
        }
    }
}

/// `grant_type` of RFC 8693 token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the `subject_token_type` of a JWT (a ServiceAccount token is one).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How the client id and secret travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClientAuthentication {
    /// HTTP Basic `Authorization` header (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` as body fields.
    Body,
    /// No client authentication is sent.
    None,
    /// A JWT signed with the client's private key (`private_key_jwt`, RFC 7523 §2.2).
    PrivateKeyJwt,
    /// A JWT signed with the client secret, HS256 (`client_secret_jwt`).
    ClientSecretJwt,
    /// The client certificate on the TLS connection (RFC 8705); `client_id` in the body.
    Tls,
    /// The ServiceAccount token (spec.credentials.serviceAccount) as the client assertion
    /// (RFC 7523 §2.2, `client_assertion_type` jwt-bearer); `client_id` only when one is given.
    ServiceAccountToken,
}

/// How the request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json` object of strings.
    Json,
}

/// A request parameter the operator knows how to fill. Wire names are configurable per provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    GrantType,
    ClientId,
    ClientSecret,
    Username,
    Password,
    Code,
    RedirectUri,
    RefreshToken,
    Scope,
    /// PKCE (RFC 7636): sent with an authorization code that was requested with a challenge.
    /// Only `token-rotator authorize` has one, so it is not a credentials key and not in
    /// [`Param::ALL`].
    CodeVerifier,
    // Credentials that never go on the wire as parameters (so not in [`Param::ALL`]): they sign
    // assertions or authenticate the TLS connection.
    /// A PEM private key that signs assertions.
    PrivateKey,
    /// The `kid` of that key, for the assertion header.
    KeyId,
    /// The client certificate (PEM) for mutual TLS.
    TlsCertificate,
    /// Its private key (PEM).
    TlsKey,
    /// A Google service account JSON key: client_email, private_key and private_key_id.
    ServiceAccountJson,
    /// A Kubernetes ServiceAccount token minted for this one request (never read from a
    /// Secret, never stored).
    ServiceAccountToken,
}

impl Param {
    pub const ALL: [Param; 9] = [
        Param::GrantType,
        Param::ClientId,
        Param::ClientSecret,
        Param::Username,
        Param::Password,
        Param::Code,
        Param::RedirectUri,
        Param::RefreshToken,
        Param::Scope,
    ];

    /// The OAuth 2.0 parameter name, also the default wire name.
    pub fn oauth_name(self) -> &'static str {
        match self {
            Param::GrantType => "grant_type",
            Param::ClientId => "client_id",
            Param::ClientSecret => "client_secret",
            Param::Username => "username",
            Param::Password => "password",
            Param::Code => "code",
            Param::RedirectUri => "redirect_uri",
            Param::RefreshToken => "refresh_token",
            Param::Scope => "scope",
            Param::CodeVerifier => "code_verifier",
            Param::PrivateKey => "private_key",
            Param::KeyId => "key_id",
            Param::TlsCertificate => "tls.crt",
            Param::TlsKey => "tls.key",
            Param::ServiceAccountJson => "service-account.json",
            Param::ServiceAccountToken => "the ServiceAccount token",
        }
    }

    pub fn from_oauth_name(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.oauth_name() == name)
    }
}

/// Where the fields of a successful answer are, as JSON pointers (RFC 6901).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseMapping {
    pub access_token: String,
    pub token_type: String,
    pub refresh_token: String,
    /// Lifetime in seconds (a number or a numeric string).
    pub expires_in: String,
    /// Absolute expiry (RFC 3339, HTTP date / RFC 2822, or epoch seconds).
    pub expires_at: Option<String>,
    /// Used when the answer carries no lifetime and the token is not a JWT with `exp`.
    pub default_lifetime: Duration,
}

impl Default for ResponseMapping {
    fn default() -> Self {
        ResponseMapping {
            access_token: "/access_token".into(),
            token_type: "/token_type".into(),
            refresh_token: "/refresh_token".into(),
            expires_in: "/expires_in".into(),
            expires_at: None,
            default_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Transport limits; defaults are deliberately tight for a single small JSON answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub overall_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            overall_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The ServiceAccount whose token authenticates (spec.credentials.serviceAccount): minted
/// for each request with this audience and lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountSettings {
    pub name: String,
    pub audience: String,
    pub lifetime_seconds: u32,
}

/// A complete, validated provider dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderConfig {
    pub token_url: url::Url,
    pub grant: GrantType,
    pub client_authentication: ClientAuthentication,
    pub encoding: BodyEncoding,
    /// Send `grant_type` at all (some JSON login endpoints take only user and password).
    pub send_grant_type: bool,
    /// Wire names overriding the OAuth names; an empty name leaves the parameter out.
    pub field_names: BTreeMap<String, String>,
    pub extra_parameters: BTreeMap<String, String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub response: ResponseMapping,
    /// PEM bundle that replaces the system roots for this endpoint.
    pub ca_bundle: Option<String>,
    pub limits: Limits,
    /// Whether this dialect can use `grant_type=refresh_token` at all.
    pub supports_refresh: bool,
    /// The provider's documented request rate limit for this endpoint, if any.
    pub requests_per_second: Option<u32>,
    /// How JWT assertions are made (privateKeyJwt, clientSecretJwt, the jwtBearer grant).
    pub assertion: super::assertion::AssertionSettings,
    /// Authenticate with a ServiceAccount token instead of a credentials Secret.
    pub service_account: Option<ServiceAccountSettings>,
}

impl ProviderConfig {
    /// The wire name for a parameter, or `None` when the provider does not take it.
    pub fn wire_name(&self, param: Param) -> Option<&str> {
        match self.field_names.get(param.oauth_name()) {
            Some(name) if name.is_empty() => None,
            Some(name) => Some(name),
            None => Some(param.oauth_name()),
        }
    }
}

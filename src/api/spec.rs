//! The `ProviderCredential` resource: what to fetch, with which credentials, where to put it.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::limits;
use super::status::ProviderCredentialStatus;
use crate::provider::assertion::SigningAlgorithm;
use crate::provider::{BodyEncoding, ClientAuthentication, GrantType, Preset};

/// Keeps a short-lived API token fresh in a Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tokenrotator.dev",
    version = "v1alpha1",
    kind = "ProviderCredential",
    namespaced,
    shortname = "pcred",
    category = "token-rotator",
    status = "ProviderCredentialStatus",
    doc = "Keeps a short-lived API token from an external token endpoint fresh inside a Kubernetes Secret.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.accessToken.expiresAt", description = "When the current access token expires"),
    printcolumn(name = "Last Refresh", type_ = "date", json_path = ".status.accessToken.issuedAt"),
    printcolumn(name = "Reason", type_ = "string", priority = "1", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.credentials.secretRef) || self.spec.target.secretName != self.spec.credentials.secretRef.name").message("spec.target.secretName must differ from spec.credentials.secretRef.name: the operator never writes into the credentials Secret"),
    validation = Rule::new("self.spec.target.secretName != self.metadata.name + '-rotator-state'").message("spec.target.secretName must differ from <name>-rotator-state, where this resource keeps its refresh token"),
    validation = Rule::new("!has(self.spec.credentials.serviceAccount) || has(self.spec.credentials.serviceAccount.audience) || (has(self.spec.preset) && self.spec.preset in ['keycloak', 'entra'])").message("spec.credentials.serviceAccount.audience is required (only the keycloak and entra presets have a default): the one audience the token endpoint expects"),
    validation = Rule::new("size(self.metadata.name) <= 239").message("metadata.name must be at most 239 characters: the state Secret <name>-rotator-state must fit in 253"),
)]
#[x_kube(
    validation = Rule::new("!(has(self.grant) && has(self.grant.type) && self.grant.type == 'authorizationCode') && !(has(self.preset) && self.preset == 'retently' && !(has(self.grant) && has(self.grant.type))) || (has(self.grant) && has(self.grant.redirectUri))").message("spec.grant.redirectUri is required for the authorizationCode grant (it must equal the redirect_uri the code was issued for)").field_path(".grant.redirectUri")
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCredentialSpec {
    /// Named defaults for a known provider (rently, carrental, retently, reltio, google; with
    /// spec.credentials.serviceAccount: keycloak, entra, googleSts). Every other field
    /// overrides the preset; without a preset, plain OAuth 2.0 defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,

    /// Stop all token requests while true. The current token stays in the target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    pub token_endpoint: TokenEndpoint,

    // The optional parts are boxed: every resource is cached for as long as it exists, and
    // inline they made each cached copy about 400 bytes larger whether set or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Box<GrantSpec>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RequestSpec>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Box<ResponseSpec>>,

    pub credentials: CredentialsSpec,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Box<RefreshSpec>>,

    pub target: TargetSpec,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Box<RolloutSpec>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Box<super::delivery::DeliverySpec>>,
}

/// Workloads in this namespace to restart, as `kubectl rollout restart` does, after the token
/// in the target Secret changes: for consumers that read it only when they start (environment
/// variables, subPath mounts, caches). Needs the operator's --restart-workloads (chart value
/// rolloutRestarts.enabled), and each workload's consent: the annotation
/// tokenrotator.dev/restart-on listing this ProviderCredential's name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The workloads (at most 16).
    #[schemars(length(min = 1, max = limits::WORKLOADS))]
    pub workloads: Vec<WorkloadRef>,
    /// At least this long between two restarts of one workload, whichever ProviderCredential
    /// asks; a rotation within it is served by one restart at its end (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,9}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) >= duration('0s')").message("spec.rollout.minInterval must be a duration such as 5m"))]
    #[schemars(length(max = limits::DURATION))]
    pub min_interval: Option<String>,
    /// Wait this long after a rotation before restarting (default 0s): mounted Secrets reach
    /// running pods first, and ProviderCredentials rotating together share one restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]{1,9}([.][0-9]{1,9})?(ms|s|m|h))+$') && duration(self) >= duration('0s')").message("spec.rollout.delay must be a duration such as 30s"))]
    #[schemars(length(max = limits::DURATION))]
    pub delay: Option<String>,
}

/// A Deployment, StatefulSet or DaemonSet in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(
        length(min = 1, max = limits::NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The plural resource name (apps/v1).
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }
}

/// Where tokens are requested.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenEndpoint {
    /// The token endpoint URL, e.g. https://auth.reltio.com/oauth/token. Must be https unless
    /// the operator runs with --allow-http. Redirects are never followed.
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))").message("spec.tokenEndpoint.url must be an absolute https:// URL"))]
    #[schemars(length(max = limits::URL))]
    pub url: String,

    /// PEM CA certificates that replace the system roots for this endpoint only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::CA_BUNDLE))]
    pub ca_bundle: Option<String>,

    /// Overall time limit for one token request, in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: Option<u32>,

    /// At most this many token requests per second to this endpoint's host, shared by every
    /// ProviderCredential of this namespace using it (default from the preset: 10 for reltio,
    /// else unlimited). Other namespaces are not slowed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: Option<u32>,
}

/// How a token is obtained when no refresh token is held.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GrantSpec {
    /// clientCredentials, password or authorizationCode (default from the preset, else
    /// clientCredentials).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<GrantType>,

    /// How the client id and secret are sent: basic (HTTP Basic header), body (form/JSON
    /// fields) or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,

    /// The redirect_uri the authorization code was issued for (authorizationCode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::URL))]
    pub redirect_uri: Option<String>,

    /// The provider's authorization endpoint, where `token-rotator authorize` sends a person
    /// to consent (authorizationCode only; the retently preset sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::URL))]
    pub authorization_url: Option<String>,

    /// Send a PKCE challenge (RFC 7636, S256) with the authorization request and its verifier
    /// with the code (`token-rotator authorize`; default true, false for the retently preset,
    /// whose provider does not document PKCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<bool>,

    /// Space-separated scopes to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::PARAMETER))]
    pub scope: Option<String>,

    /// Send the grant_type parameter (default true; false for login endpoints that take only
    /// user and password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_grant_type: Option<bool>,

    /// How signed JWT assertions are made, for clientAuthentication privateKeyJwt or
    /// clientSecretJwt and for the jwtBearer grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<Box<AssertionSpec>>,

    /// Constant parameters added to every request body (e.g. audience). Never secrets: put
    /// those in the credentials Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::EXTRA_PARAMETERS, value: limits::PARAMETER })]
    pub extra_parameters: BTreeMap<String, String>,
}

/// A signed JWT assertion (RFC 7523). The private key (or, for clientSecretJwt, the client
/// secret) comes from the credentials Secret; a fresh assertion is signed for every request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AssertionSpec {
    /// RS256, PS256, ES256, EdDSA or HS256 (default: from the private key's type; HS256 for
    /// clientSecretJwt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SigningAlgorithm>,
    /// The `aud` claim (default: the token endpoint URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::URL))]
    pub audience: Option<String>,
    /// From `iat` to `exp` in seconds, 10–3600 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 3600))]
    pub lifetime_seconds: Option<u32>,
    /// jwtBearer: the `iss` claim (default: the client id credential, e.g. a service
    /// account's email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::CLAIM))]
    pub issuer: Option<String>,
    /// jwtBearer: the `sub` claim (default: the issuer; none for the google preset), e.g. the
    /// user a service account acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::CLAIM))]
    pub subject: Option<String>,
    /// jwtBearer: further string claims. iss, sub, aud, exp, iat, nbf and jti are the
    /// operator's; spec.grant.scope goes in `scope`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::CLAIMS, value: limits::CLAIM })]
    #[x_kube(validation = Rule::new("self.all(k, !(k in ['iss','sub','aud','exp','iat','nbf','jti','scope']))").message("spec.grant.assertion.claims cannot set iss, sub, aud, exp, iat, nbf, jti or scope: the operator sets them (scope from spec.grant.scope)"))]
    pub claims: BTreeMap<String, String>,
}

/// How the request body is written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    /// form (application/x-www-form-urlencoded, default) or json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<BodyEncoding>,

    /// Wire names for the OAuth parameters (grant_type, client_id, client_secret, username,
    /// password, code, redirect_uri, refresh_token, scope), e.g. {username: userName}. An empty
    /// name leaves the parameter out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::FIELD_NAMES, value: limits::WIRE_NAME })]
    #[x_kube(validation = Rule::new("self.all(k, k in ['grant_type','client_id','client_secret','username','password','code','redirect_uri','refresh_token','scope'])").message("spec.request.fieldNames keys must be OAuth parameter names: grant_type, client_id, client_secret, username, password, code, redirect_uri, refresh_token, scope"))]
    pub field_names: BTreeMap<String, String>,
}

/// Where the answer's fields are, as JSON pointers (RFC 6901), e.g. /access_token or /data/token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResponseSpec {
    /// The access token (default /access_token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POINTER))]
    pub access_token: Option<String>,
    /// The token type (default /token_type; Bearer when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POINTER))]
    pub token_type: Option<String>,
    /// The refresh token (default /refresh_token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POINTER))]
    pub refresh_token: Option<String>,
    /// The lifetime in seconds, a number or numeric string (default /expires_in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POINTER))]
    pub expires_in: Option<String>,
    /// An absolute expiry (RFC 3339, HTTP date, or epoch seconds), used when there is no
    /// lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::POINTER))]
    pub expires_at: Option<String>,
    /// Lifetime assumed when the answer gives none and the token is not a JWT with exp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 31536000))]
    pub default_lifetime_seconds: Option<u32>,
}

/// What the operator authenticates with: a credentials Secret in the same namespace (it must
/// carry the label tokenrotator.dev/credentials=true), or a ServiceAccount of this namespace
/// whose short-lived token is minted for each request. Exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.serviceAccount)").message("spec.credentials needs exactly one of secretRef (a credentials Secret) and serviceAccount (a ServiceAccount of this namespace)"))]
pub struct CredentialsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Box<ServiceAccountCredential>>,
    /// The client id, when it is not secret (with serviceAccount, the only way to give one;
    /// with secretRef, used when the Secret has no client id key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::CLAIM))]
    pub client_id: Option<String>,
    /// Secret keys to read, when they differ from the defaults client_id, client_secret,
    /// username, password, code and refresh_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Box<CredentialKeys>>,
}

impl CredentialsSpec {
    /// The credentials Secret's name, unless the resource authenticates as a ServiceAccount.
    pub fn secret_name(&self) -> Option<&str> {
        self.secret_ref.as_ref().map(|r| r.name.as_str())
    }
}

/// A ServiceAccount of this namespace (there is no way to name another namespace's) whose
/// token the operator requests through the TokenRequest API for each token request, for the
/// audience below, and keeps in memory only. The ServiceAccount must carry the label
/// tokenrotator.dev/credentials=true; `default` is never used.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountCredential {
    /// The ServiceAccount's name.
    #[schemars(
        length(min = 1, max = limits::NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self != 'default'").message("spec.credentials.serviceAccount.name cannot be default: every pod of the namespace runs as it; create a ServiceAccount for this integration"))]
    pub name: String,
    /// The token's one audience: what the token endpoint expects (Keycloak: the realm's issuer
    /// URL; Entra ID: api://AzureADTokenExchange; Google: the workload identity provider).
    /// Never the cluster's own API audience. Required, except with the keycloak preset (the
    /// realm's issuer URL, from the token URL) and the entra preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::URL))]
    pub audience: Option<String>,
    /// The token's lifetime in seconds, 600–3600 (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 600, max = 3600))]
    pub lifetime_seconds: Option<u32>,
}

/// A Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = limits::NAME))]
    pub name: String,
}

/// Credential key names in the credentials Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialKeys {
    /// Key holding the OAuth client id (default client_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub client_id: Option<String>,
    /// Key holding the client secret (default client_secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub client_secret: Option<String>,
    /// Key holding the username (default username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub username: Option<String>,
    /// Key holding the password (default password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub password: Option<String>,
    /// Key holding a one-time authorization code (default code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub code: Option<String>,
    /// Key holding a seed refresh token (default refresh_token); used when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub refresh_token: Option<String>,
    /// Key holding the PEM private key that signs assertions (default private_key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub private_key: Option<String>,
    /// Key holding the key id sent as the assertion's `kid` (default key_id; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub key_id: Option<String>,
    /// Key holding the PEM client certificate for clientAuthentication tls (default tls.crt,
    /// as in a kubernetes.io/tls Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub tls_certificate: Option<String>,
    /// Key holding the client certificate's PEM private key (default tls.key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub tls_key: Option<String>,
    /// Key holding a Google service account JSON key (default service-account.json): its
    /// client_email, private_key and private_key_id stand for client_id, private_key and
    /// key_id when those keys are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::SECRET_KEY))]
    pub service_account_json: Option<String>,
}

/// When to renew. Default: when a third of the lifetime is left (renewBeforePercentage 33).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("set either spec.refresh.renewBefore or spec.refresh.renewBeforePercentage, not both"))]
pub struct RefreshSpec {
    /// Renew when this percentage of the lifetime is left (1–90, default 33).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: Option<u8>,
    /// Renew this long before expiry, as a duration such as 10m or 1h30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.refresh.renewBefore must be a duration such as 10m or 1h30m"))]
    #[schemars(length(max = limits::DURATION))]
    pub renew_before: Option<String>,
    /// Never renew later than this before expiry (default 2m), so consumers that read the
    /// Secret through the kubelet's cache see the new token in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s')").message("spec.refresh.minimumMargin must be a duration such as 2m"))]
    #[schemars(length(max = limits::DURATION))]
    pub minimum_margin: Option<String>,
}

/// CEL over a map's keys: none under a reserved prefix (the same rule as
/// `target::is_reserved_key`, which the operator also applies).
const RESERVED_KEYS_RULE: &str = "self.all(k, k.startsWith('app.kubernetes.io/') || !(k.startsWith('kubernetes.io/') || k.startsWith('k8s.io/') || k.startsWith('tokenrotator.dev/') || k.matches('^[^/]*[.](kubernetes[.]io|k8s[.]io|tokenrotator[.]dev)/')))";

/// The Secret the token is written to (created and owned by the operator).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the target Secret in the resource's namespace. An existing Secret not owned by
    /// this resource is never touched (TargetConflict).
    #[schemars(length(min = 1, max = limits::NAME))]
    pub secret_name: String,
    /// Secret type: Opaque (the default), kubernetes.io/basic-auth or
    /// kubernetes.io/dockerconfigjson. Types the cluster acts on (service-account tokens,
    /// bootstrap tokens) are refused.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Opaque', 'kubernetes.io/basic-auth', 'kubernetes.io/dockerconfigjson']").message("spec.target.type must be Opaque, kubernetes.io/basic-auth or kubernetes.io/dockerconfigjson: types the cluster acts on (such as service-account tokens) are refused"))]
    #[schemars(length(max = limits::SECRET_TYPE))]
    pub secret_type: Option<String>,
    /// Extra labels on the target Secret. Keys under kubernetes.io/, k8s.io/ and
    /// tokenrotator.dev/ are refused (app.kubernetes.io/ is allowed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::TARGET_LABELS, value: limits::LABEL_VALUE })]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("spec.target.labels: keys under kubernetes.io/, k8s.io/ and tokenrotator.dev/ are reserved (app.kubernetes.io/ is allowed)"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the target Secret. Keys under kubernetes.io/, k8s.io/ and
    /// tokenrotator.dev/ are refused (app.kubernetes.io/ is allowed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::TARGET_ANNOTATIONS, value: limits::ANNOTATION_VALUE })]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("spec.target.annotations: keys under kubernetes.io/, k8s.io/ and tokenrotator.dev/ are reserved (app.kubernetes.io/ is allowed)"))]
    pub annotations: BTreeMap<String, String>,
    /// Keys to write, each a template over the token fields access_token, token_type,
    /// expires_at, issued_at and lifetime_seconds, e.g. {Authorization: "Bearer {{ access_token }}"}.
    /// Default: access_token, token_type and expires_at. Only substitutions, filters and
    /// if/else are allowed (no loops, set or function calls); a template whose output could
    /// exceed 256 KiB with the largest token accepted is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = limits::Map { entries: limits::TEMPLATE_KEYS, value: limits::TEMPLATE })]
    pub template: BTreeMap<String, String>,
}

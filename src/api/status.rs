//! What the operator reports. It tracks tokens (times, fingerprints) but never holds one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits;

/// What the operator observed and did. Never holds a token value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderCredentialStatus {
    /// Ready: the target Secret holds an unexpired token. Degraded: a refresh is failing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = limits::conditions)]
    pub conditions: Vec<Condition>,
    /// The spec generation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The access token currently in the target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<AccessTokenStatus>,
    /// When the next token request is planned (includes this rotation's jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<Time>,
    /// The refresh token held in the state Secret, if the provider issues one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed, as the rarely set parts of the spec are: every resource stays cached.
    pub refresh_token: Option<Box<RefreshTokenStatus>>,
    /// The most recent failed token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Box<FailureStatus>>,
    /// Failed token requests since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub consecutive_failures: Option<u32>,
    /// The last value of the tokenrotator.dev/refresh annotation that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::REFRESH_REQUEST))]
    pub last_refresh_request: Option<String>,
    /// spec.rollout: the last restart this resource made of each workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::RESTARTS))]
    pub restarts: Vec<WorkloadRestartStatus>,
    /// spec.delivery: each destination namespace and whether it holds the current token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::DELIVERIES))]
    pub deliveries: Vec<super::delivery::DeliveryStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRestartStatus {
    /// Deployment, StatefulSet or DaemonSet.
    #[schemars(length(max = limits::REASON))]
    pub kind: String,
    /// The workload's name.
    #[schemars(length(max = limits::NAME))]
    pub name: String,
    /// When it was restarted (its pod template's kubectl.kubernetes.io/restartedAt).
    pub restarted_at: Time,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenStatus {
    /// When the token was obtained.
    pub issued_at: Time,
    /// When the token expires.
    pub expires_at: Time,
    /// sha256 of the token: compare with `sha256sum` of the Secret's value.
    #[schemars(length(max = limits::FINGERPRINT))]
    pub fingerprint: String,
    /// Where the lifetime came from: expiresIn, expiresAt, jwtExp or default.
    #[schemars(length(max = limits::FINGERPRINT))]
    pub lifetime_source: String,
    /// The Secret it lives in.
    #[schemars(length(max = limits::NAME))]
    pub secret_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshTokenStatus {
    /// The state Secret and key holding the refresh token (owned by this resource).
    pub secret_ref: SecretKeyRef,
    /// When the provider issued the current refresh token.
    pub issued_at: Time,
    /// sha256 of the refresh token.
    #[schemars(length(max = limits::FINGERPRINT))]
    pub fingerprint: String,
    /// How many times the provider replaced the refresh token.
    #[schemars(range(max = 4294967295u32))]
    pub rotations: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name, in the resource's namespace.
    #[schemars(length(max = limits::NAME))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(max = limits::SECRET_KEY))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureStatus {
    pub time: Time,
    /// The failure class, e.g. CredentialsRejected, RateLimited, ProviderUnavailable.
    #[schemars(length(max = limits::REASON))]
    pub reason: String,
    /// The HTTP status of the answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What went wrong, in the provider's words where it gave any (never a secret).
    #[schemars(length(max = limits::MESSAGE))]
    pub message: String,
}

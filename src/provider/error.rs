//! Classified failures of one token exchange. Messages carry the provider's own words, already
//! scrubbed of every credential that was sent, and never a secret.

use std::time::Duration;

/// What a caller should do about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The manifest or credentials cannot make a valid request; fix the inputs.
    Configuration,
    /// The provider refused the credentials; retrying before they change would lock accounts.
    CredentialsRejected,
    /// The provider refused the request's shape (wrong dialect); fix the spec.
    RequestRejected,
    /// HTTP 429; wait for `Retry-After`.
    RateLimited,
    /// 5xx, timeout or connection failure; retry with backoff (the outcome is ambiguous).
    ProviderUnavailable,
    /// A success status whose body holds no usable token, or a redirect.
    InvalidResponse,
}

impl ErrorClass {
    /// The condition reason used on the resource's status.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorClass::Configuration => "InvalidConfiguration",
            ErrorClass::CredentialsRejected => "CredentialsRejected",
            ErrorClass::RequestRejected => "RequestRejected",
            ErrorClass::RateLimited => "RateLimited",
            ErrorClass::ProviderUnavailable => "ProviderUnavailable",
            ErrorClass::InvalidResponse => "InvalidResponse",
        }
    }

    /// Whether the same inputs may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::ProviderUnavailable | ErrorClass::InvalidResponse
        )
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("invalid configuration: {0}")]
    Configuration(String),

    #[error(
        "the {grant} grant needs the key `{key}` in the credentials Secret; add it (or map another key with spec.credentials.keys)"
    )]
    MissingCredential { key: String, grant: &'static str },

    #[error("credentials rejected by the provider (HTTP {status}{}): {words}", oauth_suffix(.oauth_error))]
    CredentialsRejected {
        status: u16,
        oauth_error: Option<String>,
        words: String,
    },

    #[error("request rejected by the provider (HTTP {status}{}): {words}; check the grant, encoding and field names", oauth_suffix(.oauth_error))]
    RequestRejected {
        status: u16,
        oauth_error: Option<String>,
        words: String,
    },

    #[error("rate limited by the provider (HTTP 429{}): {words}", retry_suffix(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        words: String,
    },

    #[error("provider unavailable ({cause}){}{}", words_suffix(.words), retry_suffix(.retry_after))]
    ProviderUnavailable {
        cause: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        words: String,
    },

    #[error("unusable response (HTTP {status}): {problem}{}", words_suffix(.words))]
    InvalidResponse {
        status: u16,
        problem: String,
        words: String,
    },
}

fn oauth_suffix(error: &Option<String>) -> String {
    error.as_ref().map(|e| format!(", {e}")).unwrap_or_default()
}

fn retry_suffix(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

fn words_suffix(words: &str) -> String {
    if words.is_empty() {
        String::new()
    } else {
        format!(": {words}")
    }
}

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Configuration(_) | FetchError::MissingCredential { .. } => {
                ErrorClass::Configuration
            }
            FetchError::CredentialsRejected { .. } => ErrorClass::CredentialsRejected,
            FetchError::RequestRejected { .. } => ErrorClass::RequestRejected,
            FetchError::RateLimited { .. } => ErrorClass::RateLimited,
            FetchError::ProviderUnavailable { .. } => ErrorClass::ProviderUnavailable,
            FetchError::InvalidResponse { .. } => ErrorClass::InvalidResponse,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after, .. }
            | FetchError::ProviderUnavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            FetchError::CredentialsRejected { status, .. }
            | FetchError::RequestRejected { status, .. }
            | FetchError::InvalidResponse { status, .. } => Some(*status),
            FetchError::RateLimited { .. } => Some(429),
            FetchError::ProviderUnavailable { status, .. } => *status,
            _ => None,
        }
    }

    /// RFC 6749 §5.2 `invalid_grant`: the grant (code or refresh token) is dead for good.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, FetchError::CredentialsRejected { oauth_error: Some(e), .. } if e == "invalid_grant")
    }
}

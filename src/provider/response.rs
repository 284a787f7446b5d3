//! Pure interpretation of a token endpoint's answer: a token, or a classified error.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::ProviderConfig;
use super::error::FetchError;
use super::lifetime::{self, LifetimeSource};
use super::scrub::Scrubber;

/// What happened to the refresh token in this exchange (RFC 6749 §6).
#[derive(Clone)]
pub enum RefreshOutcome {
    /// No refresh token before or after.
    None,
    /// The answer to a primary grant carried one.
    NewlyIssued(SecretString),
    /// The answer to a refresh carried a different one; the old one must never be sent again.
    Rotated(SecretString),
    /// The answer to a refresh carried none (or the same one): the old one stays valid.
    Kept,
}

impl RefreshOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            RefreshOutcome::None => "none",
            RefreshOutcome::NewlyIssued(_) => "newlyIssued",
            RefreshOutcome::Rotated(_) => "rotated",
            RefreshOutcome::Kept => "kept",
        }
    }

    /// A new value to persist, if any.
    pub fn new_token(&self) -> Option<&SecretString> {
        match self {
            RefreshOutcome::NewlyIssued(t) | RefreshOutcome::Rotated(t) => Some(t),
            RefreshOutcome::None | RefreshOutcome::Kept => None,
        }
    }
}

impl fmt::Debug for RefreshOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A successfully issued token.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: SecretString,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub lifetime_seconds: u64,
    pub lifetime_source: LifetimeSource,
    /// The lifetime the provider claimed, when it was capped (shown in the status).
    pub lifetime_capped_from: Option<u64>,
    pub refresh: RefreshOutcome,
}

impl IssuedToken {
    pub fn fingerprint(&self) -> String {
        fingerprint(self.access_token.expose_secret())
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("fingerprint", &self.fingerprint())
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("lifetime_source", &self.lifetime_source)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// `sha256:<hex>` of a secret: identifies a value without revealing it.
pub fn fingerprint(value: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
}

/// The parts of an HTTP answer the parser needs.
pub struct RawResponse<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub retry_after: Option<&'a str>,
    pub location: Option<&'a str>,
    pub body: &'a [u8],
}

/// The longest access or refresh token accepted (a Secret holds 1 MiB in all; the largest
/// JWTs seen in the wild are a few KiB).
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;
/// The longest token type accepted.
pub const MAX_TOKEN_TYPE_BYTES: usize = 256;

/// Interprets an answer. `sent_refresh` is the refresh token this request spent, if any.
pub fn interpret(
    config: &ProviderConfig,
    raw: &RawResponse<'_>,
    scrubber: &Scrubber<'_>,
    sent_refresh: Option<&SecretString>,
    now: Timestamp,
) -> Result<IssuedToken, FetchError> {
    let text = String::from_utf8_lossy(raw.body);
    let json: Option<Value> = serde_json::from_slice(raw.body).ok();
    let status = raw.status;
    if !(200..300).contains(&status) {
        return Err(classify_failure(raw, json.as_ref(), &text, scrubber, now));
    }
    let invalid = |problem: String, words: String| FetchError::InvalidResponse {
        status,
        problem,
        words,
    };
    let Some(Value::Object(_)) = json.as_ref() else {
        // A successful answer may carry a token in any shape: describe it, never quote it.
        let kind = describe_non_json(raw.content_type, &text, scrubber);
        return Err(invalid(
            format!(
                "the answer is not a JSON object ({kind}, {} bytes; a successful answer is never quoted because it may hold a token)",
                raw.body.len()
            ),
            String::new(),
        ));
    };
    let json = json.expect("checked above");
    let m = &config.response;
    let access_token = match json.pointer(&m.access_token) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let fields: Vec<&str> = json
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(invalid(
                // Field names are provider input: keep them on one bounded, scrubbed line.
                format!(
                    "no access token at `{}` (fields present: {}); set spec.response.accessToken",
                    m.access_token,
                    scrubber.excerpt(&fields.join(", "))
                ),
                String::new(),
            ));
        }
    };
    let token_type = match json.pointer(&m.token_type) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => "Bearer".to_string(),
    };
    let received_refresh = match json.pointer(&m.refresh_token) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    // Tokens are visible ASCII (RFC 6749 VSCHAR) of a sane size: what templates and Secrets
    // are sized for. Only sizes are reported, never the values.
    for (what, value, max) in [
        ("access token", Some(access_token.as_str()), MAX_TOKEN_BYTES),
        (
            "refresh token",
            received_refresh.as_deref(),
            MAX_TOKEN_BYTES,
        ),
        (
            "token type",
            Some(token_type.as_str()),
            MAX_TOKEN_TYPE_BYTES,
        ),
    ] {
        let Some(value) = value else { continue };
        if value.len() > max {
            return Err(invalid(
                format!(
                    "the {what} is {} bytes; at most {max} are accepted",
                    value.len()
                ),
                String::new(),
            ));
        }
        if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(invalid(
                format!("the {what} holds characters outside visible ASCII (RFC 6749 §A)"),
                String::new(),
            ));
        }
    }
    let refresh = match (sent_refresh, received_refresh) {
        (None, None) => RefreshOutcome::None,
        (None, Some(new)) => RefreshOutcome::NewlyIssued(SecretString::from(new)),
        (Some(_), None) => RefreshOutcome::Kept,
        (Some(old), Some(new)) if old.expose_secret() == new => RefreshOutcome::Kept,
        (Some(_), Some(new)) => RefreshOutcome::Rotated(SecretString::from(new)),
    };
    let life = lifetime::resolve(
        now,
        json.pointer(&m.expires_in),
        m.expires_at.as_deref().and_then(|p| json.pointer(p)),
        &access_token,
        m.default_lifetime,
    );
    Ok(IssuedToken {
        access_token: SecretString::from(access_token),
        token_type,
        issued_at: now,
        expires_at: life.expires_at,
        lifetime_seconds: life.seconds,
        lifetime_source: life.source,
        lifetime_capped_from: life.capped_from,
        refresh,
    })
}

fn classify_failure(
    raw: &RawResponse<'_>,
    json: Option<&Value>,
    text: &str,
    scrubber: &Scrubber<'_>,
    now: Timestamp,
) -> FetchError {
    let status = raw.status;
    let oauth_error = json
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .map(|s| scrubber.excerpt(s));
    let words = provider_words(json, text, scrubber);
    let retry_after = raw.retry_after.and_then(|v| parse_retry_after(v, now));
    match status {
        300..=399 => FetchError::InvalidResponse {
            status,
            problem: format!(
                "the endpoint redirects{}; redirects are not followed, set spec.tokenEndpoint.url to the final URL",
                raw.location
                    .and_then(|l| url::Url::parse(l).ok())
                    .and_then(|u| u.host_str().map(|h| format!(" to host {h}")))
                    .unwrap_or_default()
            ),
            words: String::new(),
        },
        429 => FetchError::RateLimited { retry_after, words },
        408 | 500..=599 => FetchError::ProviderUnavailable {
            cause: format!("HTTP {status}"),
            status: Some(status),
            retry_after,
            words,
        },
        401 | 403 | 404 => FetchError::CredentialsRejected {
            status,
            oauth_error,
            words,
        },
        400..=499 => match oauth_error.as_deref() {
            Some("invalid_grant" | "invalid_client" | "unauthorized_client" | "access_denied") => {
                FetchError::CredentialsRejected {
                    status,
                    oauth_error,
                    words,
                }
            }
            _ => FetchError::RequestRejected {
                status,
                oauth_error,
                words,
            },
        },
        _ => FetchError::InvalidResponse {
            status,
            problem: format!("unexpected HTTP status {status}"),
            words,
        },
    }
}

/// The provider's own explanation: a description field if there is one, else the body text.
fn provider_words(json: Option<&Value>, text: &str, scrubber: &Scrubber<'_>) -> String {
    if let Some(j) = json {
        for key in [
            "error_description",
            "message",
            "error_message",
            "detail",
            "error",
        ] {
            if let Some(s) = j.get(key).and_then(Value::as_str) {
                return scrubber.excerpt(s);
            }
        }
    }
    scrubber.excerpt(&visible_text(text))
}

/// For HTML pages, the title says more than the markup.
fn visible_text(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>"))
        && start + 7 <= end
    {
        return format!("HTML page titled \"{}\"", &text[start + 7..end].trim());
    }
    text.to_string()
}

fn describe_non_json(content_type: Option<&str>, text: &str, scrubber: &Scrubber) -> String {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return "empty body".into();
    }
    let Some(ct) = content_type else {
        return "no content-type".into();
    };
    // The header is the endpoint's to fill: quoted only when it looks like a media type, and
    // scrubbed even then (a hostile endpoint can echo a secret there too).
    let media_type = ct.split(';').next().unwrap_or(ct).trim();
    let plausible = !media_type.is_empty()
        && media_type.len() <= 100
        && media_type.contains('/')
        && media_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-/".contains(c));
    if plausible {
        format!("content-type {}", scrubber.scrub(media_type))
    } else {
        "an unusual content-type".into()
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = Timestamp::try_from(httpdate::parse_http_date(value).ok()?).ok()?;
    Some(Duration::from_secs(
        at.duration_since(now).as_secs().max(0) as u64
    ))
}

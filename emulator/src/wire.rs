//! Request parsing and response building shared by the provider dialects.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

/// A token request, fully read, as the provider dialects see it.
pub(crate) struct TokenRequest {
    pub host: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TokenRequest {
    pub fn new(headers: HeaderMap, uri: &Uri, body: Bytes) -> Self {
        TokenRequest {
            host: host(&headers, uri),
            headers,
            body,
        }
    }

    /// Whether the media type (parameters such as `charset` ignored) is `expected`.
    pub fn has_content_type(&self, expected: &str) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
    }

    /// The body as a form, when the content type says so (RFC 6749 §4 requires it);
    /// otherwise a 400 `invalid_request`.
    pub fn form(&self) -> Result<Form, Response> {
        if !self.has_content_type("application/x-www-form-urlencoded") {
            return Err(invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        Form::parse(&self.body).map_err(|e| invalid_request(&e))
    }

    /// Credentials of an `Authorization: Basic` header.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some((id.to_owned(), secret.to_owned()))
    }
}

/// The request's authority: the Host header, else the URI's (HTTP/2 style), lowercased.
pub(crate) fn host(headers: &HeaderMap, uri: &Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Decoded form parameters; a parameter sent twice is an error (RFC 6749 §3.1).
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, String> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("Parameter {name} is included more than once"));
            }
        }
        Ok(Form(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that must be present and non-empty, else a 400 `invalid_request`.
    pub fn require(&self, name: &str) -> Result<&str, Response> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid_request(&format!("Missing required parameter: {name}")))
    }
}

/// A JSON response with the caching headers RFC 6749 §5.1 asks of token responses.
pub(crate) fn json(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An OAuth 2.0 error body (RFC 6749 §5.2).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// 400 `invalid_request`: a malformed request (wrong content type, missing parameter).
pub(crate) fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// 400 `unsupported_grant_type`.
pub(crate) fn unsupported_grant_type(grant: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        &format!("Unsupported grant type: {grant}"),
    )
}

/// 400 `invalid_grant`: a code, refresh token or user credentials that are not acceptable.
pub(crate) fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// A `text/plain` body (Carrental's errors have no schema).
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The 429 every provider answers when its rate limit or a fault says so.
pub(crate) fn too_many_requests(retry_after_secs: u64, limit: Option<u32>) -> Response {
    let description = match limit {
        Some(n) => format!("Too many token requests: at most {n} per second"),
        None => "Too many token requests".to_owned(),
    };
    let mut resp = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        &description,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_rejects_duplicates_and_requires_values() {
        let f = Form::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(f.get("c"), Some("x y"));
        assert!(f.require("b").is_err());
        assert!(f.require("z").is_err());
        assert!(Form::parse(b"a=1&a=2").is_err());
    }
}

//! `GET /{provider}/api/whoami`: a protected resource that accepts a provider's currently
//! valid bearer token, so demos and end-to-end tests can prove a rotated token works.

use std::sync::Arc;

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

use crate::provider::Provider;
use crate::providers::{self, rently};
use crate::state::Shared;
use crate::wire;

pub(crate) async fn whoami(
    p: Provider,
    shared: Arc<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let host = wire::host(&headers, &uri);
    let token = wire::bearer(&headers);
    let identity = token
        .and_then(|t| providers::validate(p, &shared.lock(), t, Some(&host), Timestamp::now()));
    match identity {
        Some(who) => (
            StatusCode::OK,
            axum::Json(json!({
                "provider": p,
                "subject": who.subject,
                "expiresAt": who.expires_at.to_string(),
            })),
        )
            .into_response(),
        None => {
            let scheme = if shared.tls { "https" } else { "http" };
            let challenge = match (p, token) {
                (Provider::Rently, _) => rently::challenge(scheme, &host),
                // RFC 6750 §3: no error code when the request carried no token at all.
                (_, None) => format!("Bearer realm=\"{p}\""),
                (_, Some(_)) => format!(
                    "Bearer realm=\"{p}\", error=\"invalid_token\", error_description=\"The access token is invalid or expired\""
                ),
            };
            let mut resp = wire::oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The access token is missing, invalid or expired",
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}

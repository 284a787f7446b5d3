//! Carrental API: `POST /authtoken` with JSON `{"userName","password"}`, answering a JWT, a
//! string `expiresIn` and RFC 9110 (HTTP-date) `issued`/`expires`. Errors are plain text.

use axum::http::StatusCode;
use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimePrinter;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Outcome;
use crate::jwt;
use crate::provider::Provider;
use crate::state::{AccountCheck, AccountState, Inner};
use crate::tokens::{Issued, expiry};
use crate::wire::{self, TokenRequest};

#[derive(Deserialize)]
struct Login {
    #[serde(rename = "userName")]
    user_name: String,
    password: String,
}

pub(crate) fn token(inner: &mut Inner, req: &TokenRequest, now: Timestamp) -> Outcome {
    // The document's only wording for a malformed request is 400 "Invalid grant type".
    let bad_request = || wire::text(StatusCode::BAD_REQUEST, "Invalid grant type");
    if !req.has_content_type("application/json") {
        return Err(bad_request());
    }
    let login: Login = serde_json::from_slice(&req.body).map_err(|_| bad_request())?;
    if login.user_name.is_empty() || login.password.is_empty() {
        return Err(bad_request());
    }
    let state = inner.provider(Provider::Carrental);
    let denied = match state.check_account(&login.user_name, &login.password) {
        AccountCheck::Ok => None,
        AccountCheck::Unknown => Some((
            StatusCode::NOT_FOUND,
            format!("No user found with username: {}", login.user_name),
        )),
        AccountCheck::WrongSecret | AccountCheck::Disabled(AccountState::Expired) => Some((
            StatusCode::UNAUTHORIZED,
            "Authentication Failed or Account validity Expired".to_owned(),
        )),
        AccountCheck::Disabled(_) => Some((
            StatusCode::FORBIDDEN,
            "Forbidden - Access denied".to_owned(),
        )),
    };
    if let Some((status, message)) = denied {
        return Err(wire::text(status, message));
    }
    let lifetime = state.lifetime_secs;
    let token = jwt::issue(
        &inner.jwt_key,
        Provider::Carrental,
        &login.user_name,
        lifetime,
        now,
        Map::new(),
    );
    Ok(wire::json(StatusCode::OK, body(&token, lifetime, now)))
}

pub(crate) fn body(token: &str, lifetime_secs: u64, now: Timestamp) -> Value {
    json!({
        "type": "Bearer",
        "token": token,
        "expiresIn": lifetime_secs.to_string(),
        "issued": http_date(now),
        "expires": http_date(expiry(now, lifetime_secs)),
    })
}

/// RFC 9110 IMF-fixdate, e.g. `Thu, 26 Nov 2026 11:00:00 GMT` (also valid RFC 2822).
pub(crate) fn http_date(t: Timestamp) -> String {
    DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&t)
        .unwrap_or_else(|_| t.to_string())
}

pub(crate) fn validate(inner: &Inner, token: &str, now: Timestamp) -> Option<Issued> {
    jwt::validate(&inner.jwt_key, Provider::Carrental, token, now).map(|(issued, _)| issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_http_dates() {
        let t = Timestamp::from_second(1_795_690_800).unwrap();
        assert_eq!(http_date(t), "Thu, 26 Nov 2026 11:00:00 GMT");
    }
}

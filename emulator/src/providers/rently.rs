//! Rently: `POST /auth/token`, form `grant_type=client_credentials&client_id&client_secret`,
//! answering a tenant-bound JWT with a numeric `expires_in`.

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::Outcome;
use crate::jwt;
use crate::provider::Provider;
use crate::state::{AccountCheck, Inner};
use crate::tokens::Issued;
use crate::wire::{self, TokenRequest};

pub(crate) fn token(inner: &mut Inner, req: &TokenRequest, now: Timestamp) -> Outcome {
    let form = req.form()?;
    let grant = form.require("grant_type")?;
    if grant != "client_credentials" {
        return Err(wire::unsupported_grant_type(grant));
    }
    let id = form.require("client_id")?;
    let secret = form.require("client_secret")?;
    let state = inner.provider(Provider::Rently);
    if state.check_account(id, secret) != AccountCheck::Ok {
        return Err(wire::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "The client credentials are invalid",
        ));
    }
    let lifetime = state.lifetime_secs;
    // The host names the tenant; the token carries it so other tenants reject it.
    let tenant = Map::from_iter([("tenant".to_owned(), Value::from(req.host.clone()))]);
    let token = jwt::issue(&inner.jwt_key, Provider::Rently, id, lifetime, now, tenant);
    Ok(wire::json(StatusCode::OK, body(&token, lifetime)))
}

pub(crate) fn body(token: &str, lifetime_secs: u64) -> Value {
    json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime_secs})
}

pub(crate) fn validate(
    inner: &Inner,
    token: &str,
    host: Option<&str>,
    now: Timestamp,
) -> Option<Issued> {
    let (issued, claims) = jwt::validate(&inner.jwt_key, Provider::Rently, token, now)?;
    let tenant = claims.get("tenant")?.as_str()?;
    host.is_none_or(|h| h.eq_ignore_ascii_case(tenant))
        .then_some(issued)
}

/// Rently's documented 401 challenge, pointing at the tenant's token endpoint.
pub(crate) fn challenge(scheme: &str, host: &str) -> String {
    format!(
        "Bearer authorization_uri={scheme}://{host}{}, resource_id={scheme}://{host}/rently/api",
        Provider::Rently.token_path()
    )
}

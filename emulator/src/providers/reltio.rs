//! Reltio: `POST /oauth/token` with HTTP Basic client authentication and a form body;
//! `password` and `refresh_token` grants. The refresh token is never rotated. Without
//! "Multi Token Support" a user with an unexpired token gets that same token back.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::Outcome;
use crate::fixtures as fx;
use crate::provider::Provider;
use crate::state::{AccountCheck, AccountState, Inner};
use crate::tokens::opaque;
use crate::wire::{self, TokenRequest};

/// The user's latest token pair, handed out again while multi-token support is off.
struct Current {
    access: String,
    refresh: String,
}

pub(crate) struct Store {
    /// Basic-auth clients: id → secret.
    pub clients: HashMap<String, String>,
    pub multi_token: bool,
    /// Whether a refresh response carries the (unchanged) refresh token again.
    pub refresh_echo: bool,
    /// Live refresh token → user.
    refresh_tokens: HashMap<String, String>,
    current: HashMap<String, Current>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            clients: HashMap::from([(
                fx::RELTIO_CLIENT_ID.to_owned(),
                fx::RELTIO_CLIENT_SECRET.to_owned(),
            )]),
            multi_token: false,
            refresh_echo: false,
            refresh_tokens: HashMap::new(),
            current: HashMap::new(),
        }
    }
}

impl Store {
    pub fn revoke_refresh_tokens(&mut self) {
        self.refresh_tokens.clear();
        self.current.clear();
    }
}

pub(crate) fn token(inner: &mut Inner, req: &TokenRequest, now: Timestamp) -> Outcome {
    // Client authentication comes first, as in Spring Security OAuth's filter chain.
    let client_ok = req
        .basic_auth()
        .is_some_and(|(id, secret)| inner.reltio.clients.get(&id) == Some(&secret));
    if !client_ok {
        return Err(unauthorized());
    }
    let form = req.form()?;
    match form.require("grant_type")? {
        "password" => {
            let user = form.require("username")?;
            let password = form.require("password")?;
            if inner
                .provider(Provider::Reltio)
                .check_account(user, password)
                != AccountCheck::Ok
            {
                return Err(wire::invalid_grant("Bad credentials"));
            }
            Ok(grant(inner, user, None, now))
        }
        "refresh_token" => {
            let presented = form.require("refresh_token")?;
            let Some(user) = inner.reltio.refresh_tokens.get(presented).cloned() else {
                return Err(wire::invalid_grant(&format!(
                    "Invalid refresh token: {presented}"
                )));
            };
            let active = inner
                .provider(Provider::Reltio)
                .accounts
                .get(&user)
                .is_some_and(|a| a.state == AccountState::Active);
            if !active {
                return Err(wire::invalid_grant("User account is locked"));
            }
            Ok(grant(inner, &user, Some(presented), now))
        }
        other => Err(wire::unsupported_grant_type(other)),
    }
}

/// Issues (or, without multi-token support, re-issues) a token for `user`. `refreshing` is
/// the refresh token presented, if this is a refresh grant.
fn grant(inner: &mut Inner, user: &str, refreshing: Option<&str>, now: Timestamp) -> Response {
    // A password grant always returns the refresh token; a refresh only with the echo knob.
    let echo = refreshing.is_none() || inner.reltio.refresh_echo;
    if !inner.reltio.multi_token
        && let Some(cur) = inner.reltio.current.get(user)
        && let Some(issued) = inner
            .provider(Provider::Reltio)
            .access_tokens
            .valid(&cur.access, now)
        && issued.remaining_secs(now) > 0
    {
        let refresh = refreshing.unwrap_or(&cur.refresh);
        let remaining = issued.remaining_secs(now);
        return wire::json(
            StatusCode::OK,
            body(&cur.access, echo.then_some(refresh), remaining),
        );
    }
    let state = inner.provider_mut(Provider::Reltio);
    let lifetime = state.lifetime_secs;
    let access = state.access_tokens.issue(user, lifetime, now);
    let refresh = match refreshing {
        Some(r) => r.to_owned(),
        None => {
            let r = opaque();
            inner
                .reltio
                .refresh_tokens
                .insert(r.clone(), user.to_owned());
            r
        }
    };
    let resp = wire::json(
        StatusCode::OK,
        body(&access, echo.then_some(&refresh), lifetime),
    );
    inner
        .reltio
        .current
        .insert(user.to_owned(), Current { access, refresh });
    resp
}

pub(crate) fn body(access: &str, refresh: Option<&str>, lifetime_secs: u64) -> Value {
    let mut body = json!({
        "access_token": access,
        "token_type": "bearer",
        // Documented as a String, so it is one here.
        "expires_in": lifetime_secs.to_string(),
        "scope": fx::RELTIO_SCOPES,
    });
    if let (Some(r), Some(m)) = (refresh, body.as_object_mut()) {
        m.insert("refresh_token".to_owned(), Value::from(r));
    }
    body
}

fn unauthorized() -> Response {
    let mut resp = wire::oauth_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Full authentication is required: bad or missing client credentials",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"oauth2/client\""),
    );
    resp
}

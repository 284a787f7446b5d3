//! Reltio: `POST /oauth/token` with HTTP Basic client authentication and a form body;
//! `password` and `refresh_token` grants. The refresh token is not rotated unless the
//! rotation knob says so (then every refresh replaces it, and a password grant starts a new
//! chain). Without "Multi Token Support" a user with an unexpired token gets that same token
//! back.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::Outcome;
use crate::chains::{ChainId, Found, RefreshTokens};
use crate::fixtures as fx;
use crate::provider::Provider;
use crate::state::{AccountCheck, AccountState, Inner};
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
    /// Whether every refresh replaces the refresh token (not Reltio's documented behaviour;
    /// for chain tests). The grace period applies only then.
    pub rotating_refresh: bool,
    /// Refresh tokens (subject: the user).
    refresh_tokens: RefreshTokens,
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
            rotating_refresh: false,
            refresh_tokens: RefreshTokens::default(),
            current: HashMap::new(),
        }
    }
}

impl Store {
    pub fn revoke_refresh_tokens(&mut self) {
        self.refresh_tokens.clear();
        self.current.clear();
    }

    pub fn chain_of(&self, refresh_token: &str) -> Option<ChainId> {
        self.refresh_tokens.chain_of(refresh_token)
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
            let invalid = || wire::invalid_grant(&format!("Invalid refresh token: {presented}"));
            // Without rotation nothing is ever replaced, so the grace has nothing to cover.
            let grace = if inner.reltio.rotating_refresh {
                inner.provider(Provider::Reltio).refresh_grace
            } else {
                Duration::ZERO
            };
            let Some(found) = inner.reltio.refresh_tokens.lookup(presented, grace, now) else {
                return Err(invalid());
            };
            let stale_in_chain = inner.reltio.refresh_tokens.note_presented(&found);
            found.count(
                &mut inner.provider_mut(Provider::Reltio).counters,
                stale_in_chain,
            );
            if !found.accepted() {
                return Err(invalid());
            }
            let active = inner
                .provider(Provider::Reltio)
                .accounts
                .get(&found.subject)
                .is_some_and(|a| a.state == AccountState::Active);
            if !active {
                return Err(wire::invalid_grant("User account is locked"));
            }
            let user = found.subject.clone();
            Ok(grant(inner, &user, Some((presented, &found)), now))
        }
        other => Err(wire::unsupported_grant_type(other)),
    }
}

/// Issues (or, without multi-token support, re-issues) a token for `user`. `refreshing` is
/// the refresh token presented and what the store knows of it, if this is a refresh grant.
fn grant(
    inner: &mut Inner,
    user: &str,
    refreshing: Option<(&str, &Found)>,
    now: Timestamp,
) -> Response {
    let rotating = inner.reltio.rotating_refresh;
    // A password grant always returns the refresh token; a refresh only with the echo knob,
    // or when it rotated (a new refresh token the client never sees would end the chain).
    let echo = refreshing.is_none() || rotating || inner.reltio.refresh_echo;
    // The user's live token, handed out again while multi-token support is off.
    let reissue = if inner.reltio.multi_token {
        None
    } else {
        inner.reltio.current.get(user).and_then(|cur| {
            let issued = inner
                .provider(Provider::Reltio)
                .access_tokens
                .valid(&cur.access, now)?;
            let remaining = issued.remaining_secs(now);
            (remaining > 0).then(|| (cur.access.clone(), cur.refresh.clone(), remaining))
        })
    };
    let refresh = match (refreshing, &reissue) {
        (Some((presented, found)), _) if rotating => {
            inner.reltio.refresh_tokens.successor(presented, found, now)
        }
        (Some((presented, _)), _) => presented.to_owned(),
        // As documented: the live token comes back with the refresh token it came with.
        (None, Some((_, cur_refresh, _))) if !rotating => cur_refresh.clone(),
        (None, _) => {
            inner.provider_mut(Provider::Reltio).counters.chains_started += 1;
            inner.reltio.refresh_tokens.start_chain(user)
        }
    };
    let (access, expires_in, remember) = match reissue {
        // Re-issuing leaves the user's current pair alone unless the refresh token changed.
        Some((access, _, remaining)) => (access, remaining, rotating),
        None => {
            let state = inner.provider_mut(Provider::Reltio);
            let lifetime = state.lifetime_secs;
            (
                state.access_tokens.issue(user, lifetime, now),
                lifetime,
                true,
            )
        }
    };
    let resp = wire::json(
        StatusCode::OK,
        body(&access, echo.then_some(&refresh), expires_in),
    );
    if remember {
        inner
            .reltio
            .current
            .insert(user.to_owned(), Current { access, refresh });
    }
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

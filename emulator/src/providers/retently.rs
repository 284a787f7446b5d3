//! Retently: `POST /api/oauth/token`, form with client id/secret in the body;
//! `authorization_code` (single-use code bound to its `redirect_uri`; starts a refresh-token
//! chain) and `refresh_token` (rotating: every refresh returns a new refresh token and the
//! old one dies, at once or after the configured grace period).

use std::collections::HashMap;

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::Outcome;
use crate::chains::{ChainId, RefreshTokens};
use crate::fixtures::RETENTLY_CODE_TTL_SECS;
use crate::provider::Provider;
use crate::state::{AccountCheck, Inner};
use crate::tokens::{expiry, opaque};
use crate::wire::{self, TokenRequest};

struct CodeGrant {
    redirect_uri: String,
    expires_at: Timestamp,
}

/// Outstanding authorization codes and refresh tokens (subject: the client id).
#[derive(Default)]
pub(crate) struct Store {
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: RefreshTokens,
}

impl Store {
    /// What the authorize page would have appended to `redirect_uri` after consent.
    pub fn mint_code(&mut self, redirect_uri: &str, now: Timestamp) -> String {
        self.codes.retain(|_, c| now < c.expires_at);
        let code = opaque();
        self.codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: redirect_uri.to_owned(),
                expires_at: expiry(now, RETENTLY_CODE_TTL_SECS),
            },
        );
        code
    }

    pub fn revoke_refresh_tokens(&mut self) {
        self.refresh_tokens.clear();
    }

    pub fn chain_of(&self, refresh_token: &str) -> Option<ChainId> {
        self.refresh_tokens.chain_of(refresh_token)
    }
}

pub(crate) fn token(inner: &mut Inner, req: &TokenRequest, now: Timestamp) -> Outcome {
    let form = req.form()?;
    let grant = form.require("grant_type")?;
    let client_id = form.require("client_id")?;
    let secret = form.require("client_secret")?;
    if inner
        .provider(Provider::Retently)
        .check_account(client_id, secret)
        != AccountCheck::Ok
    {
        return Err(wire::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Client authentication failed",
        ));
    }
    let refresh = match grant {
        "authorization_code" => {
            let store = &mut inner.retently;
            let redirect_uri = form.require("redirect_uri")?;
            let code = form.require("code")?;
            match store.codes.get(code) {
                Some(c) if now < c.expires_at && c.redirect_uri == redirect_uri => {}
                Some(c) if now < c.expires_at => {
                    return Err(wire::invalid_grant(
                        "The redirect_uri does not match the one the code was issued for",
                    ));
                }
                _ => {
                    return Err(wire::invalid_grant(
                        "The authorization code is invalid, expired or already used",
                    ));
                }
            }
            // Consumed only by a successful exchange, like league/oauth2-server does.
            store.codes.remove(code);
            let refresh = store.refresh_tokens.start_chain(client_id);
            inner
                .provider_mut(Provider::Retently)
                .counters
                .chains_started += 1;
            refresh
        }
        "refresh_token" => {
            // Required as documented, but not compared: the document's own examples differ.
            form.require("redirect_uri")?;
            let presented = form.require("refresh_token")?;
            let grace = inner.provider(Provider::Retently).refresh_grace;
            // Another client's token is no token at all for this one.
            let found = inner
                .retently
                .refresh_tokens
                .lookup(presented, grace, now)
                .filter(|f| f.subject == client_id);
            let Some(found) = found else {
                return Err(wire::invalid_grant("The refresh token is invalid"));
            };
            found.count(&mut inner.provider_mut(Provider::Retently).counters);
            if !found.accepted() {
                return Err(wire::invalid_grant("The refresh token is invalid"));
            }
            inner
                .retently
                .refresh_tokens
                .successor(presented, &found, now)
        }
        other => return Err(wire::unsupported_grant_type(other)),
    };
    let state = inner.provider_mut(Provider::Retently);
    let lifetime = state.lifetime_secs;
    let access = state.access_tokens.issue(client_id, lifetime, now);
    Ok(wire::json(
        StatusCode::OK,
        body(&access, &refresh, lifetime),
    ))
}

pub(crate) fn body(access: &str, refresh: &str, lifetime_secs: u64) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "expires_in": lifetime_secs})
}

//! Retently: `POST /api/oauth/token`, form with client id/secret in the body;
//! `authorization_code` (single-use code bound to its `redirect_uri`; starts a refresh-token
//! chain) and `refresh_token` (rotating: every refresh returns a new refresh token and the
//! old one dies, at once or after the configured grace period).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
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
    /// The PKCE S256 challenge the authorization request carried (RFC 7636), if any.
    code_challenge: Option<String>,
}

/// Outstanding authorization codes and refresh tokens (subject: the client id).
#[derive(Default)]
pub(crate) struct Store {
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: RefreshTokens,
}

impl Store {
    /// What the authorize page would have appended to `redirect_uri` after consent.
    pub fn mint_code(
        &mut self,
        redirect_uri: &str,
        code_challenge: Option<&str>,
        now: Timestamp,
    ) -> String {
        self.codes.retain(|_, c| now < c.expires_at);
        let code = opaque();
        self.codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: redirect_uri.to_owned(),
                expires_at: expiry(now, RETENTLY_CODE_TTL_SECS),
                code_challenge: code_challenge.map(str::to_owned),
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
                Some(c) if now < c.expires_at && c.redirect_uri == redirect_uri => {
                    if let Some(challenge) = &c.code_challenge {
                        let verifier = form.require("code_verifier")?;
                        if s256(verifier) != *challenge {
                            return Err(wire::invalid_grant(
                                "The code_verifier does not match the code_challenge",
                            ));
                        }
                    }
                }
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
            let stale_in_chain = inner.retently.refresh_tokens.note_presented(&found);
            found.count(
                &mut inner.provider_mut(Provider::Retently).counters,
                stale_in_chain,
            );
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

/// RFC 7636 §4.2: `BASE64URL(SHA256(code_verifier))`.
fn s256(verifier: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// `GET /retently/api/oauth/authorize`: consent is given at once (no login page), and the
/// browser is redirected to `redirect_uri` with a code and the request's `state`, or with an
/// `error` as RFC 6749 §4.1.2.1 describes. An unknown client or a missing `redirect_uri` gets
/// a plain 400 page: nothing may be redirected to an unverified address.
pub(crate) fn authorize(inner: &mut Inner, query: &str, now: Timestamp) -> Response {
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| params.get(k).map(String::as_str);
    let Some(redirect_uri) = get("redirect_uri").filter(|r| !r.is_empty()) else {
        return wire::text(StatusCode::BAD_REQUEST, "redirect_uri is required");
    };
    let known = get("client_id")
        .is_some_and(|id| inner.provider(Provider::Retently).accounts.contains_key(id));
    if !known {
        return wire::text(StatusCode::BAD_REQUEST, "unknown client_id");
    }
    let mut answer = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return wire::text(StatusCode::BAD_REQUEST, "redirect_uri is not a URL"),
    };
    let challenge = get("code_challenge");
    let result = if get("response_type") != Some("code") {
        Err("unsupported_response_type")
    } else if challenge.is_some() && get("code_challenge_method") != Some("S256") {
        Err("invalid_request")
    } else {
        Ok(inner.retently.mint_code(redirect_uri, challenge, now))
    };
    {
        let mut q = answer.query_pairs_mut();
        match &result {
            Ok(code) => q.append_pair("code", code),
            Err(error) => q.append_pair("error", error),
        };
        if let Some(state) = get("state") {
            q.append_pair("state", state);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(answer.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub(crate) fn body(access: &str, refresh: &str, lifetime_secs: u64) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "expires_in": lifetime_secs})
}

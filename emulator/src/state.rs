//! The emulator's mutable state: per-provider knobs, accounts, issued tokens and counters.
//! One mutex guards it all; every critical section is short and never awaits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chains::ChainId;
use crate::faults::Fault;
use crate::fixtures as fx;
use crate::provider::Provider;
use crate::providers::{reltio, retently};
use crate::ratelimit::SlidingWindow;
use crate::tokens::TokenStore;

/// Whether an account may obtain tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    #[default]
    Active,
    /// Carrental answers 401 "Account validity Expired"; others reject the credentials.
    Expired,
    /// Carrental answers 403 "Forbidden - Access denied"; others reject the credentials.
    Forbidden,
}

/// Token-endpoint counters of one provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// Missing fields read as zero, so JSON from an emulator without the chain counters parses.
#[serde(default)]
pub struct Counters {
    /// Every request that reached the token endpoint (faulted and rejected ones included).
    pub requests: u64,
    /// Successful responses that carried a token.
    pub issued: u64,
    /// Responses with status 429, from the rate limiter or from an injected fault.
    pub rate_limited: u64,
    /// Refresh grants presenting a refresh token that had already been replaced, whether
    /// the grace period still covered it or not.
    pub stale_refresh_presented: u64,
    /// Those of them refused because the grace period had passed (or was zero): the
    /// client's chain is broken.
    pub stale_refresh_refused: u64,
    /// The most replaced refresh tokens presented in any one chain.
    pub most_stale_in_one_chain: u64,
    /// Refresh grants that arrived while another refresh grant of the same chain was in
    /// flight (latency included), counted once per such arrival.
    pub overlapping_refreshes: u64,
    /// Primary grants that started a new chain: Retently authorization-code exchanges,
    /// Reltio password grants that minted a refresh token.
    pub chains_started: u64,
}

/// The last token request as it arrived on the wire; nothing is redacted (test tool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In arrival order; names are lowercase (HTTP/1 names are case-insensitive).
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossy).
    pub body: String,
}

impl RecordedRequest {
    /// The request as it arrived: method, path, query, headers and the (read) body.
    pub(crate) fn capture(parts: &axum::http::request::Parts, body: &[u8]) -> Self {
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's form parameters, decoded, in order (empty when it is not a form).
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub secret: String,
    pub state: AccountState,
}

impl Account {
    fn active(secret: &str) -> Self {
        Account {
            secret: secret.to_owned(),
            state: AccountState::Active,
        }
    }
}

/// Knobs and bookkeeping shared by all providers.
pub(crate) struct ProviderState {
    pub lifetime_secs: u64,
    pub latency: Duration,
    /// Queued faults with how many more requests each one still applies to.
    pub faults: VecDeque<(Fault, u32)>,
    pub rate_limit: Option<u32>,
    pub window: SlidingWindow,
    pub counters: Counters,
    pub last_request: Option<RecordedRequest>,
    /// User name (or client id) → secret and state.
    pub accounts: HashMap<String, Account>,
    /// Opaque access tokens (Retently, Reltio); JWT providers validate statelessly.
    pub access_tokens: TokenStore,
    /// How long a replaced refresh token stays accepted (zero: strict).
    pub refresh_grace: Duration,
    /// Refresh grants in flight per chain (see `inflight.rs`).
    pub in_flight: HashMap<ChainId, u32>,
}

impl ProviderState {
    fn defaults(p: Provider) -> Self {
        let (lifetime_secs, rate_limit, account) = match p {
            Provider::Rently => (
                fx::RENTLY_LIFETIME_SECS,
                None,
                (fx::RENTLY_CLIENT_ID, fx::RENTLY_CLIENT_SECRET),
            ),
            Provider::Carrental => (
                fx::CARRENTAL_LIFETIME_SECS,
                None,
                (fx::CARRENTAL_USERNAME, fx::CARRENTAL_PASSWORD),
            ),
            Provider::Retently => (
                fx::RETENTLY_LIFETIME_SECS,
                None,
                (fx::RETENTLY_CLIENT_ID, fx::RETENTLY_CLIENT_SECRET),
            ),
            Provider::Reltio => (
                fx::RELTIO_LIFETIME_SECS,
                Some(fx::RELTIO_RATE_LIMIT_PER_SECOND),
                (fx::RELTIO_USERNAME, fx::RELTIO_PASSWORD),
            ),
        };
        ProviderState {
            lifetime_secs,
            latency: Duration::ZERO,
            faults: VecDeque::new(),
            rate_limit,
            window: SlidingWindow::default(),
            counters: Counters::default(),
            last_request: None,
            accounts: HashMap::from([(account.0.to_owned(), Account::active(account.1))]),
            access_tokens: TokenStore::default(),
            refresh_grace: Duration::ZERO,
            in_flight: HashMap::new(),
        }
    }

    /// Checks a secret and the account state.
    pub fn check_account(&self, user: &str, secret: &str) -> AccountCheck {
        match self.accounts.get(user) {
            None => AccountCheck::Unknown,
            Some(a) if a.secret != secret => AccountCheck::WrongSecret,
            Some(a) if a.state != AccountState::Active => AccountCheck::Disabled(a.state),
            Some(_) => AccountCheck::Ok,
        }
    }
}

/// Outcome of [`ProviderState::check_account`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccountCheck {
    Ok,
    Unknown,
    WrongSecret,
    Disabled(AccountState),
}

pub(crate) struct Inner {
    providers: [ProviderState; 4],
    /// HMAC key of the emulator's JWTs; a reset draws a new one so old tokens die.
    pub jwt_key: [u8; 32],
    pub retently: retently::Store,
    pub reltio: reltio::Store,
    /// The standards OAuth 2.0 server under `/oauth2`.
    pub oauth2: crate::oauth2::Store,
}

impl Inner {
    pub fn new() -> Self {
        Inner {
            providers: Provider::ALL.map(ProviderState::defaults),
            jwt_key: rand::random(),
            retently: retently::Store::default(),
            reltio: reltio::Store::default(),
            oauth2: crate::oauth2::Store::default(),
        }
    }

    pub fn provider(&self, p: Provider) -> &ProviderState {
        &self.providers[p.index()]
    }

    pub fn provider_mut(&mut self, p: Provider) -> &mut ProviderState {
        &mut self.providers[p.index()]
    }
}

/// State shared by the server and every [`crate::Control`] handle.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Whether the server speaks HTTPS (Rently's `WWW-Authenticate` names the scheme).
    pub tls: bool,
}

impl Shared {
    pub fn new(tls: bool) -> Self {
        Shared {
            inner: Mutex::new(Inner::new()),
            tls,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the emulator for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

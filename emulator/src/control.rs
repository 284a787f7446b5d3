//! The knobs, for in-process tests. The admin API (`admin.rs`) drives the same methods.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::EmulatorError;
use crate::faults::Fault;
use crate::oauth2::clients::{self, RegisteredClient};
use crate::oauth2::{ClientMethod, FederatedClient, OAuth2AccessToken, OAuth2Counters};
use crate::provider::Provider;
use crate::providers;
use crate::state::{Account, AccountState, Counters, Inner, RecordedRequest, Shared};

/// A cheap, cloneable handle on a running emulator's state.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Control { shared }
    }

    /// Lifetime of tokens issued from now on (`expires_in`, JWT `exp`, expiry dates).
    pub fn set_lifetime(&self, p: Provider, secs: u64) {
        self.shared.lock().provider_mut(p).lifetime_secs = secs;
    }

    /// Delay added before every token-endpoint answer (faults and errors included).
    pub fn set_latency(&self, p: Provider, d: Duration) {
        self.shared.lock().provider_mut(p).latency = d;
    }

    /// Replays `fault` for the next `times` token requests, after faults already queued.
    pub fn inject(&self, p: Provider, fault: Fault, times: u32) {
        if times > 0 {
            self.shared
                .lock()
                .provider_mut(p)
                .faults
                .push_back((fault, times));
        }
    }

    pub fn clear_faults(&self, p: Provider) {
        self.shared.lock().provider_mut(p).faults.clear();
    }

    /// Token requests admitted per sliding second; `None` removes the limit.
    pub fn set_rate_limit(&self, p: Provider, per_second: Option<u32>) {
        let mut inner = self.shared.lock();
        let state = inner.provider_mut(p);
        state.rate_limit = per_second;
        state.window.clear();
    }

    /// Strict rate limiting: rejected requests count against the window too.
    pub fn set_strict_rate_limit(&self, p: Provider, strict: bool) {
        let mut inner = self.shared.lock();
        let state = inner.provider_mut(p);
        state.window.clear();
        state.window.strict = strict;
    }

    /// Reltio "Multi Token Support": on, every grant mints a new access token; off
    /// (default), a user with an unexpired token gets it back with its remaining lifetime.
    pub fn set_multi_token(&self, enabled: bool) {
        self.shared.lock().reltio.multi_token = enabled;
    }

    /// Reltio: whether refresh responses repeat the (unchanged) refresh token (default off).
    pub fn set_refresh_echo(&self, enabled: bool) {
        self.shared.lock().reltio.refresh_echo = enabled;
    }

    /// Reltio: whether every refresh replaces the refresh token (default off: Reltio's refresh
    /// token never changes). On, refresh responses always carry the new token, the presented
    /// one dies (after the grace period, see [`Control::set_refresh_grace`]) and every
    /// password grant starts a new chain.
    pub fn set_rotating_refresh(&self, enabled: bool) {
        self.shared.lock().reltio.rotating_refresh = enabled;
    }

    /// How long a replaced refresh token stays accepted, like Okta's rotation grace period or
    /// Auth0's reuse interval (default zero: refused at once). Presenting it in time issues a
    /// fresh successor; afterwards it gets the provider's usual `invalid_grant`. Applies to
    /// Retently, and to Reltio while rotation is on; no-op for the others.
    pub fn set_refresh_grace(&self, p: Provider, grace: Duration) {
        self.shared.lock().provider_mut(p).refresh_grace = grace;
    }

    /// Sets (or creates) an account's secret. For Reltio an existing Basic client id
    /// changes the client secret; any other name is an end user.
    pub fn set_password(&self, p: Provider, user_or_client_id: &str, new_secret: &str) {
        let mut inner = self.shared.lock();
        if p == Provider::Reltio
            && let Some(secret) = inner.reltio.clients.get_mut(user_or_client_id)
        {
            *secret = new_secret.to_owned();
            return;
        }
        inner
            .provider_mut(p)
            .accounts
            .entry(user_or_client_id.to_owned())
            .and_modify(|a| a.secret = new_secret.to_owned())
            .or_insert_with(|| Account {
                secret: new_secret.to_owned(),
                state: AccountState::Active,
            });
    }

    /// Marks an existing account active, expired or forbidden (no-op for unknown users).
    pub fn set_account_state(&self, p: Provider, user: &str, state: AccountState) {
        if let Some(a) = self.shared.lock().provider_mut(p).accounts.get_mut(user) {
            a.state = state;
        }
    }

    /// A one-time Retently authorization code for `redirect_uri` (valid 10 minutes), as
    /// the authorize page would have returned it.
    pub fn mint_authorization_code(&self, redirect_uri: &str) -> String {
        self.shared
            .lock()
            .retently
            .mint_code(redirect_uri, None, Timestamp::now())
    }

    /// Invalidates every refresh token of `p` (the next refresh gets `invalid_grant`).
    pub fn revoke_refresh_tokens(&self, p: Provider) {
        let mut inner = self.shared.lock();
        match p {
            Provider::Retently => inner.retently.revoke_refresh_tokens(),
            Provider::Reltio => inner.reltio.revoke_refresh_tokens(),
            Provider::Rently | Provider::Carrental => {}
        }
    }

    pub fn counters(&self, p: Provider) -> Counters {
        self.shared.lock().provider(p).counters
    }

    /// Refresh grants of `p` in flight right now, over all chains (the latency included),
    /// for tests to await a request's arrival or the end of every one.
    pub fn refreshes_in_flight(&self, p: Provider) -> u32 {
        self.shared.lock().provider(p).in_flight.values().sum()
    }

    /// The last request that reached `p`'s token endpoint.
    pub fn last_request(&self, p: Provider) -> Option<RecordedRequest> {
        self.shared.lock().provider(p).last_request.clone()
    }

    /// Whether `token` is a currently valid access token of `p` (Rently: for any tenant).
    pub fn is_valid_access_token(&self, p: Provider, token: &str) -> bool {
        providers::validate(p, &self.shared.lock(), token, None, Timestamp::now()).is_some()
    }

    /// Registers (or replaces) a client of the `/oauth2` server and how it authenticates.
    /// Fails when the key or certificate PEM cannot be read or does not fit the algorithm.
    pub fn register_oauth_client(
        &self,
        client_id: &str,
        method: ClientMethod,
    ) -> Result<(), EmulatorError> {
        let client = RegisteredClient::from_method(&method)?;
        self.shared.lock().oauth2.register_client(client_id, client);
        Ok(())
    }

    /// Registers (or replaces) an issuer for the JWT-bearer grant (e.g. a service account's
    /// email) with its RSA public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`); its
    /// assertions must be RS256.
    pub fn register_jwt_bearer_issuer(
        &self,
        issuer: &str,
        public_key_pem: String,
    ) -> Result<(), EmulatorError> {
        let key = clients::parse_rsa_public_key_pem(&public_key_pem)?;
        self.shared.lock().oauth2.register_issuer(issuer, key);
        Ok(())
    }

    /// Trusts an issuer of workload tokens (a Kubernetes cluster's service-account issuer)
    /// with its JWKS document, as fetched from its `jwks_uri`.
    pub fn register_workload_issuer(&self, issuer: &str, jwks: &str) -> Result<(), EmulatorError> {
        self.shared
            .lock()
            .oauth2
            .federation
            .register_issuer(issuer, jwks)
    }

    /// Registers (or replaces) a client that authenticates with a workload token: as the
    /// client assertion, the RFC 8693 subject_token or the RFC 7523 assertion.
    pub fn register_federated_client(&self, client_id: &str, client: FederatedClient) {
        self.shared
            .lock()
            .oauth2
            .federation
            .register_client(client_id, client);
    }

    pub fn oauth2_counters(&self) -> OAuth2Counters {
        self.shared.lock().oauth2.counters
    }

    /// The last request that reached `POST /oauth2/token` (see [`RecordedRequest::form`]).
    pub fn oauth2_last_request(&self) -> Option<RecordedRequest> {
        self.shared.lock().oauth2.last_request.clone()
    }

    /// Whether `token` is a currently valid `/oauth2` access token (certificate binding is
    /// not checked here; `GET /oauth2/whoami` checks it).
    pub fn is_valid_oauth2_access_token(&self, token: &str) -> bool {
        self.oauth2_access_token(token).is_some()
    }

    /// What the server recorded for a currently valid `/oauth2` access token: client, grant,
    /// scope, `sub`, certificate thumbprint (`cnf.x5t#S256`) and expiry.
    pub fn oauth2_access_token(&self, token: &str) -> Option<OAuth2AccessToken> {
        self.shared
            .lock()
            .oauth2
            .valid_token(token, Timestamp::now())
            .cloned()
    }

    /// `expires_in` of `/oauth2` tokens issued from now on, for both grants (defaults:
    /// 3600 for client credentials, 3599 for the JWT-bearer grant, as Google answers).
    pub fn set_oauth2_lifetime(&self, secs: u64) {
        self.shared.lock().oauth2.set_lifetime(secs);
    }

    /// How far in the future a client assertion's `exp` may be (default 600 seconds).
    pub fn set_oauth2_assertion_max_lifetime(&self, secs: u64) {
        self.shared.lock().oauth2.max_assertion_secs = secs;
    }

    /// Delay added before every `/oauth2/token` answer.
    pub fn set_oauth2_latency(&self, d: Duration) {
        self.shared.lock().oauth2.latency = d;
    }

    /// Replays `fault` for the next `times` requests to `/oauth2/token`.
    pub fn oauth2_inject(&self, fault: Fault, times: u32) {
        if times > 0 {
            self.shared.lock().oauth2.faults.push_back((fault, times));
        }
    }

    pub fn oauth2_clear_faults(&self) {
        self.shared.lock().oauth2.faults.clear();
    }

    /// Everything back to defaults: knobs (rotation and grace included), accounts, faults,
    /// counters, codes and tokens (a new JWT key too, so tokens issued before no longer
    /// validate); for `/oauth2` also the registered clients and issuers and the `jti`s seen.
    /// Requests in flight are forgotten; their marks go when they end.
    pub fn reset(&self) {
        *self.shared.lock() = Inner::new();
    }
}

//! A standards OAuth 2.0 authorization server under `/oauth2`, apart from the four seed
//! providers, that verifies client authentication for real:
//!
//! - `POST /oauth2/token`, `grant_type=client_credentials`, the client authenticated by
//!   `private_key_jwt` or `client_secret_jwt` (RFC 7523 §2.2, OpenID Connect Core §9) or by
//!   `self_signed_tls_client_auth` (RFC 8705 §2.2; the access token is then bound to the
//!   certificate, RFC 8705 §3);
//! - `POST /oauth2/token`, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   (RFC 7523 §2.1) as Google's token endpoint answers service accounts;
//! - `GET /oauth2/whoami`, a protected resource that honours certificate binding.
//!
//! Assertions are parsed and verified by hand with ring (`assertion.rs`), independently of
//! any JWT library the operator may use.

pub(crate) mod assertion;
pub(crate) mod clients;
pub(crate) mod federated;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::assertion::{ClaimError, Jws, Policy};
pub use self::clients::{ClientMethod, JwsAlgorithm};
use self::clients::{PublicKey, RegisteredClient, thumbprint};
pub use self::federated::{FederatedClient, GRANT_TYPE_TOKEN_EXCHANGE};
use crate::faults::{self, Fault, FaultReply};
use crate::state::{RecordedRequest, Shared};
use crate::tls::PeerCertificate;
use crate::tokens::{expiry, opaque};
use crate::wire::{self, Form, TokenRequest};

/// The issuer identifier's path: `<base_url>/oauth2` (also accepted as an assertion `aud`).
pub const ISSUER_PATH: &str = "/oauth2";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const WHOAMI_PATH: &str = "/oauth2/whoami";

/// `client_assertion_type` of JWT client authentication (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of the JWT-bearer authorization grant (RFC 7523 §2.1).
pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// `expires_in` of client-credentials tokens unless [`crate::Control::set_oauth2_lifetime`].
pub const DEFAULT_LIFETIME_SECS: u64 = 3_600;
/// `expires_in` of JWT-bearer tokens unless set: Google answers 3599.
pub const JWT_BEARER_LIFETIME_SECS: u64 = 3_599;
/// How far ahead a client assertion's `exp` may be, unless
/// [`crate::Control::set_oauth2_assertion_max_lifetime`].
pub const DEFAULT_ASSERTION_MAX_LIFETIME_SECS: u64 = 600;
/// JWT-bearer assertions: `exp - iat` at most one hour, like Google.
pub const JWT_BEARER_MAX_LIFETIME_SECS: i64 = 3_600;

const MAX_BODY: usize = 1 << 20;

/// Token-endpoint counters of the `/oauth2` server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuth2Counters {
    /// Every request that reached `POST /oauth2/token` (faulted ones included).
    pub requests: u64,
    /// Answers that carried an access token.
    pub issued: u64,
    /// Error answers of the server itself (not injected faults).
    pub rejected: u64,
}

/// What the server knows of an access token it issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2AccessToken {
    /// The authenticated client (`client_credentials`) or the assertion's issuer
    /// (JWT-bearer grant, e.g. a service account's email).
    pub client_id: String,
    /// `client_credentials` or `urn:ietf:params:oauth:grant-type:jwt-bearer`.
    pub grant_type: String,
    /// The `scope` parameter (client credentials) or claim (JWT bearer), when there was one.
    pub scope: Option<String>,
    /// JWT-bearer grant: the assertion's `sub` (the user impersonated), when present.
    pub sub: Option<String>,
    /// `cnf.x5t#S256` of a certificate-bound token (RFC 8705 §3.1): base64url SHA-256 of
    /// the client certificate's DER.
    pub certificate_thumbprint: Option<String>,
    pub expires_at: Timestamp,
}

/// Registrations, issued tokens, replay memory and knobs of the `/oauth2` server.
pub(crate) struct Store {
    clients: HashMap<String, RegisteredClient>,
    issuers: HashMap<String, PublicKey>,
    /// Workload identity: issuers of ServiceAccount tokens and the clients they stand for.
    pub federation: federated::Federation,
    /// (issuer, jti) → the assertion's `exp`: refused again until then.
    seen_jtis: HashMap<(String, String), i64>,
    tokens: HashMap<String, OAuth2AccessToken>,
    lifetime_override: Option<u64>,
    pub max_assertion_secs: u64,
    pub latency: Duration,
    pub faults: VecDeque<(Fault, u32)>,
    pub counters: OAuth2Counters,
    pub last_request: Option<RecordedRequest>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            clients: HashMap::new(),
            issuers: HashMap::new(),
            federation: federated::Federation::default(),
            seen_jtis: HashMap::new(),
            tokens: HashMap::new(),
            lifetime_override: None,
            max_assertion_secs: DEFAULT_ASSERTION_MAX_LIFETIME_SECS,
            latency: Duration::ZERO,
            faults: VecDeque::new(),
            counters: OAuth2Counters::default(),
            last_request: None,
        }
    }
}

impl Store {
    pub fn register_client(&mut self, client_id: &str, client: RegisteredClient) {
        self.clients.insert(client_id.to_owned(), client);
    }

    pub fn register_issuer(&mut self, issuer: &str, key: PublicKey) {
        self.issuers.insert(issuer.to_owned(), key);
    }

    pub fn set_lifetime(&mut self, secs: u64) {
        self.lifetime_override = Some(secs);
    }

    /// A token that exists and has not expired (its binding is not checked here).
    pub fn valid_token(&self, token: &str, now: Timestamp) -> Option<&OAuth2AccessToken> {
        self.tokens.get(token).filter(|t| now < t.expires_at)
    }

    fn issue(&mut self, info: OAuth2AccessToken, now: Timestamp) -> String {
        self.tokens.retain(|_, t| now < t.expires_at);
        let token = opaque();
        self.tokens.insert(token.clone(), info);
        token
    }

    /// Remembers a `jti` until its assertion's `exp`; `false` when it was already seen.
    fn first_use_of(&mut self, issuer: &str, jti: String, exp: i64, now: i64) -> bool {
        self.seen_jtis.retain(|_, until| *until > now);
        let key = (issuer.to_owned(), jti);
        if self.seen_jtis.contains_key(&key) {
            return false;
        }
        self.seen_jtis.insert(key, exp);
        true
    }
}

/// The URLs of this server as the client reached it (scheme, Host header, port).
struct Endpoint {
    token_url: String,
    issuer: String,
}

impl Endpoint {
    fn new(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Self {
        let scheme = if shared.tls { "https" } else { "http" };
        let host = wire::host(headers, uri);
        Endpoint {
            token_url: format!("{scheme}://{host}{TOKEN_PATH}"),
            issuer: format!("{scheme}://{host}{ISSUER_PATH}"),
        }
    }
}

/// `POST /oauth2/token`.
pub(crate) async fn token_endpoint(shared: Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return wire::text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    };
    let recorded = RecordedRequest::capture(&parts, &body);
    let peer = parts.extensions.get::<PeerCertificate>().cloned();
    let endpoint = Endpoint::new(&shared, &parts.headers, &parts.uri);
    let (latency, fault) = {
        let mut inner = shared.lock();
        let store = &mut inner.oauth2;
        store.counters.requests += 1;
        store.last_request = Some(recorded);
        (store.latency, faults::take_next(&mut store.faults))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        tracing::debug!(?fault, "injecting fault at /oauth2/token");
        let without_token = || {
            let lifetime = shared.lock().oauth2.lifetime_override;
            json!({"token_type": "Bearer", "expires_in": lifetime.unwrap_or(DEFAULT_LIFETIME_SECS)})
        };
        return match faults::reply(&fault, without_token) {
            FaultReply::Respond(resp) => resp,
            FaultReply::Hang => std::future::pending().await,
        };
    }
    let req = TokenRequest::new(parts.headers, &parts.uri, body);
    let now = Timestamp::now();
    let mut inner = shared.lock();
    let store = &mut inner.oauth2;
    let outcome = token(store, &req, peer.as_ref(), &endpoint, now);
    match outcome {
        Ok(resp) => {
            store.counters.issued += 1;
            resp
        }
        Err(resp) => {
            store.counters.rejected += 1;
            tracing::debug!(
                status = resp.status().as_u16(),
                "oauth2 token request refused"
            );
            resp
        }
    }
}

type Outcome = Result<Response, Response>;

fn token(
    store: &mut Store,
    req: &TokenRequest,
    peer: Option<&PeerCertificate>,
    endpoint: &Endpoint,
    now: Timestamp,
) -> Outcome {
    let form = req.form()?;
    match form.require("grant_type")? {
        "client_credentials" => client_credentials(store, &form, req, peer, endpoint, now),
        GRANT_TYPE_JWT_BEARER => jwt_bearer(store, &form, endpoint, now),
        GRANT_TYPE_TOKEN_EXCHANGE => token_exchange(store, &form, now),
        other => Err(wire::unsupported_grant_type(other)),
    }
}

/// 401 `invalid_client` (RFC 6749 §5.2).
fn invalid_client(description: &str) -> Response {
    wire::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// A form parameter that is present and non-empty.
fn param<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).filter(|v| !v.is_empty())
}

struct Authenticated {
    client_id: String,
    thumbprint: Option<String>,
    /// A workload's `sub` (federated clients).
    subject: Option<String>,
}

fn client_credentials(
    store: &mut Store,
    form: &Form,
    req: &TokenRequest,
    peer: Option<&PeerCertificate>,
    endpoint: &Endpoint,
    now: Timestamp,
) -> Outcome {
    let who = authenticate(store, form, req, peer, endpoint, now)?;
    let scope = param(form, "scope").map(str::to_owned);
    let lifetime = store.lifetime_override.unwrap_or(DEFAULT_LIFETIME_SECS);
    let token = store.issue(
        OAuth2AccessToken {
            client_id: who.client_id,
            grant_type: "client_credentials".to_owned(),
            scope: scope.clone(),
            sub: who.subject,
            certificate_thumbprint: who.thumbprint,
            expires_at: expiry(now, lifetime),
        },
        now,
    );
    Ok(wire::json(StatusCode::OK, answer(&token, lifetime, scope)))
}

fn answer(token: &str, lifetime: u64, scope: Option<String>) -> Value {
    let mut body = json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime});
    if let Some(scope) = scope {
        body["scope"] = Value::String(scope);
    }
    body
}

/// Client authentication of a client-credentials request: exactly one method, the one the
/// client registered.
fn authenticate(
    store: &mut Store,
    form: &Form,
    req: &TokenRequest,
    peer: Option<&PeerCertificate>,
    endpoint: &Endpoint,
    now: Timestamp,
) -> Result<Authenticated, Response> {
    let secret_sent =
        form.get("client_secret").is_some() || req.headers.contains_key(header::AUTHORIZATION);
    match (
        param(form, "client_assertion_type"),
        param(form, "client_assertion"),
    ) {
        (None, None) if secret_sent => Err(invalid_client(
            "Client secret authentication (client_secret_basic, client_secret_post) is not \
             supported: use private_key_jwt, client_secret_jwt or self_signed_tls_client_auth",
        )),
        (None, None) => tls_client(store, form, peer),
        (Some(_), Some(_)) if secret_sent => Err(wire::invalid_request(
            "The client used more than one authentication method",
        )),
        (Some(kind), Some(assertion)) => {
            if kind != CLIENT_ASSERTION_TYPE_JWT_BEARER {
                return Err(wire::invalid_request("Unsupported client_assertion_type"));
            }
            jwt_client(store, form, assertion, endpoint, now)
        }
        _ => Err(wire::invalid_request(
            "client_assertion_type and client_assertion must be sent together",
        )),
    }
}

/// RFC 8705 §2.2: the TLS client certificate must be the registered one.
fn tls_client(
    store: &Store,
    form: &Form,
    peer: Option<&PeerCertificate>,
) -> Result<Authenticated, Response> {
    let Some(client_id) = param(form, "client_id") else {
        return Err(invalid_client("client_id is required"));
    };
    let Some(client) = store.clients.get(client_id) else {
        return Err(invalid_client("Unknown client"));
    };
    let RegisteredClient::Tls {
        certificate_der,
        thumbprint,
    } = client
    else {
        return Err(invalid_client(&format!(
            "The client is registered for {} and sent no client_assertion",
            client.method_name()
        )));
    };
    let Some(peer) = peer else {
        return Err(invalid_client(
            "No client certificate was presented on the TLS connection",
        ));
    };
    if peer.der() != certificate_der.as_slice() {
        return Err(invalid_client(
            "The client certificate does not match the registered certificate",
        ));
    }
    Ok(Authenticated {
        client_id: client_id.to_owned(),
        thumbprint: Some(thumbprint.clone()),
        subject: None,
    })
}

/// RFC 7523 §3 and OpenID Connect Core §9: a client assertion signed as registered.
fn jwt_client(
    store: &mut Store,
    form: &Form,
    compact: &str,
    endpoint: &Endpoint,
    now: Timestamp,
) -> Result<Authenticated, Response> {
    let Some(jws) = Jws::parse(compact) else {
        return Err(invalid_client(
            "The client assertion is not a well-formed compact JWS",
        ));
    };
    let Some(iss) = jws.claim_str("iss").map(str::to_owned) else {
        return Err(invalid_client("Client assertion iss claim is required"));
    };
    if store.federation.knows_issuer(&iss) {
        return federated_client(store, form, compact, now);
    }
    let Some(client) = store.clients.get(&iss) else {
        return Err(invalid_client("Unknown client"));
    };
    let alg = jws.alg().unwrap_or_default();
    if alg.eq_ignore_ascii_case("none") {
        return Err(invalid_client("Client assertion alg none is not accepted"));
    }
    if jws.has_crit() {
        return Err(invalid_client(
            "Client assertion crit header parameters are not supported",
        ));
    }
    let shown = JwsAlgorithm::from_header(alg).map_or("an unsupported alg", JwsAlgorithm::as_str);
    let wrong_alg = |registered: JwsAlgorithm| {
        invalid_client(&format!(
            "Client assertion alg {shown} does not match the client's registered algorithm {registered}"
        ))
    };
    let signed = match client {
        RegisteredClient::PrivateKeyJwt { algorithm, key } => {
            if JwsAlgorithm::from_header(alg) != Some(*algorithm) {
                return Err(wrong_alg(*algorithm));
            }
            jws.verify_public(*algorithm, key)
        }
        RegisteredClient::ClientSecretJwt { secret } => {
            if alg != JwsAlgorithm::HS256.as_str() {
                return Err(wrong_alg(JwsAlgorithm::HS256));
            }
            jws.verify_hs256(secret)
        }
        RegisteredClient::Tls { .. } => {
            return Err(invalid_client(
                "The client is registered for self_signed_tls_client_auth, not a client assertion",
            ));
        }
    };
    if !signed {
        return Err(invalid_client("Client assertion signature is invalid"));
    }
    if param(form, "client_id").is_some_and(|id| id != iss) {
        return Err(invalid_client(
            "client_id does not match the client assertion's iss",
        ));
    }
    if jws.claim_str("sub") != Some(iss.as_str()) {
        return Err(invalid_client(
            "Client assertion sub must equal its iss (the client_id)",
        ));
    }
    let audiences = [endpoint.token_url.clone(), endpoint.issuer.clone()];
    let max = i64::try_from(store.max_assertion_secs).unwrap_or(i64::MAX);
    let policy = Policy {
        audiences: &audiences,
        now: now.as_second(),
        max_exp_ahead: Some(max),
        max_lifetime: None,
        require_iat: false,
        require_jti: true,
    };
    let checked = assertion::check_claims(&jws, &policy).map_err(|e| {
        invalid_client(&match e {
            ClaimError::WrongAud => format!(
                "Client assertion aud must be the token endpoint URL {} or the issuer identifier {}",
                endpoint.token_url, endpoint.issuer
            ),
            ClaimError::MissingExp => "Client assertion exp claim is required".to_owned(),
            ClaimError::NotNumericDate(c) => {
                format!("Client assertion {c} claim must be a NumericDate")
            }
            ClaimError::Expired => "Client assertion has expired".to_owned(),
            ClaimError::ExpTooFar => {
                format!("Client assertion exp is too far in the future (at most {max} s ahead)")
            }
            ClaimError::MissingIat => "Client assertion iat claim is required".to_owned(),
            ClaimError::IatInFuture => "Client assertion iat is in the future".to_owned(),
            ClaimError::NbfInFuture => {
                "Client assertion is not yet valid (nbf is in the future)".to_owned()
            }
            ClaimError::LifetimeTooLong => "Client assertion lifetime is too long".to_owned(),
            ClaimError::MissingJti => "Client assertion jti claim is required".to_owned(),
        })
    })?;
    let jti = checked.jti.unwrap_or_default();
    if !store.first_use_of(&iss, jti, checked.exp, now.as_second()) {
        return Err(invalid_client("Client assertion jti reused"));
    }
    Ok(Authenticated {
        client_id: iss,
        thumbprint: None,
        subject: None,
    })
}

/// A workload token as the client assertion (Keycloak `federated-jwt`, Entra ID federated
/// credentials): verified against its issuer's JWKS, seen once.
fn federated_client(
    store: &mut Store,
    form: &Form,
    compact: &str,
    now: Timestamp,
) -> Result<Authenticated, Response> {
    let workload = verified_workload(store, compact, param(form, "client_id"), now)
        .map_err(|why| invalid_client(&why))?;
    Ok(Authenticated {
        client_id: workload.client_id,
        thumbprint: None,
        subject: Some(workload.subject),
    })
}

/// A workload token verified, its `jti` remembered until it expires.
fn verified_workload(
    store: &mut Store,
    compact: &str,
    client_id: Option<&str>,
    now: Timestamp,
) -> Result<federated::Workload, String> {
    let workload = store
        .federation
        .verify(compact, client_id, now.as_second())?;
    let jti = workload.jti.clone().unwrap_or_default();
    if !store.first_use_of(&workload.subject, jti, workload.exp, now.as_second()) {
        return Err("the token's jti was used before".into());
    }
    Ok(workload)
}

/// RFC 8693 token exchange as Google's STS answers it: a workload token as `subject_token`
/// (type jwt), an access token back.
fn token_exchange(store: &mut Store, form: &Form, now: Timestamp) -> Outcome {
    let subject_token = form.require("subject_token")?;
    if form.require("subject_token_type")? != federated::TOKEN_TYPE_JWT {
        return Err(wire::invalid_request(
            "subject_token_type must be urn:ietf:params:oauth:token-type:jwt",
        ));
    }
    if let Some(requested) = param(form, "requested_token_type")
        && requested != federated::TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err(wire::invalid_request(
            "requested_token_type must be urn:ietf:params:oauth:token-type:access_token",
        ));
    }
    let workload = verified_workload(store, subject_token, param(form, "client_id"), now)
        .map_err(|why| wire::invalid_grant(&why))?;
    let scope = param(form, "scope").map(str::to_owned);
    let lifetime = store.lifetime_override.unwrap_or(DEFAULT_LIFETIME_SECS);
    let token = store.issue(
        OAuth2AccessToken {
            client_id: workload.client_id,
            grant_type: GRANT_TYPE_TOKEN_EXCHANGE.to_owned(),
            scope: scope.clone(),
            sub: Some(workload.subject),
            certificate_thumbprint: None,
            expires_at: expiry(now, lifetime),
        },
        now,
    );
    let mut body = answer(&token, lifetime, scope);
    body["issued_token_type"] = Value::String(federated::TOKEN_TYPE_ACCESS_TOKEN.into());
    Ok(wire::json(StatusCode::OK, body))
}

/// RFC 7523 §2.1 with a workload token as the assertion.
fn workload_bearer(store: &mut Store, compact: &str, now: Timestamp) -> Outcome {
    let workload =
        verified_workload(store, compact, None, now).map_err(|why| wire::invalid_grant(&why))?;
    let lifetime = store.lifetime_override.unwrap_or(JWT_BEARER_LIFETIME_SECS);
    let token = store.issue(
        OAuth2AccessToken {
            client_id: workload.client_id,
            grant_type: GRANT_TYPE_JWT_BEARER.to_owned(),
            scope: None,
            sub: Some(workload.subject),
            certificate_thumbprint: None,
            expires_at: expiry(now, lifetime),
        },
        now,
    );
    Ok(wire::json(StatusCode::OK, answer(&token, lifetime, None)))
}

/// The description Google gives every assertion whose `iat`/`exp` it refuses.
const GOOGLE_TIMEFRAME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// RFC 7523 §2.1 as Google's token endpoint does it for service accounts: no client
/// authentication, an RS256 assertion from a registered issuer, `scope` in the claims.
fn jwt_bearer(store: &mut Store, form: &Form, endpoint: &Endpoint, now: Timestamp) -> Outcome {
    let compact = form.require("assertion")?;
    let Some(jws) = Jws::parse(compact) else {
        return Err(wire::invalid_grant(
            "Invalid JWT: the assertion is not a well-formed compact JWS",
        ));
    };
    let Some(iss) = jws.claim_str("iss").map(str::to_owned) else {
        return Err(wire::invalid_grant("Invalid JWT: iss claim is required"));
    };
    if store.federation.knows_issuer(&iss) {
        return workload_bearer(store, compact, now);
    }
    let Some(key) = store.issuers.get(&iss) else {
        return Err(wire::invalid_grant("Invalid grant: account not found"));
    };
    if jws.alg() != Some(JwsAlgorithm::RS256.as_str()) || jws.has_crit() {
        return Err(wire::invalid_grant(
            "Invalid JWT: the assertion must be signed with RS256",
        ));
    }
    if !jws.verify_public(JwsAlgorithm::RS256, key) {
        return Err(wire::invalid_grant("Invalid JWT Signature."));
    }
    let audiences = [endpoint.token_url.clone()];
    let policy = Policy {
        audiences: &audiences,
        now: now.as_second(),
        max_exp_ahead: None,
        max_lifetime: Some(JWT_BEARER_MAX_LIFETIME_SECS),
        require_iat: true,
        require_jti: false,
    };
    let checked = assertion::check_claims(&jws, &policy).map_err(|e| match e {
        ClaimError::WrongAud => wire::invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {}",
            endpoint.token_url
        )),
        ClaimError::MissingJti => {
            wire::invalid_grant("Invalid JWT: jti must be a non-empty string")
        }
        _ => wire::invalid_grant(GOOGLE_TIMEFRAME),
    })?;
    let Some(scope) = jws
        .claim_str("scope")
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
    else {
        return Err(wire::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    };
    if let Some(jti) = checked.jti
        && !store.first_use_of(&iss, jti, checked.exp, now.as_second())
    {
        return Err(wire::invalid_grant("Invalid JWT: jti reused"));
    }
    let sub = jws.claim_str("sub").map(str::to_owned);
    let lifetime = store.lifetime_override.unwrap_or(JWT_BEARER_LIFETIME_SECS);
    let token = store.issue(
        OAuth2AccessToken {
            client_id: iss,
            grant_type: GRANT_TYPE_JWT_BEARER.to_owned(),
            scope: Some(scope.clone()),
            sub,
            certificate_thumbprint: None,
            expires_at: expiry(now, lifetime),
        },
        now,
    );
    Ok(wire::json(
        StatusCode::OK,
        answer(&token, lifetime, Some(scope)),
    ))
}

/// `GET /oauth2/whoami`: 200 for a valid bearer token; a certificate-bound token also needs
/// the same client certificate on this connection (RFC 8705 §3), else 401 `invalid_token`.
pub(crate) async fn whoami(shared: Arc<Shared>, req: Request) -> Response {
    let peer = req.extensions().get::<PeerCertificate>();
    let token = wire::bearer(req.headers());
    let inner = shared.lock();
    let found = token.and_then(|t| inner.oauth2.valid_token(t, Timestamp::now()));
    let Some(info) = found else {
        return unauthorized(
            token.is_some(),
            "The access token is missing, invalid or expired",
        );
    };
    if let Some(bound) = &info.certificate_thumbprint
        && peer.map(|p| thumbprint(p.der())).as_ref() != Some(bound)
    {
        return unauthorized(
            true,
            "The access token is bound to a client certificate this connection did not present",
        );
    }
    let mut body = json!({
        "provider": "oauth2",
        "subject": info.client_id,
        "grant_type": info.grant_type,
        "expiresAt": info.expires_at.to_string(),
    });
    if let Some(scope) = &info.scope {
        body["scope"] = json!(scope);
    }
    if let Some(sub) = &info.sub {
        body["sub"] = json!(sub);
    }
    if let Some(x5t) = &info.certificate_thumbprint {
        body["cnf"] = json!({"x5t#S256": x5t});
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn unauthorized(had_token: bool, description: &str) -> Response {
    // RFC 6750 §3: no error code when the request carried no token at all.
    let challenge = if had_token {
        format!(
            "Bearer realm=\"oauth2\", error=\"invalid_token\", error_description=\"{description}\""
        )
    } else {
        "Bearer realm=\"oauth2\"".to_owned()
    };
    let mut resp = wire::oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

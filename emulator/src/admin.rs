//! The JSON admin API under `/_emulator`, for the binary, demos and subprocess tests. Each
//! route is a thin adapter over a [`Control`] method; README.md lists them.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::control::Control;
use crate::faults::Fault;
use crate::oauth2::ClientMethod;
use crate::provider::Provider;
use crate::state::AccountState;

pub(crate) fn router(control: Control) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/reset", post(reset))
        .route("/reltio/multi-token", put(multi_token))
        .route("/reltio/refresh-echo", put(refresh_echo))
        .route("/reltio/rotating-refresh", put(rotating_refresh))
        .route("/retently/codes", post(mint_code))
        .route("/oauth2/clients", post(oauth2_client))
        .route("/oauth2/jwt-bearer-issuers", post(oauth2_issuer))
        .route("/oauth2/counters", get(oauth2_counters))
        .route("/oauth2/last-request", get(oauth2_last_request))
        .route("/oauth2/lifetime", put(oauth2_lifetime))
        .route("/oauth2/assertion-max-lifetime", put(oauth2_assertion_max))
        .route("/oauth2/latency", put(oauth2_latency))
        .route(
            "/oauth2/faults",
            post(oauth2_inject).merge(delete(oauth2_clear_faults)),
        )
        .route("/oauth2/validate", post(oauth2_validate))
        .route("/oauth2/token-info", post(oauth2_token_info))
        .route("/{provider}/counters", get(counters))
        .route("/{provider}/last-request", get(last_request))
        .route("/{provider}/lifetime", put(lifetime))
        .route("/{provider}/latency", put(latency))
        .route("/{provider}/refresh-grace", put(refresh_grace))
        .route("/{provider}/refreshes-in-flight", get(refreshes_in_flight))
        .route(
            "/{provider}/faults",
            post(inject).merge(delete(clear_faults)),
        )
        .route("/{provider}/rate-limit", put(rate_limit))
        .route("/{provider}/password", put(password))
        .route("/{provider}/account-state", put(account_state))
        .route("/{provider}/revoke-refresh-tokens", post(revoke))
        .route("/{provider}/validate", post(validate))
        .with_state(control)
}

/// A JSON error: unknown provider (404) or an invalid knob value (400).
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type AdminResult<T = StatusCode> = Result<T, AdminError>;

fn provider(name: &str) -> AdminResult<Provider> {
    name.parse()
        .map_err(|e: crate::EmulatorError| AdminError(StatusCode::NOT_FOUND, e.to_string()))
}

async fn reset(State(c): State<Control>) -> StatusCode {
    c.reset();
    StatusCode::NO_CONTENT
}

async fn counters(State(c): State<Control>, Path(p): Path<String>) -> AdminResult<Response> {
    Ok(Json(c.counters(provider(&p)?)).into_response())
}

async fn last_request(State(c): State<Control>, Path(p): Path<String>) -> AdminResult<Response> {
    Ok(Json(c.last_request(provider(&p)?)).into_response())
}

#[derive(Deserialize)]
struct Lifetime {
    secs: u64,
}

async fn lifetime(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Lifetime>,
) -> AdminResult {
    c.set_lifetime(provider(&p)?, b.secs);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Latency {
    millis: u64,
}

async fn latency(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Latency>,
) -> AdminResult {
    c.set_latency(provider(&p)?, Duration::from_millis(b.millis));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Grace {
    millis: u64,
}

async fn refresh_grace(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Grace>,
) -> AdminResult {
    c.set_refresh_grace(provider(&p)?, Duration::from_millis(b.millis));
    Ok(StatusCode::NO_CONTENT)
}

async fn refreshes_in_flight(
    State(c): State<Control>,
    Path(p): Path<String>,
) -> AdminResult<Response> {
    let n = c.refreshes_in_flight(provider(&p)?);
    Ok(Json(json!({"in_flight": n})).into_response())
}

#[derive(Deserialize)]
struct Inject {
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

fn check_fault(fault: &Fault) -> AdminResult<()> {
    if let Fault::Status { code, .. } = fault
        && StatusCode::from_u16(*code).is_err()
    {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            format!("invalid HTTP status {code}"),
        ));
    }
    Ok(())
}

async fn inject(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Inject>,
) -> AdminResult {
    let p = provider(&p)?;
    check_fault(&b.fault)?;
    c.inject(p, b.fault, b.times);
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(c): State<Control>, Path(p): Path<String>) -> AdminResult {
    c.clear_faults(provider(&p)?);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RateLimit {
    per_second: Option<u32>,
    /// Rejected requests count against the window too.
    #[serde(default)]
    strict: bool,
}

async fn rate_limit(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<RateLimit>,
) -> AdminResult {
    let p = provider(&p)?;
    c.set_rate_limit(p, b.per_second);
    c.set_strict_rate_limit(p, b.strict);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Toggle {
    enabled: bool,
}

async fn multi_token(State(c): State<Control>, Json(b): Json<Toggle>) -> StatusCode {
    c.set_multi_token(b.enabled);
    StatusCode::NO_CONTENT
}

async fn refresh_echo(State(c): State<Control>, Json(b): Json<Toggle>) -> StatusCode {
    c.set_refresh_echo(b.enabled);
    StatusCode::NO_CONTENT
}

async fn rotating_refresh(State(c): State<Control>, Json(b): Json<Toggle>) -> StatusCode {
    c.set_rotating_refresh(b.enabled);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Password {
    user: String,
    secret: String,
}

async fn password(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Password>,
) -> AdminResult {
    c.set_password(provider(&p)?, &b.user, &b.secret);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SetState {
    user: String,
    state: AccountState,
}

async fn account_state(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<SetState>,
) -> AdminResult {
    c.set_account_state(provider(&p)?, &b.user, b.state);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct MintCode {
    redirect_uri: String,
}

async fn mint_code(State(c): State<Control>, Json(b): Json<MintCode>) -> Response {
    Json(json!({"code": c.mint_authorization_code(&b.redirect_uri)})).into_response()
}

async fn revoke(State(c): State<Control>, Path(p): Path<String>) -> AdminResult {
    c.revoke_refresh_tokens(provider(&p)?);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Validate {
    token: String,
}

async fn validate(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Validate>,
) -> AdminResult<Response> {
    let valid = c.is_valid_access_token(provider(&p)?, &b.token);
    Ok(Json(json!({"valid": valid})).into_response())
}

#[derive(Deserialize)]
struct OAuth2Client {
    client_id: String,
    #[serde(flatten)]
    method: ClientMethod,
}

fn registration(result: Result<(), crate::EmulatorError>) -> AdminResult {
    result
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn oauth2_client(State(c): State<Control>, Json(b): Json<OAuth2Client>) -> AdminResult {
    registration(c.register_oauth_client(&b.client_id, b.method))
}

#[derive(Deserialize)]
struct OAuth2Issuer {
    issuer: String,
    public_key_pem: String,
}

async fn oauth2_issuer(State(c): State<Control>, Json(b): Json<OAuth2Issuer>) -> AdminResult {
    registration(c.register_jwt_bearer_issuer(&b.issuer, b.public_key_pem))
}

async fn oauth2_counters(State(c): State<Control>) -> Response {
    Json(c.oauth2_counters()).into_response()
}

async fn oauth2_last_request(State(c): State<Control>) -> Response {
    Json(c.oauth2_last_request()).into_response()
}

async fn oauth2_lifetime(State(c): State<Control>, Json(b): Json<Lifetime>) -> StatusCode {
    c.set_oauth2_lifetime(b.secs);
    StatusCode::NO_CONTENT
}

async fn oauth2_assertion_max(State(c): State<Control>, Json(b): Json<Lifetime>) -> StatusCode {
    c.set_oauth2_assertion_max_lifetime(b.secs);
    StatusCode::NO_CONTENT
}

async fn oauth2_latency(State(c): State<Control>, Json(b): Json<Latency>) -> StatusCode {
    c.set_oauth2_latency(Duration::from_millis(b.millis));
    StatusCode::NO_CONTENT
}

async fn oauth2_inject(State(c): State<Control>, Json(b): Json<Inject>) -> AdminResult {
    check_fault(&b.fault)?;
    c.oauth2_inject(b.fault, b.times);
    Ok(StatusCode::NO_CONTENT)
}

async fn oauth2_clear_faults(State(c): State<Control>) -> StatusCode {
    c.oauth2_clear_faults();
    StatusCode::NO_CONTENT
}

async fn oauth2_validate(State(c): State<Control>, Json(b): Json<Validate>) -> Response {
    Json(json!({"valid": c.is_valid_oauth2_access_token(&b.token)})).into_response()
}

async fn oauth2_token_info(State(c): State<Control>, Json(b): Json<Validate>) -> Response {
    Json(c.oauth2_access_token(&b.token)).into_response()
}

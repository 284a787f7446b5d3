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

async fn inject(
    State(c): State<Control>,
    Path(p): Path<String>,
    Json(b): Json<Inject>,
) -> AdminResult {
    let p = provider(&p)?;
    if let Fault::Status { code, .. } = &b.fault
        && StatusCode::from_u16(*code).is_err()
    {
        return Err(AdminError(
            StatusCode::BAD_REQUEST,
            format!("invalid HTTP status {code}"),
        ));
    }
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

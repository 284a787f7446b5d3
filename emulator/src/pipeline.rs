//! The token-endpoint pipeline shared by all providers: record → count → mark a refresh in
//! flight → fault or rate limit → latency → provider dialect → counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;

use crate::faults::{self, Fault, FaultReply};
use crate::inflight::InFlight;
use crate::provider::Provider;
use crate::providers;
use crate::state::{Inner, RecordedRequest, Shared};
use crate::wire::{self, TokenRequest};

/// Token requests are small; anything larger is refused before it is buffered.
const MAX_BODY: usize = 1 << 20;

enum Action {
    Fault(Fault),
    Throttle(u32),
    Proceed,
}

struct Admission {
    latency: Duration,
    lifetime_secs: u64,
    action: Action,
}

pub(crate) async fn token_endpoint(p: Provider, shared: Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return wire::text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    };
    let recorded = RecordedRequest::capture(&parts, &body);
    // Marked under the admission lock, before the latency, so a refresh counts as in flight
    // for as long as its client waits; the guard unmarks it however this future ends
    // (answered, failed, or dropped with the connection).
    let (admission, _in_flight) = {
        let mut inner = shared.lock();
        let admission = admit(&mut inner, p, recorded);
        (admission, InFlight::enter(&shared, &mut inner, p, &body))
    };
    if !admission.latency.is_zero() {
        tokio::time::sleep(admission.latency).await;
    }
    let resp = match admission.action {
        Action::Fault(fault) => {
            tracing::debug!(provider = %p, ?fault, "injecting fault");
            let without_token =
                || providers::success_without_token(p, admission.lifetime_secs, Timestamp::now());
            match faults::reply(&fault, without_token) {
                FaultReply::Respond(resp) => resp,
                // Dropped with the connection (client gone or emulator stopped).
                FaultReply::Hang => std::future::pending().await,
            }
        }
        Action::Throttle(limit) => wire::too_many_requests(1, Some(limit)),
        Action::Proceed => {
            let req = TokenRequest::new(parts.headers, &parts.uri, body);
            let mut inner = shared.lock();
            match providers::token(p, &mut inner, &req, Timestamp::now()) {
                Ok(resp) => {
                    inner.provider_mut(p).counters.issued += 1;
                    resp
                }
                Err(resp) => resp,
            }
        }
    };
    if resp.status() == StatusCode::TOO_MANY_REQUESTS {
        shared.lock().provider_mut(p).counters.rate_limited += 1;
    }
    tracing::debug!(provider = %p, status = resp.status().as_u16(), "token request answered");
    resp
}

/// Books the request and decides its fate under one lock, at arrival time (so latency does
/// not distort the rate limiter's window). A queued fault overrides the rate limiter.
fn admit(inner: &mut Inner, p: Provider, recorded: RecordedRequest) -> Admission {
    let state = inner.provider_mut(p);
    state.counters.requests += 1;
    state.last_request = Some(recorded);
    let action = if let Some(fault) = faults::take_next(&mut state.faults) {
        Action::Fault(fault)
    } else if let Some(limit) = state.rate_limit
        && !state.window.try_admit(limit, Instant::now())
    {
        Action::Throttle(limit)
    } else {
        Action::Proceed
    };
    Admission {
        latency: state.latency,
        lifetime_secs: state.lifetime_secs,
        action,
    }
}

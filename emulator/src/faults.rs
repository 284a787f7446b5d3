//! Injected faults: what a misbehaving provider or network does instead of answering properly.

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire;

/// A fault replayed instead of the real answer for the next N token requests.
///
/// In the admin API's JSON, unit variants are strings (`"hang"`) and the others objects
/// (`{"status":{"code":503,"body":"down"}}`, `{"huge":20971520}`, `{"redirect":"http://x/"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// This status with this body (`application/json` when it looks like JSON, else text).
    Status { code: u16, body: String },
    /// 429 with `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// Accept the request and never answer (a client timeout must fire).
    Hang,
    /// Drop the connection without any response.
    CloseConnection,
    /// 200 with an HTML page, like a login wall or captive portal.
    Html,
    /// 200 `application/json` whose body is not JSON.
    NotJson,
    /// 200 with the provider's success body minus its access-token field.
    MissingToken,
    /// 200 with a streamed body of this many bytes and no Content-Length.
    Huge(usize),
    /// 302 to this location.
    Redirect(String),
    /// 200 whose JSON body arrives one byte per this many milliseconds, forever.
    Trickle(u64),
    /// 200 with a header of this many bytes (and the provider's usual body).
    HugeHeader(usize),
}

/// What the pipeline does for a fault.
pub(crate) enum FaultReply {
    Respond(Response),
    Hang,
}

/// Marker extension: the server drops the connection instead of writing the response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

pub(crate) fn wants_drop(resp: &Response) -> bool {
    resp.extensions().get::<DropConnection>().is_some()
}

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\
<body><h1>Please sign in</h1><form method=\"post\"><input name=\"user\"></form></body></html>\n";
const CHUNK: usize = 64 * 1024;
static FILLER: [u8; CHUNK] = [b'x'; CHUNK];

/// Renders `fault`; `success_without_token` builds the provider's token-less success body.
pub(crate) fn reply(fault: &Fault, success_without_token: impl FnOnce() -> Value) -> FaultReply {
    let resp = match fault {
        Fault::Status { code, body } => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if body.trim_start().starts_with(['{', '[']) {
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.clone(),
                )
                    .into_response()
            } else {
                wire::text(status, body.clone())
            }
        }
        Fault::RateLimited { retry_after_secs } => wire::too_many_requests(*retry_after_secs, None),
        Fault::Hang => return FaultReply::Hang,
        Fault::CloseConnection => {
            let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            resp.extensions_mut().insert(DropConnection);
            resp
        }
        Fault::Html => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            HTML_PAGE,
        )
            .into_response(),
        Fault::NotJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"access_token\": <<garbage>> ,,",
        )
            .into_response(),
        Fault::MissingToken => wire::json(StatusCode::OK, success_without_token()),
        Fault::Huge(bytes) => huge(*bytes),
        Fault::Trickle(every_ms) => trickle(*every_ms),
        Fault::HugeHeader(bytes) => {
            let mut resp = wire::json(StatusCode::OK, success_without_token());
            let value = "h".repeat(*bytes);
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert("x-padding", v);
            }
            resp
        }
        Fault::Redirect(location) => {
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
    };
    FaultReply::Respond(resp)
}

/// A chunked body of exactly `total` bytes, produced lazily so 20 MiB costs no memory.
fn huge(total: usize) -> Response {
    let chunks = (0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK);
        Ok::<_, std::convert::Infallible>(Bytes::from_static(&FILLER[..len]))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

/// A JSON body that never ends, one byte at a time: only the client's overall timeout ends it.
fn trickle(every_ms: u64) -> Response {
    let period = std::time::Duration::from_millis(every_ms.max(1));
    let bytes = futures::stream::unfold(0usize, move |sent| async move {
        tokio::time::sleep(period).await;
        let byte: &'static [u8] = if sent == 0 { b"{" } else { b" " };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from_static(byte)),
            sent + 1,
        ))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(bytes),
    )
        .into_response()
}

/// Takes the fault for this request off the queue, counting down its remaining uses.
pub(crate) fn take_next(queue: &mut std::collections::VecDeque<(Fault, u32)>) -> Option<Fault> {
    let (fault, left) = queue.front_mut()?;
    let fault = fault.clone();
    *left = left.saturating_sub(1);
    if *left == 0 {
        queue.pop_front();
    }
    Some(fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_replay_in_order_for_their_count() {
        let mut q = std::collections::VecDeque::from([(Fault::Hang, 2), (Fault::Html, 1)]);
        assert_eq!(take_next(&mut q), Some(Fault::Hang));
        assert_eq!(take_next(&mut q), Some(Fault::Hang));
        assert_eq!(take_next(&mut q), Some(Fault::Html));
        assert_eq!(take_next(&mut q), None);
    }

    #[test]
    fn fault_json_shapes() {
        let f: Fault = serde_json::from_str(r#"{"status":{"code":503,"body":"down"}}"#).unwrap();
        assert_eq!(
            f,
            Fault::Status {
                code: 503,
                body: "down".into()
            }
        );
        assert_eq!(
            serde_json::from_str::<Fault>(r#""hang""#).unwrap(),
            Fault::Hang
        );
        assert_eq!(
            serde_json::from_str::<Fault>(r#"{"huge":10}"#).unwrap(),
            Fault::Huge(10)
        );
    }
}

//! Receiving the browser's redirect: once, on the loopback address of the redirect URI
//! (RFC 8252 §7.3), or pasted by the person when the redirect URI is elsewhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Html;
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::consent::{AnswerError, Consent};

/// Where the answer arrives.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// `http://127.0.0.1:PORT/…`, `http://[::1]:PORT/…` or `http://localhost:PORT/…`: listen
    /// there for one answer on this path.
    Loopback { addr: SocketAddr, path: String },
    /// Anywhere else: the person pastes the address the browser ended on.
    Pasted,
}

impl Arrival {
    pub fn of(redirect_uri: &url::Url) -> Arrival {
        if redirect_uri.scheme() != "http" {
            return Arrival::Pasted;
        }
        let ip = match redirect_uri.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => IpAddr::V6(ip),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            _ => return Arrival::Pasted,
        };
        let port = redirect_uri.port_or_known_default().unwrap_or(80);
        Arrival::Loopback {
            addr: SocketAddr::new(ip, port),
            path: redirect_uri.path().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("cannot listen on {addr} (the redirect URI's address): {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}; start again (a code is valid only briefly)")]
    TimedOut(Duration),
    #[error("standard input ended before a valid address was pasted")]
    NoInput,
    #[error(transparent)]
    Answer(#[from] AnswerError),
}

struct Listening {
    consent: Arc<Consent>,
    path: String,
    answers: mpsc::Sender<Result<SecretString, AnswerError>>,
}

const DONE_PAGE: &str = "<!doctype html><title>token-rotator</title><p>Done: token-rotator received the authorization. You can close this window and return to the terminal.</p>";
const REFUSED_PAGE: &str = "<!doctype html><title>token-rotator</title><p>The provider refused the authorization; the terminal says why.</p>";
const IGNORED_PAGE: &str = "<!doctype html><title>token-rotator</title><p>This is not the answer token-rotator is waiting for (no code, or another attempt's state). Still waiting.</p>";

async fn answer(State(l): State<Arc<Listening>>, uri: Uri) -> (StatusCode, Html<&'static str>) {
    if uri.path() != l.path {
        return (StatusCode::NOT_FOUND, Html(IGNORED_PAGE));
    }
    match l.consent.code_from_query(uri.query().unwrap_or_default()) {
        Ok(code) => {
            let _ = l.answers.try_send(Ok(code));
            (StatusCode::OK, Html(DONE_PAGE))
        }
        Err(e @ AnswerError::Refused { .. }) => {
            let _ = l.answers.try_send(Err(e));
            (StatusCode::OK, Html(REFUSED_PAGE))
        }
        // Anything on this port may send requests; only this request's answer counts.
        Err(e) => {
            eprintln!("ignored a request to the redirect address: {e}");
            (StatusCode::BAD_REQUEST, Html(IGNORED_PAGE))
        }
    }
}

/// Binds the redirect URI's address first, so a browser is never sent to a port nobody
/// listens on, then waits for one answer.
pub struct Listener {
    listener: tokio::net::TcpListener,
    path: String,
}

impl Listener {
    pub async fn bind(addr: SocketAddr, path: String) -> Result<Listener, CallbackError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CallbackError::Listen { addr, source })?;
        Ok(Listener { listener, path })
    }

    pub async fn code(
        self,
        consent: Arc<Consent>,
        timeout: Duration,
    ) -> Result<SecretString, CallbackError> {
        let (tx, mut rx) = mpsc::channel(1);
        let state = Arc::new(Listening {
            consent,
            path: self.path,
            answers: tx,
        });
        let app = Router::new().fallback(answer).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(self.listener, app).await;
        });
        let received = tokio::time::timeout(timeout, rx.recv()).await;
        // The page was already written to the browser's connection; nothing else is awaited.
        server.abort();
        match received {
            Ok(Some(answer)) => Ok(answer?),
            Ok(None) | Err(_) => Err(CallbackError::TimedOut(timeout)),
        }
    }
}

/// Asks for the address until a valid answer is pasted, standard input ends, or time is up.
pub async fn pasted(
    consent: Arc<Consent>,
    timeout: Duration,
) -> Result<SecretString, CallbackError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread, not spawn_blocking: the runtime waits for blocking tasks when it shuts
    // down, and a read of a terminal that nobody types into never returns.
    std::thread::spawn(move || {
        let _ = tx.send(read_pasted(&consent));
    });
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(CallbackError::NoInput),
        Err(_) => Err(CallbackError::TimedOut(timeout)),
    }
}

fn read_pasted(consent: &Consent) -> Result<SecretString, CallbackError> {
    use std::io::{BufRead, Read};
    let stdin = std::io::stdin();
    loop {
        eprint!("Paste the address your browser was sent to after consent: ");
        let mut line = String::new();
        // A redirect address is short; a longer line is cut rather than held whole.
        match stdin.lock().take(16 * 1024).read_line(&mut line) {
            Ok(0) | Err(_) => return Err(CallbackError::NoInput),
            Ok(_) => {}
        }
        match consent.code_from(&line) {
            Ok(code) => return Ok(code),
            Err(e @ AnswerError::Refused { .. }) => return Err(e.into()),
            Err(e) => eprintln!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(uri: &str) -> Arrival {
        Arrival::of(&uri.parse().unwrap())
    }

    #[test]
    fn only_plain_http_loopback_addresses_are_listened_on() {
        assert_eq!(
            arrival("http://127.0.0.1:8400/callback"),
            Arrival::Loopback {
                addr: "127.0.0.1:8400".parse().unwrap(),
                path: "/callback".into()
            }
        );
        assert_eq!(
            arrival("http://[::1]:9000/"),
            Arrival::Loopback {
                addr: "[::1]:9000".parse().unwrap(),
                path: "/".into()
            }
        );
        assert_eq!(
            arrival("http://LOCALHOST:7000/cb"),
            Arrival::Loopback {
                addr: "127.0.0.1:7000".parse().unwrap(),
                path: "/cb".into()
            }
        );
        for elsewhere in [
            "https://127.0.0.1:8400/callback",
            "https://www.example.com/",
            "http://www.example.com/cb",
            "http://10.0.0.1:80/cb",
            "http://localhost.example.com:80/cb",
        ] {
            assert_eq!(arrival(elsewhere), Arrival::Pasted, "{elsewhere}");
        }
    }
}

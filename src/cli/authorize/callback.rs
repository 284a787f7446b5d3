//! Receiving the browser's redirect: once, on the loopback address of the redirect URI
//! (RFC 8252 §7.3), or pasted by the person when the redirect URI is elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    /// there for one answer on this path. `localhost` is both loopback addresses (RFC 8252
    /// §8.3): the browser may resolve it to either, and whatever held the other one would be
    /// sent the code.
    Loopback {
        addrs: Vec<SocketAddr>,
        path: String,
    },
    /// Anywhere else: the person pastes the address the browser ended on.
    Pasted,
}

impl Arrival {
    pub fn of(redirect_uri: &url::Url) -> Arrival {
        if redirect_uri.scheme() != "http" {
            return Arrival::Pasted;
        }
        let ips = match redirect_uri.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            _ => return Arrival::Pasted,
        };
        let port = redirect_uri.port_or_known_default().unwrap_or(80);
        Arrival::Loopback {
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            path: redirect_uri.path().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error(
        "cannot listen on {addr} (the redirect URI's address): {source}; if another program holds it, it would receive the code: stop it, or choose another port in spec.grant.redirectUri"
    )]
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

/// Binds the redirect URI's addresses first, so a browser is never sent to a port nobody
/// listens on, then waits for one answer.
pub struct Listener {
    listeners: Vec<tokio::net::TcpListener>,
    path: String,
}

impl Listener {
    /// Every address, or an error: one held by another program could receive the code. An
    /// address this machine does not have (no IPv6 loopback) is skipped while another binds:
    /// no browser reaches it and no program can hold it.
    pub async fn bind(addrs: &[SocketAddr], path: String) -> Result<Listener, CallbackError> {
        let mut listeners = Vec::new();
        let mut absent = None;
        for &addr in addrs {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listeners.push(listener),
                Err(source) if source.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    absent = Some(CallbackError::Listen { addr, source });
                }
                Err(source) => return Err(CallbackError::Listen { addr, source }),
            }
        }
        match (listeners.is_empty(), absent) {
            (true, Some(e)) => Err(e),
            _ => Ok(Listener { listeners, path }),
        }
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
        let servers: Vec<_> = self
            .listeners
            .into_iter()
            .map(|listener| {
                let app = app.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            })
            .collect();
        let received = tokio::time::timeout(timeout, rx.recv()).await;
        // The page was already written to the browser's connection; nothing else is awaited.
        for server in servers {
            server.abort();
        }
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

    fn loopback(addrs: &[&str], path: &str) -> Arrival {
        Arrival::Loopback {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            path: path.into(),
        }
    }

    #[test]
    fn only_plain_http_loopback_addresses_are_listened_on() {
        assert_eq!(
            arrival("http://127.0.0.1:8400/callback"),
            loopback(&["127.0.0.1:8400"], "/callback")
        );
        assert_eq!(
            arrival("http://[::1]:9000/"),
            loopback(&["[::1]:9000"], "/")
        );
        // RFC 8252 §8.3: localhost is either family, so both are held.
        assert_eq!(
            arrival("http://LOCALHOST:7000/cb"),
            loopback(&["127.0.0.1:7000", "[::1]:7000"], "/cb")
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

    /// A port free on both loopback addresses (the test binds nothing else).
    fn free_port() -> u16 {
        loop {
            let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("::1", port)).is_ok() {
                return port;
            }
        }
    }

    fn addrs_of(uri: &str) -> (Vec<SocketAddr>, String) {
        match arrival(uri) {
            Arrival::Loopback { addrs, path } => (addrs, path),
            Arrival::Pasted => panic!("{uri} is loopback"),
        }
    }

    #[tokio::test]
    async fn a_program_holding_either_loopback_address_stops_the_listener() {
        for squatted in ["127.0.0.1", "::1"] {
            let port = free_port();
            let squatter = std::net::TcpListener::bind((squatted, port)).unwrap();
            let (addrs, path) = addrs_of(&format!("http://localhost:{port}/cb"));
            let err = Listener::bind(&addrs, path).await.err().expect("refused");
            let CallbackError::Listen { addr, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!(addr.ip(), squatted.parse::<IpAddr>().unwrap(), "{err}");
            assert_eq!(addr.port(), port);
            drop(squatter);
        }
    }

    /// What the browser (or anything else on the machine) gets from the listener.
    async fn get(addr: &str, query: &str) -> reqwest::StatusCode {
        crate::install_crypto_provider();
        reqwest::Client::new()
            .get(format!("http://{addr}/cb?{query}"))
            .send()
            .await
            .expect("the listener answers")
            .status()
    }

    #[tokio::test]
    async fn only_this_requests_answer_ends_the_wait_on_either_address() {
        let settings = crate::api::AuthorizationSettings {
            authorization_url: "https://auth.example.test/authorize".parse().unwrap(),
            redirect_uri: "http://localhost:1/cb".parse().unwrap(),
            scope: None,
            pkce: false,
        };
        let consent = Arc::new(Consent::new(&settings, "c"));
        let state: String = url::Url::parse(consent.url.as_str())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let port = free_port();
        let (addrs, path) = addrs_of(&format!("http://localhost:{port}/cb"));
        let listener = Listener::bind(&addrs, path).await.unwrap();
        let waiting = tokio::spawn(listener.code(consent, Duration::from_secs(60)));

        let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
        // Refusals and codes without this request's state, on either address: ignored.
        for (addr, forged) in [
            (&v4, "error=access_denied".to_string()),
            (&v6, "error=access_denied&state=forged".to_string()),
            (&v6, format!("error=access_denied&state={state}x")),
            (&v4, "code=made-up&state=forged".to_string()),
        ] {
            assert_eq!(
                get(addr, &forged).await,
                StatusCode::BAD_REQUEST,
                "{forged}"
            );
        }
        assert!(!waiting.is_finished());
        assert_eq!(
            get(&v6, &format!("code=the-code&state={state}")).await,
            StatusCode::OK
        );
        let code = waiting.await.unwrap().expect("the code");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&code), "the-code");
    }
}

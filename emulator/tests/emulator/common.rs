use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provider_emulator::{Emulator, Options};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;

pub async fn start() -> Emulator {
    Emulator::start(Options::default())
        .await
        .expect("emulator starts")
}

/// A client that, like the operator, follows no redirects.
pub fn client() -> Client {
    builder().build().expect("client")
}

pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().redirect(reqwest::redirect::Policy::none())
}

/// `RequestBuilder::form` needs reqwest's `form` feature, which the workspace leaves off.
pub trait FormExt {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormExt for RequestBuilder {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    }
}

pub async fn post_form(c: &Client, url: &str, pairs: &[(&str, &str)]) -> Response {
    c.post(url).form_pairs(pairs).send().await.expect("request")
}

pub async fn json(resp: Response) -> Value {
    resp.json().await.expect("JSON body")
}

/// The payload of a JWT, unverified (as a client would read `exp`).
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

pub async fn whoami(c: &Client, url: &str, token: &str) -> Response {
    c.get(url).bearer_auth(token).send().await.expect("request")
}

/// Awaits `cond` (polled every few milliseconds) for at most ten seconds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

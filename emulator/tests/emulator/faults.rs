use std::time::{Duration, Instant};

use provider_emulator::Fault;
use provider_emulator::Provider::{Carrental, Rently};
use provider_emulator::fixtures::{RENTLY_CLIENT_ID, RENTLY_CLIENT_SECRET};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};

use crate::common::*;

const GOOD: [(&str, &str); 3] = [
    ("grant_type", "client_credentials"),
    ("client_id", RENTLY_CLIENT_ID),
    ("client_secret", RENTLY_CLIENT_SECRET),
];

#[tokio::test]
async fn response_faults_replay_for_their_count() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Rently));
    let send = || post_form(&c, &url, &GOOD);

    ctl.inject(
        Rently,
        Fault::Status {
            code: 503,
            body: r#"{"error":"down"}"#.into(),
        },
        2,
    );
    for _ in 0..2 {
        let r = send().await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
    assert_eq!(send().await.status(), StatusCode::OK);

    ctl.inject(
        Rently,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
        1,
    );
    let r = send().await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[RETRY_AFTER], "7");

    ctl.inject(Rently, Fault::Html, 1);
    let r = send().await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    ctl.inject(Rently, Fault::NotJson, 1);
    let r = send().await;
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert!(r.json::<serde_json::Value>().await.is_err());

    ctl.inject(Rently, Fault::MissingToken, 1);
    let body = json(send().await).await;
    assert!(body.get("access_token").is_none());
    assert_eq!(body["token_type"], "bearer");

    ctl.inject(
        Rently,
        Fault::Redirect("https://elsewhere.example/login".into()),
        1,
    );
    let r = send().await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()[LOCATION], "https://elsewhere.example/login");

    ctl.inject(Rently, Fault::Html, 5);
    ctl.clear_faults(Rently);
    assert_eq!(send().await.status(), StatusCode::OK);

    let n = ctl.counters(Rently);
    assert_eq!((n.requests, n.issued, n.rate_limited), (9, 2, 1));
}

#[tokio::test]
async fn huge_body_is_streamed() {
    let emu = start().await;
    let (c, ctl) = (client(), emu.control());
    ctl.inject(Carrental, Fault::Huge(20 << 20), 1);
    let r = c
        .post(emu.token_url(Carrental))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers().get(CONTENT_LENGTH).is_none(),
        "chunked, no length to trust"
    );
    assert_eq!(r.bytes().await.unwrap().len(), 20 << 20);
}

#[tokio::test]
async fn hang_close_and_latency() {
    let emu = start().await;
    let (ctl, url) = (emu.control(), emu.token_url(Rently));
    let c = builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    ctl.inject(Rently, Fault::Hang, 1);
    let err = c.post(&url).form_pairs(&GOOD).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    ctl.inject(Rently, Fault::CloseConnection, 1);
    let err = c.post(&url).form_pairs(&GOOD).send().await.unwrap_err();
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    assert_eq!(
        c.post(&url)
            .form_pairs(&GOOD)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    ctl.set_latency(Rently, Duration::from_millis(150));
    let started = Instant::now();
    let r = post_form(&client(), &url, &GOOD).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(ctl.counters(Rently).requests, 4);
}

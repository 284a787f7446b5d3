use provider_emulator::AccountState;
use provider_emulator::Fault;
use provider_emulator::Provider::Carrental;
use provider_emulator::fixtures::{CARRENTAL_PASSWORD as PASSWORD, CARRENTAL_USERNAME as USER};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

async fn login(c: &reqwest::Client, url: &str, user: &str, password: &str) -> reqwest::Response {
    c.post(url)
        .json(&json!({"userName": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn expect_text(resp: reqwest::Response, status: StatusCode, text: &str) {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await.unwrap(), text);
}

#[tokio::test]
async fn issues_a_jwt_with_string_lifetime_and_http_dates() {
    let emu = start().await;
    let c = client();
    let resp = login(&c, &emu.token_url(Carrental), USER, PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["type"], "Bearer");
    assert_eq!(body["expiresIn"], "3600");
    let issued = httpdate(&body["issued"]);
    let expires = httpdate(&body["expires"]);
    assert_eq!(expires.duration_since(issued).as_secs(), 3600);
    let token = body["token"].as_str().unwrap();
    assert_eq!(jwt_claims(token)["sub"], USER);
    let who = whoami(&c, &emu.whoami_url(Carrental), token).await;
    assert_eq!(who.status(), StatusCode::OK);
    // A Carrental token is no Rently token.
    assert!(
        !emu.control()
            .is_valid_access_token(provider_emulator::Provider::Rently, token)
    );
}

fn httpdate(v: &serde_json::Value) -> jiff::Timestamp {
    let s = v.as_str().unwrap();
    assert!(s.ends_with(" GMT"), "{s}");
    jiff::fmt::rfc2822::parse(s).unwrap().timestamp()
}

#[tokio::test]
async fn documented_error_statuses() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Carrental));

    let form = post_form(&c, &url, &[("userName", USER), ("password", PASSWORD)]).await;
    expect_text(form, StatusCode::BAD_REQUEST, "Invalid grant type").await;
    let partial = c
        .post(&url)
        .json(&json!({"userName": USER}))
        .send()
        .await
        .unwrap();
    expect_text(partial, StatusCode::BAD_REQUEST, "Invalid grant type").await;

    let wrong = login(&c, &url, USER, "wrong").await;
    let failed = "Authentication Failed or Account validity Expired";
    expect_text(wrong, StatusCode::UNAUTHORIZED, failed).await;

    let unknown = login(&c, &url, "ghost", "x").await;
    expect_text(
        unknown,
        StatusCode::NOT_FOUND,
        "No user found with username: ghost",
    )
    .await;

    ctl.set_account_state(Carrental, USER, AccountState::Expired);
    let expired = login(&c, &url, USER, PASSWORD).await;
    expect_text(expired, StatusCode::UNAUTHORIZED, failed).await;

    ctl.set_account_state(Carrental, USER, AccountState::Forbidden);
    let forbidden = login(&c, &url, USER, PASSWORD).await;
    expect_text(
        forbidden,
        StatusCode::FORBIDDEN,
        "Forbidden - Access denied",
    )
    .await;

    ctl.set_account_state(Carrental, USER, AccountState::Active);
    let status = Fault::Status {
        code: 500,
        body: "Internal Server Error".into(),
    };
    ctl.inject(Carrental, status, 1);
    let boom = login(&c, &url, USER, PASSWORD).await;
    expect_text(
        boom,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
    )
    .await;
    assert_eq!(
        login(&c, &url, USER, PASSWORD).await.status(),
        StatusCode::OK
    );

    let n = ctl.counters(Carrental);
    assert_eq!((n.requests, n.issued), (8, 1));
}

//! The JSON admin API drives the same knobs as `Control`.

use provider_emulator::Emulator;
use provider_emulator::Provider::{Carrental, Reltio, Retently};
use provider_emulator::fixtures::*;
use reqwest::{Client, Method};
use serde_json::{Value, json};

use crate::common::*;

/// Calls the admin API; returns the status and the JSON body (Null when empty).
async fn call(c: &Client, method: Method, url: String, body: Value) -> (u16, Value) {
    let resp = c.request(method, url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn admin_api_round_trip() {
    let emu = start().await;
    let c = client();
    let admin = |path: &str| format!("{}/_emulator{path}", emu.base_url());
    let put = |path: &str, body: Value| call(&c, Method::PUT, admin(path), body);
    let post = |path: &str, body: Value| call(&c, Method::POST, admin(path), body);
    let get = |path: &str| call(&c, Method::GET, admin(path), Value::Null);
    let login = json!({"userName": CARRENTAL_USERNAME, "password": CARRENTAL_PASSWORD});
    let carrental = || c.post(emu.token_url(Carrental)).json(&login).send();

    assert_eq!(get("/health").await.0, 200);
    assert_eq!(put("/carrental/lifetime", json!({"secs": 5})).await.0, 204);
    let body = json(carrental().await.unwrap()).await;
    assert_eq!(body["expiresIn"], "5");
    let token = body["token"].as_str().unwrap();
    let valid = post("/carrental/validate", json!({"token": token})).await;
    assert_eq!(valid, (200, json!({"valid": true})));

    let fault = json!({"fault": {"status": {"code": 500, "body": "Internal Server Error"}}});
    assert_eq!(post("/carrental/faults", fault).await.0, 204);
    assert_eq!(carrental().await.unwrap().status(), 500);
    let bad = json!({"fault": {"status": {"code": 1000, "body": ""}}});
    assert_eq!(post("/carrental/faults", bad).await.0, 400);

    let state = json!({"user": CARRENTAL_USERNAME, "state": "forbidden"});
    assert_eq!(put("/carrental/account-state", state).await.0, 204);
    assert_eq!(carrental().await.unwrap().status(), 403);

    let counters = get("/carrental/counters").await.1;
    assert_eq!(
        counters,
        json!({
            "requests": 3, "issued": 1, "rate_limited": 0,
            "stale_refresh_presented": 0, "stale_refresh_refused": 0,
            "most_stale_in_one_chain": 0, "overlapping_refreshes": 0, "chains_started": 0,
        })
    );
    let last = get("/carrental/last-request").await.1;
    assert_eq!(last["path"], "/carrental/authtoken");
    let sent: Value = serde_json::from_str(last["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, login);

    let code = post(
        "/retently/codes",
        json!({"redirect_uri": "https://x.example/"}),
    )
    .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", RETENTLY_CLIENT_ID),
        ("client_secret", RETENTLY_CLIENT_SECRET),
        ("redirect_uri", "https://x.example/"),
        ("code", code.1["code"].as_str().unwrap()),
    ];
    let exchanged = post_form(&c, &emu.token_url(Retently), &form).await;
    assert_eq!(exchanged.status(), 200);

    assert_eq!(
        put("/reltio/multi-token", json!({"enabled": true})).await.0,
        204
    );
    assert_eq!(
        put("/reltio/rate-limit", json!({"per_second": null}))
            .await
            .0,
        204
    );
    let user = json!({"user": "someone", "secret": "pw"});
    assert_eq!(put("/reltio/password", user).await.0, 204);
    let form = [
        ("grant_type", "password"),
        ("username", "someone"),
        ("password", "pw"),
    ];
    let a = json(crate::reltio::grant(&c, &emu.token_url(Reltio), &form).await).await;
    let b = json(crate::reltio::grant(&c, &emu.token_url(Reltio), &form).await).await;
    assert_ne!(a["access_token"], b["access_token"], "multi-token on");

    assert_eq!(get("/nobody/counters").await.0, 404);
    assert_eq!(post("/reset", Value::Null).await.0, 204);
    assert_eq!(emu.control().counters(Carrental).requests, 0);
    assert!(!emu.control().is_valid_access_token(Carrental, token));
}

const CHAIN_REDIRECT: &str = "https://chains.example/";

/// A Retently authorization-code exchange; returns the refresh token.
async fn retently_chain(c: &Client, emu: &Emulator) -> String {
    let code = emu.control().mint_authorization_code(CHAIN_REDIRECT);
    let resp = crate::retently::exchange(c, &emu.token_url(Retently), &code, CHAIN_REDIRECT).await;
    json(resp).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A Reltio password grant, then a refresh; returns both refresh tokens (the second one
/// only when the refresh answer carries one).
async fn reltio_refresh(c: &Client, emu: &Emulator) -> (Value, Value) {
    let url = emu.token_url(Reltio);
    let first = json(crate::reltio::password_grant(c, &url, RELTIO_PASSWORD).await).await;
    let rt = first["refresh_token"].as_str().unwrap();
    let second = json(crate::reltio::refresh_grant(c, &url, rt).await).await;
    (
        first["refresh_token"].clone(),
        second["refresh_token"].clone(),
    )
}

#[tokio::test]
async fn chain_knobs_over_the_admin_api() {
    let emu = start().await;
    let c = client();
    let admin = |path: &str| format!("{}/_emulator{path}", emu.base_url());
    let put = |path: &str, body: Value| call(&c, Method::PUT, admin(path), body);
    let get = |path: &str| call(&c, Method::GET, admin(path), Value::Null);
    let retently = emu.token_url(Retently);

    let grace = json!({"millis": 60_000});
    assert_eq!(put("/retently/refresh-grace", grace.clone()).await.0, 204);
    assert_eq!(put("/nobody/refresh-grace", grace).await.0, 404);
    let bad = put("/retently/refresh-grace", json!({"millis": -1}))
        .await
        .0;
    assert!((400..500).contains(&bad), "{bad}");
    let on = json!({"enabled": true});
    assert_eq!(put("/reltio/rotating-refresh", on).await.0, 204);
    assert_eq!(
        get("/retently/refreshes-in-flight").await,
        (200, json!({"in_flight": 0}))
    );

    // Retently: a replaced token is accepted within the grace.
    let rt1 = retently_chain(&c, &emu).await;
    for _ in 0..2 {
        let resp = crate::retently::refresh(&c, &retently, &rt1).await;
        assert_eq!(resp.status(), 200);
    }
    let counters = get("/retently/counters").await.1;
    assert_eq!(counters["stale_refresh_presented"], 1);
    assert_eq!(counters["most_stale_in_one_chain"], 1);
    assert_eq!(counters["stale_refresh_refused"], 0);
    assert_eq!(counters["overlapping_refreshes"], 0);
    assert_eq!(counters["chains_started"], 1);

    // Reltio: rotating, so the refresh answer carries a new refresh token.
    let (rt, rotated) = reltio_refresh(&c, &emu).await;
    assert!(rotated.is_string() && rotated != rt, "{rotated}");

    // A reset turns both knobs back off.
    assert_eq!(
        call(&c, Method::POST, admin("/reset"), Value::Null).await.0,
        204
    );
    let (_, rotated) = reltio_refresh(&c, &emu).await;
    assert!(rotated.is_null(), "{rotated}");
    let rt1 = retently_chain(&c, &emu).await;
    let first = crate::retently::refresh(&c, &retently, &rt1).await;
    assert_eq!(first.status(), 200);
    let reused = crate::retently::refresh(&c, &retently, &rt1).await;
    assert_eq!(reused.status(), 400);
}

use provider_emulator::Provider::Retently;
use provider_emulator::fixtures::{RETENTLY_CLIENT_ID as ID, RETENTLY_CLIENT_SECRET as SECRET};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::common::*;

const REDIRECT: &str = "https://www.example.com/";

pub async fn exchange(c: &Client, url: &str, code: &str, redirect: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", ID),
        ("client_secret", SECRET),
        ("redirect_uri", redirect),
        ("code", code),
    ];
    post_form(c, url, &form).await
}

pub async fn refresh(c: &Client, url: &str, token: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", ID),
        ("client_secret", SECRET),
        ("redirect_uri", "http://www.example.com/"),
        ("refresh_token", token),
    ];
    post_form(c, url, &form).await
}

async fn oauth_error(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json(resp).await;
    assert!(body["error_description"].is_string());
    body["error"].as_str().unwrap().to_owned()
}

fn field(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_their_redirect_uri() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let code = ctl.mint_authorization_code(REDIRECT);

    let mismatch = exchange(&c, &url, &code, "https://evil.example/").await;
    assert_eq!(oauth_error(mismatch).await, "invalid_grant");

    let ok = exchange(&c, &url, &code, REDIRECT).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body = json(ok).await;
    assert_eq!(body["expires_in"], 21600);
    let access = field(&body, "access_token");
    assert_eq!(access.len(), 36, "UUID-shaped: {access}");
    assert!(body["refresh_token"].is_string());
    assert!(ctl.is_valid_access_token(Retently, &access));
    let who = json(whoami(&c, &emu.whoami_url(Retently), &access).await).await;
    assert_eq!(who["subject"], ID);

    let reused = exchange(&c, &url, &code, REDIRECT).await;
    assert_eq!(oauth_error(reused).await, "invalid_grant");
    let unknown = exchange(&c, &url, "made-up", REDIRECT).await;
    assert_eq!(oauth_error(unknown).await, "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let code = ctl.mint_authorization_code(REDIRECT);
    let first = json(exchange(&c, &url, &code, REDIRECT).await).await;
    let rt1 = field(&first, "refresh_token");

    let second = refresh(&c, &url, &rt1).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second = json(second).await;
    let rt2 = field(&second, "refresh_token");
    assert_ne!(rt1, rt2);
    assert_ne!(
        field(&first, "access_token"),
        field(&second, "access_token")
    );

    assert_eq!(
        oauth_error(refresh(&c, &url, &rt1).await).await,
        "invalid_grant"
    );
    let third = json(refresh(&c, &url, &rt2).await).await;
    let rt3 = field(&third, "refresh_token");

    ctl.revoke_refresh_tokens(Retently);
    assert_eq!(
        oauth_error(refresh(&c, &url, &rt3).await).await,
        "invalid_grant"
    );
    assert_eq!(ctl.counters(Retently).issued, 3);
}

#[tokio::test]
async fn strict_validation() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let code = ctl.mint_authorization_code(REDIRECT);
    let bad_client = [
        ("grant_type", "authorization_code"),
        ("client_id", ID),
        ("client_secret", "wrong"),
        ("redirect_uri", REDIRECT),
        ("code", code.as_str()),
    ];
    let resp = post_form(&c, &url, &bad_client).await;
    assert_eq!(oauth_error(resp).await, "invalid_client");

    let no_redirect = [
        ("grant_type", "refresh_token"),
        ("client_id", ID),
        ("client_secret", SECRET),
        ("refresh_token", "x"),
    ];
    let resp = post_form(&c, &url, &no_redirect).await;
    assert_eq!(oauth_error(resp).await, "invalid_request");

    let grant = [
        ("grant_type", "client_credentials"),
        ("client_id", ID),
        ("client_secret", SECRET),
    ];
    let resp = post_form(&c, &url, &grant).await;
    assert_eq!(oauth_error(resp).await, "unsupported_grant_type");

    // The code survived the failed attempts.
    assert_eq!(
        exchange(&c, &url, &code, REDIRECT).await.status(),
        StatusCode::OK
    );
}

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

async fn get_with(c: &Client, url: &str, query: &[(&str, &str)]) -> reqwest::Response {
    let url = reqwest::Url::parse_with_params(url, query).expect("a URL");
    c.get(url).send().await.expect("request")
}

/// Follows the authorization endpoint's redirect by hand: the query it sent the browser to.
async fn consent(c: &Client, url: &str, query: &[(&str, &str)]) -> Vec<(String, String)> {
    let resp = get_with(c, url, query).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let location = reqwest::Url::parse(&location).unwrap();
    location.query_pairs().into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_authorization_endpoint_redirects_with_a_code_bound_to_its_pkce_challenge() {
    let emu = start().await;
    let c = client();
    let (auth, url) = (
        emu.authorize_url(Retently).unwrap(),
        emu.token_url(Retently),
    );
    // RFC 7636 Appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let base = [
        ("response_type", "code"),
        ("client_id", ID),
        ("redirect_uri", REDIRECT),
        ("state", "s-1"),
    ];
    let with_pkce = [
        &base[..],
        &[
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    ]
    .concat();

    let answer = consent(&c, &auth, &with_pkce).await;
    assert_eq!(param(&answer, "state"), Some("s-1"));
    let code = param(&answer, "code").expect("a code").to_owned();
    // Without the verifier, or with another, the code is refused and stays unspent.
    assert_eq!(
        oauth_error(exchange(&c, &url, &code, REDIRECT).await).await,
        "invalid_request"
    );
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", ID),
        ("client_secret", SECRET),
        ("redirect_uri", REDIRECT),
        ("code", &code),
        (
            "code_verifier",
            "not-the-verifier-not-the-verifier-not-the-v",
        ),
    ];
    assert_eq!(
        oauth_error(post_form(&c, &url, &form).await).await,
        "invalid_grant"
    );
    form[5].1 = verifier;
    let ok = post_form(&c, &url, &form).await;
    assert_eq!(ok.status(), StatusCode::OK, "{:?}", ok.text().await);
    assert!(json(ok).await["refresh_token"].is_string());

    // Without PKCE the code needs no verifier.
    let plain = consent(&c, &auth, &base).await;
    let code = param(&plain, "code").unwrap();
    assert_eq!(
        exchange(&c, &url, code, REDIRECT).await.status(),
        StatusCode::OK
    );

    // Errors go back to the client's redirect URI, with the state.
    let mut wrong_type = base;
    wrong_type[0].1 = "token";
    let refused = consent(&c, &auth, &wrong_type).await;
    assert_eq!(param(&refused, "error"), Some("unsupported_response_type"));
    assert_eq!(param(&refused, "state"), Some("s-1"));
    assert_eq!(param(&refused, "code"), None);
    let plain_method = [&base[..], &[("code_challenge", challenge)]].concat();
    let refused = consent(&c, &auth, &plain_method).await;
    assert_eq!(param(&refused, "error"), Some("invalid_request"));

    // Nothing is redirected for an unknown client or without a redirect URI.
    let mut unknown = base;
    unknown[1].1 = "someone-else";
    let resp = get_with(&c, &auth, &unknown).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = get_with(&c, &auth, &base[..2]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

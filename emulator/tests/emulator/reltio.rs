use provider_emulator::Provider::{Reltio, Rently};
use provider_emulator::fixtures::{
    RELTIO_CLIENT_ID as CLIENT, RELTIO_CLIENT_SECRET as CLIENT_SECRET, RELTIO_PASSWORD as PASSWORD,
    RELTIO_USERNAME as USER,
};
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::common::*;

/// A token request with the default Basic client.
pub async fn grant(c: &Client, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    c.post(url)
        .basic_auth(CLIENT, Some(CLIENT_SECRET))
        .form_pairs(form)
        .send()
        .await
        .unwrap()
}

pub async fn password_grant(c: &Client, url: &str, password: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", password),
    ];
    grant(c, url, &form).await
}

pub async fn refresh_grant(c: &Client, url: &str, token: &str) -> reqwest::Response {
    grant(
        c,
        url,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn ok(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

fn s<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_else(|| panic!("{name} in {v}"))
}

#[tokio::test]
async fn password_grant_wire_format() {
    let emu = start().await;
    let c = client();
    let body = ok(password_grant(&c, &emu.token_url(Reltio), PASSWORD).await).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], "3599", "a string, as documented");
    assert!(
        body["scope"]
            .as_array()
            .unwrap()
            .contains(&"entities_api".into())
    );
    assert_eq!(s(&body, "refresh_token").len(), 36);
    let seen = emu.control().last_request(Reltio).unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some("Basic cmVsdGlvX3VpOnNlY3JldA==")
    );
    let who = ok(whoami(&c, &emu.whoami_url(Reltio), s(&body, "access_token")).await).await;
    assert_eq!(who["subject"], USER);
}

#[tokio::test]
async fn same_token_until_expiry_unless_multi_token() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Reltio));
    let a = ok(password_grant(&c, &url, PASSWORD).await).await;
    let b = ok(password_grant(&c, &url, PASSWORD).await).await;
    assert_eq!(s(&a, "access_token"), s(&b, "access_token"));
    assert!(s(&b, "expires_in").parse::<u64>().unwrap() <= 3599);

    // A refresh also hands back the live token; the refresh token is not rotated.
    let r = ok(refresh_grant(&c, &url, s(&a, "refresh_token")).await).await;
    assert_eq!(s(&r, "access_token"), s(&a, "access_token"));
    assert!(r.get("refresh_token").is_none(), "omitted by default");

    ctl.set_multi_token(true);
    let m = ok(password_grant(&c, &url, PASSWORD).await).await;
    assert_ne!(s(&m, "access_token"), s(&a, "access_token"));
    ctl.set_refresh_echo(true);
    let r1 = ok(refresh_grant(&c, &url, s(&a, "refresh_token")).await).await;
    let r2 = ok(refresh_grant(&c, &url, s(&a, "refresh_token")).await).await;
    assert_ne!(s(&r1, "access_token"), s(&r2, "access_token"));
    assert_eq!(s(&r2, "refresh_token"), s(&a, "refresh_token"));
    assert_eq!(ctl.counters(Reltio).issued, 6);

    // Without multi-token support a new token comes only once the current one expired.
    ctl.set_lifetime(Reltio, 0);
    let x = ok(password_grant(&c, &url, PASSWORD).await).await;
    ctl.set_multi_token(false);
    let y = ok(password_grant(&c, &url, PASSWORD).await).await;
    assert_ne!(s(&x, "access_token"), s(&y, "access_token"));
    assert_eq!(s(&y, "expires_in"), "0");
}

#[tokio::test]
async fn client_and_user_errors() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Reltio));
    let form = [
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ];

    let no_basic = c.post(&url).form_pairs(&form).send().await.unwrap();
    assert_eq!(no_basic.status(), StatusCode::UNAUTHORIZED);
    assert!(
        no_basic.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(json(no_basic).await["error"], "unauthorized");
    let bad_basic = c
        .post(&url)
        .basic_auth(CLIENT, Some("x"))
        .form_pairs(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_basic.status(), StatusCode::UNAUTHORIZED);

    let bad_user = password_grant(&c, &url, "wrong").await;
    assert_eq!(bad_user.status(), StatusCode::BAD_REQUEST);
    let body = json(bad_user).await;
    assert_eq!(
        (s(&body, "error"), s(&body, "error_description")),
        ("invalid_grant", "Bad credentials")
    );

    let good = ok(password_grant(&c, &url, PASSWORD).await).await;
    ctl.revoke_refresh_tokens(Reltio);
    let revoked = refresh_grant(&c, &url, s(&good, "refresh_token")).await;
    assert_eq!(revoked.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(revoked).await["error"], "invalid_grant");

    // The client secret can be changed too.
    ctl.set_password(Reltio, CLIENT, "new-secret");
    assert_eq!(
        password_grant(&c, &url, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn more_than_ten_requests_per_second_get_429() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Reltio));
    let burst = (0..15).map(|_| password_grant(&c, &url, PASSWORD));
    let statuses: Vec<_> = futures::future::join_all(burst).await;
    let limited: Vec<_> = statuses.iter().filter(|r| r.status() == 429).collect();
    assert!(!limited.is_empty(), "a burst of 15 must be throttled");
    assert_eq!(limited[0].headers()[RETRY_AFTER], "1");
    let ok = statuses.iter().filter(|r| r.status() == 200).count();
    assert!(ok >= 10 && ok + limited.len() == 15, "ok={ok}");
    let n = ctl.counters(Reltio);
    assert_eq!(
        (n.requests, n.issued, n.rate_limited),
        (15, ok as u64, limited.len() as u64)
    );

    // Overrides: none for Reltio, two per second for Rently.
    ctl.set_rate_limit(Reltio, None);
    let burst = (0..15).map(|_| password_grant(&c, &url, PASSWORD));
    assert!(
        futures::future::join_all(burst)
            .await
            .iter()
            .all(|r| r.status() == 200)
    );
    ctl.set_rate_limit(Rently, Some(2));
    let rently = emu.token_url(Rently);
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(
            post_form(&c, &rently, &[("grant_type", "x")])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [400, 400, 429]);
}

use provider_emulator::Provider::Rently;
use provider_emulator::fixtures::{RENTLY_CLIENT_ID as ID, RENTLY_CLIENT_SECRET as SECRET};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HOST, WWW_AUTHENTICATE};

use crate::common::*;

fn creds(secret: &str) -> [(&str, &str); 3] {
    [
        ("grant_type", "client_credentials"),
        ("client_id", ID),
        ("client_secret", secret),
    ]
}

#[tokio::test]
async fn issues_a_tenant_bound_jwt() {
    let emu = start().await;
    let c = client();
    let resp = post_form(&c, &emu.token_url(Rently), &creds(SECRET)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86399);
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_claims(token);
    let host = emu.base_url().trim_start_matches("http://").to_owned();
    assert_eq!(claims["tenant"], host.as_str());
    assert_eq!(claims["sub"], ID);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        86399
    );

    let ctl = emu.control();
    assert!(ctl.is_valid_access_token(Rently, token));
    let who = whoami(&c, &emu.whoami_url(Rently), token).await;
    assert_eq!(who.status(), StatusCode::OK);
    let who = json(who).await;
    assert_eq!(who["provider"], "rently");
    assert_eq!(who["subject"], ID);

    // Another tenant's host rejects it, with the documented challenge.
    let other = c
        .get(emu.whoami_url(Rently))
        .header(HOST, "other-tenant.example")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let challenge = other.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with(
            "Bearer authorization_uri=http://other-tenant.example/rently/auth/token, resource_id="
        ),
        "{challenge}"
    );

    let seen = ctl.last_request(Rently).unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/rently/auth/token");
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        seen.form()
            .contains(&("client_secret".into(), SECRET.into()))
    );
    let n = ctl.counters(Rently);
    assert_eq!((n.requests, n.issued, n.rate_limited), (1, 1, 0));
}

#[tokio::test]
async fn documented_errors() {
    let emu = start().await;
    let c = client();
    let url = emu.token_url(Rently);
    let error_of = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        json(resp).await["error"].as_str().unwrap().to_owned()
    };

    let wrong = post_form(&c, &url, &creds("nope")).await;
    assert_eq!(error_of(wrong).await, "invalid_client");

    let grant = [
        ("grant_type", "password"),
        ("client_id", ID),
        ("client_secret", SECRET),
    ];
    let grant = post_form(&c, &url, &grant).await;
    assert_eq!(error_of(grant).await, "unsupported_grant_type");

    let missing = post_form(&c, &url, &creds(SECRET)[..2]).await;
    assert_eq!(error_of(missing).await, "invalid_request");

    // The right fields in the wrong dialect (JSON) are refused.
    let as_json = c
        .post(&url)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"grant_type":"client_credentials","client_id":"rently-user","client_secret":"rently-pass"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(as_json).await, "invalid_request");

    let twice = c
        .post(&url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=rently-user&client_id=x&client_secret=rently-pass")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(twice).await, "invalid_request");

    let n = emu.control().counters(Rently);
    assert_eq!((n.requests, n.issued), (5, 0));
}

#[tokio::test]
async fn password_change_and_expiry() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Rently));
    ctl.set_password(Rently, ID, "rotated");
    assert_eq!(post_form(&c, &url, &creds(SECRET)).await.status(), 400);
    ctl.set_lifetime(Rently, 0);
    let body = json(post_form(&c, &url, &creds("rotated")).await).await;
    assert_eq!(body["expires_in"], 0);
    let token = body["access_token"].as_str().unwrap();
    assert!(!ctl.is_valid_access_token(Rently, token));
    let who = whoami(&c, &emu.whoami_url(Rently), token).await;
    assert_eq!(who.status(), StatusCode::UNAUTHORIZED);
    assert!(who.headers().contains_key(WWW_AUTHENTICATE));
}

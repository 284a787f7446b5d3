use provider_emulator::Provider::Rently;
use provider_emulator::fixtures::{RENTLY_CLIENT_ID, RENTLY_CLIENT_SECRET};
use provider_emulator::{Emulator, Options};
use reqwest::{Certificate, StatusCode};

use crate::common::*;

#[tokio::test]
async fn https_with_a_throwaway_ca() {
    let emu = Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(emu.base_url().starts_with("https://localhost:"));
    let ca = Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap();
    let trusting = builder().tls_certs_only([ca]).build().unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", RENTLY_CLIENT_ID),
        ("client_secret", RENTLY_CLIENT_SECRET),
    ];
    let body = json(post_form(&trusting, &emu.token_url(Rently), &form).await).await;
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        jwt_claims(token)["tenant"],
        emu.base_url().trim_start_matches("https://")
    );
    let who = whoami(&trusting, &emu.whoami_url(Rently), token).await;
    assert_eq!(who.status(), StatusCode::OK);

    // The certificate names 127.0.0.1 too.
    let by_ip = emu.token_url(Rently).replace("localhost", "127.0.0.1");
    assert_eq!(
        post_form(&trusting, &by_ip, &form).await.status(),
        StatusCode::OK
    );

    // A client that does not trust the CA fails the handshake.
    let stranger = builder().tls_certs_only([]).build().unwrap();
    let err = stranger
        .post(emu.token_url(Rently))
        .form_pairs(&form)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(emu.control().counters(Rently).requests, 2);
}

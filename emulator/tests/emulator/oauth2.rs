//! The standards OAuth 2.0 server under `/oauth2`: every client authentication method and
//! the JWT-bearer grant, with assertions signed by hand with ring here (no JWT library).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provider_emulator::keys::{self, ClientCertificate, TestKeyPair};
use provider_emulator::{
    CLIENT_ASSERTION_TYPE_JWT_BEARER, ClientMethod, Emulator, Fault, GRANT_TYPE_JWT_BEARER,
    JwsAlgorithm, OAuth2Counters, Options,
};
use reqwest::{Certificate, Client, Identity, Method, StatusCode};
use ring::rand::SystemRandom;
use ring::{hmac, signature};
use serde_json::{Value, json};

use crate::common::*;

// ---- signing by hand ---------------------------------------------------------------------

enum Key {
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
    Secret(Vec<u8>),
}

impl Key {
    fn rsa() -> Key {
        Key::Rsa(signature::RsaKeyPair::from_pkcs8(&keys::rsa().private_key_der()).unwrap())
    }

    fn ec(pair: &TestKeyPair) -> Key {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        Key::Ec(signature::EcdsaKeyPair::from_pkcs8(alg, &pair.private_key_der(), &rng).unwrap())
    }

    fn ed(pair: &TestKeyPair) -> Key {
        Key::Ed(signature::Ed25519KeyPair::from_pkcs8(&pair.private_key_der()).unwrap())
    }

    /// Signs `input` as `alg` says; panics on a combination the key cannot do.
    fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (self, alg) {
            (Key::Rsa(k), "RS256" | "PS256") => {
                let padding: &dyn signature::RsaEncoding = if alg == "RS256" {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, input, &mut sig).unwrap();
                sig
            }
            (Key::Ec(k), "ES256") => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            (Key::Ed(k), "EdDSA") => k.sign(input).as_ref().to_vec(),
            (Key::Secret(s), "HS256") => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, s);
                hmac::sign(&key, input).as_ref().to_vec()
            }
            (_, "none") => Vec::new(),
            _ => panic!("this key does not sign {alg}"),
        }
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `claims` with header `{"alg":alg,"typ":"JWT"}`.
fn jws(key: &Key, alg: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn unique() -> String {
    b64(rand::random::<[u8; 12]>())
}

/// Client assertion claims (RFC 7523 §3) for `client` with audience `aud`.
fn client_claims(client: &str, aud: &str) -> Value {
    let t = now();
    json!({"iss": client, "sub": client, "aud": aud, "iat": t, "exp": t + 300, "jti": unique()})
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(name);
    } else {
        claims[name] = value;
    }
    claims
}

async fn client_credentials(c: &Client, url: &str, assertion: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
    ];
    post_form(c, url, &form).await
}

/// Status, `error` and `error_description` of a refusal.
async fn refusal(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = json(resp).await;
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    (status, field("error"), field("error_description"))
}

/// Asserts a 401 `invalid_client` whose description contains `what`.
async fn invalid_client(resp: reqwest::Response, what: &str) {
    let (status, error, description) = refusal(resp).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client"),
        "{description}"
    );
    assert!(description.contains(what), "{description:?} lacks {what:?}");
}

fn register(emu: &Emulator, client: &str, method: ClientMethod) {
    emu.control().register_oauth_client(client, method).unwrap();
}

fn private_key_jwt(algorithm: JwsAlgorithm, pair: &TestKeyPair) -> ClientMethod {
    ClientMethod::PrivateKeyJwt {
        algorithm,
        public_key_pem: pair.public_key_pem.clone(),
    }
}

// ---- private_key_jwt and client_secret_jwt ---------------------------------------------

#[tokio::test]
async fn private_key_jwt_with_every_algorithm() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.oauth2_token_url());
    let (ec, ed) = (keys::ec_p256(), keys::ed25519());
    let cases = [
        ("RS256", JwsAlgorithm::RS256, keys::rsa(), Key::rsa()),
        ("PS256", JwsAlgorithm::PS256, keys::rsa(), Key::rsa()),
        ("ES256", JwsAlgorithm::ES256, ec.clone(), Key::ec(&ec)),
        ("EdDSA", JwsAlgorithm::EdDSA, ed.clone(), Key::ed(&ed)),
    ];
    for (alg, algorithm, pair, key) in &cases {
        let id = format!("client-{alg}");
        register(&emu, &id, private_key_jwt(*algorithm, pair));
        let resp = client_credentials(&c, &url, &jws(key, alg, &client_claims(&id, &url))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{alg}");
        let body = json(resp).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert!(body.get("refresh_token").is_none());
        assert!(body.get("scope").is_none());
        let token = body["access_token"].as_str().unwrap();
        assert!(ctl.is_valid_oauth2_access_token(token));
        let info = ctl.oauth2_access_token(token).unwrap();
        assert_eq!(
            (info.client_id.as_str(), info.grant_type.as_str()),
            (id.as_str(), "client_credentials")
        );
        assert_eq!(info.certificate_thumbprint, None);
        let who = whoami(&c, &emu.oauth2_whoami_url(), token).await;
        assert_eq!(who.status(), StatusCode::OK);
        assert_eq!(json(who).await["subject"], id.as_str());

        // The issuer identifier is an accepted audience too; client_id and scope may come
        // along; an array holding only the audience is fine.
        let claims = with(
            client_claims(&id, &emu.oauth2_issuer()),
            "aud",
            json!([emu.oauth2_issuer()]),
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("scope", "read write"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER),
            ("client_assertion", &jws(key, alg, &claims)),
        ];
        let resp = post_form(&c, &url, &form).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{alg} with the issuer as aud"
        );
        let body = json(resp).await;
        assert_eq!(body["scope"], "read write");
    }
    assert_eq!(
        ctl.oauth2_counters(),
        OAuth2Counters {
            requests: 8,
            issued: 8,
            rejected: 0
        }
    );
    // What the client sent is on record, assertion included.
    let last = ctl.oauth2_last_request().unwrap();
    assert_eq!(last.path, "/oauth2/token");
    assert!(
        last.form()
            .iter()
            .any(|(k, v)| k == "client_assertion" && v.split('.').count() == 3)
    );
}

#[tokio::test]
async fn client_secret_jwt_with_hs256() {
    let emu = start().await;
    let (c, url) = (client(), emu.oauth2_token_url());
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    register(
        &emu,
        "hs",
        ClientMethod::ClientSecretJwt {
            secret: secret.into(),
        },
    );
    let key = Key::Secret(secret.as_bytes().to_vec());
    let ok = client_credentials(&c, &url, &jws(&key, "HS256", &client_claims("hs", &url))).await;
    assert_eq!(ok.status(), StatusCode::OK);

    let wrong = Key::Secret(b"another-secret".to_vec());
    let resp =
        client_credentials(&c, &url, &jws(&wrong, "HS256", &client_claims("hs", &url))).await;
    invalid_client(resp, "signature is invalid").await;

    // A client_secret_jwt client must not switch to an asymmetric algorithm.
    let ec = keys::ec_p256();
    let resp = client_credentials(
        &c,
        &url,
        &jws(&Key::ec(&ec), "ES256", &client_claims("hs", &url)),
    )
    .await;
    invalid_client(resp, "does not match").await;
    // Nor send its secret instead of an assertion.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "hs"),
        ("client_secret", secret),
    ];
    invalid_client(post_form(&c, &url, &form).await, "not supported").await;
}

#[tokio::test]
async fn client_assertions_are_refused_for_each_flaw() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.oauth2_token_url());
    register(
        &emu,
        "rsa",
        private_key_jwt(JwsAlgorithm::RS256, &keys::rsa()),
    );
    let key = Key::rsa();
    let good = || client_claims("rsa", &url);
    let send = |claims: Value| {
        let (c, url, key) = (&c, &url, &key);
        async move { client_credentials(c, url, &jws(key, "RS256", &claims)).await }
    };

    invalid_client(
        send(with(good(), "iss", json!("nobody"))).await,
        "Unknown client",
    )
    .await;
    invalid_client(
        send(with(good(), "aud", json!("https://elsewhere/token"))).await,
        "aud",
    )
    .await;
    let both = json!([url.clone(), "https://elsewhere/token"]);
    invalid_client(send(with(good(), "aud", both)).await, "aud").await;
    invalid_client(send(with(good(), "exp", json!(now() - 1))).await, "expired").await;
    invalid_client(
        send(with(good(), "exp", json!(now() + 3600))).await,
        "too far",
    )
    .await;
    invalid_client(
        send(with(good(), "exp", Value::Null)).await,
        "exp claim is required",
    )
    .await;
    invalid_client(
        send(with(good(), "exp", json!("soon"))).await,
        "NumericDate",
    )
    .await;
    invalid_client(
        send(with(good(), "jti", Value::Null)).await,
        "jti claim is required",
    )
    .await;
    invalid_client(send(with(good(), "iat", json!(now() + 300))).await, "iat").await;
    invalid_client(send(with(good(), "nbf", json!(now() + 300))).await, "nbf").await;
    invalid_client(
        send(with(good(), "sub", json!("someone-else"))).await,
        "sub",
    )
    .await;
    // Within the skew, iat and nbf may be a little ahead.
    let ahead = with(
        with(good(), "iat", json!(now() + 30)),
        "nbf",
        json!(now() + 30),
    );
    assert_eq!(send(ahead).await.status(), StatusCode::OK);

    // The exp bound is a knob.
    ctl.set_oauth2_assertion_max_lifetime(7200);
    assert_eq!(
        send(with(good(), "exp", json!(now() + 3600)))
            .await
            .status(),
        StatusCode::OK
    );
    ctl.set_oauth2_assertion_max_lifetime(600);

    // Replay: the same jti twice, even in a fresh assertion.
    let once = good();
    assert_eq!(send(once.clone()).await.status(), StatusCode::OK);
    invalid_client(send(once.clone()).await, "jti reused").await;
    invalid_client(
        send(with(once, "exp", json!(now() + 200))).await,
        "jti reused",
    )
    .await;

    // Signed by another key; tampered with after signing.
    let other = keys::ec_p256();
    register(&emu, "ec", private_key_jwt(JwsAlgorithm::ES256, &other));
    let stranger = Key::ec(&keys::ec_p256());
    let forged = jws(&stranger, "ES256", &client_claims("ec", &url));
    invalid_client(
        client_credentials(&c, &url, &forged).await,
        "signature is invalid",
    )
    .await;
    let signed = jws(&key, "RS256", &good());
    let mut parts: Vec<&str> = signed.split('.').collect();
    let tampered = b64(with(good(), "sub", json!("rsa")).to_string());
    parts[1] = &tampered;
    invalid_client(
        client_credentials(&c, &url, &parts.join(".")).await,
        "signature is invalid",
    )
    .await;

    // alg none, and alg confusion: HS256 keyed with the registered public key, PS256 for an
    // RS256 registration.
    let none = jws(&key, "none", &good());
    invalid_client(client_credentials(&c, &url, &none).await, "alg none").await;
    let pem_as_secret = Key::Secret(keys::RSA_PUBLIC_KEY_PEM.as_bytes().to_vec());
    let swapped = jws(&pem_as_secret, "HS256", &good());
    invalid_client(
        client_credentials(&c, &url, &swapped).await,
        "does not match",
    )
    .await;
    let spki_der = pem_der(keys::RSA_PUBLIC_KEY_PEM, "PUBLIC KEY");
    let swapped = jws(&Key::Secret(spki_der), "HS256", &good());
    invalid_client(
        client_credentials(&c, &url, &swapped).await,
        "does not match",
    )
    .await;
    let pss = jws(&key, "PS256", &good());
    invalid_client(client_credentials(&c, &url, &pss).await, "does not match").await;

    // Not a JWS at all.
    invalid_client(
        client_credentials(&c, &url, "not.a-jws").await,
        "well-formed",
    )
    .await;
    invalid_client(client_credentials(&c, &url, "a.b.c").await, "well-formed").await;

    // client_id in the body must name the assertion's issuer.
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "ec"),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", &jws(&key, "RS256", &good())),
    ];
    invalid_client(post_form(&c, &url, &form).await, "client_id does not match").await;

    // Malformed requests are 400 invalid_request.
    let malformed: [&[(&str, &str)]; 4] = [
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:example:saml"),
            ("client_assertion", "x.y.z"),
        ],
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion", "x.y.z"),
        ],
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", "s"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER),
            ("client_assertion", "x.y.z"),
        ],
        &[("client_assertion", "x.y.z")],
    ];
    for form in malformed {
        let (status, error, _) = refusal(post_form(&c, &url, form).await).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
    }
    let resp = c
        .post(&url)
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(resp).await.1, "invalid_request");
    let form = [("grant_type", "password")];
    assert_eq!(
        refusal(post_form(&c, &url, &form).await).await.1,
        "unsupported_grant_type"
    );

    // No authentication at all; a key client that sends only its client_id.
    let form = [("grant_type", "client_credentials")];
    invalid_client(post_form(&c, &url, &form).await, "client_id is required").await;
    let form = [("grant_type", "client_credentials"), ("client_id", "rsa")];
    invalid_client(post_form(&c, &url, &form).await, "private_key_jwt").await;

    let counters = ctl.oauth2_counters();
    assert_eq!(counters.issued, 3);
    assert_eq!(counters.requests, counters.issued + counters.rejected);
}

#[tokio::test]
async fn errors_never_echo_the_assertion() {
    let emu = start().await;
    let (c, url) = (client(), emu.oauth2_token_url());
    register(
        &emu,
        "rsa",
        private_key_jwt(JwsAlgorithm::RS256, &keys::rsa()),
    );
    let bad = jws(
        &Key::rsa(),
        "RS256",
        &with(client_claims("rsa", &url), "exp", json!(1)),
    );
    let text = client_credentials(&c, &url, &bad)
        .await
        .text()
        .await
        .unwrap();
    for part in bad.split('.') {
        assert!(!text.contains(part), "{text}");
    }
    assert!(!text.contains("BEGIN"), "{text}");
}

fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.contains(&format!("BEGIN {label}")))
        .skip(1)
        .take_while(|l| !l.contains("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

// ---- mutual TLS ------------------------------------------------------------------------

async fn start_tls() -> Emulator {
    Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap()
}

/// A client trusting the emulator's CA, presenting `cert` when given.
fn tls_client(emu: &Emulator, cert: Option<&ClientCertificate>) -> Client {
    let ca = Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap();
    let mut b = builder().tls_certs_only([ca]);
    if let Some(cert) = cert {
        b = b.identity(Identity::from_pem(cert.identity_pem().as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn mtls_grant(c: &Client, url: &str, client_id: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(id) = client_id {
        form.push(("client_id", id));
    }
    post_form(c, url, &form).await
}

#[tokio::test]
async fn mutual_tls_with_the_registered_certificate_binds_the_token() {
    let emu = start_tls().await;
    let (ctl, url, whoami_url) = (
        emu.control(),
        emu.oauth2_token_url(),
        emu.oauth2_whoami_url(),
    );
    let (mine, theirs) = (
        keys::client_certificate("svc-a"),
        keys::client_certificate("svc-a"),
    );
    register(
        &emu,
        "svc-a",
        ClientMethod::Tls {
            certificate_pem: mine.certificate_pem.clone(),
        },
    );
    let (with_mine, with_theirs, without) = (
        tls_client(&emu, Some(&mine)),
        tls_client(&emu, Some(&theirs)),
        tls_client(&emu, None),
    );

    let resp = mtls_grant(&with_mine, &url, Some("svc-a")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    // The response is standard: the binding is server state only.
    assert!(body.get("cnf").is_none());
    let token = body["access_token"].as_str().unwrap();
    let info = ctl.oauth2_access_token(token).unwrap();
    assert_eq!(info.certificate_thumbprint, Some(mine.thumbprint()));

    // RFC 8705 §3: the bound token works only with the same certificate.
    let who = whoami(&with_mine, &whoami_url, token).await;
    assert_eq!(who.status(), StatusCode::OK);
    assert_eq!(json(who).await["cnf"]["x5t#S256"], mine.thumbprint());
    for other in [&with_theirs, &without] {
        let who = whoami(other, &whoami_url, token).await;
        assert_eq!(who.status(), StatusCode::UNAUTHORIZED);
        assert!(
            who.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }

    invalid_client(
        mtls_grant(&with_theirs, &url, Some("svc-a")).await,
        "does not match",
    )
    .await;
    invalid_client(
        mtls_grant(&without, &url, Some("svc-a")).await,
        "No client certificate",
    )
    .await;
    invalid_client(
        mtls_grant(&with_mine, &url, None).await,
        "client_id is required",
    )
    .await;
    invalid_client(
        mtls_grant(&with_mine, &url, Some("svc-b")).await,
        "Unknown client",
    )
    .await;
    // A certificate client cannot authenticate with an assertion instead.
    let ec = keys::ec_p256();
    let assertion = jws(&Key::ec(&ec), "ES256", &client_claims("svc-a", &url));
    let resp = client_credentials(&with_mine, &url, &assertion).await;
    invalid_client(resp, "self_signed_tls_client_auth").await;

    assert_eq!(
        ctl.oauth2_counters(),
        OAuth2Counters {
            requests: 6,
            issued: 1,
            rejected: 5
        }
    );
}

#[tokio::test]
async fn a_client_certificate_does_not_disturb_other_endpoints() {
    let emu = start_tls().await;
    let cert = keys::client_certificate("anyone");
    let c = tls_client(&emu, Some(&cert));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", provider_emulator::fixtures::RENTLY_CLIENT_ID),
        (
            "client_secret",
            provider_emulator::fixtures::RENTLY_CLIENT_SECRET,
        ),
    ];
    let url = emu.token_url(provider_emulator::Provider::Rently);
    assert_eq!(post_form(&c, &url, &form).await.status(), StatusCode::OK);
    // private_key_jwt over a connection with a certificate: not bound.
    let ed = keys::ed25519();
    register(&emu, "ed", private_key_jwt(JwsAlgorithm::EdDSA, &ed));
    let url = emu.oauth2_token_url();
    let resp = client_credentials(
        &c,
        &url,
        &jws(&Key::ed(&ed), "EdDSA", &client_claims("ed", &url)),
    )
    .await;
    let token = json(resp).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        emu.control()
            .oauth2_access_token(&token)
            .unwrap()
            .certificate_thumbprint,
        None
    );
    let plain = tls_client(&emu, None);
    assert_eq!(
        whoami(&plain, &emu.oauth2_whoami_url(), &token)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn mutual_tls_needs_tls() {
    let emu = start().await;
    let cert = keys::client_certificate("svc");
    register(
        &emu,
        "svc",
        ClientMethod::Tls {
            certificate_pem: cert.certificate_pem,
        },
    );
    let resp = mtls_grant(&client(), &emu.oauth2_token_url(), Some("svc")).await;
    invalid_client(resp, "No client certificate").await;
}

// ---- JWT-bearer grant (RFC 7523 §2.1, as Google does it) --------------------------------

const SERVICE_ACCOUNT: &str = "svc@project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/devstorage.read_only";

fn google_claims(aud: &str) -> Value {
    let t = now();
    json!({"iss": SERVICE_ACCOUNT, "scope": SCOPE, "aud": aud, "iat": t, "exp": t + 3600})
}

async fn jwt_bearer(c: &Client, url: &str, assertion: &str) -> reqwest::Response {
    let form = [
        ("grant_type", GRANT_TYPE_JWT_BEARER),
        ("assertion", assertion),
    ];
    post_form(c, url, &form).await
}

async fn invalid_grant(resp: reqwest::Response, what: &str) {
    let (status, error, description) = refusal(resp).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_grant"),
        "{description}"
    );
    assert!(description.contains(what), "{description:?} lacks {what:?}");
}

#[tokio::test]
async fn jwt_bearer_grant_like_google() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.oauth2_token_url());
    ctl.register_jwt_bearer_issuer(SERVICE_ACCOUNT, keys::RSA_PUBLIC_KEY_PEM.to_owned())
        .unwrap();
    let key = Key::rsa();
    let send = |claims: Value| {
        let (c, url, key) = (&c, &url, &key);
        async move { jwt_bearer(c, url, &jws(key, "RS256", &claims)).await }
    };

    let resp = send(with(google_claims(&url), "sub", json!("user@example.com"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["scope"], SCOPE);
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let info = ctl.oauth2_access_token(token).unwrap();
    assert_eq!(info.client_id, SERVICE_ACCOUNT);
    assert_eq!(info.grant_type, GRANT_TYPE_JWT_BEARER);
    assert_eq!(info.sub.as_deref(), Some("user@example.com"));
    assert_eq!(info.scope.as_deref(), Some(SCOPE));
    let who = json(whoami(&c, &emu.oauth2_whoami_url(), token).await).await;
    assert_eq!(who["subject"], SERVICE_ACCOUNT);
    assert_eq!(who["sub"], "user@example.com");

    // No jti needed; one that is present is single-use.
    let once = with(google_claims(&url), "jti", json!(unique()));
    assert_eq!(send(once.clone()).await.status(), StatusCode::OK);
    invalid_grant(send(once).await, "jti reused").await;

    invalid_grant(
        send(with(google_claims(&url), "iss", json!("x@y"))).await,
        "account not found",
    )
    .await;
    invalid_grant(
        send(google_claims(&emu.oauth2_issuer())).await,
        "Failed audience check",
    )
    .await;
    invalid_grant(
        send(with(google_claims(&url), "exp", json!(now() - 5))).await,
        "short-lived",
    )
    .await;
    invalid_grant(
        send(with(google_claims(&url), "exp", json!(now() + 3601))).await,
        "short-lived",
    )
    .await;
    invalid_grant(
        send(with(google_claims(&url), "iat", Value::Null)).await,
        "short-lived",
    )
    .await;
    invalid_grant(
        send(with(google_claims(&url), "iat", json!(now() + 600))).await,
        "short-lived",
    )
    .await;
    let scopeless = send(with(google_claims(&url), "scope", Value::Null)).await;
    let (status, error, _) = refusal(scopeless).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );

    let stranger = Key::ec(&keys::ec_p256());
    let es = jws(&stranger, "ES256", &google_claims(&url));
    invalid_grant(jwt_bearer(&c, &url, &es).await, "RS256").await;
    let none = jws(&key, "none", &google_claims(&url));
    invalid_grant(jwt_bearer(&c, &url, &none).await, "RS256").await;
    let signed = jws(&key, "RS256", &google_claims(&url));
    let (input, _) = signed.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", b64([7u8; 256]));
    invalid_grant(
        jwt_bearer(&c, &url, &forged).await,
        "Invalid JWT Signature.",
    )
    .await;

    let form = [("grant_type", GRANT_TYPE_JWT_BEARER)];
    assert_eq!(
        refusal(post_form(&c, &url, &form).await).await.1,
        "invalid_request"
    );

    // Only RSA keys register as issuers.
    let ec = keys::ec_p256();
    assert!(
        ctl.register_jwt_bearer_issuer("ec@x", ec.public_key_pem)
            .is_err()
    );

    // Lifetimes are a knob shared by both grants.
    ctl.set_oauth2_lifetime(5);
    let body = json(send(google_claims(&url)).await).await;
    assert_eq!(body["expires_in"], 5);
}

// ---- knobs and the admin API ------------------------------------------------------------

async fn admin(c: &Client, method: Method, url: String, body: Value) -> (u16, Value) {
    let resp = c.request(method, url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn admin_api_registers_and_resets() {
    let emu = start().await;
    let (c, url) = (client(), emu.oauth2_token_url());
    let a = |path: &str| format!("{}/oauth2{path}", emu.admin_url());
    let ec = keys::ec_p256();
    let client = json!({
        "client_id": "ec", "method": "private_key_jwt",
        "algorithm": "ES256", "public_key_pem": ec.public_key_pem,
    });
    assert_eq!(
        admin(&c, Method::POST, a("/clients"), client.clone())
            .await
            .0,
        204
    );
    let mismatched = json!({
        "client_id": "ec", "method": "private_key_jwt",
        "algorithm": "RS256", "public_key_pem": ec.public_key_pem,
    });
    let (status, body) = admin(&c, Method::POST, a("/clients"), mismatched).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("RS256"));
    let cert = keys::client_certificate("svc");
    let tls = json!({
        "client_id": "svc", "method": "self_signed_tls_client_auth",
        "certificate_pem": cert.certificate_pem,
    });
    assert_eq!(admin(&c, Method::POST, a("/clients"), tls).await.0, 204);
    let hs = json!({"client_id": "hs", "method": "client_secret_jwt", "secret": "s3cret"});
    assert_eq!(admin(&c, Method::POST, a("/clients"), hs).await.0, 204);
    let issuer = json!({"issuer": SERVICE_ACCOUNT, "public_key_pem": keys::RSA_PUBLIC_KEY_PEM});
    assert_eq!(
        admin(&c, Method::POST, a("/jwt-bearer-issuers"), issuer)
            .await
            .0,
        204
    );

    assert_eq!(
        admin(&c, Method::PUT, a("/lifetime"), json!({"secs": 60}))
            .await
            .0,
        204
    );
    let assertion = jws(&Key::ec(&ec), "ES256", &client_claims("ec", &url));
    let body = json(client_credentials(&c, &url, &assertion).await).await;
    assert_eq!(body["expires_in"], 60);
    let token = body["access_token"].as_str().unwrap();
    let valid = admin(&c, Method::POST, a("/validate"), json!({"token": token})).await;
    assert_eq!(valid, (200, json!({"valid": true})));
    let (_, info) = admin(&c, Method::POST, a("/token-info"), json!({"token": token})).await;
    assert_eq!(info["client_id"], "ec");
    assert_eq!(info["grant_type"], "client_credentials");
    let (_, counters) = admin(&c, Method::GET, a("/counters"), Value::Null).await;
    assert_eq!(counters, json!({"requests": 1, "issued": 1, "rejected": 0}));
    let (_, last) = admin(&c, Method::GET, a("/last-request"), Value::Null).await;
    assert_eq!(last["path"], "/oauth2/token");

    let max = admin(
        &c,
        Method::PUT,
        a("/assertion-max-lifetime"),
        json!({"secs": 60}),
    )
    .await;
    assert_eq!(max.0, 204);
    let far = with(client_claims("ec", &url), "exp", json!(now() + 120));
    let resp = client_credentials(&c, &url, &jws(&Key::ec(&ec), "ES256", &far)).await;
    invalid_client(resp, "at most 60 s").await;

    let fault = json!({"fault": {"status": {"code": 503, "body": "down"}}, "times": 1});
    assert_eq!(admin(&c, Method::POST, a("/faults"), fault).await.0, 204);
    assert_eq!(client_credentials(&c, &url, &assertion).await.status(), 503);
    let hang = json!({"fault": "hang"});
    assert_eq!(admin(&c, Method::POST, a("/faults"), hang).await.0, 204);
    assert_eq!(
        admin(&c, Method::DELETE, a("/faults"), Value::Null).await.0,
        204
    );
    let latency = admin(&c, Method::PUT, a("/latency"), json!({"millis": 0})).await;
    assert_eq!(latency.0, 204);

    // Reset forgets registrations, tokens and jtis: the same assertion is new again once
    // the client is registered anew.
    let reset = format!("{}/reset", emu.admin_url());
    assert_eq!(admin(&c, Method::POST, reset, Value::Null).await.0, 204);
    assert!(!emu.control().is_valid_oauth2_access_token(token));
    invalid_client(
        client_credentials(&c, &url, &assertion).await,
        "Unknown client",
    )
    .await;
    assert_eq!(admin(&c, Method::POST, a("/clients"), client).await.0, 204);
    assert_eq!(client_credentials(&c, &url, &assertion).await.status(), 200);
    assert_eq!(emu.control().oauth2_counters().requests, 2);
}

#[tokio::test]
async fn faults_and_latency_apply_to_the_token_endpoint() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.oauth2_token_url());
    let ed = keys::ed25519();
    register(&emu, "ed", private_key_jwt(JwsAlgorithm::EdDSA, &ed));
    ctl.oauth2_inject(Fault::MissingToken, 1);
    let assertion = || jws(&Key::ed(&ed), "EdDSA", &client_claims("ed", &url));
    let body = json(client_credentials(&c, &url, &assertion()).await).await;
    assert_eq!(body, json!({"token_type": "Bearer", "expires_in": 3600}));
    ctl.set_oauth2_latency(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(
        client_credentials(&c, &url, &assertion()).await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(
        ctl.oauth2_counters(),
        OAuth2Counters {
            requests: 2,
            issued: 1,
            rejected: 0
        }
    );
}

#[tokio::test]
async fn whoami_refuses_what_it_does_not_know() {
    let emu = start().await;
    let c = client();
    let resp = c.get(emu.oauth2_whoami_url()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"oauth2\""
    );
    let resp = whoami(&c, &emu.oauth2_whoami_url(), "made-up").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

//! Client authentication without shared secrets, over the real HTTP stack, against the
//! emulator's standards OAuth 2.0 server, which verifies each method itself (its own JWS
//! parsing and ring, not this crate's code): private_key_jwt and client_secret_jwt (RFC 7523
//! §2.2), mutual TLS (RFC 8705) and the JWT bearer grant (RFC 7523 §2.1).

mod support;

use std::collections::BTreeMap;

use provider_emulator::keys::{self, TestKeyPair};
use provider_emulator::{ClientMethod, Emulator, JwsAlgorithm};
use secrecy::ExposeSecret;
use serde_json::json;
use support::*;
use token_rotator::api::{self, ProviderCredentialSpec};
use token_rotator::provider::{
    Credentials, ErrorClass, FetchError, GrantRequest, HttpPolicy, IssuedToken, ProviderConfig,
    TokenClient,
};

fn client() -> TokenClient {
    TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: None,
        allow_link_local: false,
    })
}

/// A spec for the emulator's /oauth2 endpoint with `grant` (YAML flow mapping).
fn spec(emu: &Emulator, grant: &str) -> ProviderCredentialSpec {
    let yaml = format!(
        "tokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {grant}\n",
        emu.oauth2_token_url()
    );
    let mut spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).expect("spec parses");
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    spec
}

fn inputs(spec: &ProviderCredentialSpec, pairs: &[(&str, &str)]) -> (ProviderConfig, Credentials) {
    let data: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    (
        api::provider_config(spec).expect("spec resolves"),
        api::credentials_from_data(spec, &data),
    )
}

async fn fetch(
    emu: &Emulator,
    grant: &str,
    pairs: &[(&str, &str)],
) -> Result<IssuedToken, FetchError> {
    let spec = spec(emu, grant);
    let (config, credentials) = inputs(&spec, pairs);
    client()
        .fetch(&config, &credentials, &GrantRequest::Primary)
        .await
}

fn valid(emu: &Emulator, token: &IssuedToken) -> bool {
    emu.control()
        .is_valid_oauth2_access_token(token.access_token.expose_secret())
}

fn assert_rejected(result: Result<IssuedToken, FetchError>, words: &str, never: &[&str]) {
    let err = result.expect_err("must be refused");
    assert_eq!(err.class(), ErrorClass::CredentialsRejected, "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains(words), "{text}");
    for secret in never {
        assert!(!text.contains(secret), "a secret in the error: {text}");
    }
}

#[tokio::test]
async fn private_key_jwt_works_with_every_algorithm_and_key_format() {
    let emu = emulator(false).await;
    let rsa = keys::rsa();
    let rsa_pkcs1 = TestKeyPair {
        private_key_pem: keys::RSA_PRIVATE_KEY_PKCS1_PEM.to_string(),
        public_key_pem: rsa.public_key_pem.clone(),
    };
    let cases: [(&str, Option<JwsAlgorithm>, TestKeyPair); 6] = [
        ("RS256", Some(JwsAlgorithm::RS256), rsa.clone()),
        ("RS256", None, rsa_pkcs1),
        ("PS256", Some(JwsAlgorithm::PS256), rsa.clone()),
        ("ES256", Some(JwsAlgorithm::ES256), keys::ec_p256()),
        ("ES256", None, keys::ec_p256()),
        ("EdDSA", None, keys::ed25519()),
    ];
    for (i, (alg, explicit, pair)) in cases.into_iter().enumerate() {
        let id = format!("pkj-{i}");
        let registered = match alg {
            "RS256" => JwsAlgorithm::RS256,
            "PS256" => JwsAlgorithm::PS256,
            "ES256" => JwsAlgorithm::ES256,
            _ => JwsAlgorithm::EdDSA,
        };
        emu.control()
            .register_oauth_client(
                &id,
                ClientMethod::PrivateKeyJwt {
                    algorithm: registered,
                    public_key_pem: pair.public_key_pem.clone(),
                },
            )
            .expect("registered");
        let grant = match explicit {
            Some(_) => {
                format!("{{clientAuthentication: privateKeyJwt, assertion: {{algorithm: {alg}}}}}")
            }
            None => "{clientAuthentication: privateKeyJwt}".to_string(),
        };
        let pairs = [
            ("client_id", id.as_str()),
            ("private_key", pair.private_key_pem.as_str()),
        ];
        // Twice: a fresh assertion (jti) each time, or the server would refuse the second.
        for round in 0..2 {
            let token = fetch(&emu, &grant, &pairs)
                .await
                .unwrap_or_else(|e| panic!("{alg} (case {i}, round {round}): {e}"));
            assert!(valid(&emu, &token), "{alg}");
        }
        let sent = emu
            .control()
            .oauth2_last_request()
            .expect("recorded")
            .form();
        assert!(
            sent.iter().any(|(k, _)| k == "client_assertion"),
            "{sent:?}"
        );
        assert!(!sent.iter().any(|(k, _)| k == "client_secret"), "{sent:?}");
    }

    // Another client's key: refused with the server's words; neither key nor assertion shown.
    let stranger = keys::ec_p256();
    let result = fetch(
        &emu,
        "{clientAuthentication: privateKeyJwt}",
        &[
            ("client_id", "pkj-3"),
            ("private_key", stranger.private_key_pem.as_str()),
        ],
    )
    .await;
    let assertion = emu
        .control()
        .oauth2_last_request()
        .expect("recorded")
        .form();
    let assertion = assertion
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v.clone())
        .expect("sent");
    assert_rejected(
        result,
        "invalid_client",
        &[&assertion, "PRIVATE KEY", &stranger.private_key_pem[40..80]],
    );
}

#[tokio::test]
async fn client_secret_jwt_signs_with_the_secret_it_never_sends() {
    let emu = emulator(false).await;
    let secret = "a-long-shared-client-secret-0123456789";
    emu.control()
        .register_oauth_client(
            "csj",
            ClientMethod::ClientSecretJwt {
                secret: secret.into(),
            },
        )
        .expect("registered");
    let grant = "{clientAuthentication: clientSecretJwt}";
    let token = fetch(
        &emu,
        grant,
        &[("client_id", "csj"), ("client_secret", secret)],
    )
    .await
    .expect("authenticated");
    assert!(valid(&emu, &token));
    let sent = emu.control().oauth2_last_request().unwrap().form();
    assert!(!sent.iter().any(|(_, v)| v.contains(secret)), "{sent:?}");
    let wrong = fetch(
        &emu,
        grant,
        &[
            ("client_id", "csj"),
            ("client_secret", "not-the-secret-at-all"),
        ],
    )
    .await;
    assert_rejected(wrong, "invalid_client", &["not-the-secret-at-all"]);
}

#[tokio::test]
async fn mutual_tls_presents_the_certificate_from_the_credentials() {
    let emu = emulator(true).await;
    let cert = keys::client_certificate("rotator-client");
    emu.control()
        .register_oauth_client(
            "mtls",
            ClientMethod::Tls {
                certificate_pem: cert.certificate_pem.clone(),
            },
        )
        .expect("registered");
    let grant = "{clientAuthentication: tls}";
    let token = fetch(
        &emu,
        grant,
        &[
            ("client_id", "mtls"),
            ("tls.crt", cert.certificate_pem.as_str()),
            ("tls.key", cert.private_key_pem.as_str()),
        ],
    )
    .await
    .expect("authenticated by its certificate");
    let info = emu
        .control()
        .oauth2_access_token(token.access_token.expose_secret())
        .expect("issued");
    assert_eq!(
        info.certificate_thumbprint.as_deref(),
        Some(cert.thumbprint().as_str()),
        "the token is bound to the certificate"
    );

    // Another certificate is not this client; no certificate at all neither.
    let other = keys::client_certificate("someone-else");
    let result = fetch(
        &emu,
        grant,
        &[
            ("client_id", "mtls"),
            ("tls.crt", other.certificate_pem.as_str()),
            ("tls.key", other.private_key_pem.as_str()),
        ],
    )
    .await;
    assert_rejected(result, "invalid_client", &["PRIVATE KEY"]);
    let missing = fetch(
        &emu,
        grant,
        &[
            ("client_id", "mtls"),
            ("tls.crt", cert.certificate_pem.as_str()),
        ],
    )
    .await;
    let err = missing.expect_err("no key");
    assert!(err.to_string().contains("`tls.key`"), "{err}");
    let garbage = fetch(
        &emu,
        grant,
        &[
            ("client_id", "mtls"),
            ("tls.crt", "not a certificate"),
            ("tls.key", "not a key"),
        ],
    )
    .await;
    let err = garbage.expect_err("not PEM");
    assert!(
        err.to_string()
            .contains("are not a PEM client certificate and its private key"),
        "{err}"
    );
}

#[tokio::test]
async fn the_google_preset_gets_a_token_with_a_service_account_key() {
    let emu = emulator(false).await;
    let rsa = keys::rsa();
    let email = "rotator@demo-project.iam.gserviceaccount.com";
    emu.control()
        .register_jwt_bearer_issuer(email, rsa.public_key_pem.clone())
        .expect("registered");
    let key_json = json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "4f1c0ffee",
        "private_key": rsa.private_key_pem,
        "client_email": email,
        "client_id": "104242424242424242424",
        "token_uri": emu.oauth2_token_url(),
    })
    .to_string();
    let yaml = format!(
        "preset: google\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {{scope: \"https://www.googleapis.com/auth/cloud-platform\"}}\n",
        emu.oauth2_token_url()
    );
    let spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).unwrap();
    let (config, credentials) = inputs(&spec, &[("service-account.json", key_json.as_str())]);
    let token = client()
        .fetch(&config, &credentials, &GrantRequest::Primary)
        .await
        .expect("a token for the service account");
    let info = emu
        .control()
        .oauth2_access_token(token.access_token.expose_secret())
        .expect("issued");
    assert_eq!(info.client_id, email);
    assert_eq!(
        info.scope.as_deref(),
        Some("https://www.googleapis.com/auth/cloud-platform")
    );
    assert!(
        token.refresh.new_token().is_none(),
        "the JWT bearer grant has no refresh token"
    );
    let sent = emu.control().oauth2_last_request().unwrap().form();
    assert!(!sent.iter().any(|(k, _)| k == "client_id"), "{sent:?}");

    // A key the server does not know for this issuer.
    let other = keys::ec_p256();
    let wrong = json!({"type": "service_account", "private_key": other.private_key_pem, "client_email": email}).to_string();
    let (config, credentials) = inputs(&spec, &[("service-account.json", wrong.as_str())]);
    let err = client()
        .fetch(&config, &credentials, &GrantRequest::Primary)
        .await
        .expect_err("refused");
    let text = format!("{err} {err:?}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[tokio::test]
async fn token_rotator_fetch_authenticates_with_a_key_and_with_a_certificate() {
    let emu = emulator(true).await;
    let dir = TempDir::new("fetch-client-auth");
    let ec = keys::ec_p256();
    let cert = keys::client_certificate("fetch");
    let c = emu.control();
    c.register_oauth_client(
        "fetch-pkj",
        ClientMethod::PrivateKeyJwt {
            algorithm: JwsAlgorithm::ES256,
            public_key_pem: ec.public_key_pem.clone(),
        },
    )
    .unwrap();
    c.register_oauth_client(
        "fetch-csj",
        ClientMethod::ClientSecretJwt {
            secret: "fetch-secret-0123456789".into(),
        },
    )
    .unwrap();
    let rsa = keys::rsa();
    c.register_jwt_bearer_issuer(
        "fetch@demo.iam.gserviceaccount.com",
        rsa.public_key_pem.clone(),
    )
    .unwrap();
    let sa_key = serde_json::json!({
        "type": "service_account",
        "private_key": rsa.private_key_pem,
        "client_email": "fetch@demo.iam.gserviceaccount.com",
    })
    .to_string();
    c.register_oauth_client(
        "fetch-tls",
        ClientMethod::Tls {
            certificate_pem: cert.certificate_pem.clone(),
        },
    )
    .unwrap();
    let cases = [
        (
            "pkj",
            "{clientAuthentication: privateKeyJwt}",
            vec![
                ("client_id", "fetch-pkj"),
                ("private_key", ec.private_key_pem.as_str()),
            ],
        ),
        (
            "csj",
            "{clientAuthentication: clientSecretJwt}",
            vec![
                ("client_id", "fetch-csj"),
                ("client_secret", "fetch-secret-0123456789"),
            ],
        ),
        (
            "google",
            "{type: jwtBearer, clientAuthentication: none, scope: \"email\"}",
            vec![("service-account.json", sa_key.as_str())],
        ),
        (
            "tls",
            "{clientAuthentication: tls}",
            vec![
                ("client_id", "fetch-tls"),
                ("tls.crt", cert.certificate_pem.as_str()),
                ("tls.key", cert.private_key_pem.as_str()),
            ],
        ),
    ];
    for (name, grant, pairs) in cases {
        let pc = token_rotator::api::ProviderCredential::new(name, spec(&emu, grant));
        let pc_path = dir.write(
            &format!("{name}.yaml"),
            &serde_saphyr::to_string(&pc).expect("serialises"),
        );
        let data: BTreeMap<String, Vec<u8>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        let creds_path = dir.write(
            &format!("{name}-creds.yaml"),
            &secret_manifest("creds", &data, DataStyle::Base64),
        );
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-rotator"))
            .arg("fetch")
            .arg("-f")
            .arg(&pc_path)
            .arg("--credentials")
            .arg(&creds_path)
            .output()
            .await
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let summary: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(summary["tokenType"], "Bearer", "{name}: {stdout}");
        assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    }
    assert_eq!(c.oauth2_counters().issued, 4);
}

//! The pure parts of the provider layer without a network: request building, answer
//! interpretation and the lifetime helpers, with property tests for everything that reads
//! provider bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use proptest::prelude::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use token_rotator::api::{self, CredentialKeys, ProviderCredentialSpec, SpecError};
use token_rotator::provider::lifetime::{self, LifetimeSource};
use token_rotator::provider::response::{RawResponse, interpret, parse_retry_after};
use token_rotator::provider::scrub::Scrubber;
use token_rotator::provider::{
    Credentials, ErrorClass, FetchError, GrantRequest, IssuedToken, Param, PreparedRequest,
    ProviderConfig, RefreshOutcome, build_request,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn spec(extra: &str) -> ProviderCredentialSpec {
    let yaml = format!(
        "tokenEndpoint: {{url: \"https://auth.example.com/token\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn config(extra: &str) -> ProviderConfig {
    api::provider_config(&spec(extra)).expect("spec resolves")
}

/// Credentials as `extra`'s spec reads them from a Secret holding `pairs`.
fn creds(extra: &str, pairs: &[(&str, &str)]) -> Credentials {
    let data: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    api::credentials_from_data(&spec(extra), &data)
}

fn build(extra: &str, pairs: &[(&str, &str)], grant: &GrantRequest) -> PreparedRequest {
    build_request(&config(extra), &creds(extra, pairs), grant).expect("request builds")
}

fn form(req: &PreparedRequest) -> Vec<(String, String)> {
    assert_eq!(req.content_type, "application/x-www-form-urlencoded");
    url::form_urlencoded::parse(req.body.expose_secret().as_bytes())
        .into_owned()
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn authorization(req: &PreparedRequest) -> Option<&str> {
    req.authorization.as_ref().map(|a| a.expose_secret())
}

fn refresh(token: &str) -> GrantRequest {
    GrantRequest::Refresh(SecretString::from(token))
}

const RENTLY: &str = "preset: rently\n";
const CARRENTAL: &str = "preset: carrental\n";
const RETENTLY: &str = "preset: retently\ngrant: {redirectUri: \"https://www.example.com/\"}\n";
const RELTIO: &str = "preset: reltio\n";

// ---------------------------------------------------------------------------------------------
// build_request

#[test]
fn client_credentials_with_body_authentication_as_a_form() {
    let req = build(
        RENTLY,
        &[("client_id", "fleet user"), ("client_secret", "s&cret=1")],
        &GrantRequest::Primary,
    );
    assert_eq!(req.url.as_str(), "https://auth.example.com/token");
    assert_eq!(authorization(&req), None);
    assert_eq!(
        form(&req),
        pairs(&[
            ("grant_type", "client_credentials"),
            ("client_id", "fleet user"),
            ("client_secret", "s&cret=1"),
        ])
    );
    // The raw body is properly encoded, not just decodable.
    assert_eq!(
        req.body.expose_secret(),
        "grant_type=client_credentials&client_id=fleet+user&client_secret=s%26cret%3D1"
    );
}

#[test]
fn password_grant_with_basic_authentication_matches_the_reltio_document() {
    let req = build(
        RELTIO,
        &[
            ("client_id", "reltio_ui"),
            ("client_secret", "secret"),
            ("username", "u"),
            ("password", "p"),
        ],
        &GrantRequest::Primary,
    );
    assert_eq!(authorization(&req), Some("Basic cmVsdGlvX3VpOnNlY3JldA=="));
    assert_eq!(
        form(&req),
        pairs(&[
            ("grant_type", "password"),
            ("username", "u"),
            ("password", "p")
        ]),
        "client credentials travel only in the header"
    );
}

#[test]
fn basic_authentication_form_encodes_both_parts_first() {
    // RFC 6749 §2.3.1: client id and secret are application/x-www-form-urlencoded, then joined
    // by a colon and base64-encoded, so a colon in the id cannot shift the split.
    let req = build(
        "grant: {clientAuthentication: basic}\n",
        &[
            ("client_id", "my client:1"),
            ("client_secret", "p@ss/w+rd%é&"),
        ],
        &GrantRequest::Primary,
    );
    let want = STANDARD.encode("my+client%3A1:p%40ss%2Fw%2Brd%25%C3%A9%26");
    assert_eq!(authorization(&req), Some(format!("Basic {want}").as_str()));
    assert_eq!(form(&req), pairs(&[("grant_type", "client_credentials")]));

    // A public client with only an id still authenticates as `id:`.
    let req = build(
        "grant: {clientAuthentication: basic}\n",
        &[("client_id", "public")],
        &GrantRequest::Primary,
    );
    let want = format!("Basic {}", STANDARD.encode("public:"));
    assert_eq!(authorization(&req), Some(want.as_str()));
}

#[test]
fn a_pkce_verifier_travels_with_the_code_and_is_scrubbed_like_a_secret() {
    let mut credentials = creds(
        RETENTLY,
        &[
            ("client_id", "id-1"),
            ("client_secret", "sec-1"),
            ("code", "code-1"),
        ],
    );
    // A code_verifier key in the Secret is not read: only `authorize` has a verifier.
    assert!(credentials.get(Param::CodeVerifier).is_none());
    credentials.insert(Param::CodeVerifier, "code_verifier", "verifier-1");
    let req = build_request(&config(RETENTLY), &credentials, &GrantRequest::Primary)
        .expect("request builds");
    assert!(form(&req).contains(&("code_verifier".into(), "verifier-1".into())));
    assert!(
        req.sent_secrets
            .iter()
            .any(|s| s.expose_secret() == "verifier-1")
    );
    // Never on a refresh.
    let req = build_request(
        &config(RETENTLY),
        &credentials,
        &GrantRequest::Refresh("rt-1".to_string().into()),
    )
    .expect("request builds");
    assert!(!form(&req).iter().any(|(k, _)| k == "code_verifier"));
}

#[test]
fn authorization_settings_come_from_the_preset_or_the_spec() {
    let retently = api::authorization_settings(&spec(RETENTLY)).expect("retently resolves");
    assert_eq!(
        retently.authorization_url.as_str(),
        "https://app.retently.com/api/oauth/authorize"
    );
    assert_eq!(retently.redirect_uri.as_str(), "https://www.example.com/");
    assert!(!retently.pkce);
    let own = api::authorization_settings(&spec(
        "grant: {type: authorizationCode, redirectUri: \"http://127.0.0.1:8400/cb\", authorizationUrl: \"https://idp.example.com/authorize\", scope: \"a b\"}\n",
    ))
    .expect("resolves");
    assert_eq!(
        own.authorization_url.as_str(),
        "https://idp.example.com/authorize"
    );
    assert_eq!(own.scope.as_deref(), Some("a b"));
    assert!(own.pkce, "PKCE is on without a preset that says otherwise");
    let retently_pkce =
        "preset: retently\ngrant: {redirectUri: \"https://www.example.com/\", pkce: true}\n";
    assert!(
        api::authorization_settings(&spec(retently_pkce))
            .unwrap()
            .pkce
    );
    assert_eq!(
        api::authorization_settings(&spec(
            "grant: {type: authorizationCode, redirectUri: \"http://127.0.0.1:8400/cb\"}\n"
        )),
        Err(SpecError::MissingAuthorizationUrl)
    );
    assert_eq!(
        api::authorization_settings(&spec(RENTLY)),
        Err(SpecError::NotAuthorizationCode("client_credentials"))
    );
    assert!(matches!(
        api::authorization_settings(&spec(
            "grant: {type: authorizationCode, redirectUri: \"http://127.0.0.1:8400/cb\", authorizationUrl: \"not a url\"}\n"
        )),
        Err(SpecError::InvalidUrl {
            field: "spec.grant.authorizationUrl",
            ..
        })
    ));
}

/// The header and claims of a compact JWS (unverified: the emulator tests verify).
fn jws_parts(jwt: &str) -> (Value, Value) {
    let mut it = jwt.split('.');
    let mut part = || -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().expect("a part")).unwrap())
            .unwrap()
    };
    (part(), part())
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn private_key_jwt_sends_a_fresh_assertion_and_never_the_key() {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = ec.serialize_pem();
    let extra = "grant: {clientAuthentication: privateKeyJwt, scope: \"a b\"}\n";
    let pairs = [
        ("client_id", "svc-1"),
        ("private_key", pem.as_str()),
        ("key_id", "k-7"),
    ];
    let req = build(extra, &pairs, &GrantRequest::Primary);
    let sent = form(&req);
    assert_eq!(authorization(&req), None);
    assert_eq!(field(&sent, "grant_type"), Some("client_credentials"));
    assert_eq!(field(&sent, "client_id"), Some("svc-1"));
    assert_eq!(field(&sent, "scope"), Some("a b"));
    assert_eq!(
        field(&sent, "client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert!(field(&sent, "client_secret").is_none());
    let jwt = field(&sent, "client_assertion").expect("an assertion");
    let (header, claims) = jws_parts(jwt);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("k-7"))
    );
    assert_eq!(claims["iss"], "svc-1");
    assert_eq!(claims["sub"], "svc-1");
    assert_eq!(claims["aud"], "https://auth.example.com/token");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 60);
    assert!(!req.body.expose_secret().contains("PRIVATE KEY"));
    assert!(req.sent_secrets.iter().any(|s| s.expose_secret() == jwt));
    // Every request signs anew.
    let again = build(extra, &pairs, &GrantRequest::Primary);
    assert_ne!(
        field(&sent, "client_assertion"),
        field(&form(&again), "client_assertion")
    );

    // Audience and lifetime from the spec; the refresh grant authenticates the same way.
    let extra = "grant: {clientAuthentication: privateKeyJwt, assertion: {audience: \"https://issuer.example.com\", lifetimeSeconds: 120, algorithm: ES256}}\n";
    let req = build(
        extra,
        &pairs,
        &GrantRequest::Refresh(SecretString::from("rt-1")),
    );
    let sent = form(&req);
    assert_eq!(field(&sent, "grant_type"), Some("refresh_token"));
    let (_, claims) = jws_parts(field(&sent, "client_assertion").unwrap());
    assert_eq!(claims["aud"], "https://issuer.example.com");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // Without the key, the error names the key to add.
    let err = build_request(
        &config(extra),
        &creds(extra, &[("client_id", "svc-1")]),
        &GrantRequest::Primary,
    )
    .unwrap_err();
    assert!(err.to_string().contains("private_key"), "{err}");
}

#[test]
fn client_secret_jwt_signs_with_the_secret_and_does_not_send_it() {
    let extra = "grant: {clientAuthentication: clientSecretJwt}\n";
    let req = build(
        extra,
        &[("client_id", "c"), ("client_secret", "s3cret-value")],
        &GrantRequest::Primary,
    );
    let form = form(&req);
    assert!(!req.body.expose_secret().contains("s3cret-value"));
    let (header, claims) = jws_parts(field(&form, "client_assertion").unwrap());
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["iss"], "c");
    let err = build_request(
        &config(extra),
        &creds(extra, &[("client_id", "c")]),
        &GrantRequest::Primary,
    )
    .unwrap_err();
    assert!(err.to_string().contains("client_secret"), "{err}");
}

#[test]
fn tls_client_authentication_sends_the_client_id_only() {
    let extra = "grant: {clientAuthentication: tls}\n";
    let req = build(
        extra,
        &[("client_id", "c"), ("client_secret", "unused")],
        &GrantRequest::Primary,
    );
    assert_eq!(authorization(&req), None);
    assert_eq!(
        form(&req),
        pairs(&[("grant_type", "client_credentials"), ("client_id", "c")])
    );
}

#[test]
fn the_jwt_bearer_grant_is_an_assertion_with_scope_and_extra_claims() {
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    let extra = "grant: {type: jwtBearer, clientAuthentication: none, scope: \"https://www.googleapis.com/auth/cloud-platform\", assertion: {subject: \"user@example.com\", claims: {target_audience: \"https://api.example.com\"}}}\n";
    let req = build(
        extra,
        &[
            ("client_id", "sa@project.iam.gserviceaccount.com"),
            ("private_key", ed.as_str()),
        ],
        &GrantRequest::Primary,
    );
    let sent = form(&req);
    assert_eq!(
        field(&sent, "grant_type"),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let (header, claims) = jws_parts(field(&sent, "assertion").unwrap());
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims["iss"], "sa@project.iam.gserviceaccount.com");
    assert_eq!(claims["sub"], "user@example.com");
    assert_eq!(claims["aud"], "https://auth.example.com/token");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["target_audience"], "https://api.example.com");
    assert!(claims["jti"].is_string());
    // `none` sends the client id as a public client would; no client_assertion.
    assert!(field(&sent, "client_assertion").is_none());

    // Without assertion.subject, `sub` is the issuer (RFC 7523 §3 requires one).
    let plain = "grant: {type: jwtBearer, clientAuthentication: none}\n";
    let req = build(
        plain,
        &[("client_id", "svc"), ("private_key", ed.as_str())],
        &GrantRequest::Primary,
    );
    let (_, claims) = jws_parts(field(&form(&req), "assertion").unwrap());
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some("svc"), Some("svc"))
    );

    assert_eq!(
        api::provider_config(&spec(
            "grant: {type: jwtBearer, assertion: {claims: {exp: \"1\"}}}\n"
        )),
        Err(SpecError::ReservedClaim("exp".into()))
    );
}

#[test]
fn the_google_preset_reads_a_service_account_json_key() {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key = json!({
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "0123abcd",
        "private_key": ec.serialize_pem(),
        "client_email": "rotator@demo.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
    .to_string();
    let extra =
        "preset: google\ngrant: {scope: \"https://www.googleapis.com/auth/cloud-platform\"}\n";
    let req = build(
        extra,
        &[("service-account.json", key.as_str())],
        &GrantRequest::Primary,
    );
    let sent = form(&req);
    assert_eq!(authorization(&req), None);
    assert_eq!(
        sent.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["grant_type", "assertion", "scope"],
        "no client_id, no secret"
    );
    let (header, claims) = jws_parts(field(&sent, "assertion").unwrap());
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("0123abcd"))
    );
    assert_eq!(claims["iss"], "rotator@demo.iam.gserviceaccount.com");
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert!(claims.get("sub").is_none());
    // Plain keys win over the JSON; a file that is not a service account key gives nothing.
    let creds_of = |pairs: &[(&str, &str)]| creds(extra, pairs);
    let both = creds_of(&[
        ("service-account.json", key.as_str()),
        ("client_id", "explicit@x"),
    ]);
    assert_eq!(
        both.get(Param::ClientId).unwrap().expose_secret(),
        "explicit@x"
    );
    let other = creds_of(&[("service-account.json", "{\"type\":\"authorized_user\"}")]);
    assert!(other.get(Param::PrivateKey).is_none());
    let err = build_request(&config(extra), &other, &GrantRequest::Primary).unwrap_err();
    assert!(
        err.to_string().contains(
            "the credentials key `service-account.json` is not a Google service account JSON key"
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("authorized_user"), "{err}");
}

#[test]
fn authorization_code_sends_the_code_and_its_redirect_uri() {
    let req = build(
        RETENTLY,
        &[
            ("client_id", "id-1"),
            ("client_secret", "sec-1"),
            ("code", "code-1"),
        ],
        &GrantRequest::Primary,
    );
    assert_eq!(
        form(&req),
        pairs(&[
            ("grant_type", "authorization_code"),
            ("code", "code-1"),
            ("redirect_uri", "https://www.example.com/"),
            ("client_id", "id-1"),
            ("client_secret", "sec-1"),
        ])
    );
    let secrets: Vec<&str> = req.sent_secrets.iter().map(|s| s.expose_secret()).collect();
    assert!(secrets.contains(&"code-1") && secrets.contains(&"sec-1"));

    // The spec resolver and the builder both insist on the redirect URI.
    assert_eq!(
        api::provider_config(&spec("grant: {type: authorizationCode}\n")),
        Err(SpecError::MissingRedirectUri)
    );
    let mut config = config(RETENTLY);
    config.redirect_uri = None;
    let err = build_request(
        &config,
        &creds(
            RETENTLY,
            &[("client_id", "a"), ("client_secret", "b"), ("code", "c")],
        ),
        &GrantRequest::Primary,
    )
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Configuration);
    assert!(err.to_string().contains("spec.grant.redirectUri"), "{err}");
}

#[test]
fn refresh_requests_send_the_refresh_token_instead_of_the_primary_grant() {
    // Retently: the code is not sent again, the redirect_uri is (as documented).
    let req = build(
        RETENTLY,
        &[
            ("client_id", "id-1"),
            ("client_secret", "sec-1"),
            ("code", "spent"),
        ],
        &refresh("rt-1"),
    );
    assert_eq!(
        form(&req),
        pairs(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("redirect_uri", "https://www.example.com/"),
            ("client_id", "id-1"),
            ("client_secret", "sec-1"),
        ])
    );
    assert!(req.sent_secrets.iter().any(|s| s.expose_secret() == "rt-1"));

    // Reltio: no user password on a refresh, client still in the Basic header.
    let req = build(
        RELTIO,
        &[
            ("client_id", "reltio_ui"),
            ("client_secret", "secret"),
            ("username", "u"),
            ("password", "p"),
        ],
        &refresh("rt-2"),
    );
    assert_eq!(
        form(&req),
        pairs(&[("grant_type", "refresh_token"), ("refresh_token", "rt-2")])
    );
    assert_eq!(authorization(&req), Some("Basic cmVsdGlvX3VpOnNlY3JldA=="));
}

#[test]
fn json_encoding_uses_the_mapped_field_names() {
    let req = build(
        CARRENTAL,
        &[("username", "car-user"), ("password", "pa\"ss")],
        &GrantRequest::Primary,
    );
    assert_eq!(req.content_type, "application/json");
    assert_eq!(authorization(&req), None);
    let body: Value = serde_json::from_str(req.body.expose_secret()).unwrap();
    assert_eq!(body, json!({"userName": "car-user", "password": "pa\"ss"}));

    // A public client that has an id identifies itself.
    let req = build(
        CARRENTAL,
        &[("username", "u"), ("password", "p"), ("client_id", "app-7")],
        &GrantRequest::Primary,
    );
    let body: Value = serde_json::from_str(req.body.expose_secret()).unwrap();
    assert_eq!(body["client_id"], "app-7");
}

#[test]
fn field_names_rename_and_an_empty_name_leaves_the_parameter_out() {
    let extra = "grant: {clientAuthentication: body}\nrequest: {fieldNames: {grant_type: \"\", client_id: clientKey, client_secret: apiSecret}}\n";
    let req = build(
        extra,
        &[("client_id", "k"), ("client_secret", "s")],
        &GrantRequest::Primary,
    );
    assert_eq!(form(&req), pairs(&[("clientKey", "k"), ("apiSecret", "s")]));

    assert_eq!(
        api::provider_config(&spec("request: {fieldNames: {user: login}}\n")),
        Err(SpecError::UnknownParameter("user".into()))
    );
}

#[test]
fn scope_and_extra_parameters_are_sent_and_extras_win() {
    let extra = "grant: {clientAuthentication: body, scope: \"read write\", extraParameters: {audience: \"https://api.example.com\", grant_type: \"urn:example:custom\"}}\n";
    let req = build(
        extra,
        &[("client_id", "k"), ("client_secret", "s")],
        &GrantRequest::Primary,
    );
    assert_eq!(
        form(&req),
        pairs(&[
            ("scope", "read write"),
            ("client_id", "k"),
            ("client_secret", "s"),
            ("audience", "https://api.example.com"),
            ("grant_type", "urn:example:custom"),
        ])
    );
}

#[test]
fn missing_credentials_name_the_secret_key_to_add() {
    let mut spec = spec(RELTIO);
    spec.credentials.keys = Some(Box::new(CredentialKeys {
        password: Some("api-password".into()),
        ..CredentialKeys::default()
    }));
    let reltio = api::provider_config(&spec).unwrap();
    let data = BTreeMap::from([
        ("client_id".to_string(), b"id".to_vec()),
        ("username".to_string(), b"someone".to_vec()),
        // The default key name is ignored once another one is mapped.
        ("password".to_string(), b"not-this-one".to_vec()),
    ]);
    let credentials = api::credentials_from_data(&spec, &data);
    let err = build_request(&reltio, &credentials, &GrantRequest::Primary).unwrap_err();
    assert_eq!(
        err,
        FetchError::MissingCredential {
            key: "api-password".into(),
            grant: "password"
        }
    );
    assert_eq!(err.class(), ErrorClass::Configuration);
    let text = err.to_string();
    assert!(
        text.contains("`api-password`") && text.contains("password grant"),
        "{text}"
    );
    assert!(
        !text.contains("not-this-one") && !text.contains("someone"),
        "{text}"
    );

    // An empty value is missing too; body authentication needs the secret.
    let err = build_request(
        &config(RENTLY),
        &creds(RENTLY, &[("client_id", "id"), ("client_secret", "")]),
        &GrantRequest::Primary,
    )
    .unwrap_err();
    assert!(err.to_string().contains("`client_secret`"), "{err}");
    // A refresh names the grant it failed for.
    let err = build_request(&config(RETENTLY), &Credentials::new(), &refresh("r")).unwrap_err();
    assert_eq!(
        err,
        FetchError::MissingCredential {
            key: "client_id".into(),
            grant: "refresh_token"
        }
    );
}

#[test]
fn values_from_files_lose_their_trailing_newline() {
    let req = build(
        RENTLY,
        &[("client_id", "id\n"), ("client_secret", "secret\r\n")],
        &GrantRequest::Primary,
    );
    assert!(form(&req).contains(&("client_secret".into(), "secret".into())));
}

// ---------------------------------------------------------------------------------------------
// interpret

const SENT: &str = "hunter2-password";

fn now() -> Timestamp {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

fn raw(status: u16, body: &str) -> RawResponse<'_> {
    RawResponse {
        status,
        content_type: Some("application/json"),
        retry_after: None,
        location: None,
        body: body.as_bytes(),
    }
}

fn answer(
    config: &ProviderConfig,
    raw: &RawResponse<'_>,
    sent_refresh: Option<&str>,
) -> Result<IssuedToken, FetchError> {
    let sent_refresh = sent_refresh.map(SecretString::from);
    interpret(
        config,
        raw,
        &Scrubber::new([SENT]),
        sent_refresh.as_ref(),
        now(),
    )
}

fn fails_with(raw: &RawResponse<'_>) -> FetchError {
    answer(&config(RELTIO), raw, None).expect_err("must fail")
}

fn fails(status: u16, body: &str) -> FetchError {
    fails_with(&raw(status, body))
}

#[test]
fn oauth_errors_on_400_split_rejected_credentials_from_a_wrong_request() {
    for code in [
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "access_denied",
    ] {
        let err = fails(
            400,
            &format!(r#"{{"error":"{code}","error_description":"Bad credentials"}}"#),
        );
        assert_eq!(
            err.class(),
            ErrorClass::CredentialsRejected,
            "{code}: {err}"
        );
        assert_eq!(err.http_status(), Some(400));
        assert!(err.to_string().contains("Bad credentials"), "{err}");
        assert_eq!(err.is_invalid_grant(), code == "invalid_grant");
    }
    for body in [
        r#"{"error":"invalid_request","error_description":"Missing grant type"}"#,
        r#"{"error":"unsupported_grant_type"}"#,
        "Invalid grant type",
    ] {
        let err = fails(400, body);
        assert_eq!(err.class(), ErrorClass::RequestRejected, "{body}: {err}");
        assert!(!err.class().is_transient());
    }
    let err = fails(
        400,
        r#"{"error":"invalid_request","message":"grant_type is required"}"#,
    );
    assert!(err.to_string().contains("grant_type is required"), "{err}");
}

#[test]
fn status_401_403_404_reject_the_credentials() {
    for (status, body) in [
        (401, "Authentication Failed or Account validity Expired"),
        (403, "Forbidden - Access denied"),
        (404, "No user found with username: hunter2-password"),
    ] {
        let err = fails(status, body);
        assert_eq!(err.class(), ErrorClass::CredentialsRejected, "{status}");
        assert_eq!(err.http_status(), Some(status));
        let text = err.to_string();
        assert!(text.contains(&body[..12]), "{text}");
        assert!(!text.contains(SENT), "scrubbed: {text}");
    }
}

#[test]
fn rate_limits_honour_retry_after_in_seconds_and_as_a_date() {
    let with_retry = |value: &'static str| RawResponse {
        retry_after: Some(value),
        ..raw(429, r#"{"error":"too_many_requests"}"#)
    };
    let cases = [
        ("7", Some(7)),
        ("Thu, 26 Nov 2026 12:01:30 GMT", Some(90)),
        // A date already past means "now".
        ("Thu, 26 Nov 2026 11:00:00 GMT", Some(0)),
        ("soon", None),
    ];
    for (value, want) in cases {
        let err = fails_with(&with_retry(value));
        assert_eq!(err.class(), ErrorClass::RateLimited, "{value}");
        assert_eq!(err.retry_after(), want.map(Duration::from_secs), "{value}");
        assert_eq!(err.http_status(), Some(429));
    }
    assert_eq!(
        parse_retry_after(" 120 ", now()),
        Some(Duration::from_secs(120))
    );
}

#[test]
fn server_errors_and_timeouts_are_provider_unavailable() {
    for status in [500, 502, 503, 504, 408] {
        let err = fails_with(&RawResponse {
            retry_after: Some("30"),
            ..raw(status, "upstream is down")
        });
        assert_eq!(err.class(), ErrorClass::ProviderUnavailable, "{status}");
        assert!(err.class().is_transient());
        assert_eq!(err.http_status(), Some(status));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        assert!(err.to_string().contains("upstream is down"), "{err}");
    }
}

#[test]
fn redirects_are_not_followed_and_name_the_target_host() {
    for status in [301, 302, 303, 307, 308] {
        let err = fails_with(&RawResponse {
            location: Some("https://login.elsewhere.example/sso?next=/token"),
            ..raw(status, "")
        });
        assert_eq!(err.class(), ErrorClass::InvalidResponse, "{status}");
        let text = err.to_string();
        assert!(text.contains("redirects are not followed"), "{text}");
        assert!(text.contains("login.elsewhere.example"), "{text}");
        assert!(!text.contains("next="), "only the host: {text}");
    }
}

/// Found by the `answer` fuzz target: a successful non-JSON answer whose Content-Type header
/// echoes a secret sent (here between newlines) must not carry it into the error.
#[test]
fn a_content_type_echoing_a_secret_is_not_quoted() {
    for content_type in [
        format!("\n{SENT}\n\n"),
        format!("text/{SENT}"),
        "x".repeat(5000),
    ] {
        let err = fails_with(&RawResponse {
            content_type: Some(&content_type),
            ..raw(246, "\u{ff}z")
        });
        let text = format!("{err} {err:?}");
        assert!(!text.contains(SENT), "{text}");
        assert!(text.len() < 1000, "{text}");
        assert!(
            text.contains("an unusual content-type") || text.contains("[REDACTED]"),
            "{text}"
        );
    }
    let plain = fails_with(&RawResponse {
        content_type: Some("text/plain; charset=utf-8"),
        ..raw(200, "token=abc")
    });
    assert!(
        plain.to_string().contains("content-type text/plain"),
        "{plain}"
    );
}

#[test]
fn html_pages_are_described_by_their_title() {
    let page = "<!DOCTYPE html><html><head><TITLE> Sign in </TITLE></head><body>form</body></html>";
    let html = |status| RawResponse {
        content_type: Some("text/html; charset=utf-8"),
        ..raw(status, page)
    };
    let err = fails_with(&html(200));
    assert_eq!(err.class(), ErrorClass::InvalidResponse);
    let text = err.to_string();
    assert!(
        text.contains("not a JSON object (content-type text/html, 82 bytes"),
        "{text}"
    );
    // A successful answer is never quoted: it may hold a token.
    assert!(!text.contains("Sign in"), "{text}");

    let err = fails_with(&html(502));
    assert_eq!(err.class(), ErrorClass::ProviderUnavailable);
    assert!(
        err.to_string().contains("HTML page titled \"Sign in\""),
        "{err}"
    );

    let err = fails(200, "  ");
    assert!(err.to_string().contains("empty body"), "{err}");
}

#[test]
fn oversized_or_binary_tokens_are_refused_without_being_shown() {
    let huge = "A".repeat(token_rotator::provider::MAX_TOKEN_BYTES + 1);
    let err = fails(
        200,
        &json!({"access_token": huge, "expires_in": 60}).to_string(),
    );
    assert_eq!(err.class(), ErrorClass::InvalidResponse);
    assert!(err.to_string().contains("at most 32768"), "{err}");
    assert!(!err.to_string().contains("AAAA"), "{err}");
    let err = fails(
        200,
        &json!({"access_token": "zqv\u{0}xw\n", "expires_in": 60}).to_string(),
    );
    assert!(err.to_string().contains("visible ASCII"), "{err}");
    assert!(!err.to_string().contains("zqv"), "{err}");
    let err = fails(
        200,
        &json!({"access_token": "ok", "refresh_token": "r".repeat(40_000)}).to_string(),
    );
    assert!(
        err.to_string().contains("refresh token is 40000 bytes"),
        "{err}"
    );
}

#[test]
fn a_missing_token_lists_the_fields_that_are_there() {
    let err = fails(200, r#"{"token_type":"bearer","expires_in":3600}"#);
    assert_eq!(err.class(), ErrorClass::InvalidResponse);
    let text = err.to_string();
    assert!(
        text.contains("no access token at `/access_token`"),
        "{text}"
    );
    assert!(
        text.contains("token_type") && text.contains("expires_in"),
        "{text}"
    );
    assert!(text.contains("spec.response.accessToken"), "{text}");

    // Field names are provider input: one line, scrubbed, bounded.
    let odd: serde_json::Map<String, Value> = [
        ("line\nbreak".to_string(), 1),
        (SENT.to_string(), 2),
        ("x".repeat(5000), 3),
    ]
    .into_iter()
    .map(|(k, v)| (k, Value::from(v)))
    .collect();
    let odd = Value::Object(odd).to_string();
    let text = fails(200, &odd).to_string();
    assert!(!text.contains('\n') && !text.contains(SENT), "{text}");
    assert!(text.len() < 1000, "{} chars", text.len());

    // An empty or blank token is no token.
    let err = fails(200, r#"{"access_token":"  ","expires_in":5}"#);
    assert_eq!(err.class(), ErrorClass::InvalidResponse);
}

#[test]
fn the_refresh_token_is_newly_issued_kept_or_rotated() {
    let config = config(RELTIO);
    let with = r#"{"access_token":"a","refresh_token":"r-new","expires_in":60}"#;
    let same = r#"{"access_token":"a","refresh_token":"r-old","expires_in":60}"#;
    let without = r#"{"access_token":"a","expires_in":60}"#;
    let outcome = |body, sent| answer(&config, &raw(200, body), sent).unwrap().refresh;

    assert!(matches!(outcome(without, None), RefreshOutcome::None));
    assert!(
        matches!(outcome(with, None), RefreshOutcome::NewlyIssued(t) if t.expose_secret() == "r-new")
    );
    // RFC 6749 §6: no refresh_token in a refresh answer leaves the old one valid.
    assert!(matches!(
        outcome(without, Some("r-old")),
        RefreshOutcome::Kept
    ));
    assert!(matches!(outcome(same, Some("r-old")), RefreshOutcome::Kept));
    let rotated = outcome(with, Some("r-old"));
    assert!(
        matches!(&rotated, RefreshOutcome::Rotated(t) if t.expose_secret() == "r-new"),
        "{rotated:?}"
    );
    assert_eq!(rotated.new_token().unwrap().expose_secret(), "r-new");
    assert!(outcome(same, Some("r-old")).new_token().is_none());
}

#[test]
fn nested_fields_and_the_lifetime_chain_through_a_mapping() {
    let nested = config(
        "response: {accessToken: /data/accessToken, tokenType: /data/type, expiresIn: /data/ttl, expiresAt: /data/expiresAt, refreshToken: /data/refresh}\n",
    );
    let ok = |body: Value| answer(&nested, &raw(200, &body.to_string()), None).unwrap();

    let t = ok(
        json!({"data": {"accessToken": " tok ", "ttl": "120", "expiresAt": "2026-11-26T13:00:00Z"}}),
    );
    assert_eq!(t.access_token.expose_secret(), "tok");
    assert_eq!(t.token_type, "Bearer", "absent type means Bearer");
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (120, LifetimeSource::ExpiresIn)
    );
    assert_eq!(t.issued_at, now());
    assert_eq!(t.expires_at, "2026-11-26T12:02:00Z".parse().unwrap());

    let t = ok(
        json!({"data": {"accessToken": "tok", "type": "MAC", "expiresAt": "Thu, 26 Nov 2026 12:30:00 GMT", "refresh": "r"}}),
    );
    assert_eq!(t.token_type, "MAC");
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (1800, LifetimeSource::ExpiresAt)
    );
    assert!(matches!(t.refresh, RefreshOutcome::NewlyIssued(_)));

    let jwt = format!(
        "e30.{}.sig",
        URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now().as_second() + 600))
    );
    let t = ok(json!({"data": {"accessToken": jwt, "ttl": "soon"}}));
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (600, LifetimeSource::JwtExp)
    );

    let t = ok(json!({"data": {"accessToken": "opaque"}}));
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (3600, LifetimeSource::Default)
    );

    // Presets set their documented default lifetime.
    let t = answer(&config(RENTLY), &raw(200, r#"{"access_token":"x"}"#), None).unwrap();
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (86399, LifetimeSource::Default)
    );
}

#[test]
fn carrental_answers_are_read_as_documented() {
    let body = json!({
        "type": "Bearer", "token": "car-token", "expiresIn": "3600",
        "issued": "Thu, 26 Nov 2026 12:00:00 GMT", "expires": "Thu, 26 Nov 2026 13:00:00 GMT",
    });
    let t = answer(&config(CARRENTAL), &raw(200, &body.to_string()), None).unwrap();
    assert_eq!(t.access_token.expose_secret(), "car-token");
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (3600, LifetimeSource::ExpiresIn)
    );
    // Without expiresIn, the absolute `expires` is next in line.
    let mut body = body;
    body.as_object_mut().unwrap().remove("expiresIn");
    let t = answer(&config(CARRENTAL), &raw(200, &body.to_string()), None).unwrap();
    assert_eq!(
        (t.lifetime_seconds, t.lifetime_source),
        (3600, LifetimeSource::ExpiresAt)
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_now() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        Just(Timestamp::UNIX_EPOCH),
        (0i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

/// Strings that look like the values providers send: numbers, dates, JWTs, or anything.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,25}(\\.[0-9]{1,6})?(e-?[0-9]{1,3})?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "(Mon|Thu|Xyz), [0-9]{1,2} (Nov|Feb|Foo) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} (GMT|\\+0000|-1300)",
        arb_jwt(),
        "(NaN|inf|-inf|infinity|1e400|-0|0x10| )",
        ".{0,40}",
    ]
}

/// JWT-shaped tokens whose payload is arbitrary (often a claims object with an odd `exp`).
fn arb_jwt() -> impl Strategy<Value = String> {
    let payload = prop_oneof![
        any::<f64>().prop_map(|exp| format!("{{\"exp\":{exp}}}")),
        any::<i64>().prop_map(|exp| format!("{{\"exp\":{exp}}}")),
        ".{0,30}".prop_map(|exp| json!({ "exp": exp }).to_string()),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    (payload, "[A-Za-z0-9_=.-]{0,8}")
        .prop_map(|(p, tail)| format!("e30.{}.sig{tail}", URL_SAFE_NO_PAD.encode(p)))
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "access_token",
            "token_type",
            "refresh_token",
            "expires_in",
            "expires_at",
            "error",
            "error_description",
            "message",
            "data",
            "token",
            "expiresIn",
            "expires",
            "accessToken",
        ])
        .prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_config() -> impl Strategy<Value = ProviderConfig> {
    let pointer = "(/[a-zA-Z_~0-9]{0,10}){1,3}";
    prop_oneof![
        prop::sample::select(vec![RENTLY, CARRENTAL, RETENTLY, RELTIO]).prop_map(config),
        (pointer, pointer, pointer, pointer, pointer, 60u32..31_536_000).prop_map(
            |(a, t, r, i, e, d)| {
                config(&format!(
                    "response: {{accessToken: \"{a}\", tokenType: \"{t}\", refreshToken: \"{r}\", expiresIn: \"{i}\", expiresAt: \"{e}\", defaultLifetimeSeconds: {d}}}\n"
                ))
            }
        ),
    ]
}

fn arb_status() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            200u16, 201, 204, 301, 302, 400, 401, 403, 404, 408, 429, 500, 503
        ]),
        any::<u16>(),
    ]
}

/// Header values as reqwest hands them over (visible ASCII), or absent.
fn arb_header() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[ -~]{0,60}",
        arb_text(),
        "https?://[a-z.]{1,20}(:[0-9]{1,5})?/[ -~]{0,20}",
    ])
}

/// An error from `interpret` is one bounded line (it becomes a condition message).
fn check_error(err: &FetchError) -> Result<(), TestCaseError> {
    let text = err.to_string();
    prop_assert!(!text.contains('\n'), "multi-line: {text}");
    prop_assert!(
        text.chars().count() < 1000,
        "{} chars",
        text.chars().count()
    );
    Ok(())
}

/// Success values are consistent with each other.
fn check_token(token: &IssuedToken, now: Timestamp) -> Result<(), TestCaseError> {
    prop_assert!(!token.access_token.expose_secret().trim().is_empty());
    prop_assert!(!token.token_type.is_empty());
    prop_assert_eq!(token.issued_at, now);
    let fp = token.fingerprint();
    prop_assert_eq!(fp.len(), "sha256:".len() + 64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn interpret_never_panics_on_arbitrary_bytes(
        config in arb_config(),
        status in arb_status(),
        body in prop::collection::vec(any::<u8>(), 0..1024),
        content_type in arb_header(),
        retry_after in arb_header(),
        location in arb_header(),
        sent_refresh in prop::option::of(".{0,20}"),
        now in arb_now(),
    ) {
        let raw = RawResponse {
            status,
            content_type: content_type.as_deref(),
            retry_after: retry_after.as_deref(),
            location: location.as_deref(),
            body: &body,
        };
        let sent = sent_refresh.map(SecretString::from);
        match interpret(&config, &raw, &Scrubber::new([SENT]), sent.as_ref(), now) {
            Ok(token) => check_token(&token, now)?,
            Err(err) => check_error(&err)?,
        }
    }

    #[test]
    fn interpret_never_panics_on_json_answers(
        config in arb_config(),
        status in arb_status(),
        body in arb_json(),
        token in prop::option::of(arb_text()),
        retry_after in arb_header(),
        sent_refresh in prop::option::of(".{0,20}"),
        now in arb_now(),
    ) {
        // Usually put a token where the mapping looks, so the success path runs too.
        let mut body = body;
        if let (Some(token), Value::Object(map)) = (token, &mut body) {
            let key = config.response.access_token.trim_start_matches('/');
            if !key.contains('/') {
                map.insert(key.to_string(), Value::from(token));
            }
        }
        let text = body.to_string();
        let raw = RawResponse {
            status,
            content_type: Some("application/json"),
            retry_after: retry_after.as_deref(),
            location: None,
            body: text.as_bytes(),
        };
        let sent = sent_refresh.map(SecretString::from);
        match interpret(&config, &raw, &Scrubber::new([SENT]), sent.as_ref(), now) {
            Ok(token) => {
                check_token(&token, now)?;
                // The refresh outcome follows RFC 6749 §6 whatever the answer holds.
                match (&sent, &token.refresh) {
                    (None, RefreshOutcome::None | RefreshOutcome::NewlyIssued(_)) => {}
                    (Some(_), RefreshOutcome::Kept) => {}
                    (Some(old), RefreshOutcome::Rotated(new)) => {
                        prop_assert_ne!(old.expose_secret(), new.expose_secret());
                    }
                    (sent, outcome) => prop_assert!(false, "sent {:?} gave {:?}", sent.is_some(), outcome),
                }
            }
            Err(err) => check_error(&err)?,
        }
    }

    #[test]
    fn a_sent_secret_never_comes_back_in_an_error(
        secret in "[A-Za-z0-9]{10,24}",
        status in arb_status(),
        shape in 0usize..6,
        filler in ".{0,30}",
    ) {
        let body = match shape {
            0 => json!({"error": "invalid_grant", "error_description": format!("{filler} {secret}")}).to_string(),
            1 => json!({"error": secret, "message": filler}).to_string(),
            2 => format!("{filler}{secret}{filler}"),
            3 => json!({ secret.clone(): filler, "expires_in": 5 }).to_string(),
            4 => format!("<html><title>{filler} {secret}</title></html>"),
            _ => json!({"detail": [secret.clone(), filler]}).to_string(),
        };
        let raw = RawResponse {
            status,
            content_type: Some("text/plain"),
            retry_after: None,
            location: None,
            body: body.as_bytes(),
        };
        let config = config(RELTIO);
        if let Err(err) = interpret(&config, &raw, &Scrubber::new([secret.as_str()]), None, now()) {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains(&secret), "{}", shown);
        }
    }

    /// Secrets drawn from all printable ASCII (`/ + = % " \` included), echoed back in an
    /// error body in any escaping a provider might use, never come back in the error.
    #[test]
    fn an_echoed_secret_is_scrubbed_in_every_escaping(
        secret in "[ -~]{6,24}",
        status in 400u16..600,
        form in 0usize..9,
        in_json in any::<bool>(),
    ) {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let json_inner = serde_json::to_string(&secret).unwrap();
        let json_inner = &json_inner[1..json_inner.len() - 1];
        let echo = match form {
            0 => secret.clone(),
            1 => json_inner.replace('/', "\\/"),
            2 => secret.chars().map(|c| format!("\\u{:04x}", c as u32)).collect(),
            3 => secret.bytes().map(|b| format!("%{b:02x}")).collect(),
            4 => secret.bytes().map(|b| format!("%{b:02X}")).collect(),
            5 => STANDARD.encode(&secret),
            6 => STANDARD_NO_PAD.encode(&secret),
            7 => URL_SAFE.encode(&secret),
            _ => URL_SAFE_NO_PAD.encode(&secret),
        };
        let body = if in_json {
            // The echo as raw text inside a JSON string: JSON decoding adds one more layer.
            format!("{{\"error\": \"invalid_client\", \"error_description\": \"bad secret {}\"}}", echo.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            format!("bad secret {echo} for client")
        };
        let raw = RawResponse {
            status,
            content_type: Some(if in_json { "application/json" } else { "text/plain" }),
            retry_after: None,
            location: None,
            body: body.as_bytes(),
        };
        let err = interpret(&config(RELTIO), &raw, &Scrubber::new([secret.as_str()]), None, now())
            .expect_err("an error status");
        let shown = format!("{err} {err:?}");
        prop_assert!(!shown.contains(&secret), "{}", shown);
        prop_assert!(!shown.contains(&echo), "{}", shown);
    }

    /// A successful answer that is not JSON may still carry a fresh token the scrubber cannot
    /// know: its body is never quoted, in any shape.
    #[test]
    fn a_successful_non_json_answer_is_never_quoted(
        token in "[!-~]{8,40}",
        status in 200u16..300,
        shape in 0usize..4,
        content_type in prop_oneof![Just(Some("text/plain")), Just(Some("text/html")), Just(None)],
    ) {
        let body = match shape {
            0 => format!("access_token={token}&expires_in=3600"),
            1 => format!("<html><title>{token}</title></html>"),
            2 => format!("[\"{token}\"]"),
            _ => token.clone(),
        };
        let raw = RawResponse {
            status,
            content_type,
            retry_after: None,
            location: None,
            body: body.as_bytes(),
        };
        if let Err(err) = interpret(&config(RELTIO), &raw, &Scrubber::new([SENT]), None, now()) {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains(&token), "{}", shown);
        }
    }

    #[test]
    fn lifetime_helpers_never_panic(
        expires_in in arb_json(),
        expires_at in arb_json(),
        token in prop_oneof![arb_jwt(), ".{0,60}"],
        default_secs in 0u64..=u64::from(u32::MAX),
        now in arb_now(),
        use_in in any::<bool>(),
        use_at in any::<bool>(),
    ) {
        let secs = lifetime::seconds_from_json(&expires_in);
        let at = lifetime::instant_from_json(&expires_at);
        let jwt = lifetime::jwt_expiry(&token);
        let default = Duration::from_secs(default_secs);
        let l = lifetime::resolve(
            now,
            use_in.then_some(&expires_in),
            use_at.then_some(&expires_at),
            &token,
            default,
        );
        // The source is the first clue present, in the documented order.
        let want = match (secs.filter(|_| use_in), at.filter(|_| use_at), jwt) {
            (Some(_), _, _) => LifetimeSource::ExpiresIn,
            (None, Some(_), _) => LifetimeSource::ExpiresAt,
            (None, None, Some(_)) => LifetimeSource::JwtExp,
            (None, None, None) => LifetimeSource::Default,
        };
        prop_assert_eq!(l.source, want);
        let max = lifetime::MAX_LIFETIME.as_secs();
        prop_assert!(l.seconds <= max);
        prop_assert_eq!(l.capped_from.is_some(), l.capped_from.is_some_and(|c| c > max));
        match l.source {
            LifetimeSource::ExpiresIn => prop_assert_eq!(Some(l.seconds), secs.map(|s| s.min(max))),
            LifetimeSource::ExpiresAt if l.capped_from.is_none() => prop_assert_eq!(Some(l.expires_at), at),
            LifetimeSource::JwtExp if l.capped_from.is_none() => prop_assert_eq!(Some(l.expires_at), jwt),
            LifetimeSource::Default => prop_assert_eq!(l.seconds, default_secs.min(max)),
            _ => prop_assert_eq!(l.seconds, max),
        }
        if l.expires_at < now {
            prop_assert_eq!(l.seconds, 0);
        } else if l.expires_at != Timestamp::MAX {
            prop_assert_eq!(l.expires_at.duration_since(now).as_secs() as u64, l.seconds);
        }
    }

    #[test]
    fn retry_after_never_panics(value in prop_oneof![arb_text(), "[ -~]{0,40}"], now in arb_now()) {
        let parsed = parse_retry_after(&value, now);
        if let Ok(secs) = value.trim().parse::<u64>() {
            prop_assert_eq!(parsed, Some(Duration::from_secs(secs)));
        }
    }
}

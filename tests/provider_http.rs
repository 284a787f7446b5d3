//! The provider layer over the real HTTP stack, against the seed providers' emulator.

mod support;

use std::time::Duration;

use provider_emulator::{AccountState, Fault, Provider, fixtures};
use secrecy::{ExposeSecret, SecretString};
use support::*;
use token_rotator::provider::{
    ErrorClass, FetchError, GrantRequest, HttpPolicy, LifetimeSource, Param, RefreshOutcome,
    TokenClient,
};

fn http_client() -> TokenClient {
    TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: None,
        allow_link_local: false,
    })
}

#[tokio::test]
async fn every_preset_round_trips_over_http_and_https() {
    for tls in [false, true] {
        let emu = emulator(tls).await;
        let client = TokenClient::new(HttpPolicy {
            allow_http: !tls,
            allowed_hosts: None,
            allow_link_local: false,
        });
        for p in ALL {
            let config = config_for(p, &emu);
            let creds = credentials_for(p, &emu);
            let token = client
                .fetch(&config, &creds, &GrantRequest::Primary)
                .await
                .unwrap_or_else(|e| panic!("{p:?} over tls={tls}: {e}"));
            assert!(
                emu.control()
                    .is_valid_access_token(p, token.access_token.expose_secret()),
                "{p:?}: the emulator accepts the token"
            );
            let want = match p {
                Provider::Rently => fixtures::RENTLY_LIFETIME_SECS,
                Provider::Carrental => fixtures::CARRENTAL_LIFETIME_SECS,
                Provider::Retently => fixtures::RETENTLY_LIFETIME_SECS,
                Provider::Reltio => fixtures::RELTIO_LIFETIME_SECS,
            };
            assert!(
                token.lifetime_seconds.abs_diff(want) <= 1,
                "{p:?}: lifetime {} vs {want}",
                token.lifetime_seconds
            );
            assert_eq!(token.lifetime_source, LifetimeSource::ExpiresIn, "{p:?}");
            assert!(token.token_type.eq_ignore_ascii_case("bearer"), "{p:?}");
            let has_refresh = matches!(token.refresh, RefreshOutcome::NewlyIssued(_));
            assert_eq!(
                has_refresh,
                matches!(p, Provider::Retently | Provider::Reltio),
                "{p:?}"
            );
        }
    }
}

#[tokio::test]
async fn wire_formats_match_the_seed_documents() {
    let emu = emulator(false).await;
    let client = http_client();
    for p in ALL {
        client
            .fetch(
                &config_for(p, &emu),
                &credentials_for(p, &emu),
                &GrantRequest::Primary,
            )
            .await
            .unwrap();
        let req = emu.control().last_request(p).expect("recorded");
        match p {
            Provider::Carrental => {
                let body = req.json().expect("json body");
                assert_eq!(body["userName"], fixtures::CARRENTAL_USERNAME);
                assert_eq!(body["password"], fixtures::CARRENTAL_PASSWORD);
                assert!(body.get("grant_type").is_none(), "{body}");
            }
            Provider::Reltio => {
                let auth = req.header("authorization").expect("basic auth");
                assert_eq!(
                    auth, "Basic cmVsdGlvX3VpOnNlY3JldA==",
                    "the seed document's header"
                );
                let form = req.form();
                assert!(form.contains(&("grant_type".into(), "password".into())));
                assert!(!form.iter().any(|(k, _)| k == "client_secret"));
            }
            Provider::Rently | Provider::Retently => {
                let form = req.form();
                assert!(form.iter().any(|(k, _)| k == "client_secret"));
                assert!(req.header("authorization").is_none());
            }
        }
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_or_are_kept() {
    let emu = emulator(false).await;
    let client = http_client();

    // Retently: every refresh hands back a new refresh token; the old one is dead.
    let config = config_for(Provider::Retently, &emu);
    let creds = credentials_for(Provider::Retently, &emu);
    let first = client
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap();
    let RefreshOutcome::NewlyIssued(r1) = first.refresh.clone() else {
        panic!("code exchange issues a refresh token: {:?}", first.refresh)
    };
    let second = client
        .fetch(&config, &creds, &GrantRequest::Refresh(r1.clone()))
        .await
        .unwrap();
    let RefreshOutcome::Rotated(r2) = second.refresh.clone() else {
        panic!("retently rotates: {:?}", second.refresh)
    };
    assert_ne!(r1.expose_secret(), r2.expose_secret());
    let reuse = client
        .fetch(&config, &creds, &GrantRequest::Refresh(r1))
        .await
        .unwrap_err();
    assert!(reuse.is_invalid_grant(), "{reuse}");
    // The spent code cannot be used again either.
    let again = client
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap_err();
    assert!(again.is_invalid_grant(), "{again}");

    // Reltio: a refresh answer without refresh_token keeps the old one (RFC 6749 §6).
    emu.control().set_multi_token(true);
    let config = config_for(Provider::Reltio, &emu);
    let creds = credentials_for(Provider::Reltio, &emu);
    let first = client
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap();
    let r = first.refresh.new_token().unwrap().clone();
    let refreshed = client
        .fetch(&config, &creds, &GrantRequest::Refresh(r))
        .await
        .unwrap();
    assert!(
        matches!(refreshed.refresh, RefreshOutcome::Kept),
        "{:?}",
        refreshed.refresh
    );
    assert_ne!(first.fingerprint(), refreshed.fingerprint());
}

async fn failure(
    p: Provider,
    fault: Option<Fault>,
    tweak: impl FnOnce(&mut token_rotator::provider::ProviderConfig),
) -> FetchError {
    let emu = emulator(false).await;
    if let Some(fault) = fault {
        emu.control().inject(p, fault, 1);
    }
    let mut config = config_for(p, &emu);
    tweak(&mut config);
    http_client()
        .fetch(&config, &credentials_for(p, &emu), &GrantRequest::Primary)
        .await
        .expect_err("must fail")
}

#[tokio::test]
async fn rejected_credentials_are_classified_with_the_providers_words() {
    let emu = emulator(false).await;
    let client = http_client();
    let c = emu.control();
    type BreakIt<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(Provider, BreakIt, u16)> = vec![
        (
            Provider::Rently,
            Box::new(|| c.set_password(Provider::Rently, fixtures::RENTLY_CLIENT_ID, "changed-1")),
            400,
        ),
        (
            Provider::Carrental,
            Box::new(|| {
                c.set_password(
                    Provider::Carrental,
                    fixtures::CARRENTAL_USERNAME,
                    "changed-2",
                )
            }),
            401,
        ),
        (
            Provider::Carrental,
            Box::new(|| {
                c.set_account_state(
                    Provider::Carrental,
                    fixtures::CARRENTAL_USERNAME,
                    AccountState::Forbidden,
                )
            }),
            403,
        ),
        (
            Provider::Reltio,
            Box::new(|| c.set_password(Provider::Reltio, fixtures::RELTIO_USERNAME, "changed-3")),
            0,
        ),
    ];
    for (p, break_it, status) in cases {
        c.reset();
        break_it();
        let err = client
            .fetch(
                &config_for(p, &emu),
                &credentials_for(p, &emu),
                &GrantRequest::Primary,
            )
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::CredentialsRejected, "{p:?}: {err}");
        assert!(!err.class().is_transient());
        if status != 0 {
            assert_eq!(err.http_status(), Some(status), "{p:?}: {err}");
        }
    }
    // Carrental 404 names the user, in the provider's own words.
    c.reset();
    let spec = spec_for(Provider::Carrental, &emu.token_url(Provider::Carrental));
    let mut data = secret_data(Provider::Carrental, &emu);
    data.insert("username".into(), b"nobody-here".to_vec());
    let creds = token_rotator::api::credentials_from_data(&spec, &data);
    let err = client
        .fetch(
            &config_for(Provider::Carrental, &emu),
            &creds,
            &GrantRequest::Primary,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.class(), err.http_status()),
        (ErrorClass::CredentialsRejected, Some(404))
    );
    // The username was sent, so it is scrubbed from the provider's words.
    assert!(
        err.to_string().contains("No user found with username"),
        "{err}"
    );
    assert!(!err.to_string().contains("nobody-here"), "{err}");
}

#[tokio::test]
async fn request_shape_errors_are_request_rejected() {
    let err = failure(Provider::Carrental, None, |c| {
        c.encoding = token_rotator::provider::BodyEncoding::Form;
    })
    .await;
    assert_eq!(err.class(), ErrorClass::RequestRejected, "{err}");
    assert_eq!(err.http_status(), Some(400));
    assert!(err.to_string().contains("Invalid grant type"), "{err}");
}

#[tokio::test]
async fn rate_limits_carry_retry_after() {
    let err = failure(
        Provider::Reltio,
        Some(Fault::RateLimited {
            retry_after_secs: 7,
        }),
        |_| {},
    )
    .await;
    assert_eq!(err.class(), ErrorClass::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    // Reltio's own limit: more than 10 requests in a second is answered with 429.
    let emu = emulator(false).await;
    emu.control().set_multi_token(true);
    let client = http_client();
    let config = config_for(Provider::Reltio, &emu);
    let creds = credentials_for(Provider::Reltio, &emu);
    let results = futures::future::join_all(
        (0..15).map(|_| client.fetch(&config, &creds, &GrantRequest::Primary)),
    )
    .await;
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.class() == ErrorClass::RateLimited))
        .count();
    assert!(limited >= 1, "15 requests at once must exceed 10/s");
    assert_eq!(
        emu.control().counters(Provider::Reltio).rate_limited,
        limited as u64
    );
}

#[tokio::test]
async fn outages_are_provider_unavailable() {
    let err = failure(
        Provider::Rently,
        Some(Fault::Status {
            code: 503,
            body: "maintenance".into(),
        }),
        |_| {},
    )
    .await;
    assert_eq!(
        (err.class(), err.http_status()),
        (ErrorClass::ProviderUnavailable, Some(503))
    );
    assert!(err.to_string().contains("maintenance"), "{err}");

    let err = failure(Provider::Rently, Some(Fault::Hang), |c| {
        c.limits.overall_timeout = Duration::from_millis(500);
    })
    .await;
    assert_eq!(err.class(), ErrorClass::ProviderUnavailable, "{err}");
    assert!(err.to_string().contains("within"), "{err}");

    let err = failure(Provider::Rently, Some(Fault::CloseConnection), |_| {}).await;
    assert_eq!(err.class(), ErrorClass::ProviderUnavailable, "{err}");

    // Nothing listens on the port any more.
    let emu = emulator(false).await;
    let mut config = config_for(Provider::Rently, &emu);
    let creds = credentials_for(Provider::Rently, &emu);
    emu.shutdown().await;
    config.limits.connect_timeout = Duration::from_secs(2);
    let err = http_client()
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::ProviderUnavailable, "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn unusable_answers_are_invalid_response() {
    for (fault, needle) in [
        (Fault::Html, "not a JSON object"),
        (Fault::NotJson, "not a JSON object"),
        (Fault::MissingToken, "no access token at `/access_token`"),
        (Fault::Huge(20 * 1024 * 1024), "byte limit"),
        (
            Fault::Redirect("https://elsewhere.example.com/token".into()),
            "redirects are not followed",
        ),
    ] {
        let label = format!("{fault:?}");
        let err = failure(Provider::Rently, Some(fault), |_| {}).await;
        assert_eq!(err.class(), ErrorClass::InvalidResponse, "{label}: {err}");
        assert!(err.to_string().contains(needle), "{label}: {err}");
    }
}

#[tokio::test]
async fn transport_rules_https_only_and_allowlist() {
    let emu = emulator(false).await;
    let config = config_for(Provider::Rently, &emu);
    let creds = credentials_for(Provider::Rently, &emu);
    let strict = TokenClient::new(HttpPolicy::default());
    let err = strict
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Configuration);
    assert!(err.to_string().contains("--allow-http"), "{err}");
    assert_eq!(
        emu.control().counters(Provider::Rently).requests,
        0,
        "nothing was sent"
    );

    let allowlisted = TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: Some(vec!["auth.example.com".into()]),
        allow_link_local: false,
    });
    let err = allowlisted
        .fetch(&config, &creds, &GrantRequest::Primary)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("allowed hosts"), "{err}");

    // TLS is verified: without the emulator's CA the handshake fails.
    let tls = emulator(true).await;
    let mut config = config_for(Provider::Rently, &tls);
    config.ca_bundle = None;
    let err = TokenClient::new(HttpPolicy::default())
        .fetch(
            &config,
            &credentials_for(Provider::Rently, &tls),
            &GrantRequest::Primary,
        )
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::ProviderUnavailable, "{err}");
    assert_eq!(tls.control().counters(Provider::Rently).issued, 0);
}

#[tokio::test]
async fn secrets_never_reach_errors_or_debug_output() {
    let emu = emulator(false).await;
    let creds = credentials_for(Provider::Reltio, &emu);
    // A provider that echoes everything it was sent back into its error text.
    let echo = format!(
        "user {} with password {} and client {}:{} (Basic cmVsdGlvX3VpOnNlY3JldA==) rejected",
        fixtures::RELTIO_USERNAME,
        fixtures::RELTIO_PASSWORD,
        fixtures::RELTIO_CLIENT_ID,
        fixtures::RELTIO_CLIENT_SECRET
    );
    for code in [400, 401, 500] {
        emu.control().inject(
            Provider::Reltio,
            Fault::Status {
                code,
                body: format!("{{\"error\":\"invalid_grant\",\"error_description\":\"{echo}\"}}"),
            },
            1,
        );
        let err = http_client()
            .fetch(
                &config_for(Provider::Reltio, &emu),
                &creds,
                &GrantRequest::Primary,
            )
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        for secret in [
            fixtures::RELTIO_PASSWORD,
            fixtures::RELTIO_USERNAME,
            "cmVsdGlvX3VpOnNlY3JldA==",
        ] {
            assert!(!shown.contains(secret), "HTTP {code}: {shown}");
        }
    }
    let token = http_client()
        .fetch(
            &config_for(Provider::Reltio, &emu),
            &creds,
            &GrantRequest::Primary,
        )
        .await
        .unwrap();
    let debug = format!(
        "{token:?} {creds:?} {:?}",
        GrantRequest::Refresh(SecretString::from("rt-value-123"))
    );
    assert!(
        !debug.contains(token.access_token.expose_secret()),
        "{debug}"
    );
    assert!(!debug.contains(token.refresh.new_token().unwrap().expose_secret()));
    assert!(
        !debug.contains(fixtures::RELTIO_PASSWORD) && !debug.contains("rt-value-123"),
        "{debug}"
    );
    let request = token_rotator::provider::build_request(
        &config_for(Provider::Reltio, &emu),
        &creds,
        &GrantRequest::Primary,
    )
    .unwrap();
    let debug = format!("{request:?}");
    assert!(
        !debug.contains(fixtures::RELTIO_PASSWORD) && !debug.contains("cmVsdGlv"),
        "{debug}"
    );
    assert!(creds.get(Param::Password).is_some());
}

/// Cloud metadata services live at link-local addresses: refused before any connection
/// (these URLs are only checked, never contacted), unless the operator allows them.
#[test]
fn link_local_token_endpoints_are_refused_unless_allowed() {
    let refusing = TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: None,
        allow_link_local: false,
    });
    for url in [
        "https://169.254.169.254/latest/api/token",
        "http://169.254.0.1/token",
        "https://[fe80::1]/token",
        "https://[::ffff:169.254.169.254]/token",
    ] {
        let err = refusing.check_endpoint(&url.parse().unwrap()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Configuration, "{url}");
        assert!(
            err.to_string()
                .contains("--allow-link-local-token-endpoints"),
            "{err}"
        );
    }
    assert!(
        refusing
            .check_endpoint(&"https://127.0.0.1/token".parse().unwrap())
            .is_ok()
    );
    let allowing = TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: None,
        allow_link_local: true,
    });
    assert!(
        allowing
            .check_endpoint(&"https://169.254.169.254/token".parse().unwrap())
            .is_ok()
    );
}

/// A tenant naming ever new CA bundles (here the same certificate under a different comment
/// each time) cannot grow the HTTP clients kept past their bound, while a victim's endpoint
/// keeps working throughout.
#[tokio::test]
async fn distinct_ca_bundles_cannot_grow_the_clients_kept() {
    let emu = emulator(true).await;
    let client = TokenClient::new(HttpPolicy::default());
    let victim = config_for(Provider::Rently, &emu);
    let creds = credentials_for(Provider::Rently, &emu);
    let ca = victim.ca_bundle.clone().expect("the emulator's CA");
    for i in 0..200 {
        let mut hostile = victim.clone();
        hostile.ca_bundle = Some(format!("hostile bundle {i}\n{ca}"));
        client
            .fetch(&hostile, &creds, &GrantRequest::Primary)
            .await
            .unwrap_or_else(|e| panic!("hostile {i}: {e}"));
        if i % 20 == 0 {
            client
                .fetch(&victim, &creds, &GrantRequest::Primary)
                .await
                .unwrap_or_else(|e| panic!("victim after {i}: {e}"));
        }
        assert!(
            client.pooled_clients() <= token_rotator::provider::http::MAX_POOLS,
            "{} clients kept after {i}",
            client.pooled_clients()
        );
    }
    client
        .fetch(&victim, &creds, &GrantRequest::Primary)
        .await
        .expect("the victim's endpoint still works");
}

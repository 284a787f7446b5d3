//! Any bytes, status and headers a token endpoint may send: parsing never panics, and no
//! error text holds the secret that was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use token_rotator::api::{ProviderCredentialSpec, provider_config};
use token_rotator::provider::response::{RawResponse, interpret};
use token_rotator::provider::scrub::Scrubber;

const SENT: &str = "s3cr3t/+=%\"\\value";

fuzz_target!(|input: (u16, &str, &str, &[u8])| {
    let (status, content_type, retry_after, body) = input;
    let spec: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
        "preset": "reltio",
        "tokenEndpoint": {"url": "https://auth.example.test/oauth/token"},
        "credentials": {"secretRef": {"name": "c"}},
        "target": {"secretName": "t"},
    }))
    .expect("a valid spec");
    let config = provider_config(&spec).expect("a valid config");
    let raw = RawResponse {
        status,
        content_type: Some(content_type),
        retry_after: Some(retry_after),
        location: None,
        body,
    };
    let sent = SecretString::from(SENT);
    let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
    if let Err(error) = interpret(&config, &raw, &Scrubber::new([SENT]), Some(&sent), now) {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(SENT), "{shown}");
    }
});

//! Helpers shared by the provider-level test binaries (no Kubernetes).
#![allow(dead_code)]

use std::collections::BTreeMap;

use provider_emulator::{Emulator, Options, Provider, fixtures};
use token_rotator::api::{self, ProviderCredentialSpec};
use token_rotator::provider::{Credentials, ProviderConfig};

pub async fn emulator(tls: bool) -> Emulator {
    token_rotator::install_crypto_provider();
    Emulator::start(Options {
        tls,
        ..Options::default()
    })
    .await
    .expect("emulator starts")
}

pub fn preset_name(p: Provider) -> &'static str {
    match p {
        Provider::Rently => "rently",
        Provider::Carrental => "carrental",
        Provider::Retently => "retently",
        Provider::Reltio => "reltio",
    }
}

pub const REDIRECT_URI: &str = "https://app.example.com/oauth/callback";

/// A minimal spec for a preset: exactly the fields the README promises are enough.
pub fn spec_for(p: Provider, url: &str) -> ProviderCredentialSpec {
    let grant = if p == Provider::Retently {
        format!("grant: {{redirectUri: \"{REDIRECT_URI}\"}}\n")
    } else {
        String::new()
    };
    let yaml = format!(
        "preset: {}\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n{grant}",
        preset_name(p)
    );
    serde_saphyr::from_str(&yaml).expect("spec parses")
}

pub fn config_for(p: Provider, emu: &Emulator) -> ProviderConfig {
    let mut spec = spec_for(p, &emu.token_url(p));
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    api::provider_config(&spec).expect("preset resolves")
}

/// The emulator's default account for a provider, as a credentials Secret would hold it.
pub fn secret_data(p: Provider, emu: &Emulator) -> BTreeMap<String, Vec<u8>> {
    let pairs: Vec<(&str, String)> = match p {
        Provider::Rently => vec![
            ("client_id", fixtures::RENTLY_CLIENT_ID.into()),
            ("client_secret", fixtures::RENTLY_CLIENT_SECRET.into()),
        ],
        Provider::Carrental => vec![
            ("username", fixtures::CARRENTAL_USERNAME.into()),
            ("password", fixtures::CARRENTAL_PASSWORD.into()),
        ],
        Provider::Retently => vec![
            ("client_id", fixtures::RETENTLY_CLIENT_ID.into()),
            ("client_secret", fixtures::RETENTLY_CLIENT_SECRET.into()),
            ("code", emu.control().mint_authorization_code(REDIRECT_URI)),
        ],
        Provider::Reltio => vec![
            ("client_id", fixtures::RELTIO_CLIENT_ID.into()),
            ("client_secret", fixtures::RELTIO_CLIENT_SECRET.into()),
            ("username", fixtures::RELTIO_USERNAME.into()),
            ("password", fixtures::RELTIO_PASSWORD.into()),
        ],
    };
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect()
}

pub fn credentials_for(p: Provider, emu: &Emulator) -> Credentials {
    let spec = spec_for(p, &emu.token_url(p));
    api::credentials_from_data(&spec, &secret_data(p, emu))
}

pub const ALL: [Provider; 4] = [
    Provider::Rently,
    Provider::Carrental,
    Provider::Retently,
    Provider::Reltio,
];

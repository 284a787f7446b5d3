//! Client authentication without shared secrets on the real control plane: one
//! ProviderCredential per method (private_key_jwt, client_secret_jwt, mutual TLS, the google
//! preset's JWT bearer grant) against the emulator's verifying /oauth2 server over HTTPS.

mod e2e;
mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use provider_emulator::keys;
use provider_emulator::{ClientMethod, Emulator, JwsAlgorithm, Options};
use token_rotator::api::{ProviderCredential, ProviderCredentialSpec};

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

async fn create(env: &Env, emu: &Emulator, name: &str, extra: &str) -> Result<()> {
    let yaml = format!(
        "tokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: {name}-creds}}}}\ntarget: {{secretName: {name}-token}}\n{extra}",
        emu.oauth2_token_url()
    );
    let mut spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).context("spec")?;
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    env.pcreds()
        .create(&Default::default(), &ProviderCredential::new(name, spec))
        .await?;
    Ok(())
}

#[tokio::test]
async fn each_client_authentication_method_rotates_through_the_operator() -> Result<()> {
    let env = Env::new("clientauth").await?;
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await?;
    let c = emu.control();

    let rsa = keys::rsa();
    c.register_oauth_client(
        "pkj",
        ClientMethod::PrivateKeyJwt {
            algorithm: JwsAlgorithm::PS256,
            public_key_pem: rsa.public_key_pem.clone(),
        },
    )?;
    let secret = "client-secret-for-an-hs256-assertion";
    c.register_oauth_client(
        "csj",
        ClientMethod::ClientSecretJwt {
            secret: secret.into(),
        },
    )?;
    let cert = keys::client_certificate("rotator");
    c.register_oauth_client(
        "mtls",
        ClientMethod::Tls {
            certificate_pem: cert.certificate_pem.clone(),
        },
    )?;
    let email = "rotator@demo.iam.gserviceaccount.com";
    c.register_jwt_bearer_issuer(email, rsa.public_key_pem.clone())?;
    let sa_key = serde_json::json!({
        "type": "service_account",
        "private_key_id": "k1",
        "private_key": rsa.private_key_pem,
        "client_email": email,
    })
    .to_string();

    env.create_credentials(
        "pkj-creds",
        &data(&[("client_id", "pkj"), ("private_key", &rsa.private_key_pem)]),
        true,
    )
    .await?;
    env.create_credentials(
        "csj-creds",
        &data(&[("client_id", "csj"), ("client_secret", secret)]),
        true,
    )
    .await?;
    env.create_credentials(
        "mtls-creds",
        &data(&[
            ("client_id", "mtls"),
            ("tls.crt", &cert.certificate_pem),
            ("tls.key", &cert.private_key_pem),
        ]),
        true,
    )
    .await?;
    env.create_credentials(
        "google-creds",
        &data(&[("service-account.json", &sa_key)]),
        true,
    )
    .await?;
    create(
        &env,
        &emu,
        "pkj",
        "grant: {clientAuthentication: privateKeyJwt, assertion: {algorithm: PS256}}\n",
    )
    .await?;
    create(
        &env,
        &emu,
        "csj",
        "grant: {clientAuthentication: clientSecretJwt}\n",
    )
    .await?;
    create(&env, &emu, "mtls", "grant: {clientAuthentication: tls}\n").await?;
    create(
        &env,
        &emu,
        "google",
        "preset: google\ngrant: {scope: \"https://www.googleapis.com/auth/cloud-platform\"}\n",
    )
    .await?;

    let op = env.start_operator().await?;
    for name in ["pkj", "csj", "mtls", "google"] {
        env.wait_condition(name, "Ready", "True", None).await?;
        let (_, target) = env
            .secret_data(&format!("{name}-token"))
            .await?
            .with_context(|| format!("{name}: target"))?;
        let token = target.get("access_token").context("access_token")?;
        let info = c
            .oauth2_access_token(token)
            .with_context(|| format!("{name}: the emulator issued the token in the target"))?;
        ensure!(c.is_valid_oauth2_access_token(token), "{name}: valid");
        match name {
            "mtls" => ensure!(
                info.certificate_thumbprint.as_deref() == Some(cert.thumbprint().as_str()),
                "bound to the client certificate"
            ),
            "google" => ensure!(info.client_id == email, "{info:?}"),
            other => ensure!(info.client_id == other, "{info:?}"),
        }
    }
    let counters = c.oauth2_counters();
    ensure!(counters.rejected == 0, "{counters:?}");

    // Nothing secret reached the status, the Events or the operator's debug log.
    let visible = format!("{}{}", env.visible_text().await?, op.log_text());
    let key_body: Vec<&str> = rsa
        .private_key_pem
        .lines()
        .filter(|l| l.len() > 40)
        .collect();
    for (what, value) in [
        ("the RSA key", key_body[3]),
        ("the client secret", secret),
        (
            "the client key",
            cert.private_key_pem.lines().nth(2).unwrap_or("-"),
        ),
    ] {
        ensure!(!visible.contains(value), "{what} is visible");
    }
    eprintln!(
        "client authentication: privateKeyJwt (PS256), clientSecretJwt, tls and google all Ready through the operator; {} tokens issued, 0 refused",
        counters.issued
    );
    Ok(())
}

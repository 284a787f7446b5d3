//! Client authentication without shared secrets on the real control plane, one test per
//! method (private_key_jwt, client_secret_jwt, mutual TLS, the google preset's JWT bearer
//! grant): the operator rotates a token from the emulator's verifying /oauth2 server over
//! HTTPS, and no key or secret reaches what a user can see.

mod e2e;
mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use provider_emulator::keys;
use provider_emulator::{ClientMethod, Emulator, JwsAlgorithm, Options};
use token_rotator::api::{ProviderCredential, ProviderCredentialSpec};

#[derive(Clone, Copy, Debug)]
enum Method {
    PrivateKeyJwt,
    ClientSecretJwt,
    Tls,
    Google,
}

const SECRET: &str = "client-secret-for-an-hs256-assertion";
const EMAIL: &str = "rotator@demo.iam.gserviceaccount.com";

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// What a test needs for one method: the credentials Secret's data, the spec's extra fields,
/// the client id the emulator knows it by, and texts that must stay unseen.
struct Client {
    data: BTreeMap<String, Vec<u8>>,
    extra: &'static str,
    id: &'static str,
    unseen: Vec<String>,
}

/// Registers the client at the emulator.
fn set_up(emu: &Emulator, method: Method) -> Result<Client> {
    let c = emu.control();
    let rsa = keys::rsa();
    let key_line = |pem: &str| {
        pem.lines()
            .find(|l| l.len() > 40)
            .unwrap_or("-")
            .to_string()
    };
    Ok(match method {
        Method::PrivateKeyJwt => {
            c.register_oauth_client(
                "pkj",
                ClientMethod::PrivateKeyJwt {
                    algorithm: JwsAlgorithm::PS256,
                    public_key_pem: rsa.public_key_pem.clone(),
                },
            )?;
            Client {
                data: data(&[("client_id", "pkj"), ("private_key", &rsa.private_key_pem)]),
                extra: "grant: {clientAuthentication: privateKeyJwt, assertion: {algorithm: PS256}}\n",
                id: "pkj",
                unseen: vec![key_line(&rsa.private_key_pem)],
            }
        }
        Method::ClientSecretJwt => {
            c.register_oauth_client(
                "csj",
                ClientMethod::ClientSecretJwt {
                    secret: SECRET.into(),
                },
            )?;
            Client {
                data: data(&[("client_id", "csj"), ("client_secret", SECRET)]),
                extra: "grant: {clientAuthentication: clientSecretJwt}\n",
                id: "csj",
                unseen: vec![SECRET.to_string()],
            }
        }
        Method::Tls => {
            let cert = keys::client_certificate("rotator");
            c.register_oauth_client(
                "mtls",
                ClientMethod::Tls {
                    certificate_pem: cert.certificate_pem.clone(),
                },
            )?;
            Client {
                data: data(&[
                    ("client_id", "mtls"),
                    ("tls.crt", &cert.certificate_pem),
                    ("tls.key", &cert.private_key_pem),
                ]),
                extra: "grant: {clientAuthentication: tls}\n",
                id: "mtls",
                unseen: vec![key_line(&cert.private_key_pem)],
            }
        }
        Method::Google => {
            c.register_jwt_bearer_issuer(EMAIL, rsa.public_key_pem.clone())?;
            let sa_key = serde_json::json!({
                "type": "service_account",
                "private_key_id": "k1",
                "private_key": rsa.private_key_pem,
                "client_email": EMAIL,
            })
            .to_string();
            Client {
                data: data(&[("service-account.json", &sa_key)]),
                extra: "preset: google\ngrant: {scope: \"https://www.googleapis.com/auth/cloud-platform\"}\n",
                id: EMAIL,
                unseen: vec![key_line(&rsa.private_key_pem)],
            }
        }
    })
}

async fn rotates_through_the_operator(method: Method) -> Result<()> {
    let env = Env::new("clientauth").await?;
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await?;
    let c = emu.control();
    let Client {
        data: creds,
        extra,
        id: client_id,
        unseen,
    } = set_up(&emu, method)?;
    env.create_credentials("creds", &creds, true).await?;
    let yaml = format!(
        "tokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n{extra}",
        emu.oauth2_token_url()
    );
    let mut spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).context("spec")?;
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    env.pcreds()
        .create(&Default::default(), &ProviderCredential::new("pc", spec))
        .await?;

    let op = env.start_operator().await?;
    env.wait_condition("pc", "Ready", "True", None).await?;
    let (_, target) = env.secret_data("token").await?.context("target")?;
    let token = target.get("access_token").context("access_token")?;
    ensure!(
        c.is_valid_oauth2_access_token(token),
        "{method:?}: a valid token"
    );
    let info = c
        .oauth2_access_token(token)
        .context("the emulator issued the token in the target")?;
    ensure!(info.client_id == client_id, "{method:?}: {info:?}");
    if let Method::Tls = method {
        ensure!(
            info.certificate_thumbprint.is_some(),
            "bound to the client certificate"
        );
    }
    let counters = c.oauth2_counters();
    ensure!(counters.rejected == 0, "{method:?}: {counters:?}");

    // Nothing secret reached the status, the Events or the operator's debug log.
    let visible = format!("{}{}", env.visible_text().await?, op.log_text());
    for value in &unseen {
        ensure!(
            !visible.contains(value.as_str()),
            "{method:?}: a key or secret is visible"
        );
    }
    eprintln!(
        "{method:?}: Ready through the operator; {} token(s) issued, 0 refused",
        counters.issued
    );
    Ok(())
}

#[tokio::test]
async fn private_key_jwt_rotates_through_the_operator() -> Result<()> {
    rotates_through_the_operator(Method::PrivateKeyJwt).await
}

#[tokio::test]
async fn client_secret_jwt_rotates_through_the_operator() -> Result<()> {
    rotates_through_the_operator(Method::ClientSecretJwt).await
}

#[tokio::test]
async fn mutual_tls_rotates_through_the_operator() -> Result<()> {
    rotates_through_the_operator(Method::Tls).await
}

#[tokio::test]
async fn the_google_preset_rotates_through_the_operator() -> Result<()> {
    rotates_through_the_operator(Method::Google).await
}

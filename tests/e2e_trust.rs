//! Trust boundaries on the real API server: what a namespace user who may write
//! ProviderCredentials can and cannot make the operator do.

mod e2e;
mod support;

use anyhow::{Result, ensure};
use e2e::*;
use kube::api::{Patch, PatchParams};
use provider_emulator::{Emulator, Options, Provider};
use serde_json::json;

fn spec_with_target(target: &str) -> String {
    format!(
        "preset: reltio\ntokenEndpoint: {{url: \"https://auth.example.test/oauth/token\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {target}\n"
    )
}

/// A target can only be a plain Secret: never a type the cluster acts on, never carrying keys
/// that Kubernetes or the operator give meaning to. Refused at admission, by the CRD's rules.
#[tokio::test]
async fn targets_cannot_become_something_else() -> Result<()> {
    let env = Env::new("targets").await?;
    let refused = [
        (
            "{secretName: t, type: kubernetes.io/service-account-token}",
            "spec.target.type must be Opaque",
        ),
        (
            "{secretName: t, type: bootstrap.kubernetes.io/token}",
            "spec.target.type must be Opaque",
        ),
        (
            "{secretName: t, labels: {tokenrotator.dev/credentials: \"true\"}}",
            "spec.target.labels: keys under kubernetes.io/",
        ),
        (
            "{secretName: t, labels: {node-role.kubernetes.io/control-plane: \"\"}}",
            "spec.target.labels: keys under kubernetes.io/",
        ),
        (
            "{secretName: t, annotations: {kubernetes.io/service-account.name: default}}",
            "spec.target.annotations: keys under kubernetes.io/",
        ),
        (
            "{secretName: t, annotations: {x.k8s.io/y: z}}",
            "spec.target.annotations: keys under kubernetes.io/",
        ),
    ];
    for (i, (target, message)) in refused.iter().enumerate() {
        let result = env
            .create_pcred(&format!("refused-{i}"), &spec_with_target(target))
            .await;
        let refusal = match result {
            Ok(_) => anyhow::bail!("admitted: target {target}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(refusal.contains(message), "{target}: {refusal}");
    }
    // The allowed types, and the recommended app.kubernetes.io/ labels, are admitted.
    for (i, target) in [
        "{secretName: t, type: Opaque, labels: {app.kubernetes.io/name: billing, team: a}}",
        "{secretName: t, type: kubernetes.io/basic-auth, template: {username: u, password: \"{{ access_token }}\"}}",
        "{secretName: t, type: kubernetes.io/dockerconfigjson, annotations: {example.com/owner: a}}",
    ]
    .iter()
    .enumerate()
    {
        env.create_pcred(&format!("allowed-{i}"), &spec_with_target(target))
            .await?;
    }
    Ok(())
}

async fn pin_hosts(env: &Env, secret: &str, hosts: &str) -> Result<()> {
    env.secrets()
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "tokenrotator.dev/allowed-token-hosts": hosts
            }}})),
        )
        .await?;
    Ok(())
}

/// The owner of a credentials Secret decides where its credentials may go, whatever a
/// ProviderCredential in the namespace says.
#[tokio::test]
async fn the_credentials_owner_pins_the_token_hosts() -> Result<()> {
    token_rotator::install_crypto_provider();
    let env = Env::new("pinned").await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Reltio, &emu), true)
        .await?;
    pin_hosts(&env, "creds", "auth.reltio.com").await?;
    env.create_pcred(
        "reltio",
        &format!(
            "preset: reltio\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n",
            emu.token_url(Provider::Reltio)
        ),
    )
    .await?;
    let _op = env.start_operator().await?;
    let pc = env
        .wait_condition("reltio", "Degraded", "True", Some("TokenHostNotAllowed"))
        .await?;
    let message = pc
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("tokenrotator.dev/allowed-token-hosts") && message.contains("127.0.0.1"),
        "{message}"
    );
    ensure!(
        emu.control().counters(Provider::Reltio).requests == 0,
        "credentials were sent to a host their owner did not allow"
    );

    // The owner adds the host: the change alone brings the resource to Ready.
    pin_hosts(&env, "creds", "auth.reltio.com, 127.0.0.1").await?;
    env.wait_condition("reltio", "Ready", "True", None).await?;
    ensure!(emu.control().counters(Provider::Reltio).requests == 1);
    Ok(())
}

//! Trust boundaries on the real API server: what a namespace user who may write
//! ProviderCredentials can and cannot make the operator do.

mod e2e;

use anyhow::{Result, ensure};
use e2e::*;

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

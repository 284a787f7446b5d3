//! Trust boundaries on the real API server: what a namespace user who may write
//! ProviderCredentials can and cannot make the operator do.

mod e2e;
mod support;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
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

/// A Reltio resource `reltio` against a fresh emulator, its credentials Secret `creds`
/// optionally pinned to `hosts`.
async fn reltio_against_emulator(env: &Env, hosts: Option<&str>) -> Result<Emulator> {
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Reltio, &emu), true)
        .await?;
    if let Some(hosts) = hosts {
        pin_hosts(env, "creds", hosts).await?;
    }
    env.create_pcred(
        "reltio",
        &format!(
            "preset: reltio\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n",
            emu.token_url(Provider::Reltio)
        ),
    )
    .await?;
    Ok(emu)
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
    let emu = reltio_against_emulator(&env, Some("auth.reltio.com")).await?;
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

/// The chart's admission policy, exactly as rendered for this namespace's operator identity.
async fn chart_admission_policy(env: &Env) -> Result<Vec<serde_json::Value>> {
    let chart = repo_path("charts/token-rotator");
    let rendered = helm(
        env.cp,
        &[
            "template",
            "token-rotator",
            path_str(&chart)?,
            "--namespace",
            env.name(),
            "--set",
            "admissionPolicy.enabled=true",
            "--show-only",
            "templates/admission-policy.yaml",
        ],
    )
    .await?;
    yaml_docs(&rendered)
}

fn secret(name: &str, type_: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some(type_.into()),
        ..Secret::default()
    }
}

/// Even a compromised operator (its ServiceAccount's token stolen) cannot mint ServiceAccount
/// tokens, take over other Secrets or forge credentials: the chart's admission policy refuses
/// it on the real API server, while the operator's own writes still go through.
#[tokio::test]
async fn the_operators_identity_may_write_only_what_it_manages() -> Result<()> {
    let env = Env::new("vap").await?;
    let docs = chart_admission_policy(&env).await?;
    let policy = only_kind(&docs, "ValidatingAdmissionPolicy")?;
    let binding = only_kind(&docs, "ValidatingAdmissionPolicyBinding")?;
    let name = policy["metadata"]["name"]
        .as_str()
        .context("policy name")?
        .to_string();
    let admin = env.cp.client();
    let apply = PatchParams::apply("e2e").force();
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone());
    policies
        .patch(&name, &apply, &Patch::Apply(&policy))
        .await?;
    bindings
        .patch(&name, &apply, &Patch::Apply(&binding))
        .await?;

    let as_operator = Api::<Secret>::namespaced(
        env.cp
            .service_account_client(env.name(), OPERATOR_SA)
            .await?,
        env.name(),
    );
    let managed = ("app.kubernetes.io/managed-by", "token-rotator");
    let create = |s: Secret| {
        let api = as_operator.clone();
        async move { api.create(&PostParams::default(), &s).await }
    };
    // In force once the first refusal arrives.
    let admin_secrets = env.secrets();
    let minted = eventually(
        "the policy to refuse a ServiceAccount token",
        CONVERGE,
        || {
            let mut s = secret("minted", "kubernetes.io/service-account-token", &[managed]);
            // What the cluster needs to mint a token for the `default` ServiceAccount.
            s.metadata.annotations = Some(
                [(
                    "kubernetes.io/service-account.name".to_string(),
                    "default".to_string(),
                )]
                .into(),
            );
            let attempt = create(s);
            let admin_secrets = admin_secrets.clone();
            async move {
                Ok(match attempt.await {
                    Err(e) => Some(e.to_string()),
                    Ok(_) => {
                        // Admitted before the policy was in force: remove and retry.
                        admin_secrets.delete("minted", &Default::default()).await?;
                        None
                    }
                })
            }
        },
    )
    .await?;
    ensure!(
        minted.contains("may write or delete only Secrets of type"),
        "{minted}"
    );

    let unlabelled = create(secret("unlabelled", "Opaque", &[]))
        .await
        .expect_err("an unmanaged Secret is refused")
        .to_string();
    ensure!(
        unlabelled.contains("may write or delete only Secrets it manages"),
        "{unlabelled}"
    );
    let forged = create(secret(
        "forged",
        "Opaque",
        &[managed, ("tokenrotator.dev/credentials", "true")],
    ))
    .await
    .expect_err("a Secret labelled as credentials is refused")
    .to_string();
    ensure!(
        forged.contains("may not label a Secret as credentials"),
        "{forged}"
    );

    // Taking over someone else's Secret by adding the label is refused too.
    env.create_credentials("theirs", &Default::default(), false)
        .await?;
    let takeover = as_operator
        .patch(
            "theirs",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {managed.0: managed.1}}})),
        )
        .await
        .expect_err("taking over a Secret is refused")
        .to_string();
    ensure!(
        takeover.contains("before and after the write"),
        "{takeover}"
    );

    // Deleting (spec.delivery removes its copies): only what it manages. The chart grants
    // delete with crossNamespaceDelivery.enabled; granted here in this namespace.
    Api::<Role>::namespaced(admin.clone(), env.name())
        .patch(
            "delete-secrets",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "delete-secrets"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}],
            })),
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin.clone(), env.name())
        .patch(
            "delete-secrets",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "delete-secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "delete-secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": env.name()}],
            })),
        )
        .await?;
    let deleted = eventually("the delete grant to reach the authorizer", CONVERGE, || {
        let api = as_operator.clone();
        async move {
            let refused = api
                .delete("theirs", &Default::default())
                .await
                .expect_err("deleting a Secret it does not manage is refused")
                .to_string();
            Ok((!refused.contains("forbidden: User")).then_some(refused))
        }
    })
    .await?;
    ensure!(
        deleted.contains("may write or delete only Secrets it manages"),
        "{deleted}"
    );
    create(secret("mine", "Opaque", &[managed])).await?;
    as_operator.delete("mine", &Default::default()).await?;

    // The operator's own work goes through under the policy.
    let _emu = reltio_against_emulator(&env, None).await?;
    let op = env.start_operator().await?;
    env.wait_condition("reltio", "Ready", "True", Some("TokenIssued"))
        .await?;
    drop(op);
    bindings.delete(&name, &Default::default()).await?;
    policies.delete(&name, &Default::default()).await?;
    Ok(())
}

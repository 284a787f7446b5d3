//! What the spec.delivery suites share: the operator cluster-wide with the chart's rules for
//! crossNamespaceDelivery (as its own shard, so other tests' resources are not its business),
//! TokenDeliveryGrants, and looks at copies and status.deliveries.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Provider};
use serde_json::json;
use token_rotator::api::{DeliveryStatus, ProviderCredential, TokenDeliveryGrant};

use super::*;

/// The label that makes a ProviderCredential this test's operator's business.
pub const SHARD: &str = "e2e-delivery";

/// The chart's ClusterRole with crossNamespaceDelivery.enabled, bound cluster-wide to the
/// operator's ServiceAccount (as the chart does). Returns the binding's name, for clean-up.
pub async fn bind_cluster_wide(env: &Env) -> Result<String> {
    let name = format!("token-rotator-delivery-{}", env.name());
    apply_chart_cluster_role(
        env,
        "crossNamespaceDelivery.enabled=true",
        &name,
        "tokendeliverygrants",
    )
    .await?;
    let pp = PatchParams::apply("e2e").force();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": env.name()}],
    }))?;
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await?;
    Ok(name)
}

pub async fn unbind(env: &Env, name: &str) -> Result<()> {
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Api::<ClusterRole>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The operator for the whole cluster, only for resources labelled with this test's shard.
pub async fn start_cluster_wide(env: &Env) -> Result<Operator> {
    start_cluster_wide_with(env, &[]).await
}

/// [`start_cluster_wide`] with more arguments.
pub async fn start_cluster_wide_with(env: &Env, extra: &[&str]) -> Result<Operator> {
    let kubeconfig = env
        .cp
        .service_account_kubeconfig(env.name(), OPERATOR_SA)
        .await?;
    let mut args: Vec<String> = Operator::run_args(env.name());
    // No --namespace: cluster-wide.
    let at = args
        .iter()
        .position(|a| a == "--namespace")
        .context("--namespace")?;
    args.drain(at..at + 2);
    args.extend([
        "--selector".to_string(),
        format!("{SHARD}={}", env.name()),
        "--cross-namespace-delivery".to_string(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    Operator::launch(
        &kubeconfig,
        env.name(),
        &args,
        &[
            ("RUST_LOG", "info,token_rotator=debug"),
            ("POD_NAMESPACE", env.name()),
        ],
    )
    .await
}

pub async fn create_pcred(env: &Env, name: &str, spec_yaml: &str) -> Result<()> {
    create_pcred_in(env, env.name(), name, spec_yaml).await
}

/// A ProviderCredential in `namespace`, in the shard of `env`'s operator.
pub async fn create_pcred_in(
    env: &Env,
    namespace: &str,
    name: &str,
    spec_yaml: &str,
) -> Result<()> {
    let spec = serde_saphyr::from_str(spec_yaml).context("test spec parses")?;
    let mut pc = ProviderCredential::new(name, spec);
    pc.metadata.labels = Some(BTreeMap::from([(
        SHARD.to_string(),
        env.name().to_string(),
    )]));
    Api::<ProviderCredential>::namespaced(env.client.clone(), namespace)
        .create(&PostParams::default(), &pc)
        .await?;
    Ok(())
}

pub fn spec(emu: &Emulator, target: &str, delivery: &str) -> String {
    format!(
        "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: {target}}}\ndelivery: {delivery}\n",
        emu.token_url(Provider::Rently)
    )
}

pub async fn grant(
    env: &Env,
    namespace: &str,
    name: &str,
    from: &str,
    secret_names: &[&str],
) -> Result<()> {
    let grant: TokenDeliveryGrant = serde_json::from_value(json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "TokenDeliveryGrant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"from": [{"namespace": env.name(), "name": from}], "secretNames": secret_names},
    }))?;
    Api::<TokenDeliveryGrant>::namespaced(env.client.clone(), namespace)
        .create(&PostParams::default(), &grant)
        .await?;
    Ok(())
}

pub async fn secret_in(env: &Env, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(env.client.clone(), namespace)
        .get_opt(name)
        .await?)
}

pub fn deliveries(pc: &ProviderCredential) -> Vec<DeliveryStatus> {
    pc.status
        .as_ref()
        .map(|s| s.deliveries.clone())
        .unwrap_or_default()
}

pub fn delivered(pc: &ProviderCredential, namespace: &str) -> Option<(bool, String)> {
    deliveries(pc)
        .into_iter()
        .find(|d| d.namespace == namespace)
        .map(|d| (d.delivered, d.reason))
}

/// Waits until the copy in `namespace` holds exactly the target's data.
pub async fn copy_matches_target(
    env: &Env,
    namespace: &str,
    name: &str,
    target: &str,
) -> Result<Secret> {
    eventually(
        &format!("{namespace}/{name} to hold the target's token"),
        CONVERGE,
        || async {
            let Some(target) = env.secrets().get_opt(target).await? else {
                return Ok(None);
            };
            let copy = secret_in(env, namespace, name).await?;
            Ok(copy.filter(|c| c.data.is_some() && c.data == target.data))
        },
    )
    .await
}

pub async fn wait_gone(env: &Env, namespace: &str, name: &str) -> Result<()> {
    eventually(
        &format!("{namespace}/{name} to be removed"),
        CONVERGE,
        || async {
            Ok(secret_in(env, namespace, name)
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await
}

pub async fn label_namespace(env: &Env, namespace: &str, value: Option<&str>) -> Result<()> {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"e2e-delivery-team": value}}})),
        )
        .await?;
    Ok(())
}

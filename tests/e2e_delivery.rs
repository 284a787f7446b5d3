//! spec.delivery on the real control plane: the operator, cluster-wide with the chart's rules
//! for crossNamespaceDelivery (as its own shard, so other tests' resources are not its
//! business), copies one token into the namespaces that consent with a TokenDeliveryGrant and
//! into no other; copies follow each rotation without another token request, are never
//! written over a Secret that is not theirs, and are removed when the consent, the selection
//! or the resource goes — also when that happens while the operator is down.

mod e2e;
mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Options, Provider};
use serde_json::json;
use token_rotator::api::{DeliveryStatus, ProviderCredential, TokenDeliveryGrant};

/// The label that makes a ProviderCredential this test's operator's business.
const SHARD: &str = "e2e-delivery";

/// The chart's ClusterRole with crossNamespaceDelivery.enabled, bound cluster-wide to the
/// operator's ServiceAccount (as the chart does). Returns the binding's name, for clean-up.
async fn bind_cluster_wide(env: &Env) -> Result<String> {
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

async fn unbind(env: &Env, name: &str) -> Result<()> {
    Api::<ClusterRoleBinding>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Api::<ClusterRole>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The operator for the whole cluster, only for resources labelled with this test's shard.
async fn start_cluster_wide(env: &Env) -> Result<Operator> {
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
    Operator::launch(
        &kubeconfig,
        env.name(),
        &args,
        &[("RUST_LOG", "info,token_rotator=debug")],
    )
    .await
}

async fn create_pcred(env: &Env, name: &str, spec_yaml: &str) -> Result<()> {
    let spec = serde_saphyr::from_str(spec_yaml).context("test spec parses")?;
    let mut pc = ProviderCredential::new(name, spec);
    pc.metadata.labels = Some(BTreeMap::from([(
        SHARD.to_string(),
        env.name().to_string(),
    )]));
    env.pcreds().create(&PostParams::default(), &pc).await?;
    Ok(())
}

fn spec(emu: &Emulator, target: &str, delivery: &str) -> String {
    format!(
        "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: {target}}}\ndelivery: {delivery}\n",
        emu.token_url(Provider::Rently)
    )
}

async fn grant(
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

async fn secret_in(env: &Env, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(env.client.clone(), namespace)
        .get_opt(name)
        .await?)
}

fn deliveries(pc: &ProviderCredential) -> Vec<DeliveryStatus> {
    pc.status
        .as_ref()
        .map(|s| s.deliveries.clone())
        .unwrap_or_default()
}

fn delivered(pc: &ProviderCredential, namespace: &str) -> Option<(bool, String)> {
    deliveries(pc)
        .into_iter()
        .find(|d| d.namespace == namespace)
        .map(|d| (d.delivered, d.reason))
}

/// Waits until the copy in `namespace` holds exactly the target's data.
async fn copy_matches_target(
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

async fn wait_gone(env: &Env, namespace: &str, name: &str) -> Result<()> {
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

async fn label_namespace(env: &Env, namespace: &str, value: Option<&str>) -> Result<()> {
    Api::<Namespace>::all(env.client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"e2e-delivery-team": value}}})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn copies_go_only_where_consented_follow_rotations_and_leave_with_consent() -> Result<()> {
    let env = Env::new("deliver").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    // a: named and consenting; b: named, no consent yet; c: chosen by label and consenting;
    // d: named and consenting, but someone else's Secret already has the name.
    let a = env.cp.new_namespace("dest-a").await?;
    let b = env.cp.new_namespace("dest-b").await?;
    let c = env.cp.new_namespace("dest-c").await?;
    let d = env.cp.new_namespace("dest-d").await?;
    let (a, b, c, d) = (a.name(), b.name(), c.name(), d.name());
    label_namespace(&env, c, Some(env.name())).await?;
    grant(&env, a, "from-platform", "shared", &[]).await?;
    grant(&env, c, "from-platform", "shared", &["shared-token"]).await?;
    grant(&env, d, "from-platform", "shared", &[]).await?;
    // A grant in b for another resource is no consent for this one.
    grant(&env, b, "other", "someone-else", &[]).await?;
    let theirs = BTreeMap::from([("access_token".to_string(), ByteString(b"theirs".to_vec()))]);
    Api::<Secret>::namespaced(env.client.clone(), d)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("shared-token".into()),
                    ..Default::default()
                },
                data: Some(theirs.clone()),
                ..Default::default()
            },
        )
        .await?;

    create_pcred(
        &env,
        "shared",
        &spec(
            &emu,
            "shared-token",
            &format!("{{namespaces: [{a}, {b}, {d}], namespaceSelector: {{matchLabels: {{e2e-delivery-team: {}}}}}}}", env.name()),
        ),
    )
    .await?;
    let op = start_cluster_wide(&env).await?;
    env.wait_condition("shared", "Ready", "True", Some("TokenIssued"))
        .await?;
    let first_a = copy_matches_target(&env, a, "shared-token", "shared-token").await?;
    copy_matches_target(&env, c, "shared-token", "shared-token").await?;
    let pc = env
        .wait_condition("shared", "Delivered", "False", Some("NotGranted"))
        .await?;
    // b and d are refused, each with its reason, and nothing was written there.
    ensure!(
        delivered(&pc, a) == Some((true, "Delivered".into()))
            && delivered(&pc, c) == Some((true, "Delivered".into()))
            && delivered(&pc, b) == Some((false, "NotGranted".into()))
            && delivered(&pc, d) == Some((false, "SecretNotOwned".into())),
        "{:?}",
        deliveries(&pc)
    );
    ensure!(
        secret_in(&env, b, "shared-token").await?.is_none(),
        "no consent, no copy"
    );
    let untouched = secret_in(&env, d, "shared-token")
        .await?
        .context("theirs")?;
    ensure!(
        untouched.data == Some(theirs),
        "someone else's Secret is not overwritten"
    );
    // A copy says where it came from and is the operator's to manage.
    let labels = first_a.metadata.labels.clone().unwrap_or_default();
    let annotations = first_a.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("token-rotator")
            && labels.get("tokenrotator.dev/delivered-from-uid") == pc.metadata.uid.as_ref()
            && annotations.get("tokenrotator.dev/delivered-from")
                == Some(&format!("{}/shared", env.name()))
            && first_a.metadata.owner_references.is_none(),
        "{:?}",
        first_a.metadata
    );
    ensure!(
        pc.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "tokenrotator.dev/delivered-copies"),
        "the finalizer that removes the copies"
    );

    // A rotation: one more token request, and every copy follows it.
    let issued = emu.control().counters(Provider::Rently).issued;
    let before = fingerprint(&pc);
    env.pcreds()
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "1"}}})),
        )
        .await?;
    eventually("a new token", CONVERGE, || async {
        let pc = env.pcred("shared").await?;
        Ok((fingerprint(&pc) != before).then_some(()))
    })
    .await?;
    let second_a = copy_matches_target(&env, a, "shared-token", "shared-token").await?;
    copy_matches_target(&env, c, "shared-token", "shared-token").await?;
    ensure!(
        second_a.data != first_a.data,
        "the copy holds the new token"
    );
    ensure!(
        emu.control().counters(Provider::Rently).issued == issued + 1,
        "one token request for the target and every copy"
    );

    // b consents: its copy arrives without a rotation.
    grant(&env, b, "from-platform", "shared", &[]).await?;
    copy_matches_target(&env, b, "shared-token", "shared-token").await?;
    // a withdraws its consent: its copy goes. c leaves the selection: its copy goes.
    Api::<TokenDeliveryGrant>::namespaced(env.client.clone(), a)
        .delete("from-platform", &DeleteParams::default())
        .await?;
    wait_gone(&env, a, "shared-token").await?;
    label_namespace(&env, c, None).await?;
    wait_gone(&env, c, "shared-token").await?;
    eventually(
        "status: a refused, b delivered, c no longer listed",
        CONVERGE,
        || async {
            let pc = env.pcred("shared").await?;
            Ok((delivered(&pc, a) == Some((false, "NotGranted".into()))
                && delivered(&pc, b) == Some((true, "Delivered".into()))
                && delivered(&pc, c).is_none())
            .then_some(()))
        },
    )
    .await?;
    ensure!(env.events_with_reason("Delivered").await? >= 1);
    ensure!(
        emu.control().counters(Provider::Rently).issued == issued + 1,
        "consent and selection changes cost no token request"
    );

    // The resource goes: its last copy goes first, then the finalizer lets it go.
    env.pcreds()
        .delete("shared", &DeleteParams::default())
        .await?;
    wait_gone(&env, b, "shared-token").await?;
    eventually("the resource to be deleted", CONVERGE, || async {
        Ok(env
            .pcreds()
            .get_opt("shared")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    ensure!(
        secret_in(&env, d, "shared-token").await?.is_some(),
        "someone else's Secret stays"
    );
    let log = op.log_text();
    drop(op);
    unbind(&env, &binding).await?;
    let token = second_a
        .data
        .as_ref()
        .and_then(|d| d.get("access_token"))
        .map(|t| String::from_utf8_lossy(&t.0).to_string())
        .context("the copy's token")?;
    for secret in [provider_emulator::fixtures::RENTLY_CLIENT_SECRET, &token] {
        ensure!(
            !log.contains(secret),
            "a credential or token reached the log"
        );
    }
    eprintln!(
        "delivery: 2 of 4 destinations at first (NotGranted, SecretNotOwned refused), 1 token request per rotation for all copies; consent given → copy, withdrawn → removed; deleted resource → copies removed"
    );
    Ok(())
}

/// Owner references cannot cross namespaces: while the operator is down, a resource is
/// deleted (its finalizer holds it) and another's consent is withdrawn; when the operator
/// returns, both copies are removed and the resource is released.
#[tokio::test]
async fn copies_are_removed_after_changes_made_while_the_operator_was_down() -> Result<()> {
    let env = Env::new("deliver-down").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    let dest = env.cp.new_namespace("dest").await?;
    let dest = dest.name();
    grant(&env, dest, "from-one", "one", &[]).await?;
    grant(&env, dest, "from-two", "two", &[]).await?;
    create_pcred(
        &env,
        "one",
        &spec(&emu, "one-token", &format!("{{namespaces: [{dest}]}}")),
    )
    .await?;
    create_pcred(
        &env,
        "two",
        &spec(&emu, "two-token", &format!("{{namespaces: [{dest}]}}")),
    )
    .await?;
    let mut op = start_cluster_wide(&env).await?;
    copy_matches_target(&env, dest, "one-token", "one-token").await?;
    copy_matches_target(&env, dest, "two-token", "two-token").await?;
    env.wait_condition("one", "Delivered", "True", Some("AllDelivered"))
        .await?;
    env.wait_condition("two", "Delivered", "True", Some("AllDelivered"))
        .await?;
    op.terminate(std::time::Duration::from_secs(60)).await?;

    env.pcreds().delete("one", &DeleteParams::default()).await?;
    Api::<TokenDeliveryGrant>::namespaced(env.client.clone(), dest)
        .delete("from-two", &DeleteParams::default())
        .await?;
    let held = env.pcred("one").await?;
    ensure!(
        held.metadata.deletion_timestamp.is_some(),
        "the finalizer holds the resource while the operator is away"
    );
    ensure!(secret_in(&env, dest, "one-token").await?.is_some());

    let op = start_cluster_wide(&env).await?;
    wait_gone(&env, dest, "one-token").await?;
    wait_gone(&env, dest, "two-token").await?;
    eventually("one to be deleted", CONVERGE, || async {
        Ok(env.pcreds().get_opt("one").await?.is_none().then_some(()))
    })
    .await?;
    env.wait_condition("two", "Delivered", "False", Some("NotGranted"))
        .await?;
    // two gives its finalizer up once spec.delivery goes.
    env.pcreds()
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"delivery": null}})),
        )
        .await?;
    eventually("two's finalizer to go", CONVERGE, || async {
        let pc = env.pcred("two").await?;
        Ok(pc
            .metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
            .then_some(()))
    })
    .await?;
    drop(op);
    unbind(&env, &binding).await?;
    eprintln!(
        "delivery: a resource deleted and a consent withdrawn while the operator was down → both copies removed on its return"
    );
    Ok(())
}

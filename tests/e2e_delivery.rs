//! spec.delivery on the real control plane: the operator, cluster-wide with the chart's rules
//! for crossNamespaceDelivery (as its own shard, so other tests' resources are not its
//! business), copies one token into the namespaces that consent with a TokenDeliveryGrant and
//! into no other; copies follow each rotation without another token request, are never
//! written over a Secret that is not theirs, and are removed when the consent, the selection
//! or the resource goes — also when that happens while the operator is down.

mod admission;
mod e2e;
mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use e2e::delivery::*;
use e2e::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Options, Provider};
use serde_json::json;
use token_rotator::api::TokenDeliveryGrant;

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
    // The operator's own writes (copies, their removal, its finalizer) under the chart's
    // admission policies.
    let policies = admission::install(&env).await?;
    admission::secret_policy_in_force(&env).await?;
    admission::providercredential_policy_in_force(&env, "shared").await?;
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
    policies.remove().await?;
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
    // Adding and releasing its finalizer, also on a resource being deleted, under the chart's
    // admission policies.
    let policies = admission::install(&env).await?;
    admission::secret_policy_in_force(&env).await?;
    admission::providercredential_policy_in_force(&env, "one").await?;
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
    policies.remove().await?;
    unbind(&env, &binding).await?;
    eprintln!(
        "delivery: a resource deleted and a consent withdrawn while the operator was down → both copies removed on its return"
    );
    Ok(())
}

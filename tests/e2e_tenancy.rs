//! Tenants on one operator, on the real control plane: an attacker with rights in some
//! namespaces beside a victim, each test trying one way across the boundary. The operator runs
//! cluster-wide with cross-namespace delivery on (the widest install) as its own shard.

mod e2e;
mod support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use e2e::delivery::*;
use e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Fault, Options, Provider};
use serde_json::json;

/// Someone who may write ProviderCredentials in the victim's namespace (but not read its
/// Secrets) names the victim's target as the target of a resource of their own, and has it
/// delivered into a namespace they own: the operator must not carry the token out.
#[tokio::test]
async fn a_resource_naming_anothers_target_delivers_nothing() -> Result<()> {
    let env = Env::new("tenant-steal").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    let loot = env.cp.new_namespace("attacker").await?;
    let loot = loot.name();
    create_pcred(&env, "victim", &spec(&emu, "victim-token", "null")).await?;
    let op = start_cluster_wide(&env).await?;
    env.wait_condition("victim", "Ready", "True", Some("TokenIssued"))
        .await?;

    grant(&env, loot, "welcome", "thief", &[]).await?;
    create_pcred(
        &env,
        "thief",
        &spec(
            &emu,
            "victim-token",
            &format!("{{namespaces: [{loot}], secretName: loot}}"),
        ),
    )
    .await?;
    env.wait_condition("thief", "Ready", "False", Some("TargetConflict"))
        .await?;
    // Delivery is decided by the very reconcile that reports it: once the thief's status
    // says anything about its destination, a copy would already be there.
    let pc = eventually("the thief's delivery status", CONVERGE, || async {
        let pc = env.pcred("thief").await?;
        Ok(delivered(&pc, loot).is_some().then_some(pc))
    })
    .await?;
    ensure!(
        secret_in(&env, loot, "loot").await?.is_none(),
        "another resource's token was carried into the attacker's namespace"
    );
    ensure!(
        delivered(&pc, loot) == Some((false, "SourceBlocked".into())),
        "{:?}",
        deliveries(&pc)
    );
    env.wait_condition("thief", "Delivered", "False", Some("SourceBlocked"))
        .await?;
    // The victim's own rotations go on untouched.
    let victim = env.pcred("victim").await?;
    ensure!(fingerprint(&victim).is_some(), "the victim keeps its token");
    let log = op.log_text();
    drop(op);
    unbind(&env, &binding).await?;
    let (_, target) = env
        .secret_data("victim-token")
        .await?
        .context("the victim's target")?;
    let token = target.get("access_token").context("the victim's token")?;
    ensure!(!log.contains(token.as_str()), "a token reached the log");
    eprintln!(
        "tenancy: a second resource naming the victim's target is TargetConflict, Delivered SourceBlocked, and nothing reached the attacker's namespace"
    );
    Ok(())
}

/// A destination's user forges a Secret that claims the source's UID (with another source
/// name) and sorts first in the list; after the operator restarts, the real copies in every
/// destination are still known as the source's and follow its next rotation.
#[tokio::test]
async fn a_forged_copy_in_one_destination_blinds_no_other() -> Result<()> {
    let env = Env::new("tenant-forge").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    let forger = env.cp.new_namespace("a-forger").await?;
    let honest = env.cp.new_namespace("z-honest").await?;
    let (forger, honest) = (forger.name(), honest.name());
    grant(&env, forger, "from-src", "shared", &[]).await?;
    grant(&env, honest, "from-src", "shared", &[]).await?;
    create_pcred(
        &env,
        "shared",
        &spec(
            &emu,
            "shared-token",
            &format!("{{namespaces: [{forger}, {honest}]}}"),
        ),
    )
    .await?;
    let mut op = start_cluster_wide(&env).await?;
    copy_matches_target(&env, forger, "shared-token", "shared-token").await?;
    copy_matches_target(&env, honest, "shared-token", "shared-token").await?;
    let pc = env
        .wait_condition("shared", "Delivered", "True", Some("AllDelivered"))
        .await?;
    let uid = pc.metadata.uid.clone().context("uid")?;

    // The forgery: managed-by, the source's UID, and a delivered-from of its own choosing.
    Api::<Secret>::namespaced(env.client.clone(), forger)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("aaa-decoy".into()),
                    labels: Some(BTreeMap::from([
                        (
                            "app.kubernetes.io/managed-by".to_string(),
                            "token-rotator".to_string(),
                        ),
                        ("tokenrotator.dev/delivered-from-uid".to_string(), uid),
                    ])),
                    annotations: Some(BTreeMap::from([(
                        "tokenrotator.dev/delivered-from".to_string(),
                        format!("{forger}/decoy"),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    op.terminate(std::time::Duration::from_secs(60)).await?;
    let op = start_cluster_wide(&env).await?;

    let before = fingerprint(&env.pcred("shared").await?);
    env.pcreds()
        .patch(
            "shared",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "after-forgery"}}}),
            ),
        )
        .await?;
    eventually("a new token", CONVERGE, || async {
        let pc = env.pcred("shared").await?;
        Ok((fingerprint(&pc) != before).then_some(()))
    })
    .await?;
    copy_matches_target(&env, honest, "shared-token", "shared-token").await?;
    copy_matches_target(&env, forger, "shared-token", "shared-token").await?;
    let pc = env
        .wait_condition("shared", "Delivered", "True", Some("AllDelivered"))
        .await?;
    ensure!(
        delivered(&pc, honest) == Some((true, "Delivered".into()))
            && delivered(&pc, forger) == Some((true, "Delivered".into())),
        "{:?}",
        deliveries(&pc)
    );
    drop(op);
    unbind(&env, &binding).await?;
    eprintln!(
        "tenancy: a Secret forging the source's UID in one destination left every real copy known and current across a restart"
    );
    Ok(())
}

/// A namespace of resources against a slow endpoint (each request answered after 10 s) beside
/// a victim, with 2 reconcile slots: the hostile requests go on without their reconciles, at
/// most 4 of that namespace at once, and the victim rotates while every one of them is still
/// unanswered. Each hostile resource then reports its own token, with one request each.
#[tokio::test]
async fn a_slow_neighbour_holds_no_reconcile_slot() -> Result<()> {
    let env = Env::new("tenant-slow").await?;
    let binding = bind_cluster_wide(&env).await?;
    let slow = Emulator::start(Options::default()).await?;
    slow.control()
        .set_latency(Provider::Rently, std::time::Duration::from_secs(10));
    let fast = Emulator::start(Options::default()).await?;
    env.create_credentials(
        "creds",
        &support::secret_data(Provider::Rently, &fast),
        true,
    )
    .await?;
    let hostile = Env::new("tenant-slow-hostile").await?;
    hostile
        .create_credentials(
            "creds",
            &support::secret_data(Provider::Rently, &slow),
            true,
        )
        .await?;
    const HOSTILE: u64 = 6;
    for i in 0..HOSTILE {
        create_pcred_in(
            &env,
            hostile.name(),
            &format!("slow-{i}"),
            &spec(&slow, &format!("slow-{i}-token"), "null"),
        )
        .await?;
    }
    let op = start_cluster_wide_with(
        &env,
        &[
            "--concurrency",
            "2",
            "--requests-in-flight-per-namespace",
            "4",
        ],
    )
    .await?;
    // More requests in flight than reconcile slots: none of them holds one.
    eventually("4 hostile requests in flight", CONVERGE, || async {
        let c = slow.control().counters(Provider::Rently);
        Ok((c.requests == 4).then_some(()))
    })
    .await?;
    create_pcred(&env, "victim", &spec(&fast, "victim-token", "null")).await?;
    env.wait_condition("victim", "Ready", "True", Some("TokenIssued"))
        .await?;
    let c = slow.control().counters(Provider::Rently);
    ensure!(
        c.issued == 0 && c.requests == 4,
        "the victim rotated while every hostile request was unanswered, and the namespace held at most 4 ({c:?})"
    );
    for i in 0..HOSTILE {
        hostile
            .wait_condition(&format!("slow-{i}"), "Ready", "True", Some("TokenIssued"))
            .await?;
    }
    let c = slow.control().counters(Provider::Rently);
    ensure!(
        c.issued == HOSTILE && c.requests == HOSTILE,
        "one request per hostile resource, none sent twice while in flight ({c:?})"
    );
    drop(op);
    unbind(&env, &binding).await?;
    eprintln!(
        "tenancy: 6 resources against a 10 s endpoint with 2 reconcile slots: 4 in flight at once, the victim Ready meanwhile, each slow one Ready after with 1 request"
    );
    Ok(())
}

/// Secret GETs the apiserver served, by response code (its own `apiserver_request_total`).
async fn secret_gets(client: &kube::Client) -> Result<BTreeMap<String, f64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if label("verb") == "GET"
            && label("resource") == "secrets"
            && label("subresource").is_empty()
        {
            *out.entry(label("code")).or_default() += value.trim().parse::<f64>()?;
        }
    }
    Ok(out)
}

fn gets_since(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> (f64, f64) {
    let all = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    let absent = |m: &BTreeMap<String, f64>| m.get("404").copied().unwrap_or(0.0);
    (all(after) - all(before), absent(after) - absent(before))
}

/// A tenant's noise costs no API calls: 30 resources name one credentials Secret and have no
/// target yet (suspended, so none is created). An annotation of no concern to the operator on
/// that Secret reconciles none of them and reads no Secret (before: 30 reconciles, each
/// reading its absent target, 30 GETs answered 404); a change of its data reconciles each,
/// still without reading the targets again. Counted by the apiserver itself, on a control
/// plane of this test's own (the shared one serves the other tests' calls too).
#[tokio::test]
async fn an_unrelated_annotation_on_shared_credentials_costs_no_api_calls() -> Result<()> {
    const N: usize = 30;
    let cp: &'static testkit::ControlPlane = Box::leak(Box::new(
        testkit::ControlPlane::start()
            .await
            .context("a control plane of this test's own")?,
    ));
    let env = Env::on(cp, "tenant-noise").await?;
    let emu = Emulator::start(Options::default()).await?;
    let data = support::secret_data(Provider::Rently, &emu);
    env.create_credentials("shared", &data, true).await?;
    // A second credentials Secret, used by one resource: changing it is the barrier that
    // shows the credentials watch went past the annotation (one watch, in order).
    env.create_credentials("beacon", &data, true).await?;
    let url = emu.token_url(Provider::Rently);
    let suspended = |creds: &str, i: usize| {
        format!(
            "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: {creds}}}}}\ntarget: {{secretName: absent-{i}}}\nsuspend: true\n"
        )
    };
    for i in 0..N {
        env.create_pcred(&format!("pc-{i}"), &suspended("shared", i))
            .await?;
    }
    env.create_pcred("beacon", &suspended("beacon", N)).await?;
    let op = Operator::start(&env).await?;
    for i in 0..N {
        env.wait_condition(&format!("pc-{i}"), "Ready", "False", Some("Suspended"))
            .await?;
    }
    env.wait_condition("beacon", "Ready", "False", Some("Suspended"))
        .await?;
    // Settled: every resource reconciled once and was triggered by its own status write.
    let settled = || async {
        let before = op.metric("token_rotator_reconciles_total").await?;
        let gets = secret_gets(&env.client).await?;
        Ok::<_, anyhow::Error>((before, gets))
    };
    let (reconciles, gets) = settled().await?;

    let secrets = env.secrets();
    let noise = json!({"metadata": {"annotations": {"example.com/last-audit": "monday"}}});
    secrets
        .patch("shared", &PatchParams::default(), &Patch::Merge(&noise))
        .await?;
    env.set_credential("beacon", "client_secret", "rotated")
        .await?;
    let after = eventually("the beacon's reconcile", CONVERGE, || async {
        let now = op.metric("token_rotator_reconciles_total").await?;
        Ok((now > reconciles).then_some(now))
    })
    .await?;
    let (all, absent) = gets_since(&gets, &secret_gets(&env.client).await?);
    eprintln!(
        "tenancy: an unrelated annotation on credentials {N} resources use: {} reconciles, {all} Secret GETs ({absent} answered 404)",
        after - reconciles
    );
    ensure!(
        after - reconciles == 1.0,
        "only the beacon reconciles, not the {N} resources using the annotated Secret: {}",
        after - reconciles
    );
    ensure!(
        all <= 2.0 && absent == 0.0,
        "Secret GETs: {all}, of which 404: {absent}"
    );

    // Its data changes: each resource using it reconciles, and reads no target again.
    let (reconciles, gets) = settled().await?;
    env.set_credential("shared", "client_secret", "changed")
        .await?;
    let after = eventually(
        "each resource using the changed Secret reconciles",
        CONVERGE,
        || async {
            let now = op.metric("token_rotator_reconciles_total").await?;
            Ok((now >= reconciles + N as f64).then_some(now))
        },
    )
    .await?;
    let (all, absent) = gets_since(&gets, &secret_gets(&env.client).await?);
    eprintln!(
        "tenancy: a data change of credentials {N} resources use: {} reconciles, {all} Secret GETs ({absent} answered 404)",
        after - reconciles
    );
    ensure!(
        all <= N as f64 && absent == 0.0,
        "Secret GETs: {all} (404: {absent}) for {N} resources"
    );
    drop(op);
    cp.stop();
    Ok(())
}

/// A spec near the CRD's bounds (~0.5 MB as cached), suspended: it costs memory only.
fn bulky_spec(i: usize) -> String {
    let map = |prefix: &str, entries: usize| {
        (0..entries)
            .map(|j| {
                (
                    format!("example.com/{prefix}{i}-{j:0>40}"),
                    json!("v".repeat(4096)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "suspend": true,
        "tokenEndpoint": {"url": "https://127.0.0.1:9/token", "caBundle": "c".repeat(65536)},
        "credentials": {"secretRef": {"name": "absent"}},
        "grant": {"extraParameters": map("p", 32)},
        "target": {"secretName": format!("big-{i}"), "annotations": map("a", 64)},
    })
    .to_string()
}

/// The hostile namespace's resources: (reported, not served for the namespace's budget).
async fn budget_report(hostile: &Env, count: usize) -> Result<(usize, usize)> {
    let (mut reported, mut over) = (0, 0);
    for i in 0..count {
        let pc = hostile.pcred(&format!("big-{i}")).await?;
        let ready = pc
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == "Ready");
        if let Some(ready) = ready {
            reported += 1;
            over += usize::from(ready.message.contains("cache budget"));
        }
    }
    Ok((reported, over))
}

/// A tenant fills its namespace with the largest ProviderCredentials the CRD admits: beyond the
/// namespace's cache budget they are not served and say so, and a victim in another namespace
/// is served as ever; a deletion makes room for the next change.
#[tokio::test]
async fn a_namespace_over_its_cache_budget_is_told_so_and_its_neighbour_is_served() -> Result<()> {
    let env = Env::new("tenant-budget").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    let hostile = Env::new("tenant-budget-hostile").await?;
    const BULKY: usize = 4;
    for i in 0..BULKY {
        create_pcred_in(&env, hostile.name(), &format!("big-{i}"), &bulky_spec(i)).await?;
    }
    let op = start_cluster_wide_with(&env, &["--cache-mib-per-namespace", "1"]).await?;
    create_pcred(&env, "victim", &spec(&emu, "victim-token", "null")).await?;
    env.wait_condition("victim", "Ready", "True", Some("TokenIssued"))
        .await?;
    let (_, over) = eventually("every hostile resource reported", CONVERGE, || async {
        let found = budget_report(&hostile, BULKY).await?;
        Ok((found.0 == BULKY).then_some(found))
    })
    .await?;
    // ~0.5 MB each against 1 MiB: one or two fit, the others are not served.
    ensure!(
        (2..BULKY).contains(&over),
        "{over} of {BULKY} not served for the budget"
    );
    let stubbed = hostile.pcred("big-3").await?;
    let message = &stubbed
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .context("a Ready condition")?
        .message;
    ensure!(
        message.contains("--cache-mib-per-namespace"),
        "the status names the setting: {message}"
    );
    // Room again: the others go, and the last one is served at its next spec change.
    for i in 0..BULKY - 1 {
        hostile
            .pcreds()
            .delete(&format!("big-{i}"), &Default::default())
            .await?;
    }
    // A spec change has it looked at again (src/controller/caches/budget.rs: not a status write).
    let change = json!({"spec": {"target": {"labels": {"changed": "yes"}}}});
    hostile
        .pcreds()
        .patch("big-3", &PatchParams::default(), &Patch::Merge(&change))
        .await?;
    hostile
        .wait_condition("big-3", "Ready", "False", Some("Suspended"))
        .await?;
    drop(op);
    unbind(&env, &binding).await?;
    eprintln!(
        "tenancy: {over} of {BULKY} bulky resources over a 1 MiB budget not served; the victim Ready"
    );
    Ok(())
}

/// A token request that waits for its namespace's turn (here a 429 pause) is checked again
/// before it is sent: the owner of its credentials withdrew consent meanwhile (removed the
/// opt-in label), so nothing goes out with them.
#[tokio::test]
async fn consent_withdrawn_while_a_request_waits_sends_nothing() -> Result<()> {
    let env = Env::new("tenant-recheck").await?;
    let binding = bind_cluster_wide(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    let data = support::secret_data(Provider::Rently, &emu);
    env.create_credentials("creds", &data, true).await?;
    env.create_credentials("withdrawn", &data, true).await?;
    emu.control().inject(
        Provider::Rently,
        Fault::RateLimited {
            retry_after_secs: 8,
        },
        1,
    );
    let op = start_cluster_wide_with(&env, &[]).await?;
    create_pcred(&env, "first", &spec(&emu, "first-token", "null")).await?;
    eventually("the 429 that pauses the namespace", CONVERGE, || async {
        Ok((emu.control().counters(Provider::Rently).requests == 1).then_some(()))
    })
    .await?;
    let second = format!(
        "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: withdrawn}}}}\ntarget: {{secretName: second-token}}\n",
        emu.token_url(Provider::Rently)
    );
    create_pcred(&env, "second", &second).await?;
    eventually(
        "the second request waiting for its turn",
        CONVERGE,
        || async {
            let log = op.log_text();
            // Waiting in line as a name (planned afresh when its turn comes), or started and
            // waiting in its task (re-checked before it is sent).
            Ok(log
                .lines()
                .any(|l| {
                    l.contains("name=second")
                        && (l.contains("goes on without this reconcile")
                            || l.contains("waits for its turn"))
                })
                .then_some(()))
        },
    )
    .await?;
    let unlabel = json!({"metadata": {"labels": {"tokenrotator.dev/credentials": null}}});
    env.secrets()
        .patch(
            "withdrawn",
            &PatchParams::default(),
            &Patch::Merge(&unlabel),
        )
        .await?;
    env.wait_condition("second", "Ready", "False", Some("CredentialsNotLabelled"))
        .await?;
    env.wait_condition("first", "Ready", "True", Some("TokenIssued"))
        .await?;
    let c = emu.control().counters(Provider::Rently);
    ensure!(
        c.requests == 2 && c.issued == 1,
        "only the first resource's 429 and its retry were sent ({c:?})"
    );
    let log = op.log_text();
    let second = |what: &str| {
        log.lines()
            .any(|l| l.contains("name=second") && l.contains(what))
    };
    ensure!(
        !second("goes on without this reconcile") || second("is not sent"),
        "the log says a started request that waited was dropped"
    );
    drop(op);
    unbind(&env, &binding).await?;
    Ok(())
}

//! spec.rollout on the real control plane, with kube-controller-manager's Deployment and
//! ReplicaSet controllers: a rotation restarts each consenting workload once (a new
//! ReplicaSet), two resources rotating together share one restart, and a workload that does
//! not exist or does not consent is a condition, never touched. All of it under the chart's
//! admission policies, which let the operator's identity write only what the operator writes.

mod admission;
mod e2e;
mod support;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Options, Provider};
use serde_json::json;
use token_rotator::api::ProviderCredential;

const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The chart's rules with rolloutRestarts.enabled, in place of the default ones.
async fn grant_restarts(env: &Env) -> Result<()> {
    let name = format!("token-rotator-{}", env.name());
    apply_chart_cluster_role(env, "rolloutRestarts.enabled=true", &name, "deployments").await
}

fn template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    })
}

fn consent(names: Option<&str>) -> serde_json::Value {
    match names {
        Some(n) => json!({"tokenrotator.dev/restart-on": n}),
        None => json!({}),
    }
}

async fn create_workloads(env: &Env) -> Result<()> {
    let pp = PostParams::default();
    let ns = env.name();
    for (name, who) in [("api", Some("a,b")), ("other", None)] {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "annotations": consent(who)},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template(name)}
        }))?;
        Api::<Deployment>::namespaced(env.client.clone(), ns)
            .create(&pp, &d)
            .await?;
    }
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": ns, "annotations": consent(Some("a"))},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}
    }))?;
    Api::<StatefulSet>::namespaced(env.client.clone(), ns)
        .create(&pp, &s)
        .await?;
    let d: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": ns, "annotations": consent(Some("a"))},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}
    }))?;
    Api::<DaemonSet>::namespaced(env.client.clone(), ns)
        .create(&pp, &d)
        .await?;
    Ok(())
}

fn spec(emu: &Emulator, target: &str, rollout: &str) -> String {
    format!(
        "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: {target}}}\nrollout: {rollout}\n",
        emu.token_url(Provider::Rently)
    )
}

/// The pod template's restartedAt of a Deployment, and how many ReplicaSets it has.
async fn deployment_state(env: &Env, name: &str) -> Result<(Option<String>, usize)> {
    let d = Api::<Deployment>::namespaced(env.client.clone(), env.name())
        .get(name)
        .await?;
    let at = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_AT).cloned());
    let sets = Api::<ReplicaSet>::namespaced(env.client.clone(), env.name())
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await?;
    Ok((at, sets.items.len()))
}

fn recorded(pc: &ProviderCredential, kind: &str, name: &str) -> Option<String> {
    pc.status
        .as_ref()?
        .restarts
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .map(|r| r.restarted_at.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn condition(pc: &ProviderCredential) -> Option<(String, String, String)> {
    pc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "WorkloadsRestarted")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the resource's WorkloadsRestarted condition has this status and reason.
async fn restarted(
    env: &Env,
    name: &str,
    status: &str,
    reason: &str,
) -> Result<ProviderCredential> {
    eventually(
        &format!("{name}: WorkloadsRestarted={status} {reason}"),
        CONVERGE,
        || async {
            let pc = env.pcred(name).await?;
            Ok(condition(&pc)
                .is_some_and(|(s, r, _)| s == status && r == reason)
                .then_some(pc))
        },
    )
    .await
}

#[tokio::test]
async fn a_rotation_restarts_each_consenting_workload_once() -> Result<()> {
    let env = Env::new("rollout").await?;
    grant_restarts(&env).await?;
    let emu = Emulator::start(Options::default()).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Rently, &emu), true)
        .await?;
    create_workloads(&env).await?;
    let (before, sets) = eventually("the first ReplicaSet of api", CONVERGE, || async {
        let state = deployment_state(&env, "api").await?;
        Ok((state.1 == 1).then_some(state))
    })
    .await?;
    ensure!(before.is_none() && sets == 1);

    // a and b feed api and are created together: one restart, after the delay, serves both.
    let timing = "delay: 4s, minInterval: 15s";
    env.create_pcred(
        "a",
        &spec(&emu, "a-token", &format!("{{workloads: [{{kind: Deployment, name: api}}, {{kind: StatefulSet, name: db}}, {{kind: DaemonSet, name: agent}}], {timing}}}")),
    )
    .await?;
    env.create_pcred(
        "b",
        &spec(
            &emu,
            "b-token",
            &format!("{{workloads: [{{kind: Deployment, name: api}}], {timing}}}"),
        ),
    )
    .await?;
    env.create_pcred(
        "c",
        &spec(
            &emu,
            "c-token",
            "{workloads: [{kind: Deployment, name: other}, {kind: Deployment, name: ghost}]}",
        ),
    )
    .await?;
    // The restarts below are the operator's own writes, under the chart's admission policies.
    let policies = admission::install(&env).await?;
    let as_operator = Api::<Deployment>::namespaced(
        env.cp
            .service_account_client(env.name(), OPERATOR_SA)
            .await?,
        env.name(),
    );
    let refusal = admission::refused_once_in_force("the workload policy", || {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2030-01-01T00:00:00Z"}}}}});
        let api = as_operator.clone();
        async move {
            api.patch("other", &PatchParams::default().dry_run(), &Patch::Merge(patch))
                .await
        }
    })
    .await?;
    ensure!(
        refusal.contains("may restart only workloads that consent"),
        "{refusal}"
    );
    let _op = Operator::start_with(&env, &["--restart-workloads"]).await?;

    let a = restarted(&env, "a", "True", "UpToDate").await?;
    let b = restarted(&env, "b", "True", "UpToDate").await?;
    let (first, sets) = eventually("api's second ReplicaSet", CONVERGE, || async {
        let state = deployment_state(&env, "api").await?;
        Ok((state.1 >= 2).then_some(state))
    })
    .await?;
    let first = first.context("api was restarted")?;
    ensure!(
        sets == 2,
        "one restart for two rotations: {sets} ReplicaSets"
    );
    ensure!(
        recorded(&a, "Deployment", "api").as_deref() == Some(first.as_str()),
        "{:?}",
        a.status
    );
    ensure!(
        recorded(&b, "Deployment", "api").as_deref() == Some(first.as_str()),
        "{:?}",
        b.status
    );
    for (kind, name) in [("StatefulSet", "db"), ("DaemonSet", "agent")] {
        ensure!(
            recorded(&a, kind, name).is_some(),
            "{kind}/{name} restarted: {:?}",
            a.status
        );
    }
    let issued = |pc: &ProviderCredential| {
        pc.status
            .as_ref()
            .and_then(|s| s.access_token.as_ref())
            .map(|t| t.issued_at.0)
    };
    let restarted_at: jiff::Timestamp = first.parse()?;
    for pc in [&a, &b] {
        // To the second, as restartedAt is written: the restart is in a later second.
        ensure!(
            issued(pc).is_some_and(|t| t.as_second() < restarted_at.as_second()),
            "restarted after both rotations"
        );
    }
    ensure!(env.events_with_reason("WorkloadsRestarted").await? >= 1);

    // Neither a workload that does not consent nor one that does not exist is touched.
    let c = restarted(&env, "c", "False", "WorkloadNotFound").await?;
    let (_, _, message) = condition(&c).context("condition")?;
    ensure!(
        message.contains("Deployment/ghost does not exist")
            && message.contains(
                "Deployment/other does not list c in its annotation tokenrotator.dev/restart-on"
            ),
        "{message}"
    );
    ensure!(
        deployment_state(&env, "other").await?.0.is_none(),
        "other was not restarted"
    );

    // One more rotation of a: exactly one more restart, not before 15 s after the last.
    let pp = PatchParams::default();
    let at = jiff::Timestamp::now().to_string();
    env.pcreds()
        .patch(
            "a",
            &pp,
            &Patch::Merge(&json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": at}}})),
        )
        .await?;
    let a2 = eventually("a restarts api again", CONVERGE, || async {
        let pc = env.pcred("a").await?;
        let again = recorded(&pc, "Deployment", "api");
        let up = condition(&pc).is_some_and(|(s, r, _)| s == "True" && r == "UpToDate");
        Ok((again.as_deref() != Some(first.as_str()) && up).then_some(pc))
    })
    .await?;
    let second: jiff::Timestamp = recorded(&a2, "Deployment", "api")
        .context("recorded")?
        .parse()?;
    ensure!(
        second.duration_since(restarted_at) >= jiff::SignedDuration::from_secs(15),
        "the minimum interval held: {restarted_at} then {second}"
    );
    let (now_at, sets) = eventually("api's third ReplicaSet", CONVERGE, || async {
        let state = deployment_state(&env, "api").await?;
        Ok((state.1 >= 3).then_some(state))
    })
    .await?;
    ensure!(sets == 3, "one rotation, one restart: {sets} ReplicaSets");
    ensure!(now_at.as_deref() == recorded(&a2, "Deployment", "api").as_deref());
    // "Exactly one" is an absence: no condition can announce it, so watch for longer than
    // delay + minInterval (4 s + 15 s), when a repeated restart would have come.
    tokio::time::sleep(std::time::Duration::from_secs(21)).await;
    let (still_at, still_sets) = deployment_state(&env, "api").await?;
    ensure!(
        still_sets == 3 && still_at == now_at,
        "no further restart: {still_sets} ReplicaSets, restartedAt {still_at:?} (was {now_at:?})"
    );
    eprintln!(
        "rollout: two rotations together → 1 restart; one more rotation → 1 more, {}s after the first; non-consenting and missing workloads reported, untouched",
        second.duration_since(restarted_at).as_secs()
    );
    policies.remove().await?;
    Ok(())
}

//! Trust boundaries on the real API server: what a namespace user who may write
//! ProviderCredentials can and cannot make the operator do.

mod admission;
mod e2e;
mod support;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
};
use provider_emulator::{Emulator, Options, Provider};
use serde_json::json;
use token_rotator::api::ProviderCredential;

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
    let policies = admission::install(&env).await?;
    let admin = env.cp.client();
    let apply = PatchParams::apply("e2e").force();

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
    policies.remove().await?;
    Ok(())
}

const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const RESTART_ON: &str = "tokenrotator.dev/restart-on";
const DELIVERY_FINALIZER: &str = "tokenrotator.dev/delivered-copies";

/// A workload of `kind` (Deployment, StatefulSet or DaemonSet) with one container, its
/// restart-on annotation `consent` if any, and `env_vars` variables of 100 characters each (a
/// large object costs the policy's comparison more).
fn workload(kind: &str, name: &str, consent: Option<&str>, env_vars: usize) -> serde_json::Value {
    let annotations = match consent {
        Some(c) => json!({RESTART_ON: c}),
        None => json!({}),
    };
    let vars: Vec<_> = (0..env_vars)
        .map(|i| json!({"name": format!("V{i}"), "value": "x".repeat(100)}))
        .collect();
    let mut w = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1", "env": vars}]}
            }
        }
    });
    if kind == "StatefulSet" {
        w["spec"]["serviceName"] = json!(name);
    }
    w
}

/// A restart: the pod template's restartedAt (no precondition: an attacker needs none).
fn restarted() -> serde_json::Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2030-01-01T00:00:00Z"}}}}})
}

/// The patch the operator sends to restart a workload (src/controller/steps/rollout.rs): the
/// restart, on the version it read.
fn restart(object: &DynamicObject) -> serde_json::Value {
    let mut patch = restarted();
    patch["metadata"] =
        json!({"uid": object.metadata.uid, "resourceVersion": object.metadata.resource_version});
    patch
}

/// The patch the operator sends to set its finalizers (src/controller/steps/finalizer.rs): the
/// whole list, on the version it read.
fn finalizers(pc: &ProviderCredential, list: &[&str]) -> serde_json::Value {
    json!({"metadata": {"resourceVersion": pc.metadata.resource_version, "finalizers": list}})
}

fn merge(patch: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(patch)
}

/// Even a compromised operator can do to workloads and ProviderCredentials only what the
/// operator itself does: restart (set the pod template's restartedAt of) a workload whose own
/// annotation consents, and add or remove its finalizer. Anything else — an image changed in
/// any namespace, a restart without consent, the consent forged in the same write, any other
/// change of a workload, a ProviderCredential's spec, labels, annotations or someone else's
/// finalizer — the chart's admission policies refuse on the real API server.
#[tokio::test]
async fn the_operators_identity_may_restart_only_consenting_workloads_and_hold_only_its_finalizer()
-> Result<()> {
    let env = Env::new("vap-writes").await?;
    let policies = admission::install(&env).await?;
    let other = env.cp.new_namespace("vap-elsewhere").await?;
    let other = other.name();
    // The chart's rules with both features that write these, here and in another namespace.
    let role = format!("token-rotator-{}", env.name());
    apply_chart_cluster_role(
        &env,
        "rolloutRestarts.enabled=true,crossNamespaceDelivery.enabled=true",
        &role,
        "deployments",
    )
    .await?;
    Api::<RoleBinding>::namespaced(env.client.clone(), other)
        .patch(
            "token-rotator",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "token-rotator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": env.name()}],
            })),
        )
        .await?;

    // Workloads, created by their owners (here: the admin).
    let created = [
        (other, "Deployment", "system", None, 0),
        (other, "Deployment", "api", Some("app-token"), 500),
        (env.name(), "Deployment", "web", None, 0),
        (env.name(), "Deployment", "blank", Some(" , "), 0),
        (env.name(), "StatefulSet", "db", Some("app-token, other"), 0),
        (env.name(), "DaemonSet", "agent", Some("app-token"), 0),
    ];
    for (ns, kind, name, consent, vars) in created {
        let object: DynamicObject = serde_json::from_value(workload(kind, name, consent, vars))?;
        apps(&env.client, ns, kind)
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("create {kind} {ns}/{name}"))?;
    }
    let client = env
        .cp
        .service_account_client(env.name(), OPERATOR_SA)
        .await?;
    let op = |ns: &str, kind: &str| apps(&client, ns, kind);
    let dry = PatchParams::default().dry_run();
    let pp = PatchParams::default();

    // In force once the first refusal arrives: a restart without consent (a dry run).
    let first = admission::refused_once_in_force("the workload policy", || {
        let api = op(env.name(), "Deployment");
        let dry = dry.clone();
        async move { api.patch("web", &dry, &merge(restarted())).await }
    })
    .await?;
    let no_consent = "may restart only workloads that consent";
    let only_restart = "may change nothing in a workload but its pod template's annotation kubectl.kubernetes.io/restartedAt";
    ensure!(first.contains(no_consent), "{first}");

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.invalid/evil:1"}]}}}});
    let mut refused = Vec::new();
    // An image changed in another namespace, in a workload that has not consented.
    refused.push((
        admission::refusal(
            "image of other/system",
            op(other, "Deployment").patch("system", &pp, &merge(image.clone())),
        )
        .await?,
        no_consent,
    ));
    // Also in one that has: consent is to restarts, nothing else.
    let mut image_and_restart = image.clone();
    image_and_restart["spec"]["template"]["metadata"] =
        json!({"annotations": {RESTARTED_AT: "2030-01-01T00:00:00Z"}});
    refused.push((
        admission::refusal(
            "image of other/api",
            op(other, "Deployment").patch("api", &pp, &merge(image_and_restart)),
        )
        .await?,
        only_restart,
    ));
    refused.push((
        admission::refusal(
            "replicas of other/api",
            op(other, "Deployment").patch("api", &pp, &merge(json!({"spec": {"replicas": 0}}))),
        )
        .await?,
        only_restart,
    ));
    // A restart of a workload without consent, with its consent forged in the same write,
    // or with a consent that names nobody.
    refused.push((
        admission::refusal(
            "restart of web",
            op(env.name(), "Deployment").patch("web", &pp, &merge(restarted())),
        )
        .await?,
        no_consent,
    ));
    let mut forged = restarted();
    forged["metadata"]["annotations"] = json!({RESTART_ON: "app-token"});
    refused.push((
        admission::refusal(
            "restart of web with forged consent",
            op(env.name(), "Deployment").patch("web", &pp, &merge(forged)),
        )
        .await?,
        no_consent,
    ));
    refused.push((
        admission::refusal(
            "restart of blank",
            op(env.name(), "Deployment").patch("blank", &pp, &merge(restarted())),
        )
        .await?,
        no_consent,
    ));
    // A StatefulSet and a DaemonSet that consent: nothing beyond the restart.
    let mut relabelled = restarted();
    relabelled["spec"]["template"]["metadata"]["labels"] = json!({"extra": "1"});
    refused.push((
        admission::refusal(
            "pod label of db",
            op(env.name(), "StatefulSet").patch("db", &pp, &merge(relabelled)),
        )
        .await?,
        only_restart,
    ));
    let mut annotated = restarted();
    annotated["spec"]["template"]["metadata"]["annotations"]["example.com/other"] = json!("1");
    refused.push((
        admission::refusal(
            "another pod annotation of agent",
            op(env.name(), "DaemonSet").patch("agent", &pp, &merge(annotated)),
        )
        .await?,
        only_restart,
    ));
    let mut widened = restarted();
    widened["metadata"]["annotations"] = json!({RESTART_ON: "app-token,everyone"});
    refused.push((
        admission::refusal(
            "consent of agent",
            op(env.name(), "DaemonSet").patch("agent", &pp, &merge(widened)),
        )
        .await?,
        only_restart,
    ));
    for (refusal, expected) in &refused {
        ensure!(
            refusal.contains(expected),
            "expected {expected:?}: {refusal}"
        );
    }

    // What the operator does goes through: a restart of each kind that consents.
    for (ns, kind, name) in [
        (other, "Deployment", "api"),
        (env.name(), "StatefulSet", "db"),
        (env.name(), "DaemonSet", "agent"),
    ] {
        // On the version just read, as the operator does: again if a controller wrote between.
        let after = eventually(
            &format!("a restart of {kind} {ns}/{name}"),
            CONVERGE,
            || {
                let api = op(ns, kind);
                let pp = pp.clone();
                async move {
                    let before = api.get(name).await?;
                    match api.patch(name, &pp, &merge(restart(&before))).await {
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                        result => Ok(Some(result?)),
                    }
                }
            },
        )
        .await?;
        let template = &after.data["spec"]["template"];
        ensure!(
            template["metadata"]["annotations"][RESTARTED_AT] == "2030-01-01T00:00:00Z"
                && template["spec"]["containers"][0]["image"] == "registry.invalid/app:1",
            "{kind} {ns}/{name}: {template}"
        );
    }
    let system = apps(&env.client, other, "Deployment").get("system").await?;
    ensure!(
        system.data["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.invalid/app:1",
        "other/system untouched"
    );

    // ProviderCredentials: someone else's finalizer on one, to be kept.
    env.create_pcred("pc", &spec_with_target("{secretName: pc-token}"))
        .await?;
    let theirs = "example.com/keep";
    env.pcreds()
        .patch(
            "pc",
            &pp,
            &merge(json!({"metadata": {"finalizers": [theirs]}})),
        )
        .await?;
    let as_operator = Api::<ProviderCredential>::namespaced(client.clone(), env.name());
    let first = admission::refused_once_in_force("the ProviderCredential policy", || {
        let api = as_operator.clone();
        let dry = dry.clone();
        async move {
            api.patch("pc", &dry, &merge(json!({"spec": {"suspend": true}})))
                .await
        }
    })
    .await?;
    let only_finalizers = "may change nothing in a ProviderCredential but metadata.finalizers";
    let only_own = "may add or remove only its own finalizer";
    ensure!(first.contains(only_finalizers), "{first}");
    let pc = env.pcred("pc").await?;
    for (what, patch, expected) in [
        (
            "spec",
            json!({"spec": {"target": {"secretName": "elsewhere"}}}),
            only_finalizers,
        ),
        (
            "labels",
            json!({"metadata": {"labels": {"shard": "mine"}}}),
            only_finalizers,
        ),
        (
            "a refresh",
            json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "now"}}}),
            only_finalizers,
        ),
        (
            "their finalizer",
            finalizers(&pc, &[DELIVERY_FINALIZER]),
            only_own,
        ),
        (
            "another finalizer",
            finalizers(&pc, &[theirs, "example.com/more"]),
            only_own,
        ),
    ] {
        let refusal = admission::refusal(what, as_operator.patch("pc", &pp, &merge(patch))).await?;
        ensure!(
            refusal.contains(expected),
            "{what}: expected {expected:?}: {refusal}"
        );
    }
    // Its own finalizer goes on, and comes off again once the resource is being deleted.
    let held = as_operator
        .patch(
            "pc",
            &pp,
            &merge(finalizers(&pc, &[theirs, DELIVERY_FINALIZER])),
        )
        .await
        .context("add the finalizer")?;
    ensure!(
        held.metadata.finalizers.as_deref()
            == Some(&[theirs.to_string(), DELIVERY_FINALIZER.to_string()][..]),
        "{:?}",
        held.metadata.finalizers
    );
    env.pcreds().delete("pc", &Default::default()).await?;
    let deleting = env.pcred("pc").await?;
    ensure!(deleting.metadata.deletion_timestamp.is_some());
    let released = as_operator
        .patch("pc", &pp, &merge(finalizers(&deleting, &[theirs])))
        .await
        .context("remove the finalizer")?;
    ensure!(
        released.metadata.finalizers.as_deref() == Some(&[theirs.to_string()][..]),
        "{:?}",
        released.metadata.finalizers
    );
    env.pcreds()
        .patch("pc", &pp, &merge(json!({"metadata": {"finalizers": null}})))
        .await?;
    policies.remove().await?;
    Ok(())
}

/// The Deployments, StatefulSets or DaemonSets of `ns`, as `client` sees them.
fn apps(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apps", "v1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

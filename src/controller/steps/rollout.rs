//! spec.rollout: after a rotation, restart the workloads that consent, as `kubectl rollout
//! restart` does. I/O only: this reads the workloads rotation::rollout asks about, patches the
//! due ones, and hands what it saw and did to `rollout::outcome`, whose condition, records,
//! Events and requeue `merge` puts in the report.

use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use crate::api::{ProviderCredential, ResourceKey, WorkloadKind, WorkloadRef};
use crate::rotation::Report;
use crate::rotation::merge::merge;
use crate::rotation::rollout::{self, Decision, Inputs, Observed, Policy, Seen};

fn api_for(ctx: &Context, namespace: &str, kind: WorkloadKind) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apps", "v1", kind.as_str());
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

/// The object a decision was made on: a restart applies only to that version of it.
struct Version {
    uid: Option<String>,
    resource_version: Option<String>,
}

/// How a workload looks to this resource: missing, not consenting, or when it last restarted.
async fn look(
    api: &Api<DynamicObject>,
    workload: &WorkloadRef,
    resource: &str,
) -> Result<(Seen, Version), kube::Error> {
    let none = Version {
        uid: None,
        resource_version: None,
    };
    let Some(object) = api.get_opt(&workload.name).await? else {
        return Ok((Seen::Missing, none));
    };
    let version = Version {
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
    };
    if !rollout::consents(
        object
            .annotations()
            .get(rollout::RESTART_ON)
            .map(String::as_str),
        resource,
    ) {
        return Ok((Seen::NotOptedIn, version));
    }
    let last_restart = object.data["spec"]["template"]["metadata"]["annotations"]
        [rollout::RESTARTED_AT]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok());
    Ok((Seen::Found { last_restart }, version))
}

/// The restart, on the version that consented: if the workload changed since (its consent
/// withdrawn, or deleted and created again), the API server refuses it with 409.
async fn restart(
    api: &Api<DynamicObject>,
    name: &str,
    version: &Version,
    at: Timestamp,
) -> Result<(), kube::Error> {
    let value = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let patch = serde_json::json!({
        "metadata": {"uid": version.uid, "resourceVersion": version.resource_version},
        "spec": {"template": {"metadata": {"annotations": {rollout::RESTARTED_AT: value}}}}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// After `after` was decided: restart what is due, and say so in `after`.
pub async fn restart_workloads(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    after: &mut Report,
) {
    let now = Timestamp::now();
    let generation = pc.meta().generation;
    let Some(spec) = pc.spec.rollout.as_deref() else {
        merge(after, rollout::withdrawn(), generation, now);
        return;
    };
    let Some(rotated_at) = rollout::rotated_at(&after.status) else {
        return;
    };
    let (namespace, name) = (key.namespace(), key.name());
    let policy = Policy::of(spec);
    let mut observed = Vec::new();
    for workload in rollout::to_look(
        spec,
        &after.status.restarts,
        rotated_at,
        ctx.restart_workloads,
    ) {
        let api = api_for(ctx, namespace, workload.kind);
        let seen = look_and_restart(&api, &workload, name, (rotated_at, policy, now)).await;
        observed.push((workload, seen));
    }
    let outcome = rollout::outcome(&Inputs {
        spec,
        resource: name,
        target_secret: &pc.spec.target.secret_name,
        rotated_at,
        now,
        enabled: ctx.restart_workloads,
        previous: &after.status.restarts,
        observed: &observed,
    });
    merge(after, outcome, generation, now);
}

/// One workload: read, and restarted if `rollout::decide` says it is due now.
async fn look_and_restart(
    api: &Api<DynamicObject>,
    workload: &WorkloadRef,
    resource: &str,
    (rotated_at, policy, now): (Timestamp, Policy, Timestamp),
) -> Observed {
    let shown = format!("{}/{}", workload.kind.as_str(), workload.name);
    let (seen, version) = match look(api, workload, resource).await {
        Ok(found) => found,
        Err(e) => {
            let short = crate::secrets::short_api_error(&e);
            warn!(workload = %shown, error = %short, "cannot read a workload to restart");
            return Observed::Unreadable(short);
        }
    };
    if rollout::decide(rotated_at, &seen, policy, now) != Decision::RestartNow {
        return Observed::Looked(seen);
    }
    match restart(api, &workload.name, &version, now).await {
        Ok(()) => {
            info!(workload = %shown, "restarted after the token rotated");
            Observed::Restarted
        }
        Err(e) => {
            let short = crate::secrets::short_api_error(&e);
            warn!(workload = %shown, error = %short, "cannot restart a workload");
            Observed::RestartFailed(short)
        }
    }
}

//! spec.rollout: after a rotation, restart the workloads that consent, as `kubectl rollout
//! restart` does. Decisions are in rotation::rollout; this reads the workloads, patches them
//! and records the outcome in the report (status, condition, Events, requeue).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use crate::api::{
    ProviderCredential, RolloutSpec, WorkloadKind, WorkloadRef, WorkloadRestartStatus,
};
use crate::conditions;
use crate::rotation::rollout::{self, Decision, Policy, Seen, reason};
use crate::rotation::{EventNote, Report};

/// The condition this feature reports: True when every listed workload runs the current
/// token (or will at its planned restart).
pub const WORKLOADS_RESTARTED: &str = "WorkloadsRestarted";

fn api_for(ctx: &Context, namespace: &str, kind: WorkloadKind) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apps", "v1", kind.as_str());
    let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

fn policy(spec: &RolloutSpec) -> Policy {
    let defaults = Policy::default();
    let parse = |field, value: &Option<String>, default| {
        value
            .as_deref()
            .and_then(|v| crate::api::resolve::parse_duration(field, v).ok())
            .unwrap_or(default)
    };
    Policy {
        min_interval: parse(
            "spec.rollout.minInterval",
            &spec.min_interval,
            defaults.min_interval,
        ),
        delay: parse("spec.rollout.delay", &spec.delay, defaults.delay),
    }
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

/// How soon a failed read or restart is tried again: soon enough for the pods' old token,
/// rare enough to be no burden on the API server.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// Requeues are at most this far out (the resource's own renewal brings it back anyway).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// events.k8s.io refuses a note longer than 1 KiB.
const MAX_NOTE_CHARS: usize = 1000;

/// After `after` was decided: restart what is due, and say so in `after`.
pub async fn restart_workloads(ctx: &Context, pc: &ProviderCredential, after: &mut Report) {
    let Some(spec) = pc.spec.rollout.as_deref() else {
        // spec.rollout removed: its condition and records go with it.
        after.status.restarts.clear();
        after
            .status
            .conditions
            .retain(|c| c.type_ != WORKLOADS_RESTARTED);
        return;
    };
    // To the second, as the status holds it: the same decision before and after the write.
    let Some(rotated_at) = after
        .status
        .access_token
        .as_ref()
        .and_then(|t| Timestamp::from_second(t.issued_at.0.as_second()).ok())
    else {
        return;
    };
    let namespace = pc.namespace().unwrap_or_default();
    let name = pc.name_any();
    let now = Timestamp::now();
    let before = after.status.conditions.clone();
    let mut refused: Vec<String> = Vec::new();
    let mut first_refusal: Option<&'static str> = None;
    let mut waiting: Option<Timestamp> = None;
    let mut restarted: Vec<String> = Vec::new();
    let mut workloads = spec.workloads.clone();
    workloads.sort();
    workloads.dedup();
    // Records of workloads no longer listed go.
    after.status.restarts.retain(|r| {
        workloads
            .iter()
            .any(|w| w.kind.as_str() == r.kind && w.name == r.name)
    });
    let mut retry = false;
    if !ctx.restart_workloads {
        first_refusal = Some(reason::RESTARTS_DISABLED);
        refused.push(
            "the operator runs without --restart-workloads (chart value rolloutRestarts.enabled)"
                .into(),
        );
        workloads.clear();
    }
    for workload in &workloads {
        let shown = format!("{}/{}", workload.kind.as_str(), workload.name);
        let recorded = after
            .status
            .restarts
            .iter()
            .find(|r| r.kind == workload.kind.as_str() && r.name == workload.name)
            .map(|r| r.restarted_at.0);
        // Restarted for this rotation already: no need to read it again.
        if recorded.is_some_and(|r| rollout::covers(r, rotated_at)) {
            continue;
        }
        let api = api_for(ctx, &namespace, workload.kind);
        let (seen, version) = match look(&api, workload, &name).await {
            Ok(found) => found,
            Err(e) => {
                warn!(workload = %shown, error = %crate::secrets::short_api_error(&e), "cannot read a workload to restart");
                first_refusal.get_or_insert(reason::RESTART_FAILED);
                refused.push(format!(
                    "{shown} cannot be read ({})",
                    crate::secrets::short_api_error(&e)
                ));
                retry = true;
                continue;
            }
        };
        match rollout::decide(rotated_at, &seen, policy(spec), now) {
            Decision::UpToDate => {
                // Restarted since (for another resource, or by a person): shown here too.
                if let Seen::Found {
                    last_restart: Some(at),
                } = seen
                {
                    // Never a time to come: a clock ahead must not hold future restarts back.
                    record(&mut after.status.restarts, workload, at.min(now));
                }
            }
            Decision::WaitUntil(at) => waiting = Some(waiting.map_or(at, |w| w.min(at))),
            Decision::RestartNow => match restart(&api, &workload.name, &version, now).await {
                Ok(()) => {
                    info!(workload = %shown, "restarted after the token rotated");
                    record(&mut after.status.restarts, workload, now);
                    restarted.push(shown);
                }
                Err(e) => {
                    warn!(workload = %shown, error = %crate::secrets::short_api_error(&e), "cannot restart a workload");
                    first_refusal.get_or_insert(reason::RESTART_FAILED);
                    refused.push(format!(
                        "{shown}: the restart failed ({})",
                        crate::secrets::short_api_error(&e)
                    ));
                    retry = true;
                }
            },
            Decision::Refused(why) => {
                first_refusal.get_or_insert(why);
                refused.push(match why {
                    reason::NOT_FOUND => format!("{shown} does not exist"),
                    _ => format!(
                        "{shown} does not list {name} in its annotation {}",
                        rollout::RESTART_ON
                    ),
                });
            }
        }
    }
    let generation = pc.meta().generation;
    let (ok, why, message) = match first_refusal {
        Some(why) => (
            false,
            why,
            crate::provider::scrub::truncate_chars(
                &format!("not restarted: {}", refused.join("; ")),
                MAX_NOTE_CHARS,
            ),
        ),
        None => match waiting {
            Some(at) => (true, "RestartPlanned", format!("restart planned at {at}")),
            None => (
                true,
                "UpToDate",
                "every listed workload started after the current token was written".to_string(),
            ),
        },
    };
    conditions::set(
        &mut after.status.conditions,
        WORKLOADS_RESTARTED,
        ok,
        why,
        message.clone(),
        generation,
        now,
    );
    if !restarted.is_empty() {
        after.events.push(EventNote {
            warning: false,
            reason: "WorkloadsRestarted".into(),
            note: crate::provider::scrub::truncate_chars(
                &format!(
                    "restarted {} after the token in Secret {} changed",
                    restarted.join(", "),
                    pc.spec.target.secret_name
                ),
                MAX_NOTE_CHARS,
            ),
            action: "Restart",
        });
    }
    if !ok && conditions::transitioned(&before, &after.status.conditions, WORKLOADS_RESTARTED) {
        after.events.push(EventNote {
            warning: true,
            reason: why.into(),
            note: message,
            action: "Restart",
        });
    }
    let mut again = waiting.map(|at| {
        Duration::from_millis(
            u64::try_from(at.as_millisecond().saturating_sub(now.as_millisecond())).unwrap_or(0),
        )
        .clamp(Duration::from_secs(1), MAX_WAIT)
    });
    if retry {
        again = Some(again.map_or(RETRY_FAILED, |a| a.min(RETRY_FAILED)));
    }
    if let Some(delay) = again {
        after.requeue = Some(after.requeue.map_or(delay, |r| r.min(delay)));
    }
}

fn record(restarts: &mut Vec<WorkloadRestartStatus>, workload: &WorkloadRef, at: Timestamp) {
    restarts.retain(|r| !(r.kind == workload.kind.as_str() && r.name == workload.name));
    restarts.push(WorkloadRestartStatus {
        kind: workload.kind.as_str().into(),
        name: workload.name.clone(),
        restarted_at: Time(at),
    });
    restarts.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
}

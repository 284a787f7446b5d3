//! Report: one status PATCH with a resourceVersion precondition (only when the status
//! changed), the Events the report holds (made and capped by rotation::merge), and the
//! per-resource metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use tracing::{debug, warn};

use super::context::Context;
use crate::api::{Guarded, ProviderCredential, ResourceKey};
use crate::conditions::{ConditionType, Reason};
use crate::rotation::Report;
use crate::telemetry::Degraded;

const FIELD_MANAGER: &str = "token-rotator";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the resource changed while it was being reconciled; reconciling the new version")]
    StaleObject,
    #[error("cannot update the status: {}", crate::secrets::short_api_error(.0))]
    Status(#[source] kube::Error),
}

pub async fn report(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    report: &Report,
) -> Result<(), ReportError> {
    ctx.metrics.token_scheduled(
        key,
        pc,
        report.expires_at,
        report.status.next_refresh_at.as_ref().map(|t| t.0),
        Degraded::of(&report.status.conditions),
    );
    if let Some(reason) = report.failure {
        ctx.metrics.reconcile_failure(reason);
    }
    if pc.status.as_ref() == Some(&report.status)
        || (pc.status.is_none() && report.status == Default::default())
    {
        return Ok(());
    }
    let api: Api<ProviderCredential> = Api::namespaced(ctx.client.clone(), key.namespace());
    let patch = serde_json::json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        // A precondition: a reconcile working from a stale copy must not overwrite a newer
        // status.
        "metadata": {"resourceVersion": pc.meta().resource_version},
        "status": report.status,
    });
    let written = api
        .patch_status(
            key.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(ref s) if s.code == 409 => ReportError::StaleObject,
            e => ReportError::Status(e),
        })?;
    // Our own write's watch event is on its way; until it arrives, the cache's copy is
    // stale and a status written from it would be refused (409). A write the API server
    // found to change nothing keeps the version, and brings no event to wait for.
    if let Some(over) = pc.meta().resource_version.as_deref()
        && written.meta().resource_version.as_deref() != Some(over)
    {
        ctx.wrote_status(key, over);
    }
    debug!(
        new = %serde_json::to_string(&report.status).unwrap_or_default(),
        "status written"
    );
    for note in &report.events {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.clone(),
            note: Some(note.note.clone()),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.publish(&event, &pc.object_ref(&())).await {
            warn!(error = %crate::secrets::short_api_error(&e), "cannot publish an Event");
        }
    }
    Ok(())
}

/// One Warning Event outside a status report (something seen while observing); its note
/// capped as the report's are (`rotation::merge::capped`).
pub async fn warn_event(ctx: &Context, pc: &ProviderCredential, reason: &str, note: String) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(crate::rotation::merge::capped(&note)),
        action: "Store".into(),
        secondary: None,
    };
    if let Err(e) = ctx.publish(&event, &pc.object_ref(&())).await {
        warn!(error = %crate::secrets::short_api_error(&e), "cannot publish an Event");
    }
}

/// Ready=False and Degraded=True with reason InvalidSpec on a resource that cannot be read,
/// written as a merge patch through an untyped API (the typed one could not read the answer).
pub async fn report_unreadable(
    ctx: &Context,
    key: &ResourceKey,
    guard: &Guarded,
    message: &str,
) -> Result<(), ReportError> {
    let resource = ApiResource::erase::<ProviderCredential>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), key.namespace(), &resource);
    let now = Time(jiff::Timestamp::now());
    let condition = |type_: ConditionType, status: &str| {
        serde_json::json!({
            "type": type_.as_str(), "status": status, "reason": Reason::InvalidSpec.reason(),
            "message": message, "lastTransitionTime": now,
            "observedGeneration": guard.meta().generation,
        })
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": guard.meta().resource_version},
        "status": {"conditions": [condition(ConditionType::Ready, "False"), condition(ConditionType::Degraded, "True")]},
    });
    match api
        .patch_status(key.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(ReportError::StaleObject),
        Err(e) => Err(ReportError::Status(e)),
    }
}

//! The delivery finalizer: in place before the first copy is written, and released only once
//! every copy the resource made is gone (found by a list of their labels, so nothing depends on
//! a watch being complete).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use crate::api::{
    CREDENTIALS_LABEL, DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL, DELIVERY_FINALIZER,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProviderCredential, ResourceKey,
};
use crate::rotation::delivery::Removal;
use crate::secrets::short_api_error;

/// Failures that stop a reconcile: only the finalizer's, which must not be skipped.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Only the status code and reason: a message from another namespace's admission may quote
    /// what was sent.
    #[error("cannot {action}: {reason}")]
    Api {
        action: &'static str,
        reason: String,
        /// 409: a newer version of the resource is already queued.
        conflict: bool,
    },
}

impl DeliveryError {
    /// A finalizer patch on a copy of the resource older than the one stored: the newer
    /// version is already queued.
    pub fn is_stale(&self) -> bool {
        matches!(self, DeliveryError::Api { conflict: true, .. })
    }
}

fn api_error(action: &'static str) -> impl FnOnce(kube::Error) -> DeliveryError {
    move |e| DeliveryError::Api {
        action,
        reason: short_api_error(&e),
        conflict: matches!(&e, kube::Error::Api(s) if s.code == 409),
    }
}

pub(super) fn has_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers
        .iter()
        .flatten()
        .any(|f| f == DELIVERY_FINALIZER)
}

fn resources(ctx: &Context, namespace: &str) -> Api<PartialObjectMeta<ProviderCredential>> {
    Api::namespaced(ctx.client.clone(), namespace)
}

/// Before anything is delivered, the finalizer that will remove it. `Ok(true)`: added (the
/// watch brings the new version; this reconcile stops here). Any failure but a stale copy
/// lets the rotation go on: [`deliver`] writes no copy without the finalizer and says so.
pub async fn hold_finalizer(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
) -> Result<bool, DeliveryError> {
    if ctx.delivery.is_none() || pc.spec.delivery.is_none() || has_finalizer(pc.meta()) {
        return Ok(false);
    }
    let mut finalizers = pc.finalizers().to_vec();
    finalizers.push(DELIVERY_FINALIZER.to_string());
    // The resourceVersion is a precondition: a concurrent change of the list is not lost.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": pc.meta().resource_version, "finalizers": finalizers}
    });
    match resources(ctx, key.namespace())
        .patch(key.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error("add the finalizer"))
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_stale() => Err(e),
        Err(e) => {
            warn!(error = %e, "copies will not be written until the finalizer can be added");
            Ok(false)
        }
    }
}

/// As [`finalize`], for a resource cached as a stub over its namespace's budget (budget.rs
/// keeps only the operator's own finalizer of its list): the list written back is read fresh.
pub async fn finalize_stub(
    ctx: &Context,
    key: &ResourceKey,
    meta: &ObjectMeta,
) -> Result<(), DeliveryError> {
    if !has_finalizer(meta) {
        return Ok(());
    }
    let name = key.name();
    let fresh = Api::<ProviderCredential>::namespaced(ctx.client.clone(), key.namespace())
        .list_metadata(&ListParams::default().fields(&format!("metadata.name={name}")))
        .await
        .map_err(api_error("read the finalizers"))?
        .items
        .into_iter()
        .find(|pc| pc.metadata.uid.as_deref() == Some(key.uid()));
    match fresh {
        Some(fresh) => finalize(ctx, key, &fresh.metadata).await,
        None => Ok(()),
    }
}

/// The finalizer goes, and nothing else of the list: the resourceVersion is a precondition.
pub(super) async fn release_finalizer(
    ctx: &Context,
    key: &ResourceKey,
    meta: &ObjectMeta,
) -> Result<(), DeliveryError> {
    let kept: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != DELIVERY_FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": meta.resource_version, "finalizers": kept}
    });
    resources(ctx, key.namespace())
        .patch(key.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error("remove the finalizer"))?;
    Ok(())
}

/// A resource being deleted (readable or not: only its metadata is used): every copy it
/// made goes, found by a list of their labels so nothing depends on a watch being complete,
/// then its finalizer.
pub async fn finalize(
    ctx: &Context,
    key: &ResourceKey,
    meta: &ObjectMeta,
) -> Result<(), DeliveryError> {
    if !has_finalizer(meta) {
        return Ok(());
    }
    let uid = key.uid();
    let source = format!("{}/{}", key.namespace(), key.name());
    let all: Api<PartialObjectMeta<Secret>> = Api::all(ctx.client.clone());
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{DELIVERED_FROM_UID_LABEL}={uid},!{CREDENTIALS_LABEL}"
    );
    let listed = all
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error("list the copies"))?;
    for copy in listed {
        // Only copies: no owner, and naming this resource.
        let names_source = copy
            .annotations()
            .get(DELIVERED_FROM_ANNOTATION)
            .is_some_and(|from| *from == source);
        if !copy.owner_references().is_empty() || !names_source {
            continue;
        }
        // Listed by an API server, a copy has both; without them it could not be removed.
        let (Some(namespace), Some(uid)) = (copy.namespace(), copy.uid()) else {
            continue;
        };
        let removal = Removal {
            namespace,
            name: copy.name_any(),
            uid,
        };
        if let Removed::Retry(reason) = remove(ctx, &removal).await {
            return Err(DeliveryError::Api {
                action: "remove a copy",
                reason,
                conflict: false,
            });
        }
    }
    info!("copies in other namespaces removed; releasing the finalizer");
    release_finalizer(ctx, key, meta).await
}

/// How a removal ended.
pub(super) enum Removed {
    /// Gone, or no longer this resource's to remove.
    Done,
    /// The API could not be reached or failed: try again.
    Retry(String),
}

/// Removes one copy, that very object (its UID is a precondition). A copy that became
/// someone else's (replaced, relabelled: the admission policy refuses the delete, 403) is left
/// alone rather than retried forever.
pub(super) async fn remove(ctx: &Context, removal: &Removal) -> Removed {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &removal.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: None,
            uid: Some(removal.uid.clone()),
        }),
        ..DeleteParams::default()
    };
    let outcome = match api.delete(&removal.name, &params).await {
        Ok(_) => {
            info!(namespace = %removal.namespace, secret = %removal.name, "copy removed");
            Removed::Done
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Removed::Done,
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 409 | 422) => {
            warn!(namespace = %removal.namespace, secret = %removal.name, error = %short_api_error(&kube::Error::Api(e)),
                "a copy is no longer this resource's to remove; left alone");
            Removed::Done
        }
        Err(e) => Removed::Retry(short_api_error(&e)),
    };
    if let (Removed::Done, Some(delivery)) = (&outcome, &ctx.delivery) {
        delivery.copies.forget(&removal.namespace, &removal.name);
    }
    outcome
}

//! One controller: its reconciles, each behind its namespace's rate, and their error policy.

use std::sync::Arc;
use std::time::Duration;

pub use crate::controller::steps::context::Context;
use crate::controller::steps::reconcile::{ReconcileError, reconcile_guarded};
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, reflector};
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::api::{Guarded, ResourceKey};
use crate::rotation;

/// Runs the controller until the gate closes (shutdown, or a lost lease).
pub(super) async fn run_controller(
    controller: Controller<Guarded>,
    ctx: Arc<Context>,
    due: Arc<crate::controller::caches::due::Due<Guarded>>,
    cached: reflector::Store<Guarded>,
) {
    controller
        .graceful_shutdown_on({
            let ctx = ctx.clone();
            async move { ctx.gate.stopped().await }
        })
        .run(
            move |pc, ctx| reconcile_one(pc, ctx, due.clone(), cached.clone()),
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                // Benign: the next version of the object is already queued.
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) if e.is_stale() => {}
                // A resource this instance does not hold: the owner of a managed Secret in
                // another shard (the Secret watch cannot select by the owner's labels), or one
                // just deleted.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(object = %obj, "not a resource this instance holds; nothing to do")
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
                Ok(_) => {}
            }
        })
        .await;
}

/// One reconcile, unless its namespace is over its rate (then requeued for its turn, with no
/// API call), and the next one scheduled.
async fn reconcile_one(
    pc: Arc<Guarded>,
    ctx: Arc<Context>,
    due: Arc<crate::controller::caches::due::Due<Guarded>>,
    cached: reflector::Store<Guarded>,
) -> Result<Action, ReconcileError> {
    // The one key of this reconcile: every cache and series of the resource goes by it.
    let key = ResourceKey::of(pc.meta())?;
    if let Some(wait) = ctx.reconcile_rate.admit(&key) {
        debug!(namespace = %key.namespace(), name = %key.name(), wait_ms = wait.as_millis(), "over the namespace's reconcile rate; requeued");
        return Ok(due.next(&key, pc, Some(wait)));
    }
    let next = reconcile_guarded(pc.clone(), &key, ctx.clone()).await?;
    // Deleted while it ran: nothing to schedule (its Delete has gone by).
    let current = cached.get(&ObjectRef::from(pc.as_ref()));
    if current.is_none_or(|c| c.uid() != pc.uid()) {
        due.forget(&key);
        // Its Delete may have come before this reconcile detached a request: whatever that
        // request leaves is dropped rather than kept for a resource that is gone.
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    Ok(due.next(&key, pc, next))
}

/// Each watch feeding the controller backs off on its own (`default_backoff`). The
/// controller's default extra layer over all of them together would pause every watch for up
/// to 30 s, doubling on an error in any one (after an API-server restart each watch reports
/// 410 Gone in turn): refresh requests and changes went unseen for over a minute.
pub(super) struct ShortPause;

impl Iterator for ShortPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

impl kube::runtime::utils::Backoff for ShortPause {
    fn reset(&mut self) {}
}

/// Kubernetes-side errors back off per resource (capped, jittered); a stale copy is not a
/// failure: the newer version is already queued.
fn error_policy(pc: Arc<Guarded>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error.metric_reason());
    let key = match ResourceKey::of(pc.meta()) {
        Ok(key) => key,
        // Retrying cannot give it what it lacks; a change to it comes as an event.
        Err(missing) => {
            warn!(name = %pc.name_any(), error = %missing, "reconcile refused; waiting for a change");
            return Action::await_change();
        }
    };
    let (namespace, name) = (key.namespace(), key.name());
    if error.is_stale() {
        debug!(%namespace, %name, "stale copy; reconciling the new version");
        return Action::requeue(Duration::from_secs(1));
    }
    let attempts = ctx.count_attempt(&key, true);
    let delay = rotation::backoff(attempts, None, rand::random());
    warn!(%namespace, %name, error = %error, retry_in_s = delay.as_secs(), "reconcile error; retrying");
    Action::requeue(delay)
}

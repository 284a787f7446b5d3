//! One reconcile: observe → plan (pure) → execute → status_after (pure) → report.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
#[cfg(feature = "e2e")]
use kube::ResourceExt;
use kube::{Api, Resource};
use tracing::{Instrument, debug, info_span, warn};

use super::context::Context;
use super::execute::{ExecuteError, Executed, Started, execute};
use super::executed::Parked;
use super::in_flight::Found;
use super::observe::{observe, store_held_state};
use super::report::{ReportError, report, report_unreadable};
use crate::api::{Guarded, MissingIdentity, ProviderCredential, ResourceKey};
use crate::conditions::Reason;
use crate::leader::Withheld;
use crate::rotation::{self, Baseline, Outcome, Plan, Planned, Step};
use crate::secrets::SecretsError;

/// Failures of the Kubernetes side; provider failures are status, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Execute(ExecuteError),
    #[error(transparent)]
    Report(ReportError),
    #[error(transparent)]
    Delivery(#[from] super::finalizer::DeliveryError),
    #[error(transparent)]
    Identity(#[from] MissingIdentity),
}

impl ReconcileError {
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ReconcileError::Secrets(_) | ReconcileError::Execute(ExecuteError::Secrets(_)) => {
                "SecretsApi"
            }
            ReconcileError::Execute(ExecuteError::Task(_)) => "Task",
            ReconcileError::Report(ReportError::StaleObject) => "StaleObject",
            ReconcileError::Report(ReportError::Status(_)) => "StatusApi",
            ReconcileError::Delivery(_) => "DeliveryApi",
            ReconcileError::Identity(_) => "MissingIdentity",
        }
    }

    /// Benign: the next version of the object is already queued.
    pub fn is_stale(&self) -> bool {
        match self {
            ReconcileError::Report(ReportError::StaleObject) => true,
            ReconcileError::Delivery(e) => e.is_stale(),
            _ => false,
        }
    }
}

/// Fault injection for the end-to-end tests only (the `e2e` feature; never in a release
/// build): a resource with this annotation panics in its reconcile.
#[cfg(feature = "e2e")]
const TEST_PANIC_ANNOTATION: &str = "tokenrotator.dev/test-panic";

/// How soon a resource wants to be reconciled again, if nothing changes before
/// (`None`: only when something does).
pub type Next = Option<Duration>;

/// A panic while handling one resource (a bug) must not stop the others: it becomes a
/// condition on that resource, a metric, and a retry with backoff.
pub async fn reconcile_guarded(
    guard: Arc<Guarded>,
    key: &ResourceKey,
    ctx: Arc<Context>,
) -> Result<Next, ReconcileError> {
    let pc = match &guard.0 {
        Ok(pc) => pc,
        Err(invalid) => return unreadable(&ctx, key, &guard, invalid).await,
    };
    let attempt = AssertUnwindSafe(reconcile(pc, key, &ctx)).catch_unwind();
    match attempt.await {
        Ok(result) => result,
        Err(_) => {
            // The panic hook logged where it happened; its text is never repeated.
            let after = rotation::status_after_panic(pc, Timestamp::now(), ctx.attempts(key));
            ctx.count_attempt(key, true);
            let span = info_span!("reconcile", namespace = %key.namespace(), name = %key.name());
            warn!(parent: &span, "a bug stopped this reconcile; reported on the resource");
            report(&ctx, key, pc, &after)
                .await
                .map_err(ReconcileError::Report)?;
            Ok(after.requeue)
        }
    }
}

/// The resource could not be read (a field the operator cannot parse): say so on it, in
/// its status, and wait for it to change.
async fn unreadable(
    ctx: &Context,
    key: &ResourceKey,
    guard: &Guarded,
    invalid: &kube::core::error_boundary::InvalidObject,
) -> Result<Next, ReconcileError> {
    let (namespace, name) = (key.namespace(), key.name());
    if guard.meta().deletion_timestamp.is_some() {
        // Its copies in other namespaces go even though its spec cannot be read.
        if crate::controller::caches::budget::is_stub(invalid) {
            super::finalizer::finalize_stub(ctx, key, guard.meta()).await?;
        } else {
            super::finalizer::finalize(ctx, key, guard.meta()).await?;
        }
        return Ok(None);
    }
    // A refresh token held for it is stored first, whatever became of the spec.
    if let Some((pc, write)) = ctx.unstored_state(key) {
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
        store_held_state(ctx, key, &pc, &secrets, write).await?;
    }
    if !ctx.first_report_of_unreadable(key, guard.meta().generation) {
        return Ok(None);
    }
    warn!(%namespace, %name, error = %invalid, "cannot read this ProviderCredential");
    // A stub over its namespace's cache budget says itself what to do (budget.rs).
    let message = if crate::controller::caches::budget::is_stub(invalid) {
        invalid.error.clone()
    } else {
        format!("the operator cannot read this resource ({invalid}); fix the field it names")
    };
    let message = crate::provider::scrub::truncate_chars(&message, 500);
    report_unreadable(ctx, key, guard, &message)
        .await
        .map_err(ReconcileError::Report)?;
    Ok(None)
}

pub async fn reconcile(
    pc: &ProviderCredential,
    key: &ResourceKey,
    ctx: &Arc<Context>,
) -> Result<Next, ReconcileError> {
    let span = info_span!("reconcile", namespace = %key.namespace(), name = %key.name());
    async move {
        if pc.meta().deletion_timestamp.is_some() {
            // Owned Secrets are garbage-collected through their owner references; copies in
            // other namespaces are removed here, before the finalizer goes.
            super::finalizer::finalize(ctx, key, pc.meta()).await?;
            return Ok(None);
        }
        if let Some(done) = in_flight(ctx, key, pc).await {
            return done;
        }
        if ctx.predates_own_status_write(key, pc.meta().resource_version.as_deref()) {
            // Triggered (by a Secret this operator just wrote) before the watch brought
            // its status write: the newer copy comes with its own reconcile. Anything
            // written from this one would be refused as stale.
            debug!("the cached copy predates this operator's status write; waiting for it");
            return Ok(Some(CACHE_BEHIND_RETRY));
        }
        if super::finalizer::hold_finalizer(ctx, key, pc).await? {
            // The watch brings the new version, which goes on from here.
            return Ok(None);
        }
        #[cfg(feature = "e2e")]
        if pc.annotations().contains_key(TEST_PANIC_ANNOTATION) {
            panic!("test fault: tokenrotator.dev/test-panic");
        }
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), key.namespace());

        let observed = observe(ctx, key, pc, &secrets).await?;
        let Planned {
            baseline,
            step,
            discard_held,
        } = rotation::plan(&observed);
        if discard_held {
            ctx.drop_token(key);
        }
        let executed;
        // The target as this reconcile's request wrote it, for spec.delivery's copies.
        let mut written_target = None;
        let outcome = match &step {
            Step::Wait(at) => Outcome::Wait(*at),
            Step::HoldRejected => Outcome::HoldRejected,
            Step::Blocked(b) => Outcome::Blocked(b),
            Step::Rotate(plan) => {
                match execute(ctx, key, pc, &secrets, (**plan).clone(), &baseline).await {
                    // Its end is parked and brings the next reconcile.
                    Started::Detached => return Ok(None),
                    // Waits in line; a request of its namespace ending wakes it.
                    Started::Queued(recheck) => return Ok(Some(recheck)),
                    Started::Done(result) => {
                        executed = result.map_err(ReconcileError::Execute)?;
                    }
                }
                written_target = issued_target(&executed);
                match reported(ctx, plan, &executed) {
                    Ok(outcome) => outcome,
                    // Nothing was sent and nothing changed: no status write.
                    Err(next) => return Ok(next),
                }
            }
        };
        let blocked = match &step {
            Step::Blocked(b) => Some(b.reason()),
            _ => None,
        };
        finish(ctx, key, pc, &baseline, outcome, written_target, blocked).await
    }
    .instrument(span)
    .await
}

/// How soon a reconcile that found the cache behind its own status write looks again, in
/// case the watch event that should bring it is lost (it normally comes within
/// milliseconds and reconciles by itself).
const CACHE_BEHIND_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How soon a resource is looked at again after a request that ended without its reconcile
/// was reported (that look asks for the real next time).
const AFTER_PARKED: std::time::Duration = std::time::Duration::from_secs(1);

/// How soon a rotation withheld by an unconfirmed lease is tried again (the lease watch
/// confirms the next renewal within about this long).
const WITHHELD_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// A request the lease has kept back for over a minute: reported on the resource (since
/// when, in whole seconds: the same wait gives the same status, written once), instead of
/// retried in silence.
fn kept_back(ctx: &Context, plan: &Plan, withheld: Withheld) -> Option<Outcome<'static>> {
    if withheld != Withheld::LeaseUnconfirmed {
        return None;
    }
    let since = ctx
        .gate
        .withheld_since(plan.config.limits.overall_timeout)?;
    let since = Timestamp::from_second(Timestamp::try_from(since).ok()?.as_second()).ok()?;
    Some(Outcome::Withheld {
        since,
        reason: withheld.reason(),
        retry: WITHHELD_RETRY,
    })
}

/// A token request of this resource still in flight (its end brings the next reconcile;
/// meanwhile nothing is decided twice), or one that ended without its reconcile (reported
/// now): what this reconcile returns. `None`: nothing in flight.
async fn in_flight(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
) -> Option<Result<Next, ReconcileError>> {
    match ctx.in_flight.take(key) {
        Found::Nothing => None,
        Found::Running => {
            debug!("a token request of this resource is still in flight");
            Some(Ok(None))
        }
        Found::Finished(parked) => Some(report_parked(ctx, key, pc, parked).await),
    }
}

/// status_after, then the features that add to its report, then the report: how every
/// reconcile that decided something ends.
async fn finish(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    baseline: &Baseline,
    outcome: Outcome<'_>,
    written_target: Option<&Secret>,
    blocked: Option<Reason>,
) -> Result<Next, ReconcileError> {
    let mut after =
        rotation::status_after(pc, baseline, outcome, Timestamp::now(), ctx.attempts(key));
    super::rollout::restart_workloads(ctx, key, pc, &mut after).await;
    super::delivery::deliver(ctx, key, pc, &mut after, written_target, blocked).await;
    report(ctx, key, pc, &after)
        .await
        .map_err(ReconcileError::Report)?;
    ctx.count_attempt(key, after.backing_off);
    ctx.metrics.reconciled();
    Ok(after.requeue)
}

/// A request that ended after its reconcile returned: reported now, from what that
/// reconcile saw. If the report fails, it stays parked for the next attempt.
async fn report_parked(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    parked: Box<Parked>,
) -> Result<Next, ReconcileError> {
    let Parked {
        pc: started_from,
        baseline,
        plan,
        executed,
    } = *parked;
    let executed = executed.map_err(ReconcileError::Execute)?;
    let outcome = match reported(ctx, &plan, &executed) {
        Ok(outcome) => outcome,
        Err(next) => return Ok(next),
    };
    let result = finish(
        ctx,
        key,
        pc,
        &baseline,
        outcome,
        issued_target(&executed),
        None,
    )
    .await
    // What changed while the request was in flight (the spec, a refresh request) was
    // seen by reconciles that did nothing: look again at once.
    .map(|_| Some(AFTER_PARKED));
    if result.is_err() {
        let parked = Parked {
            pc: started_from,
            baseline,
            plan,
            executed: Ok(executed),
        };
        ctx.in_flight.finish(key, parked);
    }
    result
}

/// At shutdown: the requests that ended after their reconciles returned are reported from
/// what those reconciles saw (no reconcile comes for them any more).
pub async fn report_parked_at_exit(ctx: &Context) {
    for parked in ctx.in_flight.take_finished() {
        let (key, parked) = *parked;
        let pc = parked.pc.clone();
        let span = info_span!("reconcile", namespace = %key.namespace(), name = %key.name());
        if let Err(e) = report_parked(ctx, &key, &pc, Box::new(parked))
            .instrument(span)
            .await
        {
            warn!(error = %e, "the outcome of a request that ended at shutdown is not reported");
        }
    }
}

/// The target as the request's own write left it, for spec.delivery's copies.
fn issued_target(executed: &Executed) -> Option<&Secret> {
    match executed {
        Executed::Issued { target, .. } => target.as_deref(),
        _ => None,
    }
}

/// A withheld request sent nothing and changed nothing: no status write.
fn withheld_retry(withheld: Withheld) -> Next {
    match withheld {
        Withheld::ShuttingDown => None,
        Withheld::LeaseUnconfirmed => Some(WITHHELD_RETRY),
    }
}

/// The outcome to report. `Err`: nothing was sent (withheld, or no longer wanted) and nothing
/// is reported (unless the lease kept it back for long), only when to look again.
fn reported<'a>(
    ctx: &Context,
    plan: &'a Plan,
    executed: &'a Executed,
) -> Result<Outcome<'a>, Next> {
    Ok(match executed {
        Executed::NotSent => return Err(Some(AFTER_PARKED)),
        Executed::Withheld(withheld) => {
            return kept_back(ctx, plan, *withheld).ok_or(withheld_retry(*withheld));
        }
        Executed::Issued { token, .. } => Outcome::Issued { plan, token },
        Executed::Deferred { until } => Outcome::Deferred { until: *until },
        Executed::Failed { error, chain_end } => {
            warn!(reason = error.class().reason(), error = %error, "token request failed");
            Outcome::Failed {
                plan,
                error,
                chain_end: *chain_end,
            }
        }
        Executed::NotStored(failure) => {
            warn!(reason = failure.reason.reason(), message = %failure.message, "token not stored");
            Outcome::NotStored { plan, failure }
        }
    })
}

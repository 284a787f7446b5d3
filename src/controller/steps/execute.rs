//! Execute: one token request (rate limited), then persist in the crash-safe order — the
//! settled state (with any new refresh token) before the target Secret. Runs as its own task so
//! a cancelled reconcile cannot stop it half-way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tracing::{Instrument, debug, info, warn};

use super::context::Context;
use super::executed::Parked;
use crate::api::{ProviderCredential, ResourceKey};
use crate::conditions::Reason;
use crate::provider::{FetchError, GrantRequest, IssuedToken};
use crate::rotation::{
    self, Baseline, ChainWrite, HeldToken, Plan, SecretWrite, Slot, StateView, StoreFailure,
    TargetView, TokenSource,
};
use crate::secrets::{self, SecretsError, StateStored};
use crate::state::StateData;
use crate::target::{self, ObservedTarget};

pub use super::executed::{ExecuteError, Executed, superseded};

/// How long a reconcile waits for its token request before the request goes on without it:
/// a request that waits for its namespace's turn or for a slow endpoint must not hold one of
/// the reconcile slots every tenant shares. A request answered within it is reported by the
/// reconcile that started it, as before.
pub const DETACH_AFTER: Duration = Duration::from_millis(250);

/// How a started request went, as far as its reconcile knows.
pub enum Started {
    Done(Result<Executed, ExecuteError>),
    /// Still running: its end is parked with the context and brings another reconcile.
    Detached,
    /// Not started: it would wait for its turn. The resource waits in line (a request of its
    /// namespace ending wakes it), and is reconciled again after this at the latest.
    Queued(Duration),
}

pub async fn execute(
    ctx: &Arc<Context>,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: Plan,
    baseline: &Baseline,
) -> Started {
    let (namespace, name) = (key.namespace(), key.name());
    // A request that would wait for its turn is not started: the resource waits in line, as
    // a name, and plans afresh when its turn comes.
    if let Some(recheck) = ctx.request_wait(namespace, &plan.config) {
        ctx.turns.wait(namespace, name);
        debug!("the token request waits for its turn");
        return Started::Queued(recheck);
    }
    ctx.turns.going(namespace, name);
    let wait = DETACH_AFTER;
    let plan = Arc::new(plan);
    let (answer, mut answered) = tokio::sync::oneshot::channel();
    let parked = (baseline.clone(), plan.clone());
    // One copy of the resource for the task and its parked end: at start-up hundreds of
    // requests wait for their turn at once, each holding what it needs until then.
    let (ctx_, pc_, api_) = (ctx.clone(), Arc::new(pc.clone()), api.clone());
    let key_ = key.clone();
    let task = async move {
        let (ctx, pc, key) = (ctx_, pc_, key_);
        // In this task (not one more): a panic's text is never repeated, it could hold
        // anything (the hook logged where).
        let request = std::panic::AssertUnwindSafe(run(&ctx, &key, &pc, &api_, &plan));
        let result = futures::FutureExt::catch_unwind(request)
            .await
            .map_err(|_| ExecuteError::Task("a bug (panic)"));
        // Its slot is free again: the next resource waiting in its namespace goes.
        ctx.wake_next(key.namespace());
        if let Err(executed) = answer.send(result.and_then(|r| r)) {
            // No reconcile waits for it any more: park it, and have the resource reconciled.
            let (baseline, plan) = parked;
            if ctx.in_flight.finish(
                &key,
                Parked {
                    pc: pc.clone(),
                    baseline,
                    plan,
                    executed,
                },
            ) {
                ctx.reconcile_soon(&key);
            }
        }
    };
    tokio::spawn(task.in_current_span());
    match tokio::time::timeout(wait, &mut answered).await {
        Ok(result) => Started::Done(result.unwrap_or(Err(ExecuteError::Task("cancelled")))),
        Err(_) => {
            ctx.in_flight.detach(key);
            // From here on the task parks its result; one sent before is taken here.
            answered.close();
            match answered.try_recv() {
                Ok(result) => {
                    ctx.in_flight.reclaim(key);
                    Started::Done(result)
                }
                Err(_) => {
                    debug!("the token request goes on without this reconcile");
                    Started::Detached
                }
            }
        }
    }
}

async fn run(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
) -> Result<Executed, ExecuteError> {
    let obtained = match &plan.source {
        TokenSource::Held(token) => {
            info!(
                reason = plan.due.describe(),
                "writing a token obtained earlier"
            );
            Obtained {
                rendered: render(pc, plan, token),
                token: (**token).clone(),
                retire_state: None,
            }
        }
        TokenSource::Request(grant) => match request(ctx, key, pc, api, plan, grant).await {
            Ok(obtained) => obtained,
            Err(outcome) => return Ok(outcome),
        },
    };
    // Boxed, like the request's later stages: the task waiting for its turn holds only
    // what waiting needs, not room for every stage after it.
    Ok(Box::pin(write(ctx, key, pc, api, plan, obtained)).await)
}

/// A token to write, and a state Secret to remove once it is written (left holding nothing
/// it is needed for).
struct Obtained {
    token: IssuedToken,
    rendered: Result<target::DesiredTarget, target::TargetError>,
    retire_state: Option<SecretWrite>,
}

/// One token request, its turn waited for, its answer settled and the state stored (the
/// refresh token first, before anything else can go wrong); anything else is the outcome.
async fn request(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
    grant: &GrantRequest,
) -> Result<Obtained, Executed> {
    // Held until the answer is stored: the namespace's bound counts whole requests.
    let _slot = admit(ctx, key, pc, plan, grant).await?;
    let answer = Box::pin(ask(ctx, key, plan, grant)).await?;
    let settled = rotation::settle(plan, answer.as_ref());
    let token = match answer {
        Ok(token) => token,
        Err(error) => {
            match Box::pin(hold_and_store(ctx, key, pc, api, plan, settled.state)).await {
                // The refusal came from the newer chain another writer stored.
                Ok(StateStored::Superseded { discarded }) => {
                    return Err(Executed::NotStored(superseded(&ctx.metrics, discarded)));
                }
                Ok(StateStored::Written(_)) => {}
                // Held in memory and stored first thing next time; the failure is still
                // reported now.
                Err(e) => warn!(error = %e, "state not stored after a failed request"),
            }
            return Err(Executed::Failed {
                error,
                chain_end: settled.chain_end,
            });
        }
    };
    ctx.hold_token(key, held(plan, &token));
    let stored = Box::pin(hold_and_store(
        ctx,
        key,
        pc,
        api,
        plan,
        settled.state.clone(),
    ));
    let resource_version = match stored.await {
        Ok(StateStored::Written(rv)) => rv,
        Ok(StateStored::Superseded { discarded }) => {
            ctx.drop_token(key);
            return Err(Executed::NotStored(superseded(&ctx.metrics, discarded)));
        }
        Err(e) => return Err(Executed::NotStored(write_failure(&e))),
    };
    let retire_state =
        (!rotation::needs_state_secret(&settled.state, plan.sealed_inputs.is_some()))
            .then(|| resource_version.clone())
            .flatten()
            .map(|rv| SecretWrite {
                name: plan.state_secret.name.clone(),
                resource_version: Some(rv),
            });
    let rendered = render(pc, plan, &token);
    if rendered.is_err() {
        Box::pin(remember_unrenderable(
            ctx,
            key,
            pc,
            api,
            plan,
            settled.state,
            resource_version,
        ))
        .await;
    }
    Ok(Obtained {
        token,
        rendered,
        retire_state,
    })
}

/// A token obtained, held until it is written.
fn held(plan: &Plan, token: &IssuedToken) -> HeldToken {
    HeldToken {
        token: token.clone(),
        inputs: plan.inputs.clone(),
        refresh_handled: plan.refresh_handled.clone(),
    }
}

/// The request's turn: the gate, the resource's budget, the namespace's slot and pace; what
/// changed while it waited is not acted on with what was planned before.
async fn admit(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    plan: &Plan,
    grant: &GrantRequest,
) -> Result<super::endpoints::RequestSlot, Executed> {
    ctx.permit_request(&plan.config)
        .map_err(Executed::Withheld)?;
    if let Err(until) = ctx.spend_request(key) {
        warn!(%until, "request budget spent; pausing this resource");
        return Err(Executed::Deferred { until });
    }
    info!(
        reason = plan.due.describe(),
        grant = grant.label(&plan.config),
        "requesting a token"
    );
    let asked = Instant::now();
    let slot = match ctx.rate_limit(key.namespace(), &plan.config).await {
        Ok(slot) => slot,
        Err(withheld) => {
            ctx.refund_request(key);
            return Err(Executed::Withheld(withheld));
        }
    };
    if asked.elapsed() >= super::recheck::RECHECK_AFTER
        && let Err(why) = Box::pin(super::recheck::still_wanted(ctx, key, pc, plan)).await
    {
        ctx.refund_request(key);
        info!(%why, "the token request that waited is not sent");
        return Err(Executed::NotSent);
    }
    Ok(slot)
}

/// Sends the request. A ServiceAccount token is minted now, for this request only; without it
/// no request is sent.
async fn ask(
    ctx: &Context,
    key: &ResourceKey,
    plan: &Plan,
    grant: &GrantRequest,
) -> Result<Result<IssuedToken, FetchError>, Executed> {
    let credentials = match super::service_account::credentials_for(
        &ctx.client,
        key.namespace(),
        &plan.config,
        &plan.credentials,
    )
    .await
    {
        Ok(credentials) => credentials,
        Err(failure) => {
            ctx.refund_request(key);
            return Err(Executed::NotStored(failure));
        }
    };
    let started = Instant::now();
    let answer = ctx.tokens.fetch(&plan.config, &credentials, grant).await;
    drop(credentials);
    ctx.metrics
        .token_request(&plan.config, &answer, started.elapsed());
    if let Err(e @ FetchError::RateLimited { .. }) = &answer {
        ctx.rate_limited(key.namespace(), &plan.config, e.retry_after());
    }
    debug!(
        ok = answer.is_ok(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "token request answered"
    );
    Ok(answer)
}

fn render(
    pc: &ProviderCredential,
    plan: &Plan,
    token: &IssuedToken,
) -> Result<target::DesiredTarget, target::TargetError> {
    target::desired(
        &pc.spec.target,
        token,
        plan.refresh_handled.as_deref(),
        plan.sealed_inputs.as_deref(),
    )
}

/// A target that failed to render with the real token is remembered with the state, so no
/// reconcile requests a token for these target settings again, whatever happens to the status.
async fn remember_unrenderable(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
    state: crate::state::StateData,
    resource_version: Option<String>,
) {
    let mut remembered = ChainWrite {
        base: state.refresh_token.clone(),
        state,
    };
    remembered.state.unrenderable_target = Some(crate::digest::target_settings(&pc.spec.target));
    let at = SecretWrite {
        name: plan.state_secret.name.clone(),
        resource_version,
    };
    ctx.hold_state(key, pc, remembered.clone());
    match secrets::write_state(api, pc, &at, &remembered).await {
        Ok(stored) => {
            ctx.stored_state(key, &remembered);
            remember_state(ctx, key, &at.name, &stored, &remembered.state);
        }
        Err(e) => warn!(error = %e, "could not remember the template failure"),
    }
}

/// Writes the token to the target Secret (then removes a state Secret left with nothing to
/// hold); a failure to store is the outcome, never an error.
async fn write(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
    obtained: Obtained,
) -> Executed {
    let Obtained {
        token,
        rendered,
        retire_state,
    } = obtained;
    let desired = match rendered {
        Ok(d) => d,
        Err(e) => {
            // The plan rendered a token-shaped placeholder; this token still failed.
            ctx.drop_token(key);
            return Executed::NotStored(StoreFailure {
                reason: Reason::TemplateFailed,
                message: format!(
                    "{e}, with the token the provider issued; fix spec.target.template (the token was not stored, and no token is requested until the template changes)"
                ),
                retry: false,
            });
        }
    };
    let written = TargetView {
        resource_version: None,
        secret_type: Some(desired.secret_type.clone()),
        token: ObservedTarget::from_annotations(&desired.annotations),
    };
    let target = match secrets::write_target(api, pc, &plan.target_secret, desired).await {
        Ok(target) => {
            ctx.views.remember_written_target(
                key,
                &plan.target_secret.name,
                TargetView {
                    resource_version: target.metadata.resource_version.clone(),
                    ..written
                },
            );
            pc.spec.delivery.is_some().then(|| Box::new(target))
        }
        Err(e) => {
            let failure = forget_target(ctx, key, pc, api, &e)
                .await
                .unwrap_or_else(|| write_failure(&e));
            return Executed::NotStored(failure);
        }
    };
    ctx.drop_token(key);
    debug!("target Secret written");
    if let Some(state) = retire_state {
        retire(ctx, key, api, state).await;
    }
    Executed::Issued { token, target }
}

/// Removes a state Secret whose last write left it nothing to hold (its content is already
/// what it must be, so a failure here loses nothing: it is tried again at the next rotation).
async fn retire(ctx: &Context, key: &ResourceKey, api: &Api<Secret>, state: SecretWrite) {
    let Some(resource_version) = state.resource_version else {
        return;
    };
    match secrets::delete_state(api, &state.name, &resource_version).await {
        Ok(true) => {
            ctx.views.remember_state(key, &state.name, None);
            debug!("state Secret removed: nothing left for it to hold");
        }
        Ok(false) => debug!("state Secret changed meanwhile; kept"),
        Err(e) => {
            warn!(error = %e, "could not remove the state Secret; tried again at the next rotation")
        }
    }
}

/// After a failed target write, the target is read again: at once when a Secret was found
/// there (the create met one the watch of managed Secrets does not show). Someone else's: the
/// conflict is reported now (the status then has every later reconcile read first, across
/// restarts too); the token stays held until it expires, so deleting that Secret costs no
/// new request. Otherwise it is read next time (it may be gone, or changed under us).
async fn forget_target(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    e: &SecretsError,
) -> Option<StoreFailure> {
    if matches!(e, SecretsError::NotOwned(_)) {
        match super::observe::reread_target(ctx, key, api, pc).await {
            Ok(Slot::Foreign) => {
                let conflict = rotation::target_conflict(&pc.spec.target.secret_name);
                return Some(StoreFailure {
                    reason: conflict.reason(),
                    message: conflict.message(),
                    retry: true,
                });
            }
            Ok(_) => return None,
            Err(_) => {}
        }
    }
    ctx.views
        .remember_target(key, &pc.spec.target.secret_name, None);
    None
}

/// Holds a changed state in memory, then stores it as a compare-and-swap on the chain the
/// plan started from: if the write fails, the next reconcile (or shutdown) stores it before
/// anything else instead of resending a replaced refresh token.
async fn hold_and_store(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
    state: StateData,
) -> Result<StateStored, SecretsError> {
    if state == plan.state {
        return Ok(StateStored::Written(
            plan.state_secret.resource_version.clone(),
        ));
    }
    // None exists and nothing needs one: the inputs digest goes on the target.
    if plan.state_secret.resource_version.is_none()
        && !rotation::needs_state_secret(&state, plan.sealed_inputs.is_some())
    {
        return Ok(StateStored::Written(None));
    }
    let write = ChainWrite::after(plan, state);
    ctx.hold_state(key, pc, write.clone());
    let stored = match secrets::write_state(api, pc, &plan.state_secret, &write).await {
        Ok(stored) => stored,
        Err(e) => {
            // Read it again next time: it may be gone, or changed under us.
            ctx.views.remember_state(key, &plan.state_secret.name, None);
            return Err(e);
        }
    };
    ctx.stored_state(key, &write);
    remember_state(ctx, key, &plan.state_secret.name, &stored, &write.state);
    debug!("state Secret written");
    Ok(stored)
}

/// What was stored is what the next reconcile sees, without reading it back.
fn remember_state(
    ctx: &Context,
    key: &ResourceKey,
    name: &str,
    stored: &StateStored,
    state: &StateData,
) {
    match stored {
        StateStored::Written(resource_version) => ctx.views.remember_written_state(
            key,
            name,
            StateView {
                resource_version: resource_version.clone(),
                data: state.clone(),
            },
        ),
        // A newer chain is stored: read it.
        StateStored::Superseded { .. } => ctx.views.remember_state(key, name, None),
    }
}

fn write_failure(e: &SecretsError) -> StoreFailure {
    StoreFailure {
        reason: Reason::SecretWriteFailed,
        message: format!(
            "the token was obtained but not stored ({e}); {}. It is kept in memory and written on the next attempt, without a new token request",
            e.remedy()
        ),
        retry: true,
    }
}

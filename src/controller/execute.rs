//! Execute: one token request (rate limited), then persist in the crash-safe order — the
//! settled state (with any new refresh token) before the target Secret. Runs as its own task so
//! a cancelled reconcile cannot stop it half-way.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{Instrument, debug, info};

use super::context::Context;
use crate::api::ProviderCredential;
use crate::provider::{FetchError, IssuedToken};
use crate::rotation::{
    self, ChainEnd, HeldToken, Plan, StoreFailure, TEMPLATE_FAILED, TokenSource,
};
use crate::secrets::{self, SecretsError};
use crate::target;

/// Reason of a status whose token could not be written to the Kubernetes API.
pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";

pub enum Executed {
    Issued(IssuedToken),
    Failed {
        error: FetchError,
        chain_end: ChainEnd,
    },
    NotStored(StoreFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("the token task stopped unexpectedly: {0}")]
    Task(String),
}

pub async fn execute(
    ctx: &Arc<Context>,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: Plan,
) -> Result<Executed, ExecuteError> {
    let (ctx, pc, api) = (ctx.clone(), pc.clone(), api.clone());
    tokio::spawn(async move { run(&ctx, &pc, &api, plan).await }.in_current_span())
        .await
        .map_err(|e| ExecuteError::Task(e.to_string()))?
}

async fn run(
    ctx: &Context,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: Plan,
) -> Result<Executed, ExecuteError> {
    let uid = pc.uid().unwrap_or_default();
    let token = match &plan.source {
        TokenSource::Held(token) => {
            info!(
                reason = plan.due.describe(),
                "writing a token obtained earlier"
            );
            (**token).clone()
        }
        TokenSource::Request(grant) => {
            info!(
                reason = plan.due.describe(),
                grant = grant.label(&plan.config),
                "requesting a token"
            );
            ctx.rate_limit(&plan.config).await;
            let started = Instant::now();
            let answer = ctx
                .tokens
                .fetch(&plan.config, &plan.credentials, grant)
                .await;
            ctx.metrics
                .token_request(&plan.config, &answer, started.elapsed());
            debug!(
                ok = answer.is_ok(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "token request answered"
            );
            let settled = rotation::settle(&plan, answer.as_ref());
            if settled.state != plan.state {
                // Held in memory first: if the write fails, the next reconcile stores this
                // state before anything else instead of resending a replaced refresh token.
                ctx.hold_state(&uid, settled.state.clone());
            }
            let token = match answer {
                Ok(token) => token,
                Err(error) => {
                    store_state(ctx, pc, api, &plan, &settled.state).await?;
                    return Ok(Executed::Failed {
                        error,
                        chain_end: settled.chain_end,
                    });
                }
            };
            ctx.hold_token(
                &uid,
                HeldToken {
                    token: token.clone(),
                    inputs: plan.inputs.clone(),
                    refresh_handled: plan.refresh_handled.clone(),
                },
            );
            if let Err(e) = store_state(ctx, pc, api, &plan, &settled.state).await {
                return Ok(Executed::NotStored(write_failure(&e)));
            }
            token
        }
    };
    let desired = match target::desired(&pc.spec.target, &token, plan.refresh_handled.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            // The plan rendered a token-shaped placeholder; this token still failed. Asking
            // again would loop: held until the spec changes.
            ctx.drop_token(&uid);
            return Ok(Executed::NotStored(StoreFailure {
                reason: TEMPLATE_FAILED,
                message: format!(
                    "{e}, with the token the provider issued; fix spec.target.template (the token was not stored)"
                ),
                retry: false,
            }));
        }
    };
    if let Err(e) = secrets::write_target(api, pc, &plan.target_secret, desired).await {
        return Ok(Executed::NotStored(write_failure(&e)));
    }
    ctx.drop_token(&uid);
    debug!("target Secret written");
    Ok(Executed::Issued(token))
}

async fn store_state(
    ctx: &Context,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    plan: &Plan,
    state: &crate::state::StateData,
) -> Result<(), SecretsError> {
    if *state == plan.state {
        return Ok(());
    }
    secrets::write_state(api, pc, &plan.state_secret, state).await?;
    ctx.stored_state(&pc.uid().unwrap_or_default(), state);
    debug!("state Secret written");
    Ok(())
}

fn write_failure(e: &SecretsError) -> StoreFailure {
    StoreFailure {
        reason: SECRET_WRITE_FAILED,
        message: format!(
            "the token was obtained but not stored ({e}); {}. It is kept in memory and written on the next attempt, without a new token request",
            e.remedy()
        ),
        retry: true,
    }
}

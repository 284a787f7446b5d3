//! Fetch and persist, in the crash-safe order: the refresh token reaches the state Secret
//! before the target Secret is written. Runs as its own task so a cancelled reconcile cannot
//! stop it half-way.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::debug;

use super::context::Context;
use super::reconcile::ReconcileError;
use crate::api::{ProviderCredential, state_secret_name};
use crate::provider::{
    Credentials, FetchError, GrantRequest, GrantType, IssuedToken, ProviderConfig, RefreshOutcome,
};
use crate::rotation::GrantChoice;
use crate::secrets;
use crate::state::StateData;
use crate::target;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    No,
    FallBackToPrimary,
    NeedsReauthorization,
}

pub enum RotationOutcome {
    Issued {
        token: IssuedToken,
        state_name: String,
    },
    Failed {
        error: FetchError,
        chain_ended: ChainEnd,
    },
}

/// Everything one fetch-and-persist needs, owned, so it can outlive a cancelled reconcile.
pub struct RotationTask {
    pub pc: ProviderCredential,
    pub secrets: Api<Secret>,
    pub config: ProviderConfig,
    pub credentials: Credentials,
    pub grant: GrantRequest,
    pub choice: GrantChoice,
    pub state: StateData,
    pub state_secret: Option<Secret>,
    pub target_secret: Option<Secret>,
    pub inputs: String,
    pub seed_hash: Option<String>,
    pub code_hash: Option<String>,
    pub uid: String,
    pub refresh_handled: Option<String>,
}

impl RotationTask {
    async fn write_state(&self, name: &str, state: &StateData) -> Result<(), ReconcileError> {
        secrets::write_state(
            &self.secrets,
            &self.pc,
            name,
            self.state_secret.clone(),
            state,
        )
        .await?;
        Ok(())
    }

    pub async fn run(self, ctx: &Context) -> Result<RotationOutcome, ReconcileError> {
        ctx.rate_limit(&self.config).await;
        let started = std::time::Instant::now();
        let result = ctx
            .tokens
            .fetch(&self.config, &self.credentials, &self.grant)
            .await;
        ctx.metrics
            .token_request(&self.config, &result, started.elapsed());
        debug!(
            ok = result.is_ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "token request answered"
        );
        let state_name = state_secret_name(&self.pc.name_any());
        let mut next_state = self.state.clone();
        match result {
            Ok(token) => {
                next_state.inputs_hash = Some(self.inputs.clone());
                next_state.rejected_inputs_hash = None;
                match self.choice {
                    GrantChoice::SeedRefreshToken => next_state.seed_hash = self.seed_hash.clone(),
                    GrantChoice::Primary if self.config.grant == GrantType::AuthorizationCode => {
                        next_state.code_hash = self.code_hash.clone();
                    }
                    _ => {}
                }
                match &token.refresh {
                    RefreshOutcome::NewlyIssued(t) | RefreshOutcome::Rotated(t) => {
                        next_state.refresh_token = Some(t.clone());
                        // Held in memory first: if the write below fails, the next reconcile
                        // stores this value instead of resending the replaced one.
                        ctx.hold_refresh(&self.uid, t.clone());
                    }
                    RefreshOutcome::Kept => {
                        if let GrantRequest::Refresh(sent) = &self.grant {
                            next_state.refresh_token = Some(sent.clone());
                        }
                    }
                    RefreshOutcome::None => next_state.refresh_token = None,
                }
                if next_state != self.state {
                    self.write_state(&state_name, &next_state).await?;
                    ctx.release_refresh(&self.uid);
                    debug!("state Secret written");
                }
                let desired = target::desired(
                    &self.pc.spec.target,
                    &token,
                    self.refresh_handled.as_deref(),
                )
                .expect("templates validated before fetching");
                secrets::write_target(
                    &self.secrets,
                    &self.pc,
                    &self.pc.spec.target.secret_name,
                    self.target_secret.clone(),
                    desired,
                )
                .await?;
                debug!("target Secret written");
                Ok(RotationOutcome::Issued { token, state_name })
            }
            Err(error) => {
                let mut chain_ended = ChainEnd::No;
                let refresh_grant = matches!(self.grant, GrantRequest::Refresh(_));
                if refresh_grant && error.is_invalid_grant() {
                    // Only invalid_grant ends a chain; the dead token is never sent again.
                    next_state.refresh_token = match self.choice {
                        GrantChoice::SeedRefreshToken => next_state.refresh_token,
                        _ => None,
                    };
                    if self.choice == GrantChoice::SeedRefreshToken {
                        next_state.seed_hash = self.seed_hash.clone();
                    }
                    chain_ended = if self.config.grant == GrantType::AuthorizationCode {
                        ChainEnd::NeedsReauthorization
                    } else {
                        ChainEnd::FallBackToPrimary
                    };
                } else if !refresh_grant
                    && self.config.grant == GrantType::AuthorizationCode
                    && error.is_invalid_grant()
                {
                    next_state.code_hash = self.code_hash.clone();
                    chain_ended = ChainEnd::NeedsReauthorization;
                } else if !error.class().is_transient() {
                    next_state.rejected_inputs_hash = Some(self.inputs.clone());
                }
                if next_state != self.state {
                    self.write_state(&state_name, &next_state).await?;
                }
                Ok(RotationOutcome::Failed { error, chain_ended })
            }
        }
    }
}

//! One reconcile: observe → decide (pure) → fetch → persist (state, then target) → status.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use tracing::{Instrument, debug, info, info_span, warn};

use super::context::Context;
use super::rotate::{ChainEnd, RotationOutcome, RotationTask};
use crate::api::resolve::{RenewalPolicy, renewal_policy};
use crate::api::{
    AccessTokenStatus, FailureStatus, ProviderCredential, ProviderCredentialStatus,
    REFRESH_ANNOTATION, RefreshTokenStatus, SecretKeyRef, credentials_from_data, provider_config,
    state_secret_name,
};
use crate::conditions::{self, DEGRADED, READY, reason};
use crate::provider::{
    FetchError, GrantRequest, GrantType, IssuedToken, Param, ProviderConfig, RefreshOutcome,
};
use crate::rotation::{self, CurrentToken, Decision, Facts, GrantChoice, GrantFacts};
use crate::secrets::{self, CredentialsLookup, Owned, SecretsError};
use crate::state::{self, StateData};
use crate::target::{self, ObservedTarget};

/// Failures of the Kubernetes side; provider failures are status, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("cannot update the status: {0}")]
    Status(#[source] kube::Error),
    #[error("the resource changed while it was being reconciled; reconciling the new version")]
    StaleObject,
    #[error("the token task stopped unexpectedly: {0}")]
    Task(String),
}

impl ReconcileError {
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ReconcileError::Secrets(_) => "SecretsApi",
            ReconcileError::Status(_) => "StatusApi",
            ReconcileError::Task(_) => "Task",
            ReconcileError::StaleObject => "StaleObject",
        }
    }
}

/// A fallback look, for changes no watch delivers (e.g. a credentials Secret created without
/// the label).
const RECHECK: Duration = Duration::from_secs(300);
const FIELD_MANAGER: &str = "token-rotator";

/// When to look again: after a delay, or only when something changes.
type Next = Option<Duration>;

pub async fn reconcile(
    pc: Arc<ProviderCredential>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let span = info_span!("reconcile", namespace = %pc.namespace().unwrap_or_default(), name = %pc.name_any());
    async move {
        if pc.meta().deletion_timestamp.is_some() {
            // Owned Secrets are garbage-collected through their owner references.
            return Ok(Action::await_change());
        }
        let mut run = Run::new(&pc, ctx.clone());
        let next = run.reconcile().await?;
        run.finish().await?;
        ctx.metrics.reconciled();
        Ok(next.map_or_else(Action::await_change, Action::requeue))
    }
    .instrument(span)
    .await
}

struct Run<'a> {
    pc: &'a ProviderCredential,
    ctx: Arc<Context>,
    secrets: Api<Secret>,
    uid: String,
    now: Timestamp,
    old: ProviderCredentialStatus,
    status: ProviderCredentialStatus,
    /// The token in the target Secret, if still valid.
    current: Option<ObservedToken>,
}

#[derive(Clone, Debug)]
struct ObservedToken {
    expires_at: Timestamp,
    issued_at: Timestamp,
    fingerprint: String,
}

impl<'a> Run<'a> {
    fn new(pc: &'a ProviderCredential, ctx: Arc<Context>) -> Self {
        let old = pc.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.observed_generation = pc.meta().generation;
        Run {
            pc,
            secrets: Api::namespaced(ctx.client.clone(), &pc.namespace().unwrap_or_default()),
            ctx,
            uid: pc.uid().unwrap_or_default(),
            now: Timestamp::now(),
            old,
            status,
            current: None,
        }
    }

    async fn reconcile(&mut self) -> Result<Next, ReconcileError> {
        let spec = &self.pc.spec;
        let resolved = provider_config(spec)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                renewal_policy(spec.refresh.as_ref())
                    .map(|p| (c, p))
                    .map_err(|e| e.to_string())
            })
            .and_then(|cp| {
                target::validate(&spec.target)
                    .map(|_| cp)
                    .map_err(|e| e.to_string())
            });

        let target_name = spec.target.secret_name.clone();
        let target_secret = match secrets::read_owned(&self.secrets, &target_name, &self.uid)
            .await?
        {
            Owned::Foreign => {
                let msg = format!(
                    "Secret {target_name} already exists and is not managed by this ProviderCredential; it is left untouched. Choose another spec.target.secretName or delete that Secret"
                );
                return Ok(self.blocked(reason::TARGET_CONFLICT, msg, Some(RECHECK)));
            }
            Owned::Absent => None,
            Owned::Owned(s) => Some(*s),
        };
        let observed = target_secret
            .as_ref()
            .map(|s| ObservedTarget::from_annotations(&s.annotations().clone()));
        self.current = observed
            .as_ref()
            .and_then(|o| match (o.expires_at, &o.fingerprint) {
                (Some(expires_at), Some(fp)) if expires_at > self.now => Some(ObservedToken {
                    expires_at,
                    issued_at: o.issued_at.unwrap_or(self.now),
                    fingerprint: fp.clone(),
                }),
                _ => None,
            });
        match &self.current {
            None => self.status.access_token = None,
            // The status lags the target (a crash between the two writes, or a lost status):
            // the target Secret is the truth about which token is in use.
            Some(c)
                if self.status.access_token.as_ref().map(|a| &a.fingerprint)
                    != Some(&c.fingerprint) =>
            {
                let source = self
                    .status
                    .access_token
                    .as_ref()
                    .map(|a| a.lifetime_source.clone())
                    .unwrap_or_else(|| "unknown".into());
                self.status.access_token = Some(AccessTokenStatus {
                    issued_at: Time(c.issued_at),
                    expires_at: Time(c.expires_at),
                    fingerprint: c.fingerprint.clone(),
                    lifetime_source: source,
                    secret_name: target_name.clone(),
                });
                self.status.next_refresh_at = None;
            }
            Some(_) => {}
        }

        let (config, policy) = match resolved {
            Ok(cp) => cp,
            Err(msg) => return Ok(self.blocked(reason::INVALID_SPEC, msg, None)),
        };
        if spec.suspend == Some(true) {
            let msg = "spec.suspend is true: no token requests are made".to_string();
            return Ok(self.blocked(reason::SUSPENDED, msg, None));
        }

        let creds_name = &spec.credentials.secret_ref.name;
        let data = match secrets::read_credentials(&self.secrets, creds_name).await? {
            CredentialsLookup::Found(data) => data,
            CredentialsLookup::NotFound => {
                let msg = format!(
                    "credentials Secret {creds_name} not found in this namespace; create it with the label tokenrotator.dev/credentials=true"
                );
                return Ok(self.blocked(reason::CREDENTIALS_NOT_FOUND, msg, Some(RECHECK)));
            }
            CredentialsLookup::NotLabelled => {
                let msg = format!(
                    "credentials Secret {creds_name} lacks the label tokenrotator.dev/credentials=true; add it (kubectl label secret {creds_name} tokenrotator.dev/credentials=true) so the operator may read it"
                );
                return Ok(self.blocked(reason::CREDENTIALS_NOT_LABELLED, msg, Some(RECHECK)));
            }
        };
        let mut credentials = credentials_from_data(spec, &data);
        let seed = credentials.remove(Param::RefreshToken);

        let state_name = state_secret_name(&self.pc.name_any());
        let state_secret = match secrets::read_owned(&self.secrets, &state_name, &self.uid).await? {
            Owned::Foreign => {
                let msg = format!(
                    "Secret {state_name} (where this resource keeps its refresh token) exists and is not managed by it; rename or delete that Secret"
                );
                return Ok(self.blocked(reason::TARGET_CONFLICT, msg, Some(RECHECK)));
            }
            Owned::Absent => None,
            Owned::Owned(s) => Some(*s),
        };
        let mut state = state_secret
            .as_ref()
            .map(|s| StateData::from_data(&secrets::decoded(s)))
            .unwrap_or_default();
        let mut state_secret = state_secret;
        // A refresh token received earlier but not yet stored is the only valid one.
        if let Some(pending) = self.ctx.pending_refresh(&self.uid) {
            state.refresh_token = Some(pending);
            state_secret = Some(self.store_state(state_secret, &state).await?);
        }

        let inputs = state::inputs_hash(&self.uid, &config, &credentials);
        let seed_hash = seed.as_ref().map(|s| state::secret_hash(&self.uid, s));
        let code_hash = credentials
            .get(Param::Code)
            .map(|c| state::secret_hash(&self.uid, c));
        let new_seed =
            config.supports_refresh && seed_hash.is_some() && seed_hash != state.seed_hash;
        let unspent_code = config.grant == GrantType::AuthorizationCode
            && code_hash.is_some()
            && code_hash != state.code_hash;
        let refresh_request = self
            .pc
            .annotations()
            .get(REFRESH_ANNOTATION)
            .filter(|v| Some(*v) != self.status.last_refresh_request.as_ref())
            .filter(|v| Some(*v) != observed.as_ref().and_then(|o| o.refresh_handled.as_ref()))
            .cloned();

        let facts = Facts {
            now: self.now,
            current: self.current.as_ref().map(|c| CurrentToken {
                expires_at: c.expires_at,
                next_refresh_at: self.planned_refresh(c, &policy),
            }),
            target_up_to_date: observed.as_ref().and_then(|o| o.settings.clone())
                == Some(target::settings_digest(&spec.target)),
            inputs_unchanged: state.inputs_hash.as_deref() == Some(inputs.as_str())
                && !new_seed
                && !unspent_code,
            refresh_requested: refresh_request.is_some(),
            retry_not_before: match self.status.consecutive_failures {
                Some(n) if n > 0 => self.status.next_refresh_at.as_ref().map(|t| t.0),
                _ => None,
            },
            rejected_with_same_inputs: state.rejected_inputs_hash.as_deref()
                == Some(inputs.as_str()),
        };
        let reason_due = match rotation::decide(&facts) {
            Decision::WaitUntil(at) => {
                self.keep_ready();
                if self.status.consecutive_failures.unwrap_or(0) == 0 {
                    self.status.next_refresh_at = Some(Time(at));
                }
                return Ok(self.requeue_at(at));
            }
            Decision::HoldRejected => {
                self.keep_ready();
                return Ok(self.requeue_at_expiry_or_never());
            }
            Decision::Fetch(r) => r,
        };

        let choice = rotation::choose_grant(&GrantFacts {
            primary: config.grant,
            supports_refresh: config.supports_refresh,
            has_stored_refresh_token: state.refresh_token.is_some(),
            has_new_seed: new_seed,
            has_unspent_code: unspent_code,
        });
        let grant = match choice {
            GrantChoice::StoredRefreshToken => {
                GrantRequest::Refresh(state.refresh_token.clone().expect("checked"))
            }
            GrantChoice::SeedRefreshToken => GrantRequest::Refresh(seed.clone().expect("checked")),
            GrantChoice::Primary => GrantRequest::Primary,
            GrantChoice::ReauthorizationRequired => {
                let msg = format!(
                    "the authorization code in Secret {creds_name} was already used and no refresh token is held; obtain a new code from the provider's consent page and put it in key `{}`",
                    credentials.key_name(Param::Code)
                );
                return Ok(self.blocked(reason::REAUTHORIZATION_REQUIRED, msg, None));
            }
        };
        // The request answered by this token, else the one its predecessor answered.
        let refresh_handled = refresh_request
            .clone()
            .or_else(|| observed.as_ref().and_then(|o| o.refresh_handled.clone()));
        if let Some(r) = refresh_request {
            self.status.last_refresh_request = Some(r);
        }
        info!(
            reason = reason_due.describe(),
            grant = grant.label(&config),
            "requesting a token"
        );

        // Fetch and persist run to completion even if this reconcile is cancelled: a refresh
        // token that a received answer replaced must reach the state Secret.
        let task = RotationTask {
            pc: self.pc.clone(),
            secrets: self.secrets.clone(),
            config: config.clone(),
            credentials,
            grant,
            choice,
            state,
            state_secret,
            target_secret,
            inputs,
            seed_hash,
            code_hash,
            uid: self.uid.clone(),
            refresh_handled,
        };
        let ctx = self.ctx.clone();
        let outcome = tokio::spawn(async move { task.run(&ctx).await }.in_current_span())
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??;
        self.now = Timestamp::now();
        Ok(match outcome {
            RotationOutcome::Issued { token, state_name } => {
                self.issued(&token, &state_name, &policy)
            }
            RotationOutcome::Failed { error, chain_ended } => {
                self.failed(&error, chain_ended, &config)
            }
        })
    }

    async fn store_state(
        &self,
        current: Option<Secret>,
        state: &StateData,
    ) -> Result<Secret, ReconcileError> {
        let name = state_secret_name(&self.pc.name_any());
        let written = secrets::write_state(&self.secrets, self.pc, &name, current, state).await?;
        self.ctx.release_refresh(&self.uid);
        Ok(written)
    }

    /// The renewal time of a token: the one planned at issue (jitter included) when the status
    /// describes this token, else recomputed (after a lost status).
    fn planned_refresh(&self, c: &ObservedToken, policy: &RenewalPolicy) -> Timestamp {
        let matches = self
            .status
            .access_token
            .as_ref()
            .map(|a| a.fingerprint.as_str())
            == Some(c.fingerprint.as_str());
        match (&self.status.next_refresh_at, matches) {
            (Some(t), true) => t.0,
            _ => rotation::next_refresh_at(
                c.issued_at,
                c.expires_at,
                policy,
                jitter_for(&c.fingerprint),
            ),
        }
    }
}

mod report;
use report::jitter_for;

//! Settle: what the private state becomes after the token endpoint answered (RFC 6749 §6),
//! and whether the refresh chain ended.

use secrecy::{ExposeSecret, SecretString};

use super::decide::{DueReason, GrantChoice};
use super::plan::{Plan, TokenSource, sent_refresh_token};
use crate::provider::{FetchError, GrantType, IssuedToken, RefreshOutcome};
use crate::state::StateData;

/// Whether the answer ended the refresh chain, and what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// The chain (if any) is intact.
    Intact,
    /// The refresh token is dead; the primary grant takes over at once.
    FallBackToPrimary,
    /// The chain or the code is dead and only a person can consent again.
    NeedsReauthorization,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// The state to store (equal to the plan's state when nothing changed: no write). A new
    /// refresh token in it must reach the state Secret before anything else is written.
    pub state: StateData,
    pub chain_end: ChainEnd,
}

pub fn settle(plan: &Plan, answer: Result<&IssuedToken, &FetchError>) -> Settled {
    let mut state = plan.state.clone();
    match answer {
        Ok(token) => {
            if let TokenSource::Request(_) = plan.source {
                state.inputs_hash = Some(plan.inputs.clone());
                state.rejected_inputs_hash = None;
                state.failing_inputs_hash = None;
                match plan.choice {
                    GrantChoice::SeedRefreshToken => state.seed_hash = plan.seed_hash.clone(),
                    GrantChoice::Primary if plan.config.grant == GrantType::AuthorizationCode => {
                        state.code_hash = plan.code_hash.clone();
                    }
                    _ => {}
                }
                match &token.refresh {
                    RefreshOutcome::NewlyIssued(t) | RefreshOutcome::Rotated(t) => {
                        state.refresh_token = Some(t.clone());
                        state.refresh_binding = Some(plan.refresh_binding.clone());
                    }
                    // No new refresh token in a refresh answer: the one sent stays valid.
                    RefreshOutcome::Kept => {
                        if let Some(sent) = sent_refresh_token(plan) {
                            state.refresh_token = Some(sent.clone());
                            state.refresh_binding = Some(plan.refresh_binding.clone());
                        }
                    }
                    RefreshOutcome::None => {
                        state.refresh_token = None;
                        state.refresh_binding = None;
                    }
                }
            }
            Settled {
                state,
                chain_end: ChainEnd::Intact,
            }
        }
        Err(error) => {
            let refresh_grant = sent_refresh_token(plan).is_some();
            let code_chain = plan.config.grant == GrantType::AuthorizationCode;
            let chain_end = if refresh_grant && error.is_invalid_grant() {
                // Only invalid_grant ends a chain; the dead token is never sent again. A seed
                // is not stored, only remembered as spent.
                if plan.choice == GrantChoice::SeedRefreshToken {
                    state.seed_hash = plan.seed_hash.clone();
                } else {
                    state.refresh_token = None;
                    state.refresh_binding = None;
                }
                if code_chain {
                    ChainEnd::NeedsReauthorization
                } else {
                    ChainEnd::FallBackToPrimary
                }
            } else if !refresh_grant && code_chain && error.is_invalid_grant() {
                state.code_hash = plan.code_hash.clone();
                ChainEnd::NeedsReauthorization
            } else {
                let service_account = plan.config.service_account.is_some();
                if retried_with_backoff(error.class(), service_account) {
                    // New inputs get one immediate try; after a failure they wait for backoff.
                    if plan.due == DueReason::InputsChanged {
                        state.failing_inputs_hash = Some(plan.inputs.clone());
                    }
                } else {
                    // Not retried until the credentials or the spec change (accounts lock).
                    state.rejected_inputs_hash = Some(plan.inputs.clone());
                }
                ChainEnd::Intact
            };
            Settled { state, chain_end }
        }
    }
}

/// Whether a state needs a state Secret: it holds something only that Secret can keep across
/// restarts (a refresh token and where it belongs, the seed or code spent, a rejection, a
/// failure, a template that failed). The inputs digest alone goes on the target when the
/// operator has a key for it; a resource without a refresh token then has no state Secret.
pub fn needs_state_secret(state: &StateData, inputs_on_target: bool) -> bool {
    // Destructured: a field added to the state must be decided on here.
    let StateData {
        refresh_token,
        refresh_binding,
        inputs_hash,
        seed_hash,
        code_hash,
        rejected_inputs_hash,
        failing_inputs_hash,
        unrenderable_target,
    } = state;
    refresh_token.is_some()
        || refresh_binding.is_some()
        || seed_hash.is_some()
        || code_hash.is_some()
        || rejected_inputs_hash.is_some()
        || failing_inputs_hash.is_some()
        || unrenderable_target.is_some()
        || (inputs_hash.is_some() && !inputs_on_target)
}

/// A state to store, with the refresh token the rotation that produced it started from: the
/// write is a compare-and-swap on the chain, never a blind overwrite.
#[derive(Clone, Debug)]
pub struct ChainWrite {
    /// The refresh token stored when the rotation began (`None`: there was none).
    pub base: Option<SecretString>,
    pub state: StateData,
}

impl PartialEq for ChainWrite {
    fn eq(&self, other: &Self) -> bool {
        exposed(&self.base) == exposed(&other.base) && self.state == other.state
    }
}

impl ChainWrite {
    /// The settled state of a rotation that started from `plan`.
    pub fn after(plan: &Plan, state: StateData) -> Self {
        ChainWrite {
            base: plan.state.refresh_token.clone(),
            state,
        }
    }

    /// Whether this write carries a refresh token the provider issued that is not stored yet.
    fn carries_new_refresh_token(&self) -> bool {
        self.state
            .refresh_token
            .as_ref()
            .is_some_and(|ours| Some(ours.expose_secret()) != exposed(&self.base))
    }
}

/// What to do when the state Secret changed between the read a rotation started from and its
/// write (a conflict): the newer chain wins.
#[derive(Clone, Debug, PartialEq)]
pub enum Rebase {
    /// Nobody else moved the chain: write this state over the stored one.
    Write(StateData),
    /// Another writer stored a refresh token received after this rotation began; it stays.
    /// `discarded`: this write carried a token the provider issued, which is now set aside.
    Superseded { discarded: bool },
}

/// Decides a conflicting state write from what is stored now. The stored chain moved only if
/// it holds a refresh token that is neither the one this rotation started from nor its own
/// result; an emptied chain (another writer saw the old token refused — because this
/// rotation had replaced it) never beats a token the provider issued.
pub fn rebase(write: &ChainWrite, stored: &StateData) -> Rebase {
    let stored_token = exposed(&stored.refresh_token);
    let moved = stored_token.is_some()
        && stored_token != exposed(&write.base)
        && stored_token != exposed(&write.state.refresh_token);
    if moved {
        Rebase::Superseded {
            discarded: write.carries_new_refresh_token(),
        }
    } else {
        Rebase::Write(write.state.clone())
    }
}

fn exposed(token: &Option<SecretString>) -> Option<&str> {
    token.as_ref().map(|t| t.expose_secret())
}

/// Whether a failure of this class is retried with backoff. A refusal of the credentials is
/// not (a password retried locks the account) — unless they are a ServiceAccount token: it
/// has no account to lock, is new for each request, and the fix (the provider's federation
/// settings) is made where no watch of the operator sees it.
pub fn retried_with_backoff(class: crate::provider::ErrorClass, service_account: bool) -> bool {
    class.is_transient()
        || (service_account && class == crate::provider::ErrorClass::CredentialsRejected)
}

//! Every rule about what happens next, as pure functions with the clock passed in: no
//! Kubernetes API, no HTTP client, no async runtime. The controller moves data between the
//! API server, the token endpoint and these functions:
//!
//! observe (I/O) → [`plan`] → execute (I/O, [`settle`] inside) → [`status_after`] →
//! restart_workloads (I/O, [`rollout::outcome`]) and deliver (I/O, [`delivery::outcome`]),
//! each outcome applied by [`merge::merge`] → report (I/O)

mod budget;
mod decide;
pub mod delivery;
pub mod merge;
mod plan;
pub mod recheck;
pub mod rollout;
mod schedule;
pub mod service_account;
mod settle;
mod status;

pub use budget::RequestBudget;
pub use decide::{Decision, DueReason, Facts, GrantChoice, GrantFacts, choose_grant, decide};
pub use merge::{EventNote, Report};
pub use plan::{
    Baseline, Blocked, CappedTimeout, CredentialsView, CurrentToken, HeldToken, InvalidSpec,
    Observed, Plan, Planned, SecretWrite, Slot, StateView, Step, TargetView, TimeoutCap,
    TokenSource, plan, request_inputs_now, sent_refresh_token, target_conflict,
    target_may_be_assumed_absent, usable_credentials,
};
pub use schedule::{
    BACKOFF_BASE, BACKOFF_CAP, MIN_INTERVAL, Renewal, SHORT_LIFETIME_FLOOR, backoff,
    blocked_recheck, jitter_for, next_refresh_at, renewal,
};
pub use settle::{ChainEnd, ChainWrite, Rebase, Settled, needs_state_secret, rebase, settle};
pub use status::{
    MAX_REQUEUE, Outcome, StoreFailure, requeue_delay, status_after, status_after_panic,
};

#[cfg(test)]
mod tests;

//! What a token request ended with, as the reconcile reports it: apart from `execute`, so
//! that the table of requests in flight (`in_flight`, held by the context) can keep it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::api::ProviderCredential;
use crate::conditions::Reason;
use crate::leader::Withheld;
use crate::provider::{FetchError, IssuedToken};
use crate::rotation::{Baseline, ChainEnd, Plan, StoreFailure};
use crate::secrets::SecretsError;
use crate::telemetry::Metrics;
use tracing::warn;

pub enum Executed {
    Issued {
        token: IssuedToken,
        /// The target Secret as written, for spec.delivery's copies (only with spec.delivery:
        /// they are made from it without reading it again).
        target: Option<Box<Secret>>,
    },
    /// The resource's request budget is spent: nothing was sent.
    Deferred {
        until: jiff::Timestamp,
    },
    /// The gate is closed (shutdown, or the lease is not confirmed): nothing was sent.
    Withheld(Withheld),
    /// It waited for its turn, and meanwhile the resource or its credentials changed (or
    /// could not be confirmed): nothing was sent, the next reconcile plans afresh.
    NotSent,
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
    Task(&'static str),
}

/// A request that ended after its reconcile had returned: what that reconcile would have
/// reported from, kept until the next reconcile of the resource reports it.
pub struct Parked {
    /// The resource as the reconcile that started the request saw it (reported from at
    /// shutdown, when no reconcile comes).
    pub pc: Arc<ProviderCredential>,
    pub baseline: Baseline,
    pub plan: Arc<Plan>,
    pub executed: Result<Executed, ExecuteError>,
}

/// Another writer stored a newer chain while this rotation ran: its result is set aside —
/// counted and reported, never silently.
pub fn superseded(metrics: &Metrics, discarded: bool) -> StoreFailure {
    if discarded {
        metrics.refresh_token_discarded();
    }
    warn!(
        discarded_refresh_token = discarded,
        "another writer stored a newer refresh token meanwhile; it is kept"
    );
    StoreFailure {
        reason: Reason::ChainSuperseded,
        message: format!(
            "another writer stored a newer refresh token while this rotation was in flight; it is kept and this rotation's result was set aside{}. If this repeats, more than one operator manages this resource: run one replica, or enable leader election",
            if discarded {
                " (the refresh token the provider issued to it was discarded)"
            } else {
                ""
            }
        ),
        retry: true,
    }
}

//! Ending a run without losing a refresh token: on SIGTERM or a lost lease the gate closes
//! (no new token request), rotations in flight finish within a bound, every state still held
//! in memory is stored, and only then does the process exit.

use std::time::Duration;

use tokio::time::Instant;

use kube::api::Api;
use tracing::{error, info, warn};

use crate::controller::steps::context::Context;
use crate::controller::steps::observe::store_held_state;
use crate::leader::{Gate, Leadership};
use crate::rotation::Slot;

/// Rotations in flight get this long once shutdown begins: the longest token request (30 s)
/// plus the state and target writes after it. The chart's terminationGracePeriodSeconds
/// (65 s) covers this, [`STORE_BOUND`] and the lease release (5 s), with margin.
pub const DRAIN_BOUND: Duration = Duration::from_secs(40);
/// Storing what is held in memory gets this long.
pub const STORE_BOUND: Duration = Duration::from_secs(15);

/// Why the run is ending.
pub enum Stop {
    Signal(&'static str),
    LeaseLost(String),
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Resolves when the run must end: a signal, or (with leader election) the lease is lost —
/// as the lease manager sees it, or as the gate does (it lapsed without a confirmed renewal).
pub async fn stop_requested(lease: Option<&mut Leadership>, gate: &Gate) -> Stop {
    let lost = async {
        match lease {
            Some(lease) => lease.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        name = signal() => Stop::Signal(name),
        reason = lost => Stop::LeaseLost(reason),
        () = gate.stopped() => Stop::LeaseLost("the lease lapsed without a confirmed renewal".into()),
    }
}

/// Stores every state held in memory (each may carry the only valid refresh token), all at
/// once, each within [`STORE_BOUND`]: one hung API call cannot use up the others' time. A
/// failed store is tried again until the bound: right after an API-server restart its
/// authorizer refuses everything (403) for a few seconds, and giving up then loses a refresh
/// token that a second later could have been stored. What cannot be stored is logged by
/// resource, never by value.
pub async fn store_held(ctx: &Context) {
    let held = ctx.unstored_states();
    if held.is_empty() {
        return;
    }
    info!(count = held.len(), "storing held state before exit");
    let stores = held.into_iter().map(|(key, pc, write)| async move {
        let (namespace, name) = (key.namespace(), key.name());
        let api = Api::namespaced(ctx.client.clone(), namespace);
        let deadline = Instant::now() + STORE_BOUND;
        let mut pause = FIRST_RETRY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stored =
                tokio::time::timeout(left, store_held_state(ctx, &key, &pc, &api, write.clone()));
            match stored.await {
                Ok(Ok(Slot::Foreign)) => error!(
                    %namespace, %name,
                    "held state not stored before exit: its state Secret belongs to someone else; a refresh token it carried is lost"
                ),
                Ok(Ok(_)) => info!(%namespace, %name, "held state stored before exit"),
                Ok(Err(e)) if Instant::now() + pause < deadline => {
                    warn!(%namespace, %name, error = %e, retry_in_ms = pause.as_millis(), "held state not stored yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LAST_RETRY);
                    continue;
                }
                Ok(Err(e)) => error!(
                    %namespace, %name, error = %e,
                    "held state not stored before exit; a refresh token it carried is lost"
                ),
                Err(_) => error!(
                    %namespace, %name, bound_s = STORE_BOUND.as_secs(),
                    "held state not stored before exit: the API server did not store it in time; a refresh token it carried is lost"
                ),
            }
            break;
        }
    });
    futures::future::join_all(stores).await;
}

/// Pauses between attempts to store held state at exit: doubling, at most [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(2);

//! Ending a run without losing a refresh token: on SIGTERM or a lost lease the gate closes
//! (no new token request), rotations in flight finish within a bound, every state still held
//! in memory is stored, and only then does the process exit.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use tracing::{error, info, warn};

use super::context::Context;
use super::observe::store_held_state;
use crate::leader::Leadership;

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

/// Resolves when the run must end: a signal, or (with leader election) the lease is lost.
pub async fn stop_requested(lease: Option<&mut Leadership>) -> Stop {
    let lost = async {
        match lease {
            Some(lease) => lease.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        name = signal() => Stop::Signal(name),
        reason = lost => Stop::LeaseLost(reason),
    }
}

/// Stores every state held in memory (each may carry the only valid refresh token), within
/// [`STORE_BOUND`]. What cannot be stored is logged by resource, never by value.
pub async fn store_held(ctx: &Context) {
    let held = ctx.unstored_states();
    if held.is_empty() {
        return;
    }
    info!(count = held.len(), "storing held state before exit");
    let work = async {
        for (pc, write) in held {
            let (namespace, name) = (pc.namespace().unwrap_or_default(), pc.name_any());
            let api = Api::namespaced(ctx.client.clone(), &namespace);
            match store_held_state(ctx, &pc, &api, write).await {
                Ok(_) => info!(%namespace, %name, "held state stored before exit"),
                Err(e) => error!(
                    %namespace, %name, error = %e,
                    "could not store held state before exit; a refresh token it carried is lost"
                ),
            }
        }
    };
    if tokio::time::timeout(STORE_BOUND, work).await.is_err() {
        warn!(
            bound_s = STORE_BOUND.as_secs(),
            "storing held state took too long; exiting"
        );
    }
}

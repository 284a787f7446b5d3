//! Lease-based leader election, so several replicas are safe: only the leader rotates, and a
//! replica that loses the lease exits at once.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Elect a leader through a Lease before rotating (needed with more than one replica).
    #[arg(long)]
    pub leader_election: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "token-rotator")]
    pub leader_election_lease_name: String,
    /// How long a lease lasts without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// How long before expiry the leader renews, in seconds (must be below the duration).
    #[arg(long, default_value_t = 5)]
    pub lease_renew_margin_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("--leader-election needs --leader-election-namespace or $POD_NAMESPACE")]
    NoNamespace,
    #[error("--lease-renew-margin-seconds must be above 0 and below --lease-duration-seconds")]
    BadTiming,
    #[error("{0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("the lease watcher stopped before leadership was acquired")]
    WatcherStopped,
}

/// Held by the leader; `lost` resolves when leadership ends.
pub struct Leadership {
    state: watch::Receiver<bool>,
    _watcher: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

impl Leadership {
    pub async fn lost(mut self) -> String {
        loop {
            if self.state.changed().await.is_err() {
                return "the lease watcher stopped".into();
            }
            if !*self.state.borrow_and_update() {
                return "another replica holds the lease".into();
            }
        }
    }
}

pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Blocks until this replica leads, or returns `None` when election is off.
pub async fn acquire(
    client: &Client,
    args: &LeaderArgs,
) -> Result<Option<Leadership>, LeaderError> {
    if !args.leader_election {
        return Ok(None);
    }
    let namespace = args
        .leader_election_namespace
        .clone()
        .ok_or(LeaderError::NoNamespace)?;
    if args.lease_renew_margin_seconds == 0
        || args.lease_renew_margin_seconds >= args.lease_duration_seconds
    {
        return Err(LeaderError::BadTiming);
    }
    let identity = identity();
    let manager = LeaseManagerBuilder::new(client.clone(), &args.leader_election_lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration_seconds)
        .with_grace(args.lease_renew_margin_seconds)
        .build()
        .await?;
    info!(lease = %args.leader_election_lease_name, %namespace, %identity, "waiting for leadership");
    let (mut state, watcher) = manager.watch().await;
    while !*state.borrow_and_update() {
        state
            .changed()
            .await
            .map_err(|_| LeaderError::WatcherStopped)?;
    }
    info!(%identity, "acquired leadership");
    Ok(Some(Leadership {
        state,
        _watcher: watcher,
    }))
}

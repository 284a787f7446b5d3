//! Lease-based leader election, so several replicas are safe: only the leader rotates, and it
//! fences itself — no token request leaves a replica whose lease might lapse before the answer.
//!
//! Timing (defaults: lease 60 s, renewed 40 s before it lapses, i.e. every 20 s):
//! - another replica may take the lease once `renewTime + duration` has passed by its clock;
//! - this replica learns each renewal from the Lease itself (a watch) and sends a token
//!   request only while the lease stays confirmed for the request's whole timeout plus
//!   [`CLOCK_SKEW`]: with a 30 s timeout, for 28 s after each renewal;
//! - so a request sent by a leader whose renewals start failing (API trouble, a frozen
//!   process thawing) is answered or abandoned before any other replica can lead;
//! - a lease too short for a request's timeout caps the timeout at what it covers
//!   ([`request_timeout_cap`]) rather than withholding the request forever, and one that
//!   covers not even 1 s is refused at start-up.
//!
//! A lost lease or SIGTERM closes the [`Gate`]: no new request starts, rotations in flight
//! finish, held state is stored, then the process exits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::rotation::TimeoutCap;

/// The clock difference between replicas' nodes tolerated by the fence.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// How long a renewal may take to be seen through the watch of the Lease.
const CONFIRM_LAG: Duration = Duration::from_secs(1);

/// What each renewal cycle leaves a request that fits only in the whole lease: the retry of
/// a withheld request (2 s, controller/steps/reconcile.rs) and the renewal's [`CONFIRM_LAG`].
const START_ROOM: Duration = Duration::from_secs(3);

/// The shortest timeout a token request has (spec.tokenEndpoint.timeoutSeconds ≥ 1).
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest timeout a token request has (spec.tokenEndpoint.timeoutSeconds ≤ 30).
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request the fence has kept back for this long shows on its resource.
pub const WITHHELD_VISIBLE_AFTER: Duration = Duration::from_secs(60);

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
    /// How long a lease lasts without renewal, in seconds: the longest failover after a crash.
    /// Below 35 s (with a renew margin below 33 s) it cannot cover a 30 s token request: token
    /// requests' timeouts are then capped at what it covers (duration - 5 s, or margin - 3 s).
    #[arg(long, default_value_t = 60)]
    pub lease_duration_seconds: u64,
    /// How long before expiry the leader renews, in seconds (below the duration). Token
    /// requests are sent only while the lease is confirmed for their timeout + 2 s, so keep it
    /// above the longest token-endpoint timeout (30 s) + 2 s, or requests pause between renewals.
    #[arg(long, default_value_t = 40)]
    pub lease_renew_margin_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("--leader-election needs --leader-election-namespace or $POD_NAMESPACE")]
    NoNamespace,
    #[error("--lease-renew-margin-seconds must be above 0 and below --lease-duration-seconds")]
    BadTiming,
    #[error(
        "--lease-duration-seconds {duration} with --lease-renew-margin-seconds {margin} cannot cover even a 1 s token request: a request needs the lease for its timeout + 2 s of clock skew, within the renew margin (+ 1 s for the renewal to be seen: a margin of at least 4) or within the whole lease with 3 s to spare after each renewal (a duration of at least 6). Raise --lease-duration-seconds"
    )]
    LeaseTooShort { duration: u64, margin: u64 },
    #[error("{0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("the lease watcher stopped before leadership was acquired")]
    WatcherStopped,
}

/// Held by the leader; `lost` resolves when leadership ends.
pub struct Leadership {
    state: watch::Receiver<bool>,
    watcher: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
    confirmations: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves when another replica holds the lease or the lease manager stopped.
    pub async fn lost(&mut self) -> String {
        loop {
            if self.state.changed().await.is_err() {
                return "the lease watcher stopped".into();
            }
            if !*self.state.borrow_and_update() {
                return "another replica holds the lease".into();
            }
        }
    }

    /// Gives the lease up (so a standby takes over at once instead of after the lease
    /// duration), within a bound.
    pub async fn release(self) {
        self.confirmations.abort();
        drop(self.state);
        match tokio::time::timeout(Duration::from_secs(5), self.watcher).await {
            Ok(Ok(Ok(_))) => info!("lease released"),
            Ok(Ok(Err(e))) => {
                warn!(error = %e, "could not release the lease; it lapses on its own")
            }
            Ok(Err(_)) | Err(_) => {
                warn!("could not release the lease in time; it lapses on its own")
            }
        }
    }
}

/// Why a token request was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    ShuttingDown,
    LeaseUnconfirmed,
}

impl Withheld {
    /// Every reason, so the metric can export each at zero from the start.
    pub const ALL: [Withheld; 2] = [Withheld::ShuttingDown, Withheld::LeaseUnconfirmed];

    pub fn reason(self) -> &'static str {
        match self {
            Withheld::ShuttingDown => "ShuttingDown",
            Withheld::LeaseUnconfirmed => "LeaseUnconfirmed",
        }
    }
}

/// What this replica knows about its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseView {
    /// Not confirmed yet.
    Unconfirmed,
    /// Ours until then, on both clocks: the monotonic one stops while a machine is suspended,
    /// the wall clock can step; a request needs both to agree.
    Until { at: Instant, wall: SystemTime },
    /// It lapsed before a renewal was confirmed, or another replica holds it: never ours
    /// again in this process (a late renewal must not reopen the gate).
    Lost,
}

/// Whether this replica may start a token request now.
#[derive(Clone)]
pub struct Gate {
    stopping: watch::Sender<bool>,
    /// `None`: no leader election (one replica, nothing to fence).
    lease: Option<Arc<Mutex<LeaseView>>>,
    /// The longest request the lease covers, when that is shorter than the longest timeout.
    cap: Option<TimeoutCap>,
    /// When leadership was acquired (the wall clock): an unconfirmed lease withholds since.
    led_since: SystemTime,
}

impl Gate {
    /// No leader election: only shutdown closes the gate.
    pub fn open() -> Self {
        Gate {
            stopping: watch::Sender::new(false),
            lease: None,
            cap: None,
            led_since: SystemTime::now(),
        }
    }

    fn fenced(cap: Option<TimeoutCap>) -> Self {
        Gate {
            stopping: watch::Sender::new(false),
            lease: Some(Arc::new(Mutex::new(LeaseView::Unconfirmed))),
            cap,
            led_since: SystemTime::now(),
        }
    }

    /// The longest token request the lease covers, when it is shorter than a request may be.
    pub fn timeout_cap(&self) -> Option<TimeoutCap> {
        self.cap
    }

    /// Since when the fence has kept back a request with this timeout, once that has lasted
    /// [`WITHHELD_VISIBLE_AFTER`]; `None` while it is shorter, or the gate is open or stopped.
    pub fn withheld_since(&self, timeout: Duration) -> Option<SystemTime> {
        let view = *self
            .lease
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        long_withheld(view, self.led_since, SystemTime::now(), timeout)
    }

    /// May a request with this timeout be sent now?
    pub fn permit(&self, timeout: Duration) -> Result<(), Withheld> {
        if *self.stopping.borrow() {
            return Err(Withheld::ShuttingDown);
        }
        match &self.lease {
            None => Ok(()),
            Some(view) => {
                let view = *view.lock().unwrap_or_else(|e| e.into_inner());
                if fence_permits(Instant::now(), SystemTime::now(), view, timeout) {
                    Ok(())
                } else {
                    Err(Withheld::LeaseUnconfirmed)
                }
            }
        }
    }

    /// Closes the gate for good: no request starts after this.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the gate is closed for good.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Records what the Lease says now; returns the view after it.
    fn confirm(&self, confirmed: Option<(Instant, SystemTime)>) -> LeaseView {
        let Some(lease) = &self.lease else {
            return LeaseView::Unconfirmed;
        };
        let mut view = lease.lock().unwrap_or_else(|e| e.into_inner());
        *view = next_view(*view, Instant::now(), SystemTime::now(), confirmed);
        *view
    }
}

/// The fence: a request may start only if the lease stays ours for its whole timeout, with
/// room for clock skew between replicas. Pure, so the rule is tested on its own.
pub fn fence_permits(
    now: Instant,
    wall_now: SystemTime,
    lease: LeaseView,
    timeout: Duration,
) -> bool {
    let LeaseView::Until { at, wall } = lease else {
        return false;
    };
    let needed = timeout.saturating_add(CLOCK_SKEW);
    let fits_monotonic = at.checked_sub(needed).is_some_and(|latest| now < latest);
    let fits_wall = wall
        .checked_sub(needed)
        .is_some_and(|latest| wall_now < latest);
    fits_monotonic && fits_wall
}

/// The longest token-request timeout that a lease of `duration`, renewed `renew_margin`
/// before it lapses, covers: one that fits in the margin (it may start at any moment: the
/// renewal comes before the lease runs that short), or else one that fits in the whole lease
/// with [`START_ROOM`] to spare (it may start after each renewal). `None`: not even
/// [`MIN_REQUEST_TIMEOUT`]. Requests are capped at it; the defaults (60 s, 40 s) cover 55 s,
/// more than any request takes.
pub fn request_timeout_cap(duration: Duration, renew_margin: Duration) -> Option<Duration> {
    let anytime = renew_margin.saturating_sub(CLOCK_SKEW + CONFIRM_LAG);
    let after_renewal = duration.saturating_sub(CLOCK_SKEW + START_ROOM);
    Some(anytime.max(after_renewal)).filter(|cap| *cap >= MIN_REQUEST_TIMEOUT)
}

/// Since when a request with `timeout` has found the fence closed, if for at least
/// [`WITHHELD_VISIBLE_AFTER`] by `wall_now`: an unconfirmed lease since leadership began, a
/// confirmed one since it became too short for the request. Wall-clock times, so that the
/// same state gives the same answer (a status that does not change is not written again).
pub fn long_withheld(
    lease: LeaseView,
    led_since: SystemTime,
    wall_now: SystemTime,
    timeout: Duration,
) -> Option<SystemTime> {
    let since = match lease {
        LeaseView::Unconfirmed => led_since,
        LeaseView::Until { wall, .. } => wall
            .checked_sub(timeout.saturating_add(CLOCK_SKEW))
            .unwrap_or(led_since)
            .max(led_since),
        // Leadership ended: the process stops.
        LeaseView::Lost => return None,
    };
    let closed_for = wall_now.duration_since(since).ok()?;
    (closed_for >= WITHHELD_VISIBLE_AFTER).then_some(since)
}

/// The lease view after the Lease was seen again (`confirmed`: ours until then, or `None`:
/// not ours). A lease that lapsed, or went to another holder, stays lost.
pub fn next_view(
    current: LeaseView,
    now: Instant,
    wall_now: SystemTime,
    confirmed: Option<(Instant, SystemTime)>,
) -> LeaseView {
    match (current, confirmed) {
        (LeaseView::Lost, _) => LeaseView::Lost,
        (LeaseView::Until { at, wall }, _) if at <= now || wall <= wall_now => LeaseView::Lost,
        (_, Some((at, wall))) => LeaseView::Until { at, wall },
        (LeaseView::Until { .. }, None) => LeaseView::Lost,
        (LeaseView::Unconfirmed, None) => LeaseView::Unconfirmed,
    }
}

/// Until when a lease renewed at `renewed` (wall clock, written by this process) for
/// `duration` stays ours, on the monotonic and the wall clock; `None` if it already lapsed.
pub fn lease_valid_until(
    now: Instant,
    wall_now: SystemTime,
    renewed: SystemTime,
    duration: Duration,
) -> Option<(Instant, SystemTime)> {
    // A renewal time ahead of the wall clock (it moved back) counts as now: never later.
    let age = wall_now.duration_since(renewed).unwrap_or(Duration::ZERO);
    let left = duration.checked_sub(age).filter(|left| !left.is_zero())?;
    Some((now.checked_add(left)?, wall_now.checked_add(left)?))
}

pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Blocks until this replica leads (and its lease is confirmed), or returns `None` when
/// election is off. The gate then follows the lease's renewals.
pub async fn acquire(
    client: &Client,
    args: &LeaderArgs,
) -> Result<(Gate, Option<Leadership>), LeaderError> {
    if !args.leader_election {
        return Ok((Gate::open(), None));
    }
    let namespace = args
        .leader_election_namespace
        .clone()
        .ok_or(LeaderError::NoNamespace)?;
    let cap = lease_timeout_cap(args)?;
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
    if let Some(cap) = cap {
        warn!(
            cap_s = cap.at_most.as_secs(),
            "--lease-duration-seconds and --lease-renew-margin-seconds cover token requests of at most this many seconds: longer spec.tokenEndpoint.timeoutSeconds are capped (said on each resource's TimeoutCapped condition)"
        );
    } else if args.lease_renew_margin_seconds < 30 + CLOCK_SKEW.as_secs() {
        warn!(
            margin_s = args.lease_renew_margin_seconds,
            "--lease-renew-margin-seconds is below the longest token-request timeout (30 s) + 2 s: token requests with long timeouts wait for the next renewal"
        );
    }
    let gate = Gate::fenced(cap);
    let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let confirmations = tokio::spawn(follow_lease(
        api,
        args.leader_election_lease_name.clone(),
        identity,
        gate.clone(),
    ));
    Ok((
        gate,
        Some(Leadership {
            state,
            watcher,
            confirmations,
        }),
    ))
}

/// Checks the lease flags: the cap on token requests' timeouts when the lease covers less
/// than the longest one, or an error when it covers not even the shortest.
pub fn lease_timeout_cap(args: &LeaderArgs) -> Result<Option<TimeoutCap>, LeaderError> {
    let (duration, margin) = (args.lease_duration_seconds, args.lease_renew_margin_seconds);
    if margin == 0 || margin >= duration {
        return Err(LeaderError::BadTiming);
    }
    let (lease_duration, renew_margin) =
        (Duration::from_secs(duration), Duration::from_secs(margin));
    let at_most = request_timeout_cap(lease_duration, renew_margin)
        .ok_or(LeaderError::LeaseTooShort { duration, margin })?;
    Ok((at_most < MAX_REQUEST_TIMEOUT).then_some(TimeoutCap {
        at_most,
        lease_duration,
        renew_margin,
    }))
}

/// Confirms the lease from the Lease object itself: each renewal this replica wrote extends
/// the gate; another holder, or silence past the lease's end, closes it for good and stops
/// the run (as a lost lease does).
async fn follow_lease(api: Api<Lease>, name: String, identity: String, gate: Gate) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut leases = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(event) = leases.next().await {
        let lease = match event {
            Ok(lease) => lease,
            Err(e) => {
                // Retried with backoff; meanwhile no renewal is confirmed and requests wait.
                warn!(error = %e, lease = %name, "cannot watch the Lease; token requests wait for a confirmed renewal (the Role needs get, list and watch on it)");
                continue;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        let confirmed = match (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_duration_seconds,
        ) {
            (Some(holder), Some(renewed), Some(secs)) if holder == identity => lease_valid_until(
                Instant::now(),
                SystemTime::now(),
                SystemTime::from(renewed.0),
                Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
            ),
            _ => None,
        };
        if gate.confirm(confirmed) == LeaseView::Lost {
            warn!(lease = %name, "the lease lapsed or went to another replica; stopping");
            gate.stop();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn until(now: Instant, wall: SystemTime, secs: u64) -> LeaseView {
        LeaseView::Until {
            at: now + S(secs),
            wall: wall + S(secs),
        }
    }

    #[test]
    fn a_request_starts_only_if_the_lease_outlives_its_timeout() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + S(1_000_000);
        let timeout = S(30);
        // Confirmed for 40 s: a 30 s request (+2 s skew) fits; for 32 s it does not.
        assert!(fence_permits(now, wall, until(now, wall, 40), timeout));
        assert!(!fence_permits(now, wall, until(now, wall, 32), timeout));
        assert!(fence_permits(now, wall, until(now, wall, 33), timeout));
        // Unconfirmed, lost or already lapsed: never.
        assert!(!fence_permits(now, wall, LeaseView::Unconfirmed, timeout));
        assert!(!fence_permits(now, wall, LeaseView::Lost, timeout));
        assert!(!fence_permits(
            now + S(100),
            wall,
            until(now, wall, 40),
            timeout
        ));
        // After a suspend the monotonic clock lags; the wall clock still says it lapsed.
        assert!(!fence_permits(
            now,
            wall + S(100),
            until(now, wall, 40),
            timeout
        ));
        // A short timeout may use the tail of the lease.
        assert!(fence_permits(now, wall, until(now, wall, 4), S(1)));
        // Enormous timeouts cannot overflow into a permit.
        assert!(!fence_permits(
            now,
            wall,
            until(now, wall, 40),
            Duration::MAX
        ));
    }

    #[test]
    fn a_lapsed_or_lost_lease_never_reopens() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + S(1_000_000);
        let fresh = Some((now + S(60), wall + S(60)));
        assert_eq!(
            next_view(LeaseView::Unconfirmed, now, wall, None),
            LeaseView::Unconfirmed
        );
        assert_eq!(
            next_view(LeaseView::Unconfirmed, now, wall, fresh),
            until(now, wall, 60)
        );
        // Renewed in time: extended.
        assert_eq!(
            next_view(until(now, wall, 5), now, wall, fresh),
            until(now, wall, 60)
        );
        // A renewal seen only after the lease lapsed (another replica may lead by now).
        assert_eq!(
            next_view(until(now, wall, 5), now + S(6), wall + S(6), fresh),
            LeaseView::Lost
        );
        assert_eq!(
            next_view(until(now, wall, 5), now, wall + S(6), fresh),
            LeaseView::Lost
        );
        // Another holder, then ours again: still lost.
        assert_eq!(
            next_view(until(now, wall, 30), now, wall, None),
            LeaseView::Lost
        );
        assert_eq!(
            next_view(LeaseView::Lost, now, wall, fresh),
            LeaseView::Lost
        );
    }

    #[test]
    fn the_lease_is_ours_until_its_renewal_plus_duration() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + S(1_000_000);
        assert_eq!(
            lease_valid_until(now, wall, wall - S(10), S(60)),
            Some((now + S(50), wall + S(50)))
        );
        // Renewed "in the future" (the wall clock stepped back): never longer than duration.
        assert_eq!(
            lease_valid_until(now, wall, wall + S(30), S(60)),
            Some((now + S(60), wall + S(60)))
        );
        // Lapsed, exactly or long ago (a frozen process thawing).
        assert_eq!(lease_valid_until(now, wall, wall - S(60), S(60)), None);
        assert_eq!(lease_valid_until(now, wall, wall - S(3600), S(60)), None);
        assert_eq!(
            lease_valid_until(now, wall, SystemTime::UNIX_EPOCH, S(60)),
            None
        );
    }

    #[test]
    fn the_lease_covers_requests_up_to_its_cap() {
        // The defaults cover any request (at most 30 s): nothing is capped.
        assert_eq!(request_timeout_cap(S(60), S(40)), Some(S(55)));
        // A short margin: a request fits after each renewal.
        assert_eq!(request_timeout_cap(S(60), S(20)), Some(S(55)));
        // A 6 s lease: a 30 s request never fits; 1 s does, after each renewal.
        assert_eq!(request_timeout_cap(S(6), S(2)), Some(S(1)));
        // A margin close to the duration: a request fits at any moment.
        assert_eq!(request_timeout_cap(S(6), S(5)), Some(S(2)));
        // Nothing fits.
        assert_eq!(request_timeout_cap(S(5), S(2)), None);
        assert_eq!(request_timeout_cap(S(2), S(1)), None);
        // The cap is honoured by the fence: right after a renewal a capped request may
        // start, and a withheld one finds the lease open again each renewal.
        for (d, m) in [(6, 2), (6, 5), (7, 3), (10, 1), (35, 4)] {
            let cap = request_timeout_cap(S(d), S(m)).unwrap();
            let now = Instant::now();
            let wall = SystemTime::UNIX_EPOCH + S(1_000_000);
            // The renewal seen late, after CONFIRM_LAG.
            let seen = until(now, wall, d - CONFIRM_LAG.as_secs());
            assert!(fence_permits(now, wall, seen, cap), "{d}/{m}");
            // Open for at least a retry interval (2 s), or up to the next renewal.
            let open_for = S(2).min(S(d - m));
            assert!(
                fence_permits(
                    now + open_for - S(1) / 2,
                    wall + open_for - S(1) / 2,
                    seen,
                    cap
                ),
                "{d}/{m}"
            );
        }
    }

    fn args(duration: u64, margin: u64) -> LeaderArgs {
        LeaderArgs {
            leader_election: true,
            leader_election_namespace: Some("ns".into()),
            leader_election_lease_name: "l".into(),
            lease_duration_seconds: duration,
            lease_renew_margin_seconds: margin,
        }
    }

    #[test]
    fn a_lease_that_covers_no_request_is_refused_at_start_up() {
        assert!(matches!(lease_timeout_cap(&args(60, 40)), Ok(None)));
        let cap = lease_timeout_cap(&args(6, 2)).unwrap().expect("capped");
        assert_eq!(
            (cap.at_most, cap.lease_duration, cap.renew_margin),
            (S(1), S(6), S(2))
        );
        let err = lease_timeout_cap(&args(5, 2)).unwrap_err().to_string();
        assert!(
            err.contains("--lease-duration-seconds 5")
                && err.contains("--lease-renew-margin-seconds 2"),
            "{err}"
        );
        assert!(matches!(
            lease_timeout_cap(&args(6, 6)),
            Err(LeaderError::BadTiming)
        ));
    }

    #[test]
    fn a_request_withheld_for_a_minute_is_told_since_when() {
        let now = Instant::now();
        let led = SystemTime::UNIX_EPOCH + S(1_000_000);
        // Never confirmed (no RBAC on the Lease, say): since leadership began.
        assert_eq!(
            long_withheld(LeaseView::Unconfirmed, led, led + S(59), S(30)),
            None
        );
        assert_eq!(
            long_withheld(LeaseView::Unconfirmed, led, led + S(60), S(30)),
            Some(led)
        );
        // Confirmed until led + 100 s: a 30 s request is kept back from led + 68 s.
        let lease = until(now, led, 100);
        assert_eq!(long_withheld(lease, led, led + S(127), S(30)), None);
        assert_eq!(
            long_withheld(lease, led, led + S(128), S(30)),
            Some(led + S(68))
        );
        // A lease never long enough for the request: since leadership began.
        let short = until(now, led, 6);
        assert_eq!(long_withheld(short, led, led + S(61), S(30)), Some(led));
        // The same state, asked again later: the same answer (a status written once).
        assert_eq!(
            long_withheld(short, led, led + S(600), S(30)),
            long_withheld(short, led, led + S(61), S(30))
        );
        // Lost: the process stops; nothing to tell.
        assert_eq!(
            long_withheld(LeaseView::Lost, led, led + S(600), S(30)),
            None
        );
        // A wall clock stepped back: nothing yet.
        assert_eq!(
            long_withheld(LeaseView::Unconfirmed, led, led - S(5), S(30)),
            None
        );
    }

    #[test]
    fn a_closed_gate_permits_nothing() {
        let gate = Gate::open();
        assert_eq!(gate.permit(S(30)), Ok(()));
        gate.stop();
        assert_eq!(gate.permit(S(1)), Err(Withheld::ShuttingDown));

        let fenced = Gate::fenced(None);
        assert_eq!(fenced.permit(S(1)), Err(Withheld::LeaseUnconfirmed));
        fenced.confirm(Some((Instant::now() + S(60), SystemTime::now() + S(60))));
        assert_eq!(fenced.permit(S(30)), Ok(()));
        assert_eq!(fenced.confirm(None), LeaseView::Lost);
        assert_eq!(fenced.permit(S(1)), Err(Withheld::LeaseUnconfirmed));
    }
}

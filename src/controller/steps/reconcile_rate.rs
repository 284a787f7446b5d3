//! Reconciles per namespace, rate-limited: a token bucket per namespace (`rate` per second,
//! `2 × rate` burst), so that one namespace's churn (a tenant rewriting its objects in a loop)
//! cannot take the controller's reconcile slots from every other namespace. A reconcile over
//! the limit makes no API call: it books the namespace's next free token and is requeued for
//! then; when it comes back (or anything else triggers that resource before), it waits for
//! its booking rather than taking a second token. A resource holds at most one booking, so a
//! namespace's debt is bounded by its resources.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::ResourceKey;

/// Idle buckets are dropped this often (a full bucket without bookings is a fresh one).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A booking not taken this long after its time belongs to a resource deleted meanwhile.
const BOOKING_KEPT: Duration = Duration::from_secs(60);

struct Bucket {
    /// May go below zero: the tokens booked ahead.
    tokens: f64,
    at: Instant,
    /// By resource UID: when its booked token is its own.
    booked: HashMap<Box<str>, Instant>,
}

struct Buckets {
    by_namespace: HashMap<String, Bucket>,
    last_sweep: Instant,
}

pub struct ReconcileRate {
    /// Tokens per second; `None`: no limit.
    rate: Option<f64>,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl ReconcileRate {
    /// `per_second` reconciles per namespace (0: no limit), a burst of twice that.
    pub fn new(per_second: u32) -> Self {
        ReconcileRate {
            rate: (per_second > 0).then_some(f64::from(per_second)),
            burst: f64::from(per_second) * 2.0,
            buckets: Mutex::new(Buckets {
                by_namespace: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// `None`: reconcile now. `Some(wait)`: over the limit; requeue after `wait`, without
    /// any API call (the token for then is booked for this resource).
    pub fn admit(&self, key: &ResourceKey) -> Option<Duration> {
        let rate = self.rate?;
        let (namespace, uid) = (key.namespace(), key.uid());
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.sweep(now, self.burst, rate);
        let burst = self.burst;
        let bucket = buckets
            .by_namespace
            .entry(namespace.to_string())
            .or_insert_with(|| Bucket {
                tokens: burst,
                at: now,
                booked: HashMap::new(),
            });
        bucket.refill(now, rate, burst);
        if let Some(at) = bucket.booked.get(uid).copied() {
            if at <= now {
                bucket.booked.remove(uid);
                return None;
            }
            return Some(at - now);
        }
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            return None;
        }
        // The token it takes exists once the level is back at zero.
        let wait = Duration::from_secs_f64(-bucket.tokens / rate);
        bucket.booked.insert(uid.into(), now + wait);
        Some(wait)
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

impl Buckets {
    /// Drops full buckets without bookings and bookings long past (deleted resources).
    fn sweep(&mut self, now: Instant, burst: f64, rate: f64) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        self.by_namespace.retain(|_, bucket| {
            bucket.refill(now, rate, burst);
            bucket
                .booked
                .retain(|_, at| now.saturating_duration_since(*at) < BOOKING_KEPT);
            bucket.tokens < burst || !bucket.booked.is_empty()
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_namespace.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, uid: &str) -> ResourceKey {
        crate::api::key::test_key(uid, namespace, uid)
    }

    fn admitted(rate: &ReconcileRate, ns: &str, uids: impl IntoIterator<Item = String>) -> usize {
        uids.into_iter()
            .filter(|uid| rate.admit(&key(ns, uid)).is_none())
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let rate = ReconcileRate::new(50);
        let uids = |prefix: &'static str, n: usize| (0..n).map(move |i| format!("{prefix}-{i}"));
        // A churning namespace: the burst of 100 passes, the rest is requeued.
        assert_eq!(admitted(&rate, "noisy", uids("a", 300)), 100);
        // Another namespace is not slowed at all.
        assert_eq!(admitted(&rate, "quiet", uids("q", 100)), 100);
        // Each refused reconcile booked a later token: the 200 bookings span 4 s at 50/s.
        let wait = rate
            .admit(&key("noisy", "a-299"))
            .expect("booked, not yet due");
        assert_eq!(wait, Duration::from_secs(4));
        // Triggered again before its time (another event): still no token taken.
        assert_eq!(
            rate.admit(&key("noisy", "a-299")),
            Some(Duration::from_secs(4))
        );
        // A new resource queues behind the bookings.
        assert_eq!(
            rate.admit(&key("noisy", "late")),
            Some(Duration::from_secs_f64(201.0 / 50.0))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        // Half the bookings are due, the others not.
        assert_eq!(admitted(&rate, "noisy", uids("a", 300).skip(100)), 100);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(admitted(&rate, "noisy", uids("a", 300).skip(200)), 100);
        // A booking is taken once: the next reconcile of that resource takes a new token.
        assert!(rate.admit(&key("noisy", "a-150")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_namespace_refills_to_its_burst_and_is_forgotten() {
        let rate = ReconcileRate::new(1);
        assert_eq!(rate.admit(&key("ns", "u1")), None);
        assert_eq!(rate.admit(&key("ns", "u2")), None);
        assert_eq!(rate.admit(&key("ns", "u3")), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(10)).await;
        // u3 takes its booking; the bucket was refilled to its burst, not beyond.
        assert_eq!(rate.admit(&key("ns", "u3")), None);
        assert_eq!(rate.admit(&key("ns", "u4")), None);
        assert_eq!(rate.admit(&key("ns", "u5")), None);
        assert!(rate.admit(&key("ns", "u6")).is_some());
        // A booking never taken (its resource was deleted) and an idle bucket both go.
        tokio::time::advance(SWEEP_EVERY + BOOKING_KEPT).await;
        rate.admit(&key("other", "x"));
        let buckets = rate.buckets.lock().unwrap();
        assert_eq!(buckets.len(), 1, "only the namespace just used");
    }

    #[test]
    fn zero_means_no_limit() {
        let rate = ReconcileRate::new(0);
        assert!((0..10_000).all(|i| rate.admit(&key("ns", &i.to_string())).is_none()));
    }
}

//! Pacing of token requests, fair between tenants. A resource's `requestsPerSecond` (or its
//! preset's) paces the requests of its own namespace to that host, and a 429 pauses that
//! namespace's requests to the host: nothing a namespace writes can slow another namespace.
//! A rate that every namespace shares comes only from the cluster admin
//! (`--token-host-rate HOST=N`). Requests are spaced evenly under a rate (no burst above it in
//! any one-second window).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::provider::ProviderConfig;

/// A 429 pauses the namespace's queue for the host for its `Retry-After`, within these bounds:
/// long enough to stop a burst, short enough that a hostile answer cannot starve the
/// namespace's other resources for long.
const MIN_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// A namespace's queue for a host unused this long is forgotten (its limiter is full again
/// after at most 1.25 s at the lowest rate): the table follows the namespaces and hosts in
/// use, not every pair ever seen.
const IDLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct EndpointQueues {
    /// By namespace and host: the tenant's own pacing and pauses.
    queues: Mutex<Queues>,
    /// By host: the cluster admin's rates, shared by every namespace (fixed at start-up).
    shared: HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>,
    /// By host: when the admin's rate gives its next turn (see [`EndpointQueues::would_wait`]).
    shared_next: Mutex<HashMap<String, Instant>>,
}

#[derive(Default)]
struct Queues {
    by_tenant: HashMap<(String, String), Queue>,
    last_sweep: Option<Instant>,
}

struct Queue {
    /// The lowest rate a resource of this namespace configured for this host, and its limiter.
    limiter: Option<(u32, Arc<DefaultDirectRateLimiter>)>,
    paused_until: Option<Instant>,
    /// When the limiter gives its next turn, as of the last one it gave.
    next_turn: Option<Instant>,
    last_used: Instant,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            limiter: None,
            paused_until: None,
            next_turn: None,
            last_used: Instant::now(),
        }
    }
}

impl EndpointQueues {
    /// `shared`: the cluster admin's rates by host (`host` or `host:port`).
    pub fn new(shared: &[(String, u32)]) -> Self {
        EndpointQueues {
            queues: Mutex::default(),
            shared: shared
                .iter()
                .map(|(host, rate)| {
                    (
                        host.clone(),
                        (*rate, Arc::new(RateLimiter::direct(spaced_quota(*rate)))),
                    )
                })
                .collect(),
            shared_next: Mutex::default(),
        }
    }

    /// Waits for this request's turn: the namespace's own pace and pause for the host, then the
    /// admin's shared rate for the host.
    pub async fn wait_turn(&self, namespace: &str, config: &ProviderConfig) {
        let key = (namespace.to_string(), host_key(config));
        loop {
            let (limiter, paused_until, rps) = {
                let mut queues = self.lock();
                let queue = queues.by_tenant.entry(key.clone()).or_default();
                queue.last_used = Instant::now();
                if let Some(rps) = config.requests_per_second.filter(|r| *r > 0)
                    && queue.limiter.as_ref().is_none_or(|(r, _)| rps < *r)
                {
                    queue.limiter = Some((rps, Arc::new(RateLimiter::direct(spaced_quota(rps)))));
                }
                (
                    queue.limiter.as_ref().map(|(_, l)| l.clone()),
                    queue.paused_until,
                    queue.limiter.as_ref().map(|(r, _)| *r),
                )
            };
            if let Some(until) = paused_until.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            if let (Some(limiter), Some(rps)) = (limiter, rps) {
                limiter.until_ready().await;
                if let Some(queue) = self.lock().by_tenant.get_mut(&key) {
                    queue.next_turn = Some(Instant::now() + spacing(rps));
                }
            }
            // A pause that began while this request waited for the limiter applies to it too.
            if !self.is_paused(&key) {
                break;
            }
        }
        if let Some((host, rate, shared)) = self.shared_limiter(config) {
            shared.until_ready().await;
            self.shared_next
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host, Instant::now() + spacing(rate));
        }
    }

    /// Whether a request of `namespace` to this host would wait for its turn now: a 429 pause
    /// holds it, or the namespace's pace or the admin's rate gave a turn too recently. (A
    /// reconcile whose request would wait does not wait for it at all.)
    #[cfg(test)]
    pub fn would_wait(&self, namespace: &str, config: &ProviderConfig) -> bool {
        self.turn_at(namespace, config).is_some()
    }

    /// When a request of `namespace` to this host gets its turn, if not now.
    pub fn turn_at(&self, namespace: &str, config: &ProviderConfig) -> Option<Instant> {
        let now = Instant::now();
        let key = (namespace.to_string(), host_key(config));
        let own = self
            .lock()
            .by_tenant
            .get(&key)
            .and_then(|q| q.paused_until.max(q.next_turn));
        let shared = self.shared_limiter(config).and_then(|(host, _, _)| {
            self.shared_next
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&host)
                .copied()
        });
        own.max(shared).filter(|t| *t > now)
    }

    /// The host answered 429 to a request of `namespace`: hold that namespace's requests to it
    /// for a while.
    pub fn pause(&self, namespace: &str, config: &ProviderConfig, retry_after: Option<Duration>) {
        let pause = retry_after.unwrap_or(MIN_PAUSE).clamp(MIN_PAUSE, MAX_PAUSE);
        let until = Instant::now() + pause;
        let mut queues = self.lock();
        let queue = queues
            .by_tenant
            .entry((namespace.to_string(), host_key(config)))
            .or_default();
        queue.paused_until = Some(queue.paused_until.map_or(until, |u| u.max(until)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if queues
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > IDLE_AFTER)
        {
            queues.last_sweep = Some(now);
            queues.by_tenant.retain(|_, q| {
                now.duration_since(q.last_used) < IDLE_AFTER
                    || q.paused_until.is_some_and(|u| u > now)
            });
            queues.by_tenant.shrink_to_fit();
        }
        queues
    }

    fn is_paused(&self, key: &(String, String)) -> bool {
        self.lock()
            .by_tenant
            .get(key)
            .and_then(|q| q.paused_until)
            .is_some_and(|u| u > Instant::now())
    }

    /// The admin's rate for this host: by `host:port`, else by `host`; with the key it was
    /// found under and the rate.
    fn shared_limiter(
        &self,
        config: &ProviderConfig,
    ) -> Option<(String, u32, &Arc<DefaultDirectRateLimiter>)> {
        if self.shared.is_empty() {
            return None;
        }
        let host = config
            .token_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        [host_key(config), host].into_iter().find_map(|key| {
            let (rate, limiter) = self.shared.get(&key)?;
            Some((key, *rate, limiter))
        })
    }
}

/// Token requests of one namespace waiting for their turn or sent, by default: enough to keep
/// a provider busy at start-up, few enough that a namespace of resources against a slow
/// endpoint holds a bounded share of connections and memory.
pub const DEFAULT_REQUESTS_IN_FLIGHT: usize = 16;

/// One of a namespace's request slots, held until the answer is handled.
pub type RequestSlot = tokio::sync::OwnedSemaphorePermit;

/// The semaphore of each namespace with requests in flight, and when it was last swept.
type SlotTable = (
    HashMap<String, Arc<tokio::sync::Semaphore>>,
    Option<Instant>,
);

/// The bound on requests in flight per namespace: a semaphore each, first come first served,
/// forgotten when none of its slots is held.
pub struct RequestSlots {
    per_namespace: usize,
    slots: Mutex<SlotTable>,
}

impl RequestSlots {
    /// `per_namespace`: 0 for [`DEFAULT_REQUESTS_IN_FLIGHT`].
    pub fn new(per_namespace: usize) -> Self {
        RequestSlots {
            per_namespace: if per_namespace == 0 {
                DEFAULT_REQUESTS_IN_FLIGHT
            } else {
                per_namespace
            },
            slots: Mutex::default(),
        }
    }

    pub async fn acquire(&self, namespace: &str) -> RequestSlot {
        let semaphore = {
            let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let (slots, last_sweep) = &mut *guard;
            let now = Instant::now();
            if last_sweep.is_none_or(|t| now.duration_since(t) > IDLE_AFTER) {
                *last_sweep = Some(now);
                // Held or awaited slots keep a second reference to their semaphore.
                slots.retain(|_, s| Arc::strong_count(s) > 1);
                slots.shrink_to_fit();
            }
            slots
                .entry(namespace.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_namespace)))
                .clone()
        };
        // Never closed: a semaphore here lives as long as a reference to it.
        match semaphore.acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => unreachable!("request slots are never closed"),
        }
    }

    /// Whether a request of `namespace` would get a slot now (a reconcile whose request would
    /// only queue does not wait for it at all).
    pub fn has_free(&self, namespace: &str) -> bool {
        let guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .0
            .get(namespace)
            .is_none_or(|s| s.available_permits() > 0)
    }

    #[cfg(test)]
    fn namespaces(&self) -> usize {
        self.slots.lock().unwrap().0.len()
    }
}

fn host_key(config: &ProviderConfig) -> String {
    format!(
        "{}:{}",
        config
            .token_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase(),
        config.token_url.port_or_known_default().unwrap_or_default()
    )
}

/// Evenly spaced requests with no burst and a 25% margin: providers count arrivals in sliding
/// windows, so N requests in a burst plus one more a moment later would already exceed "N per
/// second"; the margin absorbs requests that leave or arrive late and bunch up (a new
/// connection, a busy machine, network jitter: at 10 per second, up to 250 ms). With reads
/// cached, new credentials reach the queue back to back and the pace is always the binding
/// limit, so 15% (150 ms) proved too little on a loaded 2-core machine.
fn spaced_quota(per_second: u32) -> Quota {
    Quota::with_period(spacing(per_second))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
}

/// The time between two turns at `per_second` (0 is taken as 1).
fn spacing(per_second: u32) -> Duration {
    Duration::from_secs_f64(1.25 / f64::from(per_second.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProviderCredentialSpec, provider_config};

    fn config(url: &str, rps: Option<u32>) -> ProviderConfig {
        let spec: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
            "tokenEndpoint": {"url": url, "requestsPerSecond": rps},
            "credentials": {"secretRef": {"name": "c"}},
            "target": {"secretName": "t"},
        }))
        .unwrap();
        provider_config(&spec).unwrap()
    }

    /// Whether a request's turn comes without waiting at all (ready on the first poll).
    async fn passes_at_once(
        queues: &EndpointQueues,
        namespace: &str,
        config: &ProviderConfig,
    ) -> bool {
        tokio::time::timeout(Duration::ZERO, queues.wait_turn(namespace, config))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_that_namespaces_requests_to_that_host_only() {
        let queues = EndpointQueues::default();
        let a = config("https://a.example.test/token", None);
        let other_path = config("https://a.example.test/other", None);
        let b = config("https://b.example.test/token", None);
        queues.pause("tenant", &a, Some(Duration::from_millis(1)));
        let started = Instant::now();
        queues.wait_turn("tenant", &other_path).await;
        assert!(
            started.elapsed() >= MIN_PAUSE,
            "held for at least the minimum pause"
        );
        queues.pause("tenant", &a, Some(Duration::from_secs(3600)));
        assert!(
            passes_at_once(&queues, "tenant", &b).await,
            "another host is not held"
        );
        assert!(
            passes_at_once(&queues, "victim", &a).await,
            "another namespace is not held"
        );
        let key = ("tenant".to_string(), "a.example.test:443".to_string());
        assert!(queues.is_paused(&key));
        // Known without waiting: such a request's reconcile does not wait for it.
        assert!(queues.would_wait("tenant", &a) && queues.would_wait("tenant", &other_path));
        assert!(!queues.would_wait("victim", &a) && !queues.would_wait("tenant", &b));
        let started = Instant::now();
        queues.wait_turn("tenant", &a).await;
        let held = started.elapsed();
        assert!(
            held >= MAX_PAUSE && held < MAX_PAUSE + MIN_PAUSE,
            "a Retry-After of an hour is capped: {held:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenants_rate_paces_only_its_own_namespace() {
        let queues = EndpointQueues::default();
        let slow = config("https://shared.example.test/token", Some(1));
        let plain = config("https://shared.example.test/token", None);
        // The hostile namespace sets 1/s and sends; its second request waits for its turn.
        assert!(passes_at_once(&queues, "hostile", &slow).await);
        assert!(
            queues.would_wait("hostile", &plain),
            "known before it waits"
        );
        assert!(!queues.would_wait("victim", &plain));
        assert!(!passes_at_once(&queues, "hostile", &plain).await);
        // The victim's requests to the same host never wait, however many.
        for _ in 0..20 {
            assert!(passes_at_once(&queues, "victim", &plain).await);
        }
        // Within one namespace the lowest rate wins.
        queues
            .wait_turn("team", &config("https://a.example.test/token", Some(100)))
            .await;
        queues
            .wait_turn("team", &config("https://a.example.test/token", Some(5)))
            .await;
        let rate = queues.lock().by_tenant[&("team".to_string(), "a.example.test:443".to_string())]
            .limiter
            .as_ref()
            .map(|(r, _)| *r);
        assert_eq!(rate, Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_admins_rate_is_shared_and_idle_queues_are_forgotten() {
        let queues = EndpointQueues::new(&[("shared.example.test".into(), 2)]);
        let shared = config("https://Shared.example.test/token", None);
        assert!(passes_at_once(&queues, "one", &shared).await);
        assert!(queues.would_wait("two", &shared), "known before it waits");
        assert!(!queues.would_wait("two", &config("https://other.example.test/t", None)));
        assert!(
            !passes_at_once(&queues, "two", &shared).await,
            "the admin's rate holds across namespaces"
        );
        assert!(
            passes_at_once(
                &queues,
                "two",
                &config("https://other.example.test/t", None)
            )
            .await
        );
        assert_eq!(queues.lock().by_tenant.len(), 3);
        tokio::time::advance(IDLE_AFTER * 2).await;
        let other = config("https://third.example.test/t", None);
        assert!(passes_at_once(&queues, "three", &other).await);
        assert_eq!(
            queues.lock().by_tenant.len(),
            1,
            "only the queue just used is kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_holds_at_most_its_slots_and_others_are_not_held() {
        let slots = RequestSlots::new(2);
        let held = [
            slots.acquire("hostile").await,
            slots.acquire("hostile").await,
        ];
        let third = tokio::time::timeout(Duration::ZERO, slots.acquire("hostile")).await;
        assert!(third.is_err(), "the third request of the namespace waits");
        assert!(!slots.has_free("hostile") && slots.has_free("victim"));
        for _ in 0..10 {
            let free = tokio::time::timeout(Duration::ZERO, slots.acquire("victim")).await;
            assert!(free.is_ok(), "another namespace never waits for it");
        }
        drop(held);
        assert!(
            tokio::time::timeout(Duration::ZERO, slots.acquire("hostile"))
                .await
                .is_ok()
        );
        // Unused namespaces are forgotten.
        tokio::time::advance(IDLE_AFTER * 2).await;
        let _kept = slots.acquire("busy").await;
        assert_eq!(slots.namespaces(), 1);
        assert_eq!(
            RequestSlots::new(0).per_namespace,
            DEFAULT_REQUESTS_IN_FLIGHT
        );
    }
}

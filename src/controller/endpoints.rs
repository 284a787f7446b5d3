//! One queue per token endpoint host, shared by every resource using it: requests are paced
//! evenly under the provider's documented rate (no burst above it in any one-second window),
//! and a 429 from the host pauses the whole queue, not just the resource that got it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::provider::ProviderConfig;

/// A 429 pauses the host's queue for its `Retry-After`, within these bounds: long enough to
/// stop a burst, short enough that one tenant's answer cannot starve the others.
const MIN_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct EndpointQueues {
    queues: Mutex<HashMap<String, Queue>>,
}

#[derive(Default)]
struct Queue {
    /// The lowest rate any resource configured for this host, and its limiter.
    limiter: Option<(u32, Arc<DefaultDirectRateLimiter>)>,
    paused_until: Option<Instant>,
}

impl EndpointQueues {
    /// Waits for this request's turn at its endpoint.
    pub async fn wait_turn(&self, config: &ProviderConfig) {
        let key = host_key(config);
        loop {
            let (limiter, paused_until) = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let queue = queues.entry(key.clone()).or_default();
                if let Some(rps) = config.requests_per_second.filter(|r| *r > 0)
                    && queue.limiter.as_ref().is_none_or(|(r, _)| rps < *r)
                {
                    queue.limiter = Some((rps, Arc::new(RateLimiter::direct(spaced_quota(rps)))));
                }
                (
                    queue.limiter.as_ref().map(|(_, l)| l.clone()),
                    queue.paused_until,
                )
            };
            if let Some(until) = paused_until.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            if let Some(limiter) = limiter {
                limiter.until_ready().await;
            }
            // A pause that began while this request waited for the limiter applies to it too.
            if !self.is_paused(&key) {
                return;
            }
        }
    }

    /// The host answered 429: hold every request to it for a while.
    pub fn pause(&self, config: &ProviderConfig, retry_after: Option<Duration>) {
        let pause = retry_after.unwrap_or(MIN_PAUSE).clamp(MIN_PAUSE, MAX_PAUSE);
        let until = Instant::now() + pause;
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues.entry(host_key(config)).or_default();
        queue.paused_until = Some(queue.paused_until.map_or(until, |u| u.max(until)));
    }

    fn is_paused(&self, key: &str) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .get(key)
            .and_then(|q| q.paused_until)
            .is_some_and(|u| u > Instant::now())
    }
}

fn host_key(config: &ProviderConfig) -> String {
    format!(
        "{}:{}",
        config.token_url.host_str().unwrap_or_default(),
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
    let period = Duration::from_secs_f64(1.25 / f64::from(per_second));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN)
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

    #[tokio::test]
    async fn a_429_holds_every_request_to_that_host_only() {
        let queues = EndpointQueues::default();
        let a = config("https://a.example.test/token", None);
        let other_path = config("https://a.example.test/other", None);
        let b = config("https://b.example.test/token", None);
        queues.pause(&a, Some(Duration::from_millis(1)));
        let started = Instant::now();
        queues.wait_turn(&other_path).await;
        assert!(
            started.elapsed() >= MIN_PAUSE,
            "held for at least the minimum pause"
        );
        let started = Instant::now();
        queues.pause(&a, Some(Duration::from_secs(3600)));
        queues.wait_turn(&b).await;
        assert!(started.elapsed() < MIN_PAUSE, "another host is not held");
        assert!(queues.is_paused("a.example.test:443"));
    }

    #[tokio::test]
    async fn the_lowest_configured_rate_wins_for_a_host() {
        let queues = EndpointQueues::default();
        queues
            .wait_turn(&config("https://a.example.test/token", Some(100)))
            .await;
        queues
            .wait_turn(&config("https://a.example.test/token", Some(5)))
            .await;
        let rate = queues.queues.lock().unwrap()["a.example.test:443"]
            .limiter
            .as_ref()
            .map(|(r, _)| *r);
        assert_eq!(rate, Some(5));
    }
}

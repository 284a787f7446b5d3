//! Shared state of the running controller.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::Client;
use kube::runtime::events::Recorder;
use secrecy::SecretString;

use crate::provider::{ProviderConfig, TokenClient};
use crate::telemetry::Metrics;

pub struct Context {
    pub client: Client,
    pub tokens: TokenClient,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    limiters: Mutex<HashMap<(String, u32), Arc<DefaultDirectRateLimiter>>>,
    /// Refresh tokens received but not yet stored, by resource UID: never dropped, never
    /// superseded by the older value in the state Secret.
    pending_refresh: Mutex<HashMap<String, SecretString>>,
}

impl Context {
    pub fn new(
        client: Client,
        tokens: TokenClient,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            tokens,
            recorder,
            metrics,
            limiters: Mutex::default(),
            pending_refresh: Mutex::default(),
        }
    }

    /// Waits for a slot under the endpoint host's request rate, if the provider has one.
    pub async fn rate_limit(&self, config: &ProviderConfig) {
        let Some(rps) = config.requests_per_second.filter(|r| *r > 0) else {
            return;
        };
        let host = format!(
            "{}:{}",
            config.token_url.host_str().unwrap_or_default(),
            config.token_url.port_or_known_default().unwrap_or_default()
        );
        let limiter = {
            let mut limiters = self.limiters.lock().expect("limiter lock");
            limiters
                .entry((host, rps))
                .or_insert_with(|| Arc::new(RateLimiter::direct(spaced_quota(rps))))
                .clone()
        };
        limiter.until_ready().await;
    }

    pub fn pending_refresh(&self, uid: &str) -> Option<SecretString> {
        self.pending_refresh
            .lock()
            .expect("pending lock")
            .get(uid)
            .cloned()
    }

    pub fn hold_refresh(&self, uid: &str, token: SecretString) {
        self.pending_refresh
            .lock()
            .expect("pending lock")
            .insert(uid.to_string(), token);
    }

    pub fn release_refresh(&self, uid: &str) {
        self.pending_refresh
            .lock()
            .expect("pending lock")
            .remove(uid);
    }
}

/// Evenly spaced requests with no burst and a 5% margin: providers count in sliding windows,
/// so N requests in a burst plus one more a moment later would already exceed "N per second".
fn spaced_quota(per_second: u32) -> Quota {
    let period = Duration::from_secs_f64(1.05 / f64::from(per_second));
    Quota::with_period(period)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MIN)
}

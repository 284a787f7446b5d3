//! Logs, metrics and health endpoints. Metric labels are hosts, outcomes, reasons and
//! namespace/name only: never a value that could carry a secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ProviderCredential, ResourceKey};
use crate::by_namespace::ByNamespace;
use crate::provider::{FetchError, IssuedToken, ProviderConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    std::panic::set_hook(Box::new(log_panic));
}

/// Panics go to the log like everything else. Only a literal message is shown: a formatted
/// one could carry any value, a secret included.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let message = info
        .payload()
        .downcast_ref::<&'static str>()
        .copied()
        .unwrap_or("(formatted message withheld)");
    tracing::error!(%location, message, "panic: a bug in the operator");
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    host: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// When a resource's token expires and when its next request is planned (Unix seconds), and
/// since when it has been Degraded and why.
#[derive(Clone, Debug, Default)]
struct Schedule {
    expiry: Option<f64>,
    next_refresh: Option<f64>,
    degraded: Option<Degraded>,
    /// The token endpoint's host (shared with [`HostSeries`]), so that its series go with
    /// the last resource using it.
    host: Option<Arc<str>>,
}

/// A Degraded=True condition: its last transition (Unix seconds) and its reason, one of the
/// operator's own reason words (never text from a provider or a spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Degraded {
    pub since: f64,
    pub reason: Box<str>,
}

impl Degraded {
    /// The Degraded condition among `conditions`, when it is True.
    pub fn of(conditions: &[Condition]) -> Option<Degraded> {
        let c = crate::conditions::get(conditions, crate::conditions::ConditionType::Degraded)?;
        (c.status == "True").then(|| Degraded {
            since: unix_seconds(c.last_transition_time.0),
            reason: c.reason.as_str().into(),
        })
    }
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Schedule {
    fn is_empty(&self) -> bool {
        self.expiry.is_none()
            && self.next_refresh.is_none()
            && self.degraded.is_none()
            && self.host.is_none()
    }
}

/// Which of a [`Schedule`]'s times a series shows.
type ScheduleField = fn(&Schedule) -> Option<f64>;

/// The two per-resource series, from one table (by namespace, then name) rendered at scrape
/// time: a pair of gauge families kept two label sets and two gauges per resource.
#[derive(Debug, Default)]
struct Schedules(RwLock<ByNamespace<Schedule>>);

impl Schedules {
    /// Replaces a resource's schedule; returns the host the one replaced had.
    fn set(&self, namespace: &str, name: &str, schedule: Schedule) -> Option<Arc<str>> {
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        let before = table.get(namespace, name).and_then(|s| s.host.clone());
        if schedule.is_empty() {
            table.remove(namespace, name);
        } else {
            table.insert(namespace, name, schedule);
        }
        before
    }
}

/// Hosts with their own token request series, at most: the host label comes from specs any
/// tenant writes. Requests to further hosts count under [`OTHER_HOSTS`].
pub const MAX_HOST_SERIES: usize = 100;
/// The host label of requests to hosts past [`MAX_HOST_SERIES`].
pub const OTHER_HOSTS: &str = "(other hosts)";

/// Which hosts have series, and how many resources use each: a host's series go when the
/// last resource using it does (deleted, or moved to another endpoint).
#[derive(Debug, Default)]
struct HostSeries {
    /// Resources whose token endpoint is on each host.
    users: HashMap<Arc<str>, usize>,
    /// Hosts with their own series, each with the outcomes it has series for.
    labelled: HashMap<Arc<str>, Vec<String>>,
}

/// Series to remove: a host and its outcomes.
type Dropped = Vec<(Arc<str>, Vec<String>)>;

impl HostSeries {
    /// One more resource on `host`; the shared copy of its name.
    fn add_user(&mut self, host: &str) -> Arc<str> {
        let shared = match self.users.get_key_value(host) {
            Some((shared, _)) => shared.clone(),
            None => host.into(),
        };
        *self.users.entry(shared.clone()).or_default() += 1;
        shared
    }

    /// One resource fewer on `host`: its series, if it was the last.
    fn remove_user(&mut self, host: &str) -> Dropped {
        match self.users.get_mut(host) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return Vec::new();
            }
            Some(_) => {
                self.users.remove(host);
            }
            None => {}
        }
        self.labelled.remove_entry(host).into_iter().collect()
    }

    /// The host label for a request to `host` with `outcome`, and the series of unused hosts
    /// given up to make room.
    fn label(&mut self, host: &str, outcome: &str) -> (String, Dropped) {
        let mut dropped = Vec::new();
        if !self.labelled.contains_key(host) && self.labelled.len() >= MAX_HOST_SERIES {
            // Hosts no resource uses (their last request came after the resource went).
            let users = &self.users;
            let unused: Vec<Arc<str>> = self
                .labelled
                .keys()
                .filter(|h| !users.contains_key(&***h))
                .cloned()
                .collect();
            for h in unused {
                dropped.extend(self.labelled.remove_entry(&h));
            }
        }
        if !self.labelled.contains_key(host) && self.labelled.len() >= MAX_HOST_SERIES {
            return (OTHER_HOSTS.to_string(), dropped);
        }
        let outcomes = match self.labelled.get_mut(host) {
            Some(outcomes) => outcomes,
            None => self.labelled.entry(host.into()).or_default(),
        };
        if !outcomes.iter().any(|o| o == outcome) {
            outcomes.push(outcome.to_string());
        }
        (host.to_string(), dropped)
    }
}

impl Collector for Schedules {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        let series: [(&str, &str, ScheduleField); 2] = [
            (
                "token_expiry_timestamp_seconds",
                // `register` ends help texts with a period; a collector gives them whole.
                "When the current access token of a ProviderCredential expires (Unix time).",
                |s| s.expiry,
            ),
            (
                "token_next_refresh_timestamp_seconds",
                "When the next token request of a ProviderCredential is planned (Unix time).",
                |s| s.next_refresh,
            ),
        ];
        for (name, help, value) in series {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (namespace, resource, schedule) in table.iter() {
                if let Some(v) = value(schedule) {
                    let labels = [("namespace", namespace), ("name", resource)];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "credential_degraded_since_timestamp_seconds",
            "Since when a ProviderCredential has been Degraded, by the condition's reason (Unix time); absent while it is not.",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, resource, schedule) in table.iter() {
            if let Some(d) = &schedule.degraded {
                let labels = [
                    ("namespace", namespace),
                    ("name", resource),
                    ("reason", &d.reason),
                ];
                ConstGauge::new(d.since).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    token_requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RequestLabels, Histogram>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconciles: Counter,
    schedules: Arc<Schedules>,
    hosts: Mutex<HostSeries>,
    refresh_tokens_discarded: Counter,
    requests_withheld: Family<ReasonLabels, Counter>,
    managed: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("token_rotator");
        let token_requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let reconciles = Counter::default();
        registry.register("reconciles", "Completed reconciles", reconciles.clone());
        let schedules = Arc::new(Schedules::default());
        registry.register(
            "token_requests",
            "Token requests by endpoint host and outcome (ok or the error class)",
            token_requests.clone(),
        );
        registry.register(
            "token_request_duration_seconds",
            "Token request latency by endpoint host and outcome",
            request_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles and token requests by reason",
            reconcile_errors.clone(),
        );
        registry.register_collector(Box::new(schedules.clone()));
        let refresh_tokens_discarded = Counter::default();
        registry.register(
            "refresh_tokens_discarded",
            "Refresh tokens a provider issued that were set aside because another writer had stored a newer chain (more than one operator writing one resource)",
            refresh_tokens_discarded.clone(),
        );
        let requests_withheld = Family::<ReasonLabels, Counter>::default();
        // At zero from the start: a series that first appears with its first event gives a
        // dashboard panel no data and an increase() nothing to compare with.
        for w in crate::leader::Withheld::ALL {
            let _ = requests_withheld.get_or_create(&ReasonLabels {
                reason: w.reason().to_string(),
            });
        }
        registry.register(
            "token_requests_withheld",
            "Token requests not sent because this replica could not confirm its lease or is shutting down",
            requests_withheld.clone(),
        );
        let managed = Gauge::default();
        registry.register(
            "managed_credentials",
            "ProviderCredentials this replica watches (its namespaces and selector), valid or not",
            managed.clone(),
        );
        Metrics {
            registry,
            managed,
            refresh_tokens_discarded,
            requests_withheld,
            token_requests,
            request_seconds,
            reconcile_errors,
            reconciles,
            schedules,
            hosts: Mutex::default(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn token_request(
        &self,
        config: &ProviderConfig,
        result: &Result<IssuedToken, FetchError>,
        took: Duration,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.class().reason().to_string(),
        };
        let (host, dropped) = self
            .host_series()
            .label(config.token_url.host_str().unwrap_or_default(), &outcome);
        self.drop_series(dropped);
        let labels = RequestLabels { host, outcome };
        self.token_requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    fn host_series(&self) -> std::sync::MutexGuard<'_, HostSeries> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_series(&self, dropped: Dropped) {
        for (host, outcomes) in dropped {
            for outcome in outcomes {
                let labels = RequestLabels {
                    host: host.to_string(),
                    outcome,
                };
                self.token_requests.remove(&labels);
                self.request_seconds.remove(&labels);
            }
        }
    }

    /// A resource's schedule (and host) replaced: the series of a host no longer used go.
    fn set_schedule(
        &self,
        namespace: &str,
        name: &str,
        mut schedule: Schedule,
        host: Option<&str>,
    ) {
        let mut hosts = self.host_series();
        schedule.host = host.map(|h| hosts.add_user(h));
        let before = self.schedules.set(namespace, name, schedule);
        let dropped = before.map(|h| hosts.remove_user(&h)).unwrap_or_default();
        drop(hosts);
        self.drop_series(dropped);
    }

    pub fn refresh_token_discarded(&self) {
        self.refresh_tokens_discarded.inc();
    }

    pub fn request_withheld(&self, reason: &str) {
        self.requests_withheld
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_failure(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn token_scheduled(
        &self,
        key: &ResourceKey,
        pc: &ProviderCredential,
        expires_at: Option<Timestamp>,
        next: Option<Timestamp>,
        degraded: Option<Degraded>,
    ) {
        let url = url::Url::parse(pc.spec.token_endpoint.url.trim()).ok();
        self.set_schedule(
            key.namespace(),
            key.name(),
            Schedule {
                expiry: expires_at.map(unix_seconds),
                next_refresh: next.map(unix_seconds),
                degraded,
                host: None,
            },
            url.as_ref().and_then(|u| u.host_str()),
        );
    }

    pub fn forget(&self, key: &ResourceKey) {
        self.set_schedule(key.namespace(), key.name(), Schedule::default(), None);
    }

    /// One watch's count of ProviderCredentials changed by `delta` (several watches, one per
    /// namespace, add up).
    pub fn managed_changed(&self, delta: i64) {
        self.managed.inc_by(delta);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Serves /metrics, /healthz and /readyz until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn pc(namespace: &str, name: &str) -> ProviderCredential {
        let mut pc: ProviderCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "tokenEndpoint": {"url": "https://example.test/token"},
                "credentials": {"secretRef": {"name": "c"}},
                "target": {"secretName": "t"}
            }
        }))
        .expect("a valid ProviderCredential");
        pc.metadata.uid = Some("u".into());
        pc
    }

    fn key_of(pc: &ProviderCredential) -> ResourceKey {
        ResourceKey::of(&pc.metadata).expect("a test resource has a UID, namespace and name")
    }

    fn key(namespace: &str, name: &str) -> ResourceKey {
        key_of(&pc(namespace, name))
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains("timestamp_seconds"))
            .collect()
    }

    /// A counter that appears only after its first event leaves a dashboard panel and a
    /// rate() without data until then (the real-Prometheus e2e test found the withheld one).
    #[test]
    fn withheld_requests_are_exported_at_zero_before_any_is_withheld() {
        let text = Metrics::new().render();
        for reason in ["ShuttingDown", "LeaseUnconfirmed"] {
            let line =
                format!("token_rotator_token_requests_withheld_total{{reason=\"{reason}\"}} 0");
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }

    #[test]
    fn per_resource_series_follow_the_schedule_and_go_with_the_resource() {
        let metrics = Metrics::new();
        let at = |s: i64| Some(Timestamp::from_second(s).unwrap());
        metrics.token_scheduled(&key("ns", "a"), &pc("ns", "a"), at(2_000), at(1_500), None);
        let degraded = Degraded {
            since: 1_200.5,
            reason: "ReauthorizationRequired".into(),
        };
        metrics.token_scheduled(
            &key("ns", "b"),
            &pc("ns", "b"),
            at(3_000),
            None,
            Some(degraded),
        );
        let text = metrics.render();
        let mut lines = series(&text);
        lines.sort();
        assert_eq!(
            lines,
            [
                "# HELP token_rotator_credential_degraded_since_timestamp_seconds Since when a ProviderCredential has been Degraded, by the condition's reason (Unix time); absent while it is not.",
                "# HELP token_rotator_token_expiry_timestamp_seconds When the current access token of a ProviderCredential expires (Unix time).",
                "# HELP token_rotator_token_next_refresh_timestamp_seconds When the next token request of a ProviderCredential is planned (Unix time).",
                "# TYPE token_rotator_credential_degraded_since_timestamp_seconds gauge",
                "# TYPE token_rotator_token_expiry_timestamp_seconds gauge",
                "# TYPE token_rotator_token_next_refresh_timestamp_seconds gauge",
                "token_rotator_credential_degraded_since_timestamp_seconds{namespace=\"ns\",name=\"b\",reason=\"ReauthorizationRequired\"} 1200.5",
                "token_rotator_token_expiry_timestamp_seconds{namespace=\"ns\",name=\"a\"} 2000.0",
                "token_rotator_token_expiry_timestamp_seconds{namespace=\"ns\",name=\"b\"} 3000.0",
                "token_rotator_token_next_refresh_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1500.0",
            ]
        );
        metrics.forget(&key("ns", "a"));
        metrics.token_scheduled(&key("ns", "b"), &pc("ns", "b"), None, None, None);
        let text = metrics.render();
        assert!(!series(&text).iter().any(|l| l.contains("name=")), "{text}");
    }

    fn on_host(namespace: &str, name: &str, host: &str) -> ProviderCredential {
        let mut pc = pc(namespace, name);
        pc.spec.token_endpoint.url = format!("https://{host}/token");
        pc
    }

    /// Records one token request of a resource (failed: unavailable, or refused by the
    /// configuration) and then its report, as a reconcile does.
    fn request(metrics: &Metrics, pc: &ProviderCredential, unavailable: bool) {
        let config = crate::api::provider_config(&pc.spec).unwrap();
        let error = if unavailable {
            FetchError::ProviderUnavailable {
                cause: "down".into(),
                status: None,
                retry_after: None,
                words: String::new(),
            }
        } else {
            FetchError::Configuration("x".into())
        };
        metrics.token_request(&config, &Err(error), Duration::from_millis(5));
        metrics.token_scheduled(&key_of(pc), pc, None, None, None);
    }

    /// The hosts that have token request series.
    fn hosts(metrics: &Metrics) -> BTreeSet<String> {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("token_rotator_token_requests_total{"))
            .filter_map(|l| {
                l.split("host=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(String::from)
            })
            .collect()
    }

    #[test]
    fn a_hosts_series_go_with_the_last_resource_using_it() {
        let metrics = Metrics::new();
        let (a1, a2, b) = (
            on_host("ns", "a1", "a.test"),
            on_host("ns", "a2", "a.test"),
            on_host("other-ns", "b", "b.test"),
        );
        request(&metrics, &a1, true);
        request(&metrics, &a1, false);
        request(&metrics, &a2, true);
        request(&metrics, &b, true);
        assert_eq!(
            hosts(&metrics),
            BTreeSet::from(["a.test".into(), "b.test".into()])
        );
        metrics.forget(&key("ns", "a1"));
        assert_eq!(
            hosts(&metrics),
            BTreeSet::from(["a.test".into(), "b.test".into()]),
            "a2 still uses a.test"
        );
        metrics.forget(&key("ns", "a2"));
        assert_eq!(hosts(&metrics), BTreeSet::from(["b.test".into()]));
        // b moves to another endpoint: b.test's series go at its next report.
        let moved = on_host("other-ns", "b", "c.test");
        metrics.token_scheduled(&key_of(&moved), &moved, None, None, None);
        assert!(hosts(&metrics).is_empty(), "{}", metrics.render());
        let text = metrics.render();
        assert!(
            !text.contains("b.test") && !text.contains("a.test"),
            "{text}"
        );
    }

    /// Distinct hosts, each in use, past the bound: the series stay within it, the rest
    /// counted under one label; a host freed makes room again.
    #[test]
    fn host_series_are_bounded_whatever_hosts_specs_name() {
        let metrics = Metrics::new();
        let extra = 50;
        for i in 0..MAX_HOST_SERIES + extra {
            request(
                &metrics,
                &on_host("ns", &format!("r{i}"), &format!("h{i}.test")),
                true,
            );
        }
        let seen = hosts(&metrics);
        assert_eq!(seen.len(), MAX_HOST_SERIES + 1);
        assert!(seen.contains(OTHER_HOSTS));
        let others = metrics
            .render()
            .lines()
            .find(|l| {
                l.starts_with("token_rotator_token_requests_total{") && l.contains(OTHER_HOSTS)
            })
            .map(String::from);
        assert!(others.is_some_and(|l| l.ends_with(&format!(" {extra}"))));
        // A resource deleted: its host's series go, and a new host has a series of its own.
        metrics.forget(&key("ns", "r0"));
        request(&metrics, &on_host("ns", "new", "new.test"), true);
        let seen = hosts(&metrics);
        assert!(seen.contains("new.test") && !seen.contains("h0.test"));
        assert_eq!(seen.len(), MAX_HOST_SERIES + 1);
    }

    #[test]
    fn only_a_true_degraded_condition_is_shown() {
        let at = Timestamp::from_second(1_000).unwrap();
        let mut conditions = Vec::new();
        crate::conditions::set(
            &mut conditions,
            crate::conditions::ConditionType::Ready,
            true,
            "TokenIssued",
            "ok".into(),
            None,
            at,
        );
        assert_eq!(Degraded::of(&conditions), None);
        crate::conditions::set(
            &mut conditions,
            crate::conditions::ConditionType::Degraded,
            false,
            "TokenIssued",
            "ok".into(),
            None,
            at,
        );
        assert_eq!(Degraded::of(&conditions), None);
        crate::conditions::set(
            &mut conditions,
            crate::conditions::ConditionType::Degraded,
            true,
            "RateLimited",
            "429".into(),
            None,
            at,
        );
        let d = Degraded::of(&conditions).expect("degraded");
        assert_eq!((d.since, &*d.reason), (1_000.0, "RateLimited"));
    }
}

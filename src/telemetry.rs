//! Logs, metrics and health endpoints. Metric labels are hosts, outcomes, reasons and
//! namespace/name only: never a value that could carry a secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::ProviderCredential;
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
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    namespace: String,
    name: String,
}

pub struct Metrics {
    registry: Registry,
    token_requests: Family<RequestLabels, Counter>,
    request_seconds: Family<HostLabels, Histogram>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconciles: Counter,
    expiry: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    next_refresh: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
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
        let request_seconds = Family::<HostLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let reconciles = Counter::default();
        registry.register("reconciles", "Completed reconciles", reconciles.clone());
        let expiry = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        let next_refresh = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_requests",
            "Token requests by endpoint host and outcome (ok or the error class)",
            token_requests.clone(),
        );
        registry.register(
            "token_request_duration_seconds",
            "Token request latency by endpoint host",
            request_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles and token requests by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the current access token of a ProviderCredential expires (Unix time)",
            expiry.clone(),
        );
        registry.register(
            "token_next_refresh_timestamp_seconds",
            "When the next token request of a ProviderCredential is planned (Unix time)",
            next_refresh.clone(),
        );
        let refresh_tokens_discarded = Counter::default();
        registry.register(
            "refresh_tokens_discarded",
            "Refresh tokens a provider issued that were set aside because another writer had stored a newer chain (more than one operator writing one resource)",
            refresh_tokens_discarded.clone(),
        );
        let requests_withheld = Family::<ReasonLabels, Counter>::default();
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
            expiry,
            next_refresh,
            ready: AtomicBool::new(false),
        }
    }

    pub fn token_request(
        &self,
        config: &ProviderConfig,
        result: &Result<IssuedToken, FetchError>,
        took: Duration,
    ) {
        let host = config.token_url.host_str().unwrap_or_default().to_string();
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.class().reason().to_string(),
        };
        self.token_requests
            .get_or_create(&RequestLabels {
                host: host.clone(),
                outcome,
            })
            .inc();
        self.request_seconds
            .get_or_create(&HostLabels { host })
            .observe(took.as_secs_f64());
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

    /// Completed reconciles so far.
    pub fn reconciles_total(&self) -> u64 {
        self.reconciles.get()
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
        pc: &ProviderCredential,
        expires_at: Option<Timestamp>,
        next: Option<Timestamp>,
    ) {
        let labels = ResourceLabels {
            namespace: pc.namespace().unwrap_or_default(),
            name: pc.name_any(),
        };
        for (family, value) in [(&self.expiry, expires_at), (&self.next_refresh, next)] {
            match value {
                Some(t) => {
                    family
                        .get_or_create(&labels)
                        .set(t.as_millisecond() as f64 / 1000.0);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = ResourceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.expiry.remove(&labels);
        self.next_refresh.remove(&labels);
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

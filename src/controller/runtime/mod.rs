//! The runtime: start-up (checks, the inputs key, the lease), the watches and their mappers,
//! the controllers and the drain at shutdown. The only room that sees the plain [`Config`].

mod config;
mod driver;
mod mappers;
pub(super) mod shutdown;
mod watches;

use std::sync::Arc;

use crate::controller::steps::context::Context;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::api::{ProviderCredential, TokenDeliveryGrant};
use crate::provider::TokenClient;
use crate::telemetry::{self, Metrics};
pub use config::Config;
use watches::{Watched, controller_for};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "the ProviderCredential CRD is not installed or not readable ({0}); install it with `kubectl apply -f crds/` or the Helm chart"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("leader election failed: {0}")]
    Leader(String),
    #[error(
        "leadership lost ({0}); rotations in flight finished and held state was stored where the API allowed"
    )]
    LeadershipLost(String),
    #[error("--selector {selector:?} is not a valid label selector: {message}")]
    BadSelector { selector: String, message: String },
    #[error(
        "--cross-namespace-delivery needs the operator to watch every namespace; drop --namespaces (chart: watchNamespaces) or the delivery"
    )]
    DeliveryNeedsClusterScope,
    #[error(
        "the TokenDeliveryGrant CRD is not installed or not readable ({0}); install it with `kubectl apply -f crds/` or the Helm chart"
    )]
    GrantCrdMissing(#[source] kube::Error),
    #[error(
        "--cross-namespace-delivery needs list and watch on namespaces ({0}); grant them (the chart does with crossNamespaceDelivery.enabled)"
    )]
    NamespacesUnreadable(#[source] kube::Error),
    #[error(transparent)]
    InputsKey(#[from] crate::inputs_key::InputsKeyError),
}

pub async fn run(args: Config) -> Result<(), RunError> {
    if args.cross_namespace_delivery && !args.namespaces.is_empty() {
        return Err(RunError::DeliveryNeedsClusterScope);
    }
    let client = kube_client().await?;
    let metrics = Arc::new(Metrics::new());
    serve_metrics(&metrics, args.metrics_addr);
    // A namespace named twice is watched once (twice would double its cache budget).
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        let unique: std::collections::BTreeSet<&String> = args.namespaces.iter().collect();
        unique.into_iter().cloned().map(Some).collect()
    };
    let selector = args.selector.clone().filter(|s| !s.trim().is_empty());
    preflight(&client, &args, scopes[0].as_deref(), selector.as_deref()).await?;
    // Before readiness and the lease: a replica that cannot have the key never leads.
    let inputs_key = crate::inputs_key::for_run(
        &client,
        args.inputs_key_namespace.as_deref(),
        &args.inputs_key_secret,
    )
    .await?;
    // Ready once connected: a standby replica is healthy too.
    metrics.set_ready(true);
    // A standby waits here; SIGTERM then ends it at once (it holds nothing).
    let (gate, lease) = tokio::select! {
        acquired = crate::leader::acquire(&client, &args.leader) => {
            acquired.map_err(|e| RunError::Leader(e.to_string()))?
        }
        name = shutdown::signal() => {
            info!(signal = name, "stopping before leading: nothing to finish");
            return Ok(());
        }
    };
    let (delivery, mut delivery_writers) = if args.cross_namespace_delivery {
        let (delivery, writers) = crate::controller::caches::delivery_views::Delivery::new();
        (Some(delivery), Some(writers))
    } else {
        (None, None)
    };
    let ctx = Arc::new(context_for(
        &args,
        client.clone(),
        metrics.clone(),
        gate.clone(),
        crate::controller::steps::context::Features {
            delivery,
            inputs_key,
            ..features(&args)
        },
    ));
    let controllers = futures::future::join_all(scopes.into_iter().map(|ns| {
        let watched = Watched {
            namespace: ns,
            selector: selector.clone(),
            // Cluster-wide only: one controller.
            delivery: delivery_writers.take(),
        };
        controller_for(client.clone(), watched, ctx.clone(), args.concurrency)
    }));
    info!(namespaces = ?args.namespaces, "controller started");
    run_until_stopped(&ctx, &gate, lease, controllers).await
}

fn serve_metrics(metrics: &Arc<Metrics>, addr: std::net::SocketAddr) {
    let metrics = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = telemetry::serve(addr, metrics).await {
            warn!(error = %e, "metrics server stopped");
        }
    });
}

/// Fails early and clearly: the CRDs missing, a selector the apiserver refuses (the judge of
/// its syntax, asked once), namespaces unreadable for the delivery.
async fn preflight(
    client: &Client,
    args: &Config,
    first_scope: Option<&str>,
    selector: Option<&str>,
) -> Result<(), RunError> {
    let probe: Api<ProviderCredential> = match first_scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut probe_params = kube::api::ListParams::default().limit(1);
    if let Some(selector) = selector {
        probe_params = probe_params.labels(selector);
    }
    probe
        .list(&probe_params)
        .await
        .map_err(|e| match (e, selector) {
            (kube::Error::Api(e), Some(selector)) if e.code == 400 => RunError::BadSelector {
                selector: selector.to_string(),
                message: e.message,
            },
            (e, _) => RunError::CrdMissing(e),
        })?;
    if args.cross_namespace_delivery {
        let one = kube::api::ListParams::default().limit(1);
        Api::<TokenDeliveryGrant>::all(client.clone())
            .list_metadata(&one)
            .await
            .map_err(RunError::GrantCrdMissing)?;
        // Without namespaces no copy is ever decided: say so now, not in every status.
        Api::<Namespace>::all(client.clone())
            .list_metadata(&one)
            .await
            .map_err(RunError::NamespacesUnreadable)?;
    }
    Ok(())
}

/// The settings of the optional features, from the arguments.
fn features(args: &Config) -> crate::controller::steps::context::Features {
    crate::controller::steps::context::Features {
        restart_workloads: args.restart_workloads,
        host_rates: args.token_host_rates.clone(),
        requests_in_flight_per_namespace: args.requests_in_flight_per_namespace,
        reconciles_per_second_per_namespace: args.reconciles_per_second_per_namespace,
        cache_bytes_per_namespace: args.cache_bytes_per_namespace,
        ..crate::controller::steps::context::Features::default()
    }
}

fn context_for(
    args: &Config,
    client: Client,
    metrics: Arc<Metrics>,
    gate: crate::leader::Gate,
    features: crate::controller::steps::context::Features,
) -> Context {
    let reporter = Reporter {
        controller: "token-rotator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Context::new(
        client,
        TokenClient::new(args.http_policy.clone()),
        reporter,
        metrics,
        gate,
        args.token_requests_per_minute,
        features,
    )
}

/// Runs the controllers until a signal or a lost lease, then drains: no new token request,
/// the rotations in flight finished and reported, held state stored, the lease released.
async fn run_until_stopped(
    ctx: &Arc<Context>,
    gate: &crate::leader::Gate,
    mut lease: Option<crate::leader::Leadership>,
    controllers: impl std::future::Future<Output = Vec<()>>,
) -> Result<(), RunError> {
    let mut controllers = std::pin::pin!(controllers);
    // The controllers end on their own only after the gate closed, and before shutdown began
    // only a lost lease closes it: either way a lost lease exits non-zero.
    let (stop, drained) = tokio::select! {
        biased;
        stop = shutdown::stop_requested(lease.as_mut(), gate) => (stop, false),
        _ = &mut controllers => (
            shutdown::Stop::LeaseLost("the lease lapsed without a confirmed renewal".into()),
            true,
        ),
    };
    match &stop {
        shutdown::Stop::Signal(name) => info!(
            signal = name,
            "shutting down: no new token requests; finishing rotations in flight"
        ),
        shutdown::Stop::LeaseLost(reason) => {
            warn!(%reason, "leadership lost: no new token requests; finishing rotations in flight")
        }
    }
    gate.stop();
    tokio::spawn(async {
        let name = shutdown::signal().await;
        warn!(signal = name, "second signal: exiting at once");
        std::process::exit(1);
    });
    // The reconciles in flight, then the token requests that outlived theirs and their
    // reports, all within the drain bound: storing held state must keep its own time, inside
    // the pod's grace period.
    let drain = async {
        if !drained {
            (&mut controllers).await;
        }
        ctx.in_flight.drained().await;
        crate::controller::steps::reconcile::report_parked_at_exit(ctx).await;
    };
    if tokio::time::timeout(shutdown::DRAIN_BOUND, drain)
        .await
        .is_err()
    {
        warn!(
            bound_s = shutdown::DRAIN_BOUND.as_secs(),
            "rotations in flight did not finish in time"
        );
    }
    shutdown::store_held(ctx).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    match stop {
        shutdown::Stop::LeaseLost(reason) => Err(RunError::LeadershipLost(reason)),
        shutdown::Stop::Signal(_) => Ok(()),
    }
}

/// The API client, named: the apiserver's audit log, metrics and flow control see
/// `token-rotator/<version>` rather than an anonymous client.
async fn kube_client() -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.headers.push((
        reqwest::header::USER_AGENT,
        reqwest::header::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config)
}
/// What the operator calls itself towards the apiserver.
pub const USER_AGENT: &str = concat!("token-rotator/", env!("CARGO_PKG_VERSION"));

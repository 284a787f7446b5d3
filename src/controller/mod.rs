//! The controller: watches ProviderCredentials and the Secrets around them (label-selected
//! only, so memory does not grow with unrelated Secrets) and reconciles each resource.

mod budget;
mod changes;
mod context;
mod copies;
mod delivery;
mod delivery_views;
mod due;
mod endpoints;
mod execute;
mod executed;
mod in_flight;
mod kept_credentials;
mod observe;
mod readers;
mod recheck;
pub mod reconcile;
mod reconcile_rate;
mod report;
mod rollout;
mod service_account;
mod shutdown;
mod turns;
mod views;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

/// Objects per list page (the default is 500). A page is held whole while it is parsed, and
/// anyone who can write one of these objects sets its size: a page of the largest costs
/// ~10 MiB of credentials Secrets (1 MiB each), ~16 MiB of ProviderCredentials (~0.8 MiB
/// each, the CRD's bounds) and ~25 MiB of managed Secrets' metadata (256 KiB each), twice
/// that while parsed. Pages of ordinary objects are a few KiB: small pages cost round trips
/// (500 for 10,000 resources), not memory.
const CREDENTIALS_PAGE_SIZE: u32 = 10;
const RESOURCES_PAGE_SIZE: u32 = 20;
const MANAGED_PAGE_SIZE: u32 = 100;

/// What the per-namespace cache budget charges for a resource (measured in tests/crd_bounds.rs).
pub use budget::cached_bytes as cache_charge;
pub use context::Context;
use reconcile::{ReconcileError, reconcile_guarded};

use crate::api::Guarded;
use crate::api::{
    CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProviderCredential, REFRESH_ANNOTATION,
    TokenDeliveryGrant,
};
use crate::cli::run::RunArgs;
use crate::provider::{HttpPolicy, TokenClient};
use crate::rotation;
use crate::telemetry::{self, Metrics};

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

pub async fn run(args: RunArgs) -> Result<(), RunError> {
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
        let (delivery, writers) = delivery::Delivery::new();
        (Some(delivery), Some(writers))
    } else {
        (None, None)
    };
    let ctx = Arc::new(context_for(
        &args,
        client.clone(),
        metrics.clone(),
        gate.clone(),
        context::Features {
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
    args: &RunArgs,
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
fn features(args: &RunArgs) -> context::Features {
    context::Features {
        restart_workloads: args.restart_workloads,
        host_rates: args.token_host_rates.clone(),
        requests_in_flight_per_namespace: args.requests_in_flight_per_namespace as usize,
        reconciles_per_second_per_namespace: args.reconciles_per_second_per_namespace,
        cache_bytes_per_namespace: (args.cache_mib_per_namespace as usize) << 20,
        ..context::Features::default()
    }
}

fn context_for(
    args: &RunArgs,
    client: Client,
    metrics: Arc<Metrics>,
    gate: crate::leader::Gate,
    features: context::Features,
) -> Context {
    let reporter = Reporter {
        controller: "token-rotator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Context::new(
        client,
        TokenClient::new(HttpPolicy {
            allow_http: args.allow_http,
            allowed_hosts: (!args.allowed_token_hosts.is_empty())
                .then(|| args.allowed_token_hosts.clone()),
            allow_link_local: args.allow_link_local_token_endpoints,
        }),
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
        reconcile::report_parked_at_exit(ctx).await;
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

/// The annotations of a ProviderCredential the controller reads: a refresh request; in tests,
/// a fault. No other is kept, its own prefix included: anyone who may edit the resource can add
/// annotations up to the apiserver's 256 KiB, and the cache holds every resource.
const READ_ANNOTATIONS: [&str; 2] = [REFRESH_ANNOTATION, "tokenrotator.dev/test-panic"];

/// The metadata the cache keeps of a ProviderCredential: what the controller reads (identity,
/// resourceVersion, generation, deletion and finalizers, its own annotations). Every resource
/// stays cached, and what others put there is often the bulk of it: managedFields, kubectl's
/// last-applied copy of the whole object, Helm's and Argo CD's labels and annotations.
fn keep_what_is_read(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.creation_timestamp = None;
    meta.generate_name = None;
    meta.self_link = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|key, _| READ_ANNOTATIONS.contains(&key.as_str()));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What the operator calls itself towards the apiserver.
pub const USER_AGENT: &str = concat!("token-rotator/", env!("CARGO_PKG_VERSION"));

/// What one controller watches: a namespace (or all) and, for a shard, a label selector;
/// with --cross-namespace-delivery, namespaces and TokenDeliveryGrants too.
struct Watched {
    namespace: Option<String>,
    selector: Option<String>,
    delivery: Option<delivery::DeliveryWriters>,
}

/// The Apis one controller watches through: resources, managed Secrets (metadata only) and
/// credentials Secrets (whole), in its namespace or all.
fn apis(
    client: &Client,
    namespace: &Option<String>,
) -> (Api<Guarded>, Api<PartialObjectMeta<Secret>>, Api<Secret>) {
    match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    }
}

/// The resources' watch: cached without the bulky fields never read (memory stays
/// proportional to the resources managed), indexed by what they read (readers.rs).
fn resources_stream(
    pcs: Api<Guarded>,
    shard: watcher::Config,
    (store, writer): (reflector::Store<Guarded>, reflector::store::Writer<Guarded>),
    ctx: &Arc<Context>,
    due: &Arc<due::Due<Guarded>>,
    readers: &Arc<readers::Readers>,
) -> impl futures::Stream<Item = Result<Guarded, watcher::Error>> + Send + 'static {
    let (forget, forget_due) = (ctx.clone(), due.clone());
    let (index, before) = (readers.clone(), store.clone());
    let (rebuild, after) = (readers.clone(), store.clone());
    let (metrics, mut counted) = (ctx.metrics.clone(), 0i64);
    let mut budget = budget::ResourcesBudget::new(ctx.cache_bytes_per_namespace);
    watcher(pcs, shard)
        .default_backoff()
        // Deleted resources are never reconciled again: drop their per-resource series and
        // anything held for them here.
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(pc) = event {
                forget
                    .metrics
                    .forget(&pc.namespace().unwrap_or_default(), &pc.name_any());
                forget.forget(&pc.uid().unwrap_or_default());
                forget_due.forget(pc);
            }
        })
        .modify(|pc| {
            keep_what_is_read(pc.meta_mut());
            crate::api::limits::shed_oversized(pc);
        })
        // Within its namespace's budget, or a stub that says why (budget.rs).
        .map_ok(move |mut event| {
            budget.apply(&mut event);
            event
        })
        // Before the cache takes the event: it still holds what the index holds.
        .inspect_ok(move |event| index.watched(event, &before))
        .reflect(writer)
        .inspect_ok(move |event| {
            if let watcher::Event::InitDone = event {
                rebuild.rebuild(&after);
            }
            let now = i64::try_from(after.len()).unwrap_or(i64::MAX);
            metrics.managed_changed(now - counted);
            counted = now;
        })
        .applied_objects()
}

/// A watch's objects whose digest of what the operator reads changed (changes.rs), instead of
/// every event's.
fn changed<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    digest: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Default + Send + 'static,
{
    let changes = changes::Changes::default();
    events
        .map_ok(move |event| {
            futures::stream::iter(changes.filter(event, digest).into_iter().map(Ok))
        })
        .try_flatten()
}

/// The owners of a managed Secret (if the cache holds them with that UID) and, for a copy in
/// another namespace, its source.
fn managed_readers(
    secret: &PartialObjectMeta<Secret>,
    cached: &reflector::Store<Guarded>,
) -> Vec<ObjectRef<Guarded>> {
    let namespace = secret.namespace().unwrap_or_default();
    let owners = secret
        .owner_references()
        .iter()
        .filter(|r| {
            r.kind == "ProviderCredential" && r.api_version.starts_with("tokenrotator.dev/")
        })
        .filter_map(|r| delivery_views::cached_with_uid(cached, &r.uid, &namespace, &r.name));
    owners
        .chain(delivery::copy_source(secret, cached))
        .collect()
}

async fn controller_for(client: Client, watched: Watched, ctx: Arc<Context>, concurrency: u16) {
    let Watched {
        namespace,
        selector,
        delivery: delivery_writers,
    } = watched;
    // One object that cannot be read (DeserializeGuard) is reported on itself; it never stops
    // the watch for the others.
    let (pcs, secrets, credentials_secrets) = apis(&client, &namespace);
    let managed = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .page_size(MANAGED_PAGE_SIZE);
    // Whole objects: a new resource then reads no credentials (views.rs).
    let credentials = watcher::Config::default()
        .labels(&format!("{CREDENTIALS_LABEL}=true"))
        .page_size(CREDENTIALS_PAGE_SIZE);
    let (store, writer) = reflector::store::<Guarded>();
    ctx.watch_resources(store.clone());
    // Each resource's next reconcile (its next rotation), kept compactly (due.rs).
    let due = Arc::new(due::Due::<Guarded>::default());
    let readers = Arc::new(readers::Readers::default());
    let mut shard = watcher::Config::default().page_size(RESOURCES_PAGE_SIZE);
    if let Some(selector) = &selector {
        shard = shard.labels(selector);
    }
    let resources = resources_stream(pcs, shard, (store.clone(), writer), &ctx, &due, &readers);
    // Followed (their resourceVersions only) so that a reconcile can tell whether the target
    // and state Secrets it read or wrote last are still that version (see views.rs).
    let watch = ctx.views.new_watch(namespace.clone());
    let follow = ctx.clone();
    let owned = watcher(secrets, managed)
        .default_backoff()
        .inspect_ok(move |event| {
            follow.views.watched(watch, event);
            if let Some(delivery) = &follow.delivery {
                delivery.copies.watched(event);
            }
        });
    let credentials_watch = ctx.views.new_watch(namespace.clone());
    let follow_credentials = ctx.clone();
    let credential_secrets = watcher(credentials_secrets, credentials)
        .default_backoff()
        .inspect_ok(move |event| {
            follow_credentials
                .views
                .credentials_watched(credentials_watch, event)
        });
    let (owners_of, credentials_readers) = (store.clone(), readers.clone());
    let mut controller = Controller::for_stream(resources, store.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(due.clone().fired())
        // Requests that ended after their reconcile returned (execute.rs).
        .reconcile_on(ctx.reconcile_requests())
        .trigger_backoff(ShortPause)
        // A managed Secret concerns its owner, and a copy in another namespace its source:
        // only when something the operator reads of it changed.
        .watches_stream(
            changed(owned, changes::managed_digest),
            move |secret: PartialObjectMeta<Secret>| managed_readers(&secret, &owners_of),
        )
        // A credentials Secret concerns the resources naming it (an index, not a scan), only
        // when its data, opt-in label or allowed-token-hosts annotation changed.
        .watches_stream(
            changed(credential_secrets, changes::credentials_digest),
            move |secret: Secret| {
                credentials_readers
                    .of_credentials(&secret.namespace().unwrap_or_default(), &secret.name_any())
            },
        );
    if let Some(writers) = delivery_writers {
        controller = with_delivery(controller, client, writers, &ctx, &store, &readers);
    }
    run_controller(controller, ctx, due, store).await;
}

/// With --cross-namespace-delivery: TokenDeliveryGrants and namespaces (labels only) concern
/// the resources whose delivery reaches them (delivery.rs).
fn with_delivery(
    controller: Controller<Guarded>,
    client: Client,
    writers: delivery::DeliveryWriters,
    ctx: &Arc<Context>,
    store: &reflector::Store<Guarded>,
    readers: &Arc<readers::Readers>,
) -> Controller<Guarded> {
    let grants = watcher(
        Api::<delivery::GuardedGrant>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|g| g.managed_fields_mut().clear())
    .reflect(writers.grants)
    .touched_objects();
    // Metadata only: the labels are all that is read.
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|n| {
        n.managed_fields_mut().clear();
        n.annotations_mut().clear();
    })
    .reflect(writers.namespaces)
    .touched_objects();
    let (grant_ctx, namespace_ctx) = (ctx.clone(), ctx.clone());
    let (grant_store, namespace_store) = (store.clone(), store.clone());
    let readers = readers.clone();
    controller
        .watches_stream(grants, move |grant| match &grant_ctx.delivery {
            Some(delivery) => delivery::grant_readers(delivery, &grant_store, &grant),
            None => Vec::new(),
        })
        .watches_stream(namespaces, move |ns| match &namespace_ctx.delivery {
            Some(delivery) => {
                delivery::namespace_readers(delivery, &readers, &namespace_store, &ns)
            }
            None => Vec::new(),
        })
}

/// Runs the controller until the gate closes (shutdown, or a lost lease).
async fn run_controller(
    controller: Controller<Guarded>,
    ctx: Arc<Context>,
    due: Arc<due::Due<Guarded>>,
    cached: reflector::Store<Guarded>,
) {
    controller
        .graceful_shutdown_on({
            let ctx = ctx.clone();
            async move { ctx.gate.stopped().await }
        })
        .run(
            move |pc, ctx| reconcile_one(pc, ctx, due.clone(), cached.clone()),
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                // Benign: the next version of the object is already queued.
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, _)) if e.is_stale() => {}
                // A resource this instance does not hold: the owner of a managed Secret in
                // another shard (the Secret watch cannot select by the owner's labels), or one
                // just deleted.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(object = %obj, "not a resource this instance holds; nothing to do")
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
                Ok(_) => {}
            }
        })
        .await;
}

/// One reconcile, unless its namespace is over its rate (then requeued for its turn, with no
/// API call), and the next one scheduled.
async fn reconcile_one(
    pc: Arc<Guarded>,
    ctx: Arc<Context>,
    due: Arc<due::Due<Guarded>>,
    cached: reflector::Store<Guarded>,
) -> Result<Action, ReconcileError> {
    let namespace = pc.namespace().unwrap_or_default();
    if let Some(wait) = ctx
        .reconcile_rate
        .admit(&namespace, &pc.uid().unwrap_or_default())
    {
        debug!(%namespace, name = %pc.name_any(), wait_ms = wait.as_millis(), "over the namespace's reconcile rate; requeued");
        return Ok(due.next(pc, Some(wait)));
    }
    let next = reconcile_guarded(pc.clone(), ctx.clone()).await?;
    // Deleted while it ran: nothing to schedule (its Delete has gone by).
    let current = cached.get(&ObjectRef::from(pc.as_ref()));
    if current.is_none_or(|c| c.uid() != pc.uid()) {
        due.forget(&pc);
        // Its Delete may have come before this reconcile detached a request: whatever that
        // request leaves is dropped rather than kept for a resource that is gone.
        ctx.forget(&pc.uid().unwrap_or_default());
        return Ok(Action::await_change());
    }
    Ok(due.next(pc, next))
}

/// Each watch feeding the controller backs off on its own (`default_backoff`). The
/// controller's default extra layer over all of them together would pause every watch for up
/// to 30 s, doubling on an error in any one (after an API-server restart each watch reports
/// 410 Gone in turn): refresh requests and changes went unseen for over a minute.
struct ShortPause;

impl Iterator for ShortPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

impl kube::runtime::utils::Backoff for ShortPause {
    fn reset(&mut self) {}
}

/// Kubernetes-side errors back off per resource (capped, jittered); a stale copy is not a
/// failure: the newer version is already queued.
fn error_policy(pc: Arc<Guarded>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error.metric_reason());
    let (namespace, name) = (pc.namespace().unwrap_or_default(), pc.name_any());
    if error.is_stale() {
        debug!(%namespace, %name, "stale copy; reconciling the new version");
        return Action::requeue(Duration::from_secs(1));
    }
    let attempts = ctx.count_attempt(&pc.uid().unwrap_or_default(), true);
    let delay = rotation::backoff(attempts, None, rand::random());
    warn!(%namespace, %name, error = %error, retry_in_s = delay.as_secs(), "reconcile error; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL, REFRESH_ANNOTATION};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::watcher::Event;
    use readers::tests::pc;

    fn refs(refs: Vec<ObjectRef<Guarded>>) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    /// A cache holding these resources (UIDs `uid-<namespace>-<name>`).
    fn cache(resources: Vec<Guarded>) -> reflector::Store<Guarded> {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for r in resources {
            writer.apply_watcher_event(&Event::InitApply(r));
        }
        writer.apply_watcher_event(&Event::InitDone);
        store
    }

    fn secret(ns: &str, name: &str) -> PartialObjectMeta<Secret> {
        let mut s = PartialObjectMeta::<Secret>::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    fn copy(ns: &str, uid: &str, from: &str) -> PartialObjectMeta<Secret> {
        let mut s = secret(ns, "token");
        s.metadata.labels = Some([(DELIVERED_FROM_UID_LABEL.to_string(), uid.to_string())].into());
        s.metadata.annotations =
            Some([(DELIVERED_FROM_ANNOTATION.to_string(), from.to_string())].into());
        s
    }

    #[test]
    fn a_managed_secret_triggers_only_an_owner_or_source_the_cache_holds_with_that_uid() {
        let cached = cache(vec![pc("src", "pc", "c", None)]);
        let owned_by = |name: &str, uid: &str| {
            let mut s = secret("src", "pc-token");
            s.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "tokenrotator.dev/v1alpha1".into(),
                kind: "ProviderCredential".into(),
                name: name.into(),
                uid: uid.into(),
                ..Default::default()
            }]);
            s
        };
        assert_eq!(
            refs(managed_readers(&owned_by("pc", "uid-src-pc"), &cached)),
            ["src/pc"]
        );
        // An owner reference to a resource that is not there, or is another one by that name.
        assert!(managed_readers(&owned_by("nobody", "uid-src-nobody"), &cached).is_empty());
        assert!(managed_readers(&owned_by("pc", "uid-old"), &cached).is_empty());
        // A copy: its source only if the UID it claims is the resource's.
        let real = copy("dest", "uid-src-pc", "src/pc");
        assert_eq!(refs(managed_readers(&real, &cached)), ["src/pc"]);
        for forged in [
            copy("dest", "forged", "src/pc"),
            copy("dest", "uid-src-pc", "src/other"),
            copy("dest", "uid-x-y", "x/y"),
        ] {
            assert!(managed_readers(&forged, &cached).is_empty());
        }
    }

    fn grant(ns: &str, from: &[(&str, &str)]) -> delivery::GuardedGrant {
        let from: Vec<serde_json::Value> = from
            .iter()
            .map(|(ns, name)| serde_json::json!({"namespace": ns, "name": name}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "TokenDeliveryGrant",
            "metadata": {"namespace": ns, "name": "g"},
            "spec": {"from": from},
        }))
        .unwrap()
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut n = PartialObjectMeta::<Namespace>::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    /// --cross-namespace-delivery's stores, with these namespaces.
    fn delivery_with(namespaces: Vec<PartialObjectMeta<Namespace>>) -> delivery::Delivery {
        let (delivery, mut writers) = delivery::Delivery::new();
        writers.namespaces.apply_watcher_event(&Event::Init);
        for n in namespaces {
            writers.namespaces.apply_watcher_event(&Event::InitApply(n));
        }
        writers.namespaces.apply_watcher_event(&Event::InitDone);
        delivery
    }

    #[test]
    fn a_grant_triggers_only_resources_the_cache_holds_whose_delivery_reaches_its_namespace() {
        let named = serde_json::json!({"namespaces": ["dest"]});
        let selecting = serde_json::json!({"namespaceSelector": {"matchLabels": {"t": "a"}}});
        let resources = vec![
            pc("src", "named", "c", Some(named)),
            pc("src", "selecting", "c", Some(selecting)),
            pc("src", "undelivered", "c", None),
        ];
        let cached = cache(resources);
        let delivery = delivery_with(vec![namespace("dest", &[("t", "a")]), namespace("b", &[])]);
        let from = [
            ("src", "named"),
            ("src", "selecting"),
            ("src", "undelivered"),
            ("src", "absent"),
            ("elsewhere", "anything"),
        ];
        assert_eq!(
            refs(delivery::grant_readers(
                &delivery,
                &cached,
                &grant("dest", &from)
            )),
            ["src/named", "src/selecting"]
        );
        // In a namespace none of them reaches: nothing at all.
        assert!(delivery::grant_readers(&delivery, &cached, &grant("b", &from)).is_empty());
        // A copy there claiming a resource (a forged one, a real one) adds only a real source
        // that reaches the namespace.
        delivery
            .copies
            .watched(&Event::Apply(copy("dest", "uid-src-named", "src/named")));
        delivery.copies.watched(&Event::Apply({
            let mut c = copy("dest", "uid-src-undelivered", "src/undelivered");
            c.metadata.name = Some("other".into());
            c
        }));
        assert_eq!(
            refs(delivery::grant_readers(
                &delivery,
                &cached,
                &grant("dest", &[])
            )),
            ["src/named"]
        );
    }

    #[test]
    fn a_namespace_triggers_the_resources_reaching_it_and_the_sources_of_its_copies() {
        let named = serde_json::json!({"namespaces": ["dest"]});
        let selecting = serde_json::json!({"namespaceSelector": {"matchLabels": {"t": "a"}}});
        let resources = vec![
            pc("src", "named", "c", Some(named)),
            pc("src", "selecting", "c", Some(selecting)),
            pc("src", "left", "c", None),
        ];
        let readers = readers::Readers::default();
        for r in &resources {
            readers.watched(&Event::Apply(r.clone()), &cache(Vec::new()));
        }
        let cached = cache(resources);
        let delivery = delivery_with(Vec::new());
        let dest = |labels| {
            delivery::namespace_readers(&delivery, &readers, &cached, &namespace("dest", labels))
        };
        assert_eq!(refs(dest(&[("t", "a")])), ["src/named", "src/selecting"]);
        assert_eq!(refs(dest(&[])), ["src/named"]);
        // A resource that no longer reaches it but left a copy there: its copy must go.
        delivery
            .copies
            .watched(&Event::Apply(copy("dest", "uid-src-left", "src/left")));
        assert_eq!(refs(dest(&[])), ["src/left", "src/named"]);
    }

    #[test]
    fn the_cache_keeps_the_metadata_the_controller_reads_and_nothing_else() {
        let pairs = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let mut meta = kube::api::ObjectMeta {
            name: Some("pc".into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            resource_version: Some("7".into()),
            generation: Some(3),
            finalizers: Some(vec!["tokenrotator.dev/copies".into()]),
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            )),
            labels: pairs(&[("app.kubernetes.io/managed-by", "Helm")]),
            annotations: pairs(&[
                (REFRESH_ANNOTATION, "2026-12-02"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
                ("meta.helm.sh/release-name", "r"),
            ]),
            managed_fields: Some(vec![Default::default()]),
            owner_references: Some(vec![Default::default()]),
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            )),
            ..Default::default()
        };
        let mut expected = meta.clone();
        keep_what_is_read(&mut meta);
        expected.labels = None;
        expected.annotations = pairs(&[(REFRESH_ANNOTATION, "2026-12-02")]);
        expected.managed_fields = None;
        expected.owner_references = None;
        expected.creation_timestamp = None;
        assert_eq!(meta, expected);
        // Without any annotation it reads, none are kept (its own prefix is no exception).
        let mut other = kube::api::ObjectMeta {
            annotations: pairs(&[("a", "b"), ("tokenrotator.dev/padding", "x")]),
            ..Default::default()
        };
        keep_what_is_read(&mut other);
        assert_eq!(other.annotations, None);
    }
}

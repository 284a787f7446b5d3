//! The controller: watches ProviderCredentials and the Secrets around them (label-selected
//! only, so memory does not grow with unrelated Secrets) and reconciles each resource.

mod context;
mod copies;
mod delivery;
mod delivery_views;
mod due;
mod endpoints;
mod execute;
mod executed;
mod in_flight;
mod observe;
pub mod reconcile;
mod readers;
mod reconcile_rate;
mod report;
mod rollout;
mod shutdown;
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

/// Credentials Secrets per list page (the default is 500).
const CREDENTIALS_PAGE_SIZE: u32 = 50;

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
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.cross_namespace_delivery && !args.namespaces.is_empty() {
        return Err(RunError::DeliveryNeedsClusterScope);
    }
    let client = kube_client().await?;
    let metrics = Arc::new(Metrics::new());
    tokio::spawn({
        let metrics = metrics.clone();
        let addr = args.metrics_addr;
        async move {
            if let Err(e) = telemetry::serve(addr, metrics).await {
                warn!(error = %e, "metrics server stopped");
            }
        }
    });

    let reporter = Reporter {
        controller: "token-rotator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    // Fail early and clearly when the CRD is missing.
    let probe: Api<ProviderCredential> = match &scopes[0] {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let selector = args.selector.clone().filter(|s| !s.trim().is_empty());
    let mut probe_params = kube::api::ListParams::default().limit(1);
    if let Some(selector) = &selector {
        probe_params = probe_params.labels(selector);
    }
    // The apiserver is the judge of a selector's syntax: asked once, up front.
    probe
        .list(&probe_params)
        .await
        .map_err(|e| match (e, &selector) {
            (kube::Error::Api(e), Some(selector)) if e.code == 400 => RunError::BadSelector {
                selector: selector.clone(),
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
    // Ready once connected: a standby replica is healthy too.
    metrics.set_ready(true);
    // A standby waits here; SIGTERM then ends it at once (it holds nothing).
    let (gate, mut lease) = tokio::select! {
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
    let ctx = Arc::new(Context::new(
        client.clone(),
        TokenClient::new(HttpPolicy {
            allow_http: args.allow_http,
            allowed_hosts: (!args.allowed_token_hosts.is_empty())
                .then(|| args.allowed_token_hosts.clone()),
            allow_link_local: args.allow_link_local_token_endpoints,
        }),
        reporter,
        metrics.clone(),
        gate.clone(),
        args.token_requests_per_minute,
        context::Features {
            restart_workloads: args.restart_workloads,
            host_rates: args.token_host_rates.clone(),
            requests_in_flight_per_namespace: args.requests_in_flight_per_namespace as usize,
            reconciles_per_second_per_namespace: args.reconciles_per_second_per_namespace,
            delivery,
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
    let mut controllers = std::pin::pin!(controllers);
    // The controllers end on their own only after the gate closed, and before shutdown began
    // only a lost lease closes it: either way a lost lease exits non-zero.
    let (stop, drained) = tokio::select! {
        biased;
        stop = shutdown::stop_requested(lease.as_mut(), &gate) => (stop, false),
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
    // The reconciles in flight, then the token requests that outlived theirs.
    let drain = async {
        if !drained {
            (&mut controllers).await;
        }
        ctx.in_flight.drained().await;
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
    if tokio::time::timeout(
        shutdown::STORE_BOUND,
        reconcile::report_parked_at_exit(&ctx),
    )
    .await
    .is_err()
    {
        warn!("the outcomes of requests that ended at shutdown were not all reported in time");
    }
    shutdown::store_held(&ctx).await;
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

async fn controller_for(client: Client, watched: Watched, ctx: Arc<Context>, concurrency: u16) {
    let Watched {
        namespace,
        selector,
        delivery: delivery_writers,
    } = watched;
    let watch_client = client.clone();
    // One object that cannot be read (DeserializeGuard) is reported on itself; it never stops
    // the watch for the others.
    let (pcs, secrets, credentials_secrets): (
        Api<Guarded>,
        Api<PartialObjectMeta<Secret>>,
        Api<Secret>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    // Whole objects: a new resource then reads no credentials (views.rs). Small pages: anyone
    // may label a Secret as credentials, and a page of the largest is 1 MiB per Secret.
    let credentials = watcher::Config::default()
        .labels(&format!("{CREDENTIALS_LABEL}=true"))
        .page_size(CREDENTIALS_PAGE_SIZE);
    // The cache holds ProviderCredentials only, without the bulky fields never read: memory
    // stays proportional to the resources managed. Managed Secrets are watched as metadata only.
    let (store, writer) = reflector::store::<Guarded>();
    let forget = ctx.clone();
    // Each resource's next reconcile (its next rotation), kept compactly (due.rs).
    let due = Arc::new(due::Due::<Guarded>::default());
    let forget_due = due.clone();
    let mut shard = watcher::Config::default();
    if let Some(selector) = &selector {
        shard = shard.labels(selector);
    }
    let resources = watcher(pcs, shard)
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
        .reflect(writer)
        .inspect_ok({
            let (store, metrics, mut counted) = (store.clone(), ctx.metrics.clone(), 0i64);
            move |_| {
                let now = i64::try_from(store.len()).unwrap_or(i64::MAX);
                metrics.managed_changed(now - counted);
                counted = now;
            }
        })
        .applied_objects();
    // Followed (their resourceVersions only) so that a reconcile can tell whether the target
    // and state Secrets it read or wrote last are still that version (see views.rs).
    let watch = ctx.views.new_watch(namespace.clone());
    let follow = ctx.clone();
    let owned = watcher(secrets.clone(), managed)
        .default_backoff()
        .inspect_ok(move |event| {
            follow.views.watched(watch, event);
            if let Some(delivery) = &follow.delivery {
                delivery.copies.watched(event);
            }
        })
        .touched_objects();
    let credentials_watch = ctx.views.new_watch(namespace.clone());
    let follow_credentials = ctx.clone();
    let credential_secrets = watcher(credentials_secrets, credentials)
        .default_backoff()
        .inspect_ok(move |event| {
            follow_credentials
                .views
                .credentials_watched(credentials_watch, event)
        })
        .touched_objects();
    let mapper_store = store.clone();
    let namespace_readers = store.clone();
    let cached = store.clone();
    let mut controller = Controller::for_stream(resources, store)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(due.clone().fired())
        // Requests that ended after their reconcile returned (execute.rs).
        .reconcile_on(ctx.reconcile_requests())
        .trigger_backoff(ShortPause)
        // A managed Secret concerns its owner, and a copy in another namespace its source.
        .watches_stream(owned, |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let owners = secret
                .owner_references()
                .iter()
                .filter(|r| {
                    r.kind == "ProviderCredential" && r.api_version.starts_with("tokenrotator.dev/")
                })
                .map(|r| {
                    let owner = ObjectRef::new(&r.name);
                    match &namespace {
                        Some(ns) => owner.within(ns),
                        None => owner,
                    }
                })
                .collect::<Vec<_>>();
            owners.into_iter().chain(delivery::copy_source(&secret))
        })
        .watches_stream(credential_secrets, move |secret: Secret| {
            // Every resource in the Secret's namespace that reads it.
            let ns = secret.namespace();
            let name = secret.name_any();
            mapper_store
                .state()
                .into_iter()
                .filter(|guard| {
                    guard.namespace() == ns
                        && guard
                            .0
                            .as_ref()
                            .is_ok_and(|pc| pc.spec.credentials.secret_ref.name == name)
                })
                .map(|guard| ObjectRef::from(guard.as_ref()))
                .collect::<Vec<_>>()
        });
    if let Some(writers) = delivery_writers {
        let grants = watcher(
            Api::<delivery::GuardedGrant>::all(watch_client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        // Only the identity and the spec are read: a grant's labels and annotations (up to
        // 256 KiB each, in any number of grants a tenant creates) are not kept.
        .modify(|g| {
            g.managed_fields_mut().clear();
            g.annotations_mut().clear();
            g.labels_mut().clear();
            g.owner_references_mut().clear();
        })
        .reflect(writers.grants)
        .touched_objects();
        // Metadata only: the labels are all that is read.
        let namespaces = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(watch_client),
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
        controller = controller
            .watches_stream(grants, move |grant| {
                delivery::grant_readers(&grant_ctx, &grant)
            })
            .watches_stream(namespaces, move |ns| {
                delivery::namespace_readers(&namespace_ctx, &namespace_readers, &ns)
            });
    }
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
    let next = reconcile_guarded(pc.clone(), ctx).await?;
    // Deleted while it ran: nothing to schedule (its Delete has gone by).
    let current = cached.get(&ObjectRef::from(pc.as_ref()));
    if current.is_none_or(|c| c.uid() != pc.uid()) {
        due.forget(&pc);
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
    use crate::api::REFRESH_ANNOTATION;

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

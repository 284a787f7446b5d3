//! The watches feeding the controllers and the mappers from a watched object to the resources
//! that read it.

use std::sync::Arc;

use crate::controller::steps::context::Context;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::driver::{ShortPause, run_controller};
use crate::api::{CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REFRESH_ANNOTATION};
use crate::api::{Guarded, ResourceKey};
use crate::controller::caches::changes::managed_digest;

/// Objects per list page (the default is 500). A page is held whole while it is parsed, and
/// anyone who can write one of these objects sets its size: a page of the largest costs
/// ~10 MiB of credentials Secrets (1 MiB each), ~16 MiB of ProviderCredentials (~0.8 MiB
/// each, the CRD's bounds) and ~25 MiB of managed Secrets' metadata (256 KiB each), twice
/// that while parsed. Pages of ordinary objects are a few KiB: small pages cost round trips
/// (500 for 10,000 resources), not memory.
const CREDENTIALS_PAGE_SIZE: u32 = 10;
const RESOURCES_PAGE_SIZE: u32 = 20;
const MANAGED_PAGE_SIZE: u32 = 100;

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

/// What one controller watches: a namespace (or all) and, for a shard, a label selector;
/// with --cross-namespace-delivery, namespaces and TokenDeliveryGrants too.
pub(super) struct Watched {
    pub(super) namespace: Option<String>,
    pub(super) selector: Option<String>,
    pub(super) delivery: Option<crate::controller::caches::delivery_views::DeliveryWriters>,
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
    due: &Arc<crate::controller::caches::due::Due<Guarded>>,
    readers: &Arc<crate::controller::caches::readers::Readers>,
) -> impl futures::Stream<Item = Result<Guarded, watcher::Error>> + Send + 'static {
    let (forget, forget_due) = (ctx.clone(), due.clone());
    let (index, before) = (readers.clone(), store.clone());
    let (rebuild, after) = (readers.clone(), store.clone());
    let (metrics, mut counted) = (ctx.metrics.clone(), 0i64);
    let mut budget =
        crate::controller::caches::budget::ResourcesBudget::new(ctx.cache_bytes_per_namespace);
    watcher(pcs, shard)
        .default_backoff()
        // Deleted resources are never reconciled again: drop their per-resource series and
        // anything held for them here.
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(pc) = event {
                // Without a UID, namespace and name nothing was ever kept for it (the
                // reconcile refuses it), so there is nothing to forget.
                if let Ok(key) = ResourceKey::of(pc.meta()) {
                    forget.metrics.forget(&key);
                    forget.forget(&key);
                    forget_due.forget(&key);
                }
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

/// The managed Secrets (targets, state, copies), followed by their versions only so that a
/// reconcile can tell whether the Secrets it read or wrote last are still that version (see
/// views.rs); given on only when the digest of what the operator reads of one changed
/// (changes.rs).
fn managed_changes(
    secrets: Api<PartialObjectMeta<Secret>>,
    namespace: &Option<String>,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    let managed = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .page_size(MANAGED_PAGE_SIZE);
    let watch = ctx.views.new_watch(namespace.clone());
    let follow = ctx.clone();
    watcher(secrets, managed)
        .default_backoff()
        .map_ok(move |event| {
            if let Some(delivery) = &follow.delivery {
                delivery.copies.watched(&event);
            }
            let changed = follow.views.watched(watch, event, managed_digest);
            futures::stream::iter(changed.into_iter().map(Ok))
        })
        .try_flatten()
}

/// The opted-in credentials Secrets, whole: a new resource then reads no credentials
/// (views.rs); given on only when their data, opt-in label or allowed-token-hosts annotation
/// changed.
fn credentials_changes(
    credentials_secrets: Api<Secret>,
    namespace: &Option<String>,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = Result<Secret, watcher::Error>> + Send + 'static {
    let credentials = watcher::Config::default()
        .labels(&format!("{CREDENTIALS_LABEL}=true"))
        .page_size(CREDENTIALS_PAGE_SIZE);
    let watch = ctx.views.new_watch(namespace.clone());
    let follow = ctx.clone();
    watcher(credentials_secrets, credentials)
        .default_backoff()
        .map_ok(move |event| {
            let changed = follow.views.credentials_watched(watch, event);
            futures::stream::iter(changed.into_iter().map(Ok))
        })
        .try_flatten()
}

/// The owners of a managed Secret (if the cache holds them with that UID) and, for a copy in
/// another namespace, its source.
fn managed_readers(
    secret: &PartialObjectMeta<Secret>,
    cached: &reflector::Store<Guarded>,
) -> Vec<ObjectRef<Guarded>> {
    // A Secret an API server shows has a namespace; without one it concerns no resource.
    let Some(namespace) = secret.namespace() else {
        return Vec::new();
    };
    let owners = secret
        .owner_references()
        .iter()
        .filter(|r| {
            r.kind == "ProviderCredential" && r.api_version.starts_with("tokenrotator.dev/")
        })
        .filter_map(|r| {
            crate::controller::caches::delivery_views::cached_with_uid(
                cached, &r.uid, &namespace, &r.name,
            )
        });
    owners
        .chain(super::mappers::copy_source(secret, cached))
        .collect()
}

pub(super) async fn controller_for(
    client: Client,
    watched: Watched,
    ctx: Arc<Context>,
    concurrency: u16,
) {
    let Watched {
        namespace,
        selector,
        delivery: delivery_writers,
    } = watched;
    // One object that cannot be read (DeserializeGuard) is reported on itself; it never stops
    // the watch for the others.
    let (pcs, secrets, credentials_secrets) = apis(&client, &namespace);
    let (store, writer) = reflector::store::<Guarded>();
    ctx.watch_resources(store.clone());
    // Each resource's next reconcile (its next rotation), kept compactly (due.rs).
    let due = Arc::new(crate::controller::caches::due::Due::<Guarded>::default());
    let readers = Arc::new(crate::controller::caches::readers::Readers::default());
    let mut shard = watcher::Config::default().page_size(RESOURCES_PAGE_SIZE);
    if let Some(selector) = &selector {
        shard = shard.labels(selector);
    }
    let resources = resources_stream(pcs, shard, (store.clone(), writer), &ctx, &due, &readers);
    let owned = managed_changes(secrets, &namespace, &ctx);
    let credential_secrets = credentials_changes(credentials_secrets, &namespace, &ctx);
    let (owners_of, credentials_readers) = (store.clone(), readers.clone());
    let mut controller = Controller::for_stream(resources, store.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(due.clone().fired())
        // Requests that ended after their reconcile returned (execute.rs).
        .reconcile_on(ctx.reconcile_requests())
        .trigger_backoff(ShortPause)
        // A managed Secret concerns its owner, and a copy in another namespace its source:
        // only when something the operator reads of it changed.
        .watches_stream(owned, move |secret: PartialObjectMeta<Secret>| {
            managed_readers(&secret, &owners_of)
        })
        // A credentials Secret concerns the resources naming it (an index, not a scan), only
        // when its data, opt-in label or allowed-token-hosts annotation changed.
        .watches_stream(credential_secrets, move |secret: Secret| {
            // Without a namespace (no API server sends that) it is nobody's credentials.
            secret.namespace().map_or_else(Vec::new, |namespace| {
                credentials_readers.of_credentials(&namespace, &secret.name_any())
            })
        });
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
    writers: crate::controller::caches::delivery_views::DeliveryWriters,
    ctx: &Arc<Context>,
    store: &reflector::Store<Guarded>,
    readers: &Arc<crate::controller::caches::readers::Readers>,
) -> Controller<Guarded> {
    let grants = watcher(
        Api::<crate::controller::caches::delivery_views::GuardedGrant>::all(client.clone()),
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
            Some(delivery) => super::mappers::grant_readers(delivery, &grant_store, &grant),
            None => Vec::new(),
        })
        .watches_stream(namespaces, move |ns| match &namespace_ctx.delivery {
            Some(delivery) => {
                super::mappers::namespace_readers(delivery, &readers, &namespace_store, &ns)
            }
            None => Vec::new(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL, REFRESH_ANNOTATION};
    use crate::controller::caches::readers::tests::pc;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::watcher::Event;

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
        // As an API server shows it: with a UID of its own.
        s.metadata.uid = Some(format!("copy-of-{uid}"));
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

    fn grant(
        ns: &str,
        from: &[(&str, &str)],
    ) -> crate::controller::caches::delivery_views::GuardedGrant {
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
    fn delivery_with(
        namespaces: Vec<PartialObjectMeta<Namespace>>,
    ) -> crate::controller::caches::delivery_views::Delivery {
        let (delivery, mut writers) = crate::controller::caches::delivery_views::Delivery::new();
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
            refs(crate::controller::runtime::mappers::grant_readers(
                &delivery,
                &cached,
                &grant("dest", &from)
            )),
            ["src/named", "src/selecting"]
        );
        // In a namespace none of them reaches: nothing at all.
        assert!(
            crate::controller::runtime::mappers::grant_readers(
                &delivery,
                &cached,
                &grant("b", &from)
            )
            .is_empty()
        );
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
            refs(crate::controller::runtime::mappers::grant_readers(
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
        let readers = crate::controller::caches::readers::Readers::default();
        for r in &resources {
            readers.watched(&Event::Apply(r.clone()), &cache(Vec::new()));
        }
        let cached = cache(resources);
        let delivery = delivery_with(Vec::new());
        let dest = |labels| {
            crate::controller::runtime::mappers::namespace_readers(
                &delivery,
                &readers,
                &cached,
                &namespace("dest", labels),
            )
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

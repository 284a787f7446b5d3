//! What the watches of Secrets show, kept per Secret as 16 bytes beside its name: its version
//! and a digest of what the operator reads of it (changes.rs). A reconcile reuses a Secret it
//! remembers while a watch shows that version (views.rs); a Secret event triggers reconciles
//! only when the digest changed; a Secret the complete watch never showed does not exist.

use std::sync::RwLock;

use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

/// The longest a reconcile waits for the watches' first list, progress or not.
pub(super) const LIST_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// A hash keyed at random per process: what a tenant names its objects cannot steer it.
pub(super) fn keyed(value: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::LazyLock<std::hash::RandomState> =
        std::sync::LazyLock::new(std::hash::RandomState::new);
    KEY.hash_one(value)
}

/// What one watch shows of every Secret, by namespace and name.
#[derive(Default)]
struct Versions {
    /// The namespace watched (`None`: all).
    scope: Option<String>,
    /// Listed completely at least once: what it does not show does not exist (as of its
    /// latest event).
    listed: bool,
    current: ByNamespace,
    /// Filled during a (re)list, then swapped in: a Secret deleted meanwhile disappears.
    relisting: ByNamespace,
}

/// What a watch showed of one Secret: its version ([`version_id`]) and the digest of what
/// the operator reads of it (changes.rs). Sixteen bytes, no allocation, beside its name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Shown {
    version: u64,
    digest: u64,
}

/// What each Secret showed, by namespace, then name.
type ByNamespace = crate::by_namespace::ByNamespace<Shown>;

/// A resourceVersion as eight bytes, only ever compared for equality with another: the number
/// the apiserver gives (etcd's revision, exact), or a hash of any other form (keyed at random
/// per process, and apart from every number).
pub fn version_id(resource_version: &str) -> u64 {
    let canonical = resource_version.bytes().all(|b| b.is_ascii_digit())
        && !(resource_version.len() > 1 && resource_version.starts_with('0'));
    match resource_version.parse::<u64>() {
        Ok(n) if canonical && n < 1 << 63 => n,
        _ => keyed(resource_version) | 1 << 63,
    }
}

/// What a watch shows of a Secret: its version and digest.
fn shown<K: Resource>(secret: &K, digest: fn(&K) -> u64) -> Shown {
    Shown {
        version: version_id(
            secret
                .meta()
                .resource_version
                .as_deref()
                .unwrap_or_default(),
        ),
        digest: digest(secret),
    }
}

/// Where a Secret is. `None`: no namespace or name (no API server sends such a Secret; it is
/// not followed).
fn place<K: Resource>(secret: &K) -> Option<(&str, &str)> {
    let meta = secret.meta();
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// A deleted Secret as a relist reports it: its namespace and name.
fn named<K: Resource + Default>(namespace: &str, name: &str) -> K {
    let mut k = K::default();
    k.meta_mut().namespace = Some(namespace.to_string());
    k.meta_mut().name = Some(name.to_string());
    k
}

/// A Secret's namespace and name (`None`: it has none, see [`place`]).
pub(super) fn key(secret: &impl Resource) -> Option<(String, String)> {
    Some((secret.namespace()?, secret.meta().name.clone()?))
}

/// The Secrets every watch shows, and a counter of what they showed (a new version, a
/// deletion, a completed list), so that a reconcile can wait for the first list or for a
/// version it wrote.
#[derive(Default)]
pub struct WatchedSecrets {
    /// One per watch (a namespace, or all).
    watches: RwLock<Vec<Versions>>,
    shown: tokio::sync::watch::Sender<u64>,
}

impl WatchedSecrets {
    /// Registers a watch of Secrets in `scope` (`None`: all namespaces).
    pub fn new_watch(&self, scope: Option<String>) -> usize {
        let mut watches = self.watches.write().unwrap_or_else(|e| e.into_inner());
        watches.push(Versions {
            scope,
            ..Versions::default()
        });
        watches.len() - 1
    }

    /// Follows one event of a watch of Secrets (only their versions and digests are kept) and
    /// gives back the Secrets in it whose digest of what the operator reads changed: new or
    /// changed ones, deleted ones, and at the end of a relist those it no longer shows
    /// (deleted while the watch was down; given with their namespace and name only). An
    /// annotation some other tool sets on a credentials Secret used by hundreds of resources
    /// then reconciles none of them.
    pub fn watched<K: Resource + Default>(
        &self,
        watch: usize,
        event: Event<K>,
        digest: fn(&K) -> u64,
    ) -> Vec<K> {
        // Digested before the lock: a credentials Secret's data may be a MiB, and every
        // reconcile's look at the versions waits on this lock.
        let seen = match &event {
            Event::Apply(s) | Event::InitApply(s) => Some(shown(s, digest)),
            _ => None,
        };
        let mut watches = self.watches.write().unwrap_or_else(|e| e.into_inner());
        let Some(versions) = watches.get_mut(watch) else {
            return Vec::new();
        };
        let changed = match event {
            Event::Apply(s) => {
                let (Some((namespace, name)), Some(shown)) = (place(&s), seen) else {
                    return Vec::new();
                };
                let changed =
                    versions.current.get(namespace, name).map(|s| s.digest) != Some(shown.digest);
                versions.current.insert(namespace, name, shown);
                changed.then_some(s).into_iter().collect()
            }
            Event::Delete(s) => {
                let Some((namespace, name)) = key(&s) else {
                    return Vec::new();
                };
                versions.current.remove(&namespace, &name);
                vec![s]
            }
            Event::Init => {
                versions.relisting = ByNamespace::default();
                return Vec::new();
            }
            Event::InitApply(s) => {
                let (Some((namespace, name)), Some(shown)) = (place(&s), seen) else {
                    return Vec::new();
                };
                let changed =
                    versions.current.get(namespace, name).map(|s| s.digest) != Some(shown.digest);
                versions.relisting.insert(namespace, name, shown);
                changed.then_some(s).into_iter().collect()
            }
            Event::InitDone => {
                let listed = std::mem::take(&mut versions.relisting);
                let gone = versions
                    .current
                    .iter()
                    .filter(|(ns, name, _)| !listed.contains(ns, name))
                    .map(|(ns, name, _)| named(ns, name))
                    .collect();
                versions.current = listed;
                versions.listed = true;
                gone
            }
        };
        self.shown.send_modify(|n| *n += 1);
        changed
    }

    /// Waits until every watch covering `namespace` has listed everything once, or until
    /// `found()` holds; gives up once the watches showed nothing new for `quiet` (a stalled
    /// list), and after [`LIST_WAIT_MAX`] in any case (one watch failing while the others
    /// keep showing changes). At start-up the resources are reconciled while their credentials
    /// Secrets are still being listed, page by page: waiting for the list beats reading each.
    pub async fn listed(
        &self,
        namespace: &str,
        quiet: std::time::Duration,
        found: impl Fn() -> bool,
    ) {
        let _ = tokio::time::timeout(
            LIST_WAIT_MAX,
            self.listed_unbounded(namespace, quiet, found),
        )
        .await;
    }

    async fn listed_unbounded(
        &self,
        namespace: &str,
        quiet: std::time::Duration,
        found: impl Fn() -> bool,
    ) {
        let mut shown = self.shown.subscribe();
        let all_listed = || {
            let watches = self.watches.read().unwrap_or_else(|e| e.into_inner());
            watches
                .iter()
                .filter(|v| v.scope.as_deref().is_none_or(|ns| ns == namespace))
                .all(|v| v.listed)
        };
        while !all_listed() && !found() {
            if !matches!(
                tokio::time::timeout(quiet, shown.changed()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    /// Every watch covering `namespace` listed everything and never showed this Secret.
    pub fn known_absent(&self, namespace: &str, name: &str) -> bool {
        let watches = self.watches.read().unwrap_or_else(|e| e.into_inner());
        let covering: Vec<&Versions> = watches
            .iter()
            .filter(|v| v.scope.as_deref().is_none_or(|ns| ns == namespace))
            .collect();
        !covering.is_empty()
            && covering
                .iter()
                .all(|v| v.listed && !v.current.contains(namespace, name))
    }

    /// Wakes on everything the watches show.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shown.subscribe()
    }

    /// The latest version a watch showed: a (re)list in progress is newer than what it will
    /// replace, so the first list serves reconciles before it is complete.
    pub fn version(&self, namespace: &str, name: &str) -> Option<u64> {
        let watches = self.watches.read().unwrap_or_else(|e| e.into_inner());
        watches.iter().find_map(|v| {
            v.relisting
                .get(namespace, name)
                .or_else(|| v.current.get(namespace, name))
                .map(|shown| shown.version)
        })
    }

    /// A watch shows this Secret, or is listing it now.
    pub fn shows(&self, namespace: &str, name: &str) -> bool {
        self.version(namespace, name).is_some()
    }
}

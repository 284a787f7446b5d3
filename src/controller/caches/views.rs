//! Secrets as last read or written, reused while a metadata watch that was already running (to
//! trigger reconciles) shows the same resourceVersion; only that string is kept per watched
//! Secret, not its metadata. A resourceVersion names one version of one object, so an equal
//! one means the view is what a read would return; anything else (another version, not in the
//! watch yet) is read from the API as before.
//! - The target and state Secrets of each resource (the watch of managed Secrets).
//! - Credentials Secrets (the watch of opted-in ones), shared by the resources that use them.
//! - A state Secret the watch of managed Secrets has never shown, once that watch has listed
//!   everything, is absent without a read — unless this process remembers writing it (the
//!   watch may not have caught up) — so a new resource reads nothing to learn it has no state.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

use tracing::debug;

use super::kept_credentials::{KeptByName, KeptCredentials};
use super::packed::PackedTarget;
use super::watched::{WatchedSecrets, key, keyed, version_id};
use crate::api::ResourceKey;
use crate::rotation::{CredentialsView, Slot, StateView, TargetView};
use crate::secrets::credentials_view;

/// Credentials Secrets with more data than this are not kept from the watch (read when used):
/// anyone may label a Secret as credentials, and a few of the largest (1 MiB each) must not
/// fill the operator's memory. Real credentials (ids, secrets, a PEM key, a service-account
/// JSON key) are a few KiB.
const KEPT_CREDENTIALS_MAX_BYTES: usize = 16 * 1024;

/// A view as last read or written, and which Secret it shows (a hash of its namespace and
/// name, which can change with the spec; the resourceVersion compared on use already names one
/// version of one object, so this only guards the obvious), kept compactly ([`Remember`]).
struct Seen<K> {
    secret: u64,
    /// The view's resourceVersion ([`version_id`]).
    version: u64,
    view: K,
    /// Written by this process and not yet matched to the watch: the watch is behind, not
    /// ahead, when it shows another version (see [`SecretViews::once_shown`]).
    written: bool,
}

/// One resource's two Secrets as last seen.
#[derive(Default)]
struct Remembered {
    target: Option<Seen<PackedTarget>>,
    state: Option<Seen<Box<StateView>>>,
    /// The target as found when it was not this resource's: absent, or someone else's.
    unowned: Option<Box<Unowned>>,
}

/// A target that was absent (404) or someone else's when read. Absent stays absent until the
/// watch of managed Secrets shows something there (or the create fails: someone else's then).
/// Someone else's is read again on the resource's own change (a new generation), at its
/// TargetConflict recheck, or when the watch shows another version there than when read.
struct Unowned {
    secret: u64,
    /// `None`: absent. Else someone else's Secret at this resourceVersion.
    foreign: Option<Box<str>>,
    /// What the watch of managed Secrets showed there when this was remembered.
    shown: Option<u64>,
    generation: Option<i64>,
    recheck_at: Option<tokio::time::Instant>,
}

/// A resource's UID as the key of its remembered Secrets: eight bytes instead of a 36-byte
/// string per resource (a collision would still have to match the Secret and its version to
/// be used). A resource's target and state Secrets are in its namespace: the methods below
/// take its key and a Secret's name.
fn resource_id(key: &ResourceKey) -> u64 {
    keyed(key.uid())
}

fn secret_id(namespace: &str, name: &str) -> u64 {
    keyed((namespace, name))
}

/// Only a view with a resourceVersion can be matched to the watch.
fn seen<T: Remember>(
    namespace: &str,
    name: &str,
    view: Option<T>,
    written: bool,
) -> Option<Seen<T::Kept>> {
    let view = view?;
    let version = version_id(view.resource_version()?);
    Some(Seen {
        secret: secret_id(namespace, name),
        version,
        view: view.keep()?,
        written,
    })
}

/// Picks one of a resource's two remembered Secrets.
type Pick<T> = for<'a> fn(&'a mut Remembered) -> Option<&'a mut Seen<<T as Remember>::Kept>>;

/// A view, and how it is kept between reconciles (one per resource, for its whole life).
trait Remember: Sized {
    type Kept;
    fn resource_version(&self) -> Option<&str>;
    /// `None`: not kept (read again next time).
    fn keep(self) -> Option<Self::Kept>;
    fn restore(kept: &Self::Kept) -> Self;
}

impl Remember for TargetView {
    type Kept = PackedTarget;
    fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }
    fn keep(self) -> Option<PackedTarget> {
        PackedTarget::of(&self)
    }
    fn restore(kept: &PackedTarget) -> Self {
        kept.view()
    }
}

/// Rare (only resources with a refresh token or something to remember have one): boxed.
impl Remember for StateView {
    type Kept = Box<StateView>;
    fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }
    fn keep(self) -> Option<Box<StateView>> {
        Some(Box::new(self))
    }
    fn restore(kept: &Box<StateView>) -> Self {
        (**kept).clone()
    }
}

#[derive(Default)]
pub struct SecretViews {
    /// What the watches of Secrets show: versions and change digests.
    secrets: WatchedSecrets,
    /// By resource UID: its target and state Secrets as last seen.
    views: Mutex<HashMap<u64, Remembered>>,
    /// Opted-in credentials Secrets by namespace and name: resourceVersion and contents.
    credentials: Mutex<KeptByName>,
}

/// What is known about a Secret without reading it.
pub enum Known<T> {
    Current(T),
    /// The watch, complete, has never shown it, and this process did not write it.
    Absent,
    /// Read it.
    Unknown,
}

impl SecretViews {
    /// Keeps at most `bytes_per_namespace` of each namespace's credentials Secrets.
    pub fn with_credentials_budget(bytes_per_namespace: usize) -> Self {
        Self {
            credentials: Mutex::new(KeptByName::new(bytes_per_namespace)),
            ..Self::default()
        }
    }

    /// Registers a watch of Secrets in `scope` (`None`: all namespaces); its events go to
    /// [`SecretViews::watched`].
    pub fn new_watch(&self, scope: Option<String>) -> usize {
        self.secrets.new_watch(scope)
    }

    /// Follows one event of the watch of opted-in credentials Secrets. Their contents come
    /// with it, so a reconcile reads none of them (unless larger than
    /// [`KEPT_CREDENTIALS_MAX_BYTES`], or changed and not seen yet).
    pub fn credentials_watched(&self, watch: usize, event: Event<Secret>) -> Vec<Secret> {
        if let Event::Apply(secret) | Event::InitApply(secret) = &event
            && let Some((namespace, name)) = key(secret)
        {
            let size: usize = secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.0.len())
                .sum();
            if size <= KEPT_CREDENTIALS_MAX_BYTES {
                let view = credentials_view(Some(secret));
                self.remember_credentials(&namespace, &name, secret.resource_version(), &view);
            } else {
                self.lock_credentials().remove(&namespace, &name);
            }
        }
        self.watched(watch, event, super::changes::credentials_digest)
    }

    /// Follows one event of a watch of Secrets ([`WatchedSecrets::watched`]): gives back the
    /// Secrets whose digest changed, and drops kept credentials that are gone.
    pub fn watched<K: Resource + Default>(
        &self,
        watch: usize,
        event: Event<K>,
        digest: fn(&K) -> u64,
    ) -> Vec<K> {
        let deleted = match &event {
            Event::Delete(s) => key(s),
            _ => None,
        };
        let relisted = matches!(event, Event::InitDone);
        let changed = self.secrets.watched(watch, event, digest);
        if let Some((namespace, name)) = deleted {
            self.lock_credentials().remove(&namespace, &name);
        }
        if relisted {
            // Credentials deleted while the watch was down are dropped. Not those another
            // watch is listing now: at start-up the watch of managed Secrets finishes its
            // list while that of credentials is still paging through them.
            self.lock_credentials()
                .retain(|ns, name| self.secrets.shows(ns, name));
        }
        changed
    }

    fn lock_credentials(&self) -> std::sync::MutexGuard<'_, KeptByName> {
        self.credentials.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credentials Secret as last read, if the watch shows that version still.
    pub fn credentials(&self, namespace: &str, name: &str) -> Option<CredentialsView> {
        let watched = self.secrets.version(namespace, name)?;
        let cached = self.lock_credentials();
        let (version, kept) = cached.get(namespace, name)?;
        (*version == watched).then(|| kept.view())
    }

    /// Remembers an opted-in credentials Secret as read (only those the watch follows).
    pub fn remember_credentials(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<String>,
        view: &CredentialsView,
    ) {
        let mut cached = self.lock_credentials();
        match (resource_version, KeptCredentials::of(view)) {
            (Some(rv), Some(kept)) => {
                if !cached.insert(namespace, name, version_id(&rv), kept) {
                    debug!(%namespace, %name, "over its namespace's budget for kept credentials; read when used");
                }
            }
            _ => {
                cached.remove(namespace, name);
            }
        }
    }

    /// The state Secret: as last seen if the watch shows that version, absent if the watch
    /// never showed it (and this process did not write it), otherwise unknown.
    pub fn state_known(&self, key: &ResourceKey, name: &str) -> Known<StateView> {
        let namespace = key.namespace();
        if let Some(s) = self.current(key, name, |r| r.state.as_mut()) {
            return Known::Current(s);
        }
        let remembered = self
            .lock_views()
            .get(&resource_id(key))
            .is_some_and(|r| r.state.is_some());
        if !remembered && self.secrets.known_absent(namespace, name) {
            return Known::Absent;
        }
        Known::Unknown
    }

    /// Waits for the first list of every watch covering `namespace`
    /// ([`WatchedSecrets::listed`]).
    pub async fn listed(
        &self,
        namespace: &str,
        quiet: std::time::Duration,
        found: impl Fn() -> bool,
    ) {
        self.secrets.listed(namespace, quiet, found).await;
    }

    /// The target is not there as far as this process knows: the complete watch of managed
    /// Secrets never showed that name, this process neither wrote it nor found someone else's
    /// Secret there. An unmanaged Secret may still be there: the create that writes the target
    /// then fails (409) rather than touching it.
    pub fn target_known_absent(&self, key: &ResourceKey, name: &str) -> bool {
        let namespace = key.namespace();
        let remembered = self.lock_views().get(&resource_id(key)).is_some_and(|r| {
            r.target.is_some() || r.unowned.as_ref().is_some_and(|u| u.foreign.is_some())
        });
        !remembered && self.secrets.known_absent(namespace, name)
    }

    pub fn target(&self, key: &ResourceKey, name: &str) -> Option<TargetView> {
        self.current(key, name, |r| r.target.as_mut())
    }

    #[cfg(test)]
    fn state(&self, key: &ResourceKey, name: &str) -> Option<StateView> {
        self.current(key, name, |r| r.state.as_mut())
    }

    /// The target as last seen while the watch shows that version; one this process wrote and
    /// the watch has not shown yet, once it does (waiting at most `bound`).
    pub async fn target_once_shown(
        &self,
        key: &ResourceKey,
        name: &str,
        bound: std::time::Duration,
    ) -> Option<TargetView> {
        self.once_shown(key, name, bound, |r| r.target.as_mut())
            .await
    }

    /// The state Secret this process wrote, once the watch shows that version (at most
    /// `bound`).
    pub async fn state_once_shown(
        &self,
        key: &ResourceKey,
        name: &str,
        bound: std::time::Duration,
    ) -> Option<StateView> {
        self.once_shown(key, name, bound, |r| r.state.as_mut())
            .await
    }

    /// A Secret this process wrote, once the watch shows that version. A reconcile right after
    /// a write (its own status update triggers one) would otherwise read what the watch is
    /// about to deliver. Waits for the next version the watch shows of that Secret, at most
    /// `bound`: the view if it is that version, else `None` (read it).
    async fn once_shown<T: Remember>(
        &self,
        key: &ResourceKey,
        name: &str,
        bound: std::time::Duration,
        pick: Pick<T>,
    ) -> Option<T> {
        let namespace = key.namespace();
        // Subscribed before looking, so that a version shown after the look wakes the wait.
        let mut shown = self.secrets.subscribe();
        if let Some(view) = self.current(key, name, pick) {
            return Some(view);
        }
        let written_unseen = self
            .lock_views()
            .get_mut(&resource_id(key))
            .and_then(pick)
            .is_some_and(|seen| seen.written && seen.secret == secret_id(namespace, name));
        if !written_unseen {
            return None;
        }
        let before = self.secrets.version(namespace, name);
        let _ = tokio::time::timeout(bound, async {
            while self.secrets.version(namespace, name) == before {
                if shown.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.current(key, name, pick)
    }

    /// Remembers what was read or written (an owned Secret; `None` forgets it).
    pub fn remember_target(&self, key: &ResourceKey, name: &str, view: Option<TargetView>) {
        let namespace = key.namespace();
        let target = seen(namespace, name, view, false);
        self.update(key, |r| {
            r.target = target;
            r.unowned = None;
        });
    }

    /// Remembers a target as this process wrote it (the watch shows it later).
    pub fn remember_written_target(&self, key: &ResourceKey, name: &str, view: TargetView) {
        let namespace = key.namespace();
        let target = seen(namespace, name, Some(view), true);
        self.update(key, |r| {
            r.target = target;
            r.unowned = None;
        });
    }

    /// Remembers a target found absent (a 404): not read again while the watch of managed
    /// Secrets shows nothing there. If someone creates an unlabelled Secret there meanwhile,
    /// the operator's create fails (409, NotOwned) and the next read finds it.
    pub fn remember_target_absent(&self, key: &ResourceKey, name: &str) {
        let namespace = key.namespace();
        let unowned = self.unowned(namespace, name, None, None, None);
        self.update(key, |r| {
            r.target = None;
            r.unowned = Some(unowned);
        });
    }

    /// Remembers a target found to be someone else's, at `resource_version`: not read again
    /// before `recheck` (the TargetConflict recheck), unless the resource's generation or the
    /// version the watch shows there changes.
    pub fn remember_target_foreign(
        &self,
        key: &ResourceKey,
        name: &str,
        generation: Option<i64>,
        resource_version: &str,
        recheck: std::time::Duration,
    ) {
        let namespace = key.namespace();
        let recheck_at = tokio::time::Instant::now() + recheck;
        let unowned = self.unowned(
            namespace,
            name,
            Some(resource_version.into()),
            generation,
            Some(recheck_at),
        );
        self.update(key, |r| {
            r.target = None;
            r.unowned = Some(unowned);
        });
    }

    fn unowned(
        &self,
        namespace: &str,
        name: &str,
        foreign: Option<Box<str>>,
        generation: Option<i64>,
        recheck_at: Option<tokio::time::Instant>,
    ) -> Box<Unowned> {
        Box::new(Unowned {
            secret: secret_id(namespace, name),
            foreign,
            shown: self.secrets.version(namespace, name),
            generation,
            recheck_at,
        })
    }

    /// The target as remembered when it was absent or someone else's, if still valid.
    pub fn target_unowned(
        &self,
        key: &ResourceKey,
        name: &str,
        generation: Option<i64>,
    ) -> Option<Slot<TargetView>> {
        let namespace = key.namespace();
        let shown = self.secrets.version(namespace, name);
        let views = self.lock_views();
        let u = views.get(&resource_id(key))?.unowned.as_deref()?;
        if u.secret != secret_id(namespace, name) || u.shown != shown {
            return None;
        }
        if u.foreign.is_none() {
            return Some(Slot::Absent);
        }
        let due = u
            .recheck_at
            .is_none_or(|at| tokio::time::Instant::now() >= at);
        (u.generation == generation && !due).then_some(Slot::Foreign)
    }

    pub fn remember_state(&self, key: &ResourceKey, name: &str, view: Option<StateView>) {
        let namespace = key.namespace();
        let state = seen(namespace, name, view, false);
        self.update(key, |r| r.state = state);
    }

    /// Remembers a state Secret as this process wrote it (the watch shows it later).
    pub fn remember_written_state(&self, key: &ResourceKey, name: &str, view: StateView) {
        let namespace = key.namespace();
        let state = seen(namespace, name, Some(view), true);
        self.update(key, |r| r.state = state);
    }

    pub fn forget(&self, key: &ResourceKey) {
        self.lock_views().remove(&resource_id(key));
    }

    fn lock_views(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Remembered>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what is remembered of one resource; nothing left, no entry.
    fn update(&self, key: &ResourceKey, change: impl FnOnce(&mut Remembered)) {
        let mut views = self.lock_views();
        let remembered = views.entry(resource_id(key)).or_default();
        change(remembered);
        if remembered.target.is_none() && remembered.state.is_none() && remembered.unowned.is_none()
        {
            views.remove(&resource_id(key));
        }
    }

    /// The remembered view, if it is of this Secret and the watch shows that very version now.
    fn current<T: Remember>(&self, key: &ResourceKey, name: &str, pick: Pick<T>) -> Option<T> {
        let namespace = key.namespace();
        let watched = self.secrets.version(namespace, name)?;
        let mut views = self.lock_views();
        let seen = pick(views.get_mut(&resource_id(key))?)?;
        if seen.secret != secret_id(namespace, name) || seen.version != watched {
            return None;
        }
        // Matched: from now on another version in the watch is newer than this one.
        seen.written = false;
        Some(T::restore(&seen.view))
    }

    /// A watch shows a Secret at this place (managed, or opted in as credentials).
    pub fn seen(&self, namespace: &str, name: &str) -> bool {
        self.secrets.version(namespace, name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::watched::LIST_WAIT_MAX;
    use super::*;
    use crate::api::key::test_key;

    /// A digest that changes with every version (what a state Secret's is).
    fn version_digest<K: Resource>(k: &K) -> u64 {
        version_id(k.meta().resource_version.as_deref().unwrap_or_default())
    }
    use crate::state::StateData;
    use kube::core::PartialObjectMeta;

    fn meta(namespace: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some(namespace.into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    fn state(rv: &str) -> StateView {
        StateView {
            resource_version: Some(rv.into()),
            data: StateData::default(),
        }
    }

    #[test]
    fn versions_are_told_apart_exactly() {
        assert_eq!(
            version_id("42"),
            42,
            "etcd's revisions are kept as they are"
        );
        let forms = [
            "42",
            "042",
            "+42",
            "42 ",
            "",
            "0",
            "00",
            "abc",
            "18446744073709551615",
        ];
        let ids: std::collections::BTreeSet<u64> = forms.iter().map(|f| version_id(f)).collect();
        assert_eq!(ids.len(), forms.len(), "every form is its own version");
        assert_eq!(
            version_id("abc"),
            version_id("abc"),
            "the same form, the same id"
        );
        assert!(
            version_id("abc") >= 1 << 63,
            "hashed forms never meet a number"
        );
    }

    #[test]
    fn a_view_is_reused_only_while_the_watch_shows_its_version() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        views.remember_state(
            &test_key("uid", "ns", "pc"),
            "pc-rotator-state",
            Some(state("5")),
        );
        // Not in the watch yet (just written, or the watch is starting): read it.
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
        views.watched(
            watch,
            Event::Apply(meta("ns", "pc-rotator-state", "5")),
            version_digest,
        );
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_some()
        );
        // Another name, another namespace or another resource: not this view.
        assert!(views.state(&test_key("uid", "ns", "pc"), "other").is_none());
        assert!(
            views
                .state(&test_key("uid", "other", "pc"), "pc-rotator-state")
                .is_none()
        );
        assert!(
            views
                .state(&test_key("uid2", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
        assert!(
            views
                .target(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
        // Someone else wrote it: read it again.
        views.watched(
            watch,
            Event::Apply(meta("ns", "pc-rotator-state", "9")),
            version_digest,
        );
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
        views.remember_state(
            &test_key("uid", "ns", "pc"),
            "pc-rotator-state",
            Some(state("9")),
        );
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_some()
        );
        // Deleted: read (and find it absent).
        views.watched(
            watch,
            Event::Delete(meta("ns", "pc-rotator-state", "9")),
            version_digest,
        );
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
        views.forget(&test_key("uid", "ns", "pc"));
        views.watched(
            watch,
            Event::Apply(meta("ns", "pc-rotator-state", "9")),
            version_digest,
        );
        assert!(
            views
                .state(&test_key("uid", "ns", "pc"), "pc-rotator-state")
                .is_none()
        );
    }

    #[test]
    fn a_relist_drops_what_was_deleted_meanwhile() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        views.watched(watch, Event::Apply(meta("ns", "gone", "3")), version_digest);
        views.remember_state(&test_key("uid", "ns", "pc"), "gone", Some(state("3")));
        assert!(views.state(&test_key("uid", "ns", "pc"), "gone").is_some());
        views.watched(
            watch,
            Event::<PartialObjectMeta<Secret>>::Init,
            version_digest,
        );
        views.watched(
            watch,
            Event::InitApply(meta("ns", "kept", "4")),
            version_digest,
        );
        // Until the relist is done, what was known stays.
        assert!(views.state(&test_key("uid", "ns", "pc"), "gone").is_some());
        views.watched(
            watch,
            Event::<PartialObjectMeta<Secret>>::InitDone,
            version_digest,
        );
        assert!(views.state(&test_key("uid", "ns", "pc"), "gone").is_none());
        views.remember_state(&test_key("uid", "ns", "pc"), "kept", Some(state("4")));
        assert!(views.state(&test_key("uid", "ns", "pc"), "kept").is_some());
    }

    #[test]
    fn a_state_is_absent_without_a_read_only_when_the_listed_watch_never_showed_it() {
        let views = SecretViews::default();
        let watch = views.new_watch(Some("ns".into()));
        let known = |views: &SecretViews, uid: &str, ns: &str| match views
            .state_known(&test_key(uid, ns, "pc"), "s")
        {
            Known::Current(_) => "current",
            Known::Absent => "absent",
            Known::Unknown => "unknown",
        };
        // Before the first complete list nothing is known.
        assert_eq!(known(&views, "uid", "ns"), "unknown");
        views.watched(
            watch,
            Event::<PartialObjectMeta<Secret>>::Init,
            version_digest,
        );
        views.watched(
            watch,
            Event::<PartialObjectMeta<Secret>>::InitDone,
            version_digest,
        );
        assert_eq!(known(&views, "uid", "ns"), "absent");
        // Another namespace is not this watch's to say.
        assert_eq!(known(&views, "uid", "other"), "unknown");
        // Written by this process, not shown by the watch yet: read it.
        views.remember_state(&test_key("uid", "ns", "pc"), "s", Some(state("7")));
        assert_eq!(known(&views, "uid", "ns"), "unknown");
        views.watched(watch, Event::Apply(meta("ns", "s", "7")), version_digest);
        assert_eq!(known(&views, "uid", "ns"), "current");
        // Shown by the watch, never read here: read it.
        assert_eq!(known(&views, "uid2", "ns"), "unknown");
    }

    #[test]
    fn credentials_are_reused_while_the_watch_shows_their_version() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        let found = CredentialsView::Found([("k".to_string(), b"v".to_vec())].into());
        views.remember_credentials("ns", "creds", Some("3".into()), &found);
        assert!(
            views.credentials("ns", "creds").is_none(),
            "not watched yet"
        );
        views.watched(
            watch,
            Event::Apply(meta("ns", "creds", "3")),
            version_digest,
        );
        assert!(views.credentials("ns", "creds").is_some());
        views.watched(
            watch,
            Event::Apply(meta("ns", "creds", "4")),
            version_digest,
        );
        assert!(views.credentials("ns", "creds").is_none(), "changed");
        views.remember_credentials("ns", "creds", Some("4".into()), &found);
        assert!(views.credentials("ns", "creds").is_some());
        // Unlabelled or deleted: leaves the watch, and the contents are dropped.
        views.watched(
            watch,
            Event::Delete(meta("ns", "creds", "4")),
            version_digest,
        );
        assert!(views.credentials("ns", "creds").is_none());
        views.watched(
            watch,
            Event::Apply(meta("ns", "creds", "4")),
            version_digest,
        );
        assert!(
            views.credentials("ns", "creds").is_none(),
            "dropped, not revived"
        );
        // Only what this operator may use is kept.
        views.remember_credentials(
            "ns",
            "creds",
            Some("4".into()),
            &CredentialsView::NotLabelled,
        );
        assert!(views.credentials("ns", "creds").is_none());
    }

    fn credentials_secret(name: &str, rv: &str, value_len: usize) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some(rv.into());
        s.metadata.labels = Some(
            [(
                crate::api::CREDENTIALS_LABEL.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        s.data = Some(
            [(
                "client_secret".to_string(),
                k8s_openapi::ByteString(vec![b'x'; value_len]),
            )]
            .into(),
        );
        s
    }

    #[test]
    fn credentials_come_with_the_watch_even_before_its_first_list_is_complete() {
        let views = SecretViews::default();
        let watch = views.new_watch(Some("ns".into()));
        views.credentials_watched(watch, Event::Init);
        views.credentials_watched(
            watch,
            Event::InitApply(credentials_secret("creds", "3", 40)),
        );
        match views.credentials("ns", "creds") {
            Some(CredentialsView::Found(data)) => assert_eq!(data["client_secret"].len(), 40),
            _ => panic!("the listed credentials are known without a read"),
        }
        views.credentials_watched(watch, Event::InitDone);
        assert!(views.credentials("ns", "creds").is_some());
        // A change replaces them; the label's removal (a Delete to this watch) drops them.
        views.credentials_watched(watch, Event::Apply(credentials_secret("creds", "4", 7)));
        match views.credentials("ns", "creds") {
            Some(CredentialsView::Found(data)) => assert_eq!(data["client_secret"].len(), 7),
            _ => panic!("the changed credentials are known without a read"),
        }
        views.credentials_watched(watch, Event::Delete(credentials_secret("creds", "4", 7)));
        assert!(views.credentials("ns", "creds").is_none());
    }

    #[test]
    fn another_watch_completing_its_list_keeps_credentials_still_being_listed() {
        let views = SecretViews::default();
        let managed = views.new_watch(Some("ns".into()));
        let credentials = views.new_watch(Some("ns".into()));
        views.watched(managed, Event::<Secret>::Init, version_digest);
        views.credentials_watched(credentials, Event::Init);
        views.credentials_watched(
            credentials,
            Event::InitApply(credentials_secret("creds", "3", 40)),
        );
        views.watched(
            managed,
            Event::InitApply(meta("ns", "token", "5")),
            version_digest,
        );
        views.watched(managed, Event::<Secret>::InitDone, version_digest);
        assert!(
            views.credentials("ns", "creds").is_some(),
            "the first page of credentials is still known"
        );
        // Once the credentials list completes without it, it is gone (deleted meanwhile).
        views.credentials_watched(credentials, Event::Init);
        views.credentials_watched(credentials, Event::InitDone);
        assert!(views.credentials("ns", "creds").is_none());
    }

    #[test]
    fn kept_credentials_come_back_as_they_were_given() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        views.watched(
            watch,
            Event::Apply(meta("ns", "creds", "3")),
            version_digest,
        );
        let data: std::collections::BTreeMap<String, Vec<u8>> = [
            ("client_id".to_string(), b"id".to_vec()),
            ("client_secret".to_string(), vec![0, 255, b'"', b'\\']),
        ]
        .into();
        let pinned = CredentialsView::Pinned {
            data: data.clone(),
            allowed_hosts: vec!["a.example".into(), "b.example".into()],
        };
        views.remember_credentials("ns", "creds", Some("3".into()), &pinned);
        match views.credentials("ns", "creds") {
            Some(CredentialsView::Pinned {
                data: kept,
                allowed_hosts,
            }) => {
                assert_eq!(kept, data);
                assert_eq!(allowed_hosts, ["a.example", "b.example"]);
            }
            _ => panic!("pinned credentials stay pinned"),
        }
    }

    #[tokio::test]
    async fn a_reconcile_can_wait_for_the_first_list() {
        let views = std::sync::Arc::new(SecretViews::default());
        let watch = views.new_watch(Some("ns".into()));
        // Another namespace's watch is not waited for (none covers it: nothing to wait for).
        views
            .listed("other", std::time::Duration::from_secs(3600), || false)
            .await;
        let waiting = tokio::spawn({
            let views = views.clone();
            async move {
                views
                    .listed("ns", std::time::Duration::from_secs(3600), || false)
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the list has not completed");
        views.credentials_watched(watch, Event::Init);
        views.credentials_watched(watch, Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("released by the completed list")
            .expect("no panic");
        // A watch that never lists delays a reconcile by the bound only.
        let stuck = SecretViews::default();
        stuck.new_watch(None);
        stuck
            .listed("ns", std::time::Duration::from_millis(1), || false)
            .await;
    }

    fn target(rv: &str) -> TargetView {
        TargetView {
            resource_version: Some(rv.into()),
            secret_type: None,
            token: crate::target::ObservedTarget::from_annotations(&Default::default()),
        }
    }

    /// A long first list (pages of 50) releases each waiting reconcile as soon as its own
    /// credentials arrive, and gives up only when the list stalls.
    #[tokio::test]
    async fn a_wait_for_the_first_list_ends_when_the_credentials_arrive_or_it_stalls() {
        let views = std::sync::Arc::new(SecretViews::default());
        let watch = views.new_watch(None);
        views.credentials_watched(watch, Event::Init);
        let quiet = std::time::Duration::from_secs(3600);
        let waiting = tokio::spawn({
            let views = views.clone();
            async move {
                views
                    .listed("ns", quiet, || views.credentials("ns", "c").is_some())
                    .await
            }
        });
        tokio::task::yield_now().await;
        views.credentials_watched(watch, Event::InitApply(credentials_secret("a", "1", 8)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another Secret's page");
        views.credentials_watched(watch, Event::InitApply(credentials_secret("c", "2", 8)));
        tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("released by its credentials, before the list completed")
            .expect("no panic");
        // Nothing new for the quiet bound: give up (and read).
        let stalled = std::time::Duration::from_millis(5);
        views.listed("ns", stalled, || false).await;
    }

    /// One watch that never lists, while another keeps showing changes: the wait still ends.
    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_list_that_never_completes_ends_after_the_overall_bound() {
        let views = std::sync::Arc::new(SecretViews::default());
        let busy = views.new_watch(None);
        views.new_watch(None);
        let changes = tokio::spawn({
            let views = views.clone();
            async move {
                for rv in 0u64.. {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    views.watched(
                        busy,
                        Event::Apply(meta("ns", "t", &rv.to_string())),
                        version_digest,
                    );
                }
            }
        });
        let started = tokio::time::Instant::now();
        views
            .listed("ns", std::time::Duration::from_secs(10), || false)
            .await;
        changes.abort();
        assert_eq!(started.elapsed().as_secs(), LIST_WAIT_MAX.as_secs());
    }

    /// A reconcile right after a write waits for the watch instead of reading, and only for
    /// what this process wrote; a version it did not write is read at once.
    #[tokio::test]
    async fn a_written_secret_is_used_once_the_watch_shows_it() {
        let views = std::sync::Arc::new(SecretViews::default());
        let watch = views.new_watch(None);
        let hour = std::time::Duration::from_secs(3600);
        views.watched(watch, Event::Apply(meta("ns", "t", "1")), version_digest);
        views.remember_written_target(&test_key("uid", "ns", "pc"), "t", target("2"));
        assert!(
            views.target(&test_key("uid", "ns", "pc"), "t").is_none(),
            "the watch is behind"
        );
        let waiting = tokio::spawn({
            let views = views.clone();
            async move {
                views
                    .target_once_shown(&test_key("uid", "ns", "pc"), "t", hour)
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits for the watch");
        views.watched(
            watch,
            Event::Apply(meta("ns", "other", "3")),
            version_digest,
        );
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another Secret is not this one");
        views.watched(watch, Event::Apply(meta("ns", "t", "2")), version_digest);
        let shown = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("released by the watch")
            .expect("no panic");
        assert_eq!(shown.and_then(|t| t.resource_version), Some("2".into()));

        // Matched once: a later version is someone else's, read at once (no wait).
        views.watched(watch, Event::Apply(meta("ns", "t", "4")), version_digest);
        assert!(
            views
                .target_once_shown(&test_key("uid", "ns", "pc"), "t", hour)
                .await
                .is_none()
        );
        // A view that was read, not written, is never waited for.
        views.remember_target(&test_key("uid", "ns", "pc"), "t", Some(target("3")));
        assert!(
            views
                .target_once_shown(&test_key("uid", "ns", "pc"), "t", hour)
                .await
                .is_none()
        );

        // The watch shows another version next (someone wrote over it): read it.
        views.remember_written_state(&test_key("uid", "ns", "pc"), "s", state("5"));
        let waiting = tokio::spawn({
            let views = views.clone();
            async move {
                views
                    .state_once_shown(&test_key("uid", "ns", "pc"), "s", hour)
                    .await
            }
        });
        tokio::task::yield_now().await;
        views.watched(watch, Event::Apply(meta("ns", "s", "6")), version_digest);
        let shown = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
            .await
            .expect("released by the watch")
            .expect("no panic");
        assert!(shown.is_none(), "another version: read it");

        // A watch that never shows it delays the reconcile by the bound only.
        views.remember_written_state(&test_key("uid2", "ns", "pc"), "s2", state("7"));
        let bound = std::time::Duration::from_millis(5);
        assert!(
            views
                .state_once_shown(&test_key("uid2", "ns", "pc"), "s2", bound)
                .await
                .is_none()
        );
    }

    fn unowned_kind(views: &SecretViews, generation: i64) -> &'static str {
        match views.target_unowned(&test_key("uid", "ns", "pc"), "t", Some(generation)) {
            Some(Slot::Absent) => "absent",
            Some(Slot::Foreign) => "foreign",
            Some(Slot::Owned(_)) => "owned",
            None => "read it",
        }
    }

    /// A target found absent or someone else's is not read again by every reconcile that
    /// something unrelated triggers (a credentials change used by hundreds of resources).
    #[tokio::test(start_paused = true)]
    async fn an_absent_or_foreign_target_is_remembered_until_something_says_otherwise() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        assert_eq!(unowned_kind(&views, 1), "read it");
        views.remember_target_absent(&test_key("uid", "ns", "pc"), "t");
        assert_eq!(unowned_kind(&views, 1), "absent");
        // Absent whatever the generation: only the watch (or a failed create) says otherwise.
        assert_eq!(unowned_kind(&views, 2), "absent");
        assert!(
            views
                .target_unowned(&test_key("uid", "ns", "pc"), "other", Some(1))
                .is_none()
        );
        assert!(
            views
                .target_unowned(&test_key("uid2", "ns", "pc"), "t", Some(1))
                .is_none()
        );
        views.watched(watch, Event::Apply(meta("ns", "t", "3")), version_digest);
        assert_eq!(
            unowned_kind(&views, 2),
            "read it",
            "a managed Secret appeared there"
        );

        // Foreign at version 3, as the watch shows it: kept until the recheck is due.
        let recheck = std::time::Duration::from_secs(40);
        views.remember_target_foreign(&test_key("uid", "ns", "pc"), "t", Some(2), "3", recheck);
        assert_eq!(unowned_kind(&views, 2), "foreign");
        tokio::time::advance(recheck / 2).await;
        assert_eq!(unowned_kind(&views, 2), "foreign");
        // The resource's own change reads it again.
        assert_eq!(unowned_kind(&views, 3), "read it");
        // Another version in the watch: read it again.
        views.watched(watch, Event::Apply(meta("ns", "t", "4")), version_digest);
        assert_eq!(unowned_kind(&views, 2), "read it");
        views.remember_target_foreign(&test_key("uid", "ns", "pc"), "t", Some(2), "4", recheck);
        views.watched(watch, Event::Delete(meta("ns", "t", "4")), version_digest);
        assert_eq!(unowned_kind(&views, 2), "read it", "deleted");
        // Not in the watch at all (unlabelled): until the recheck.
        views.remember_target_foreign(&test_key("uid", "ns", "pc"), "t", Some(2), "9", recheck);
        assert_eq!(unowned_kind(&views, 2), "foreign");
        tokio::time::advance(recheck).await;
        assert_eq!(unowned_kind(&views, 2), "read it", "the recheck reads it");
        // Owned now (written or read): the owned view replaces what was remembered.
        views.remember_target_foreign(&test_key("uid", "ns", "pc"), "t", Some(2), "9", recheck);
        views.remember_target(&test_key("uid", "ns", "pc"), "t", Some(target("10")));
        assert!(
            views
                .target_unowned(&test_key("uid", "ns", "pc"), "t", Some(2))
                .is_none()
        );
        views.remember_target_absent(&test_key("uid", "ns", "pc"), "t");
        views.remember_target(&test_key("uid", "ns", "pc"), "t", None);
        assert!(
            views
                .target_unowned(&test_key("uid", "ns", "pc"), "t", Some(2))
                .is_none(),
            "forgotten"
        );
        views.remember_target_absent(&test_key("uid", "ns", "pc"), "t");
        views.forget(&test_key("uid", "ns", "pc"));
        assert!(
            views
                .target_unowned(&test_key("uid", "ns", "pc"), "t", Some(2))
                .is_none()
        );
    }

    #[test]
    fn large_labelled_secrets_are_not_kept_from_the_watch() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        let big = credentials_secret("big", "1", KEPT_CREDENTIALS_MAX_BYTES + 1);
        views.credentials_watched(watch, Event::Apply(big));
        assert!(views.credentials("ns", "big").is_none(), "read when used");
        assert!(views.lock_credentials().is_empty());
        // Shrunk below the bound: kept again.
        views.credentials_watched(watch, Event::Apply(credentials_secret("big", "2", 100)));
        assert!(views.credentials("ns", "big").is_some());
    }

    #[test]
    fn a_view_without_a_version_is_never_kept() {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        views.watched(watch, Event::Apply(meta("ns", "s", "1")), version_digest);
        let mut unversioned = state("1");
        unversioned.resource_version = None;
        views.remember_state(&test_key("uid", "ns", "pc"), "s", Some(unversioned));
        assert!(views.state(&test_key("uid", "ns", "pc"), "s").is_none());
    }
}

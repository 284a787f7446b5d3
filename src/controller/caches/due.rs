//! When each resource is due again. Every managed resource asks to be reconciled at its next
//! rotation, so there is one entry per resource for as long as it exists. kube's scheduler
//! keeps two copies of the resource's reference (name, namespace, uid, resourceVersion:
//! about 0.4 KB) per entry; this keeps a deadline and the cached object it was decided from
//! (a pointer into the reflector's cache: the reconcile that decided it saw that version).
//! A due resource goes to the controller like any other trigger, so a reconcile already
//! running for it is not doubled.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::api::ResourceKey;

/// The longest wait kept (reconciles ask for a day at most: `rotation::MAX_REQUEUE`).
const FAR: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Due<K> {
    inner: Mutex<Entries<K>>,
    /// Woken when an entry comes first (one consumer: a permit is kept if it is not waiting).
    changed: tokio::sync::Notify,
    /// Keys are hashes of UIDs (8 bytes instead of a 36-character string); random per process.
    hasher: RandomState,
}

struct Entries<K> {
    /// By deadline: the resource as last reconciled.
    queue: BTreeMap<(Instant, u64), Arc<K>>,
    /// By key: its deadline in `queue`.
    when: HashMap<u64, Instant>,
}

impl<K> Default for Due<K> {
    fn default() -> Self {
        Due {
            inner: Mutex::new(Entries {
                queue: BTreeMap::new(),
                when: HashMap::new(),
            }),
            changed: tokio::sync::Notify::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Due<K> {
    /// What the controller should do after a reconcile that asked to run again `after` this
    /// long (`None`: only when something changes). Kept here; kube's scheduler only for the
    /// one resource in billions whose UID hash another holds.
    pub fn next(&self, resource: &ResourceKey, obj: Arc<K>, after: Option<Duration>) -> Action {
        let key = self.key(resource);
        let mut entries = self.lock();
        if entries
            .queue_of(key)
            .is_some_and(|held| held.uid() != obj.uid())
        {
            return after.map_or_else(Action::await_change, Action::requeue);
        }
        if let Some(at) = entries.when.remove(&key) {
            entries.queue.remove(&(at, key));
        }
        let Some(after) = after else {
            return Action::await_change();
        };
        // A deadline the clock cannot hold (it cannot happen within a week) goes to kube's
        // scheduler rather than firing at once.
        let now = Instant::now();
        let Some(at) = now.checked_add(after.min(FAR)) else {
            return Action::requeue(after);
        };
        let first = entries
            .queue
            .first_key_value()
            .is_none_or(|((t, _), _)| at < *t);
        entries.queue.insert((at, key), obj);
        entries.when.insert(key, at);
        drop(entries);
        if first {
            self.changed.notify_one();
        }
        Action::await_change()
    }

    /// A deleted resource's entry goes with it.
    pub fn forget(&self, resource: &ResourceKey) {
        let key = self.key(resource);
        let mut entries = self.lock();
        if entries
            .queue_of(key)
            .is_some_and(|held| held.meta().uid.as_deref() == Some(resource.uid()))
            && let Some(at) = entries.when.remove(&key)
        {
            entries.queue.remove(&(at, key));
        }
    }

    /// The resources as they fall due (each once per deadline), for `Controller::reconcile_on`.
    pub fn fired(self: Arc<Self>) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: Send + Sync + 'static,
    {
        futures::stream::unfold((self, Vec::new()), |(due, mut ready)| async move {
            loop {
                if let Some(next) = ready.pop() {
                    return Some((next, (due, ready)));
                }
                match due.take_due(Instant::now(), &mut ready) {
                    _ if !ready.is_empty() => {}
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = due.changed.notified() => {}
                        }
                    }
                    None => due.changed.notified().await,
                }
            }
        })
    }

    /// Moves every entry due by `now` into `ready`; the next deadline after them.
    fn take_due(&self, now: Instant, ready: &mut Vec<ObjectRef<K>>) -> Option<Instant> {
        let mut entries = self.lock();
        while let Some(entry) = entries.queue.first_entry() {
            let (at, key) = *entry.key();
            if at > now {
                return Some(at);
            }
            ready.push(ObjectRef::from(&*entry.remove()));
            entries.when.remove(&key);
        }
        None
    }

    fn key(&self, resource: &ResourceKey) -> u64 {
        self.hasher.hash_one(resource.uid())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

impl<K> Entries<K> {
    fn queue_of(&self, key: u64) -> Option<&Arc<K>> {
        let at = self.when.get(&key)?;
        self.queue.get(&(*at, key))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn key(name: &str, uid: &str) -> ResourceKey {
        crate::api::key::test_key(uid, "ns", name)
    }

    fn object(name: &str, uid: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn resources_fall_due_in_order_and_only_at_their_latest_deadline() {
        let due = Arc::new(Due::<ConfigMap>::default());
        let mut fired = Box::pin(due.clone().fired());
        let started = Instant::now();
        for (name, uid, after) in [("b", "2", 20), ("a", "1", 10), ("c", "3", 30)] {
            let action = due.next(
                &key(name, uid),
                object(name, uid),
                Some(Duration::from_secs(after)),
            );
            assert_eq!(action, Action::await_change());
        }
        // The latest decision replaces the earlier one: "c" moves from 30 s to 5 s, "b" is
        // no longer due at all.
        due.next(
            &key("c", "3"),
            object("c", "3"),
            Some(Duration::from_secs(5)),
        );
        due.next(&key("b", "2"), object("b", "2"), None);
        assert_eq!(due.len(), 2);
        for (name, at) in [("c", 5), ("a", 10)] {
            let next = fired.next().await.expect("the stream does not end");
            assert_eq!(next.name, name);
            assert_eq!(started.elapsed().as_secs(), at);
        }
        assert_eq!(due.len(), 0);
        // Nothing else falls due, however long it waits.
        let more = tokio::time::timeout(Duration::from_secs(3600), fired.next()).await;
        assert!(more.is_err(), "fired {more:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_that_comes_first_wakes_a_waiting_stream() {
        let due = Arc::new(Due::<ConfigMap>::default());
        let mut fired = Box::pin(due.clone().fired());
        due.next(
            &key("late", "1"),
            object("late", "1"),
            Some(Duration::from_secs(3600)),
        );
        let started = Instant::now();
        let waiting = tokio::spawn(async move { fired.next().await.map(|r| r.name) });
        tokio::time::sleep(Duration::from_secs(1)).await;
        due.next(
            &key("soon", "2"),
            object("soon", "2"),
            Some(Duration::from_secs(1)),
        );
        assert_eq!(waiting.await.unwrap().as_deref(), Some("soon"));
        assert_eq!(started.elapsed().as_secs(), 2);
    }

    #[test]
    fn a_deleted_resource_leaves_nothing_behind() {
        let due = Due::<ConfigMap>::default();
        due.next(
            &key("a", "1"),
            object("a", "1"),
            Some(Duration::from_secs(10)),
        );
        // Another object of the same name (deleted and created again) does not remove it.
        due.forget(&key("a", "2"));
        assert_eq!(due.len(), 1);
        due.forget(&key("a", "1"));
        assert_eq!(due.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_beyond_the_clock_is_kept_at_the_far_end() {
        let due = Arc::new(Due::<ConfigMap>::default());
        let mut fired = Box::pin(due.clone().fired());
        let started = Instant::now();
        let action = due.next(&key("a", "1"), object("a", "1"), Some(Duration::MAX));
        assert_eq!(action, Action::await_change());
        assert_eq!(due.len(), 1);
        fired.next().await.expect("the stream does not end");
        assert_eq!(started.elapsed(), FAR);
    }
}

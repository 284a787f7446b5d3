//! Token requests that outlive the reconcile that started them. A reconcile waits only a
//! moment for its request ([`super::execute::DETACH_AFTER`]); a request still waiting for its
//! namespace's turn or for a slow endpoint goes on in its own task, and the reconcile's slot is
//! free for other resources. When the task ends, its result is parked here and the resource is
//! reconciled again to report it; until then a reconcile of that resource does nothing (the
//! task holds its token and state, and no second request starts).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::ResourceKey;

/// A parked result is reported within a second by the reconcile its end triggers; one still
/// here after this belongs to a resource deleted while the watch was not looking (no Delete
/// event came to forget it), and goes: it would otherwise hold a resource and a token forever.
const PARKED_AT_MOST: Duration = Duration::from_secs(600);

/// What a resource has in flight.
enum Entry<T> {
    /// Its task runs and its reconcile has returned.
    Running,
    /// Its task ended (then): the result waits for a reconcile to report it (at shutdown,
    /// with its resource's key).
    Finished(Box<(ResourceKey, T)>, Instant),
    /// Deleted while its task ran: the result is dropped when it comes.
    Forgotten,
}

/// What a reconcile finds for its resource.
pub enum Found<T> {
    Nothing,
    /// A task runs: its end brings another reconcile.
    Running,
    Finished(Box<T>),
}

pub struct InFlight<T> {
    entries: Mutex<HashMap<Box<str>, Entry<T>>>,
    /// How many detached tasks run (for the drain at shutdown).
    running: tokio::sync::watch::Sender<usize>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            entries: Mutex::default(),
            running: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl<T> InFlight<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, by: isize) {
        self.running
            .send_modify(|n| *n = n.saturating_add_signed(by));
    }

    /// The reconcile of `key` returns while its task runs.
    pub fn detach(&self, key: &ResourceKey) {
        let before = self.lock().insert(key.uid().into(), Entry::Running);
        if !matches!(before, Some(Entry::Running | Entry::Forgotten)) {
            self.count(1);
        }
    }

    /// The task ended right after its reconcile detached, and the reconcile took the result
    /// itself after all.
    pub fn reclaim(&self, key: &ResourceKey) {
        if matches!(self.lock().remove(key.uid()), Some(Entry::Running)) {
            self.count(-1);
        }
    }

    /// The task of `key` ended and no reconcile waits for it: park its result. `true`: a
    /// reconcile should come for it (the resource was not deleted meanwhile).
    pub fn finish(&self, key: &ResourceKey, result: T) -> bool {
        self.finish_at(key, result, Instant::now())
    }

    fn finish_at(&self, key: &ResourceKey, result: T, now: Instant) -> bool {
        let mut entries = self.lock();
        sweep(&mut entries, now);
        let before = entries.remove(key.uid());
        let wanted = !matches!(before, Some(Entry::Forgotten));
        if wanted {
            let parked = Box::new((key.clone(), result));
            entries.insert(key.uid().into(), Entry::Finished(parked, now));
        }
        drop(entries);
        if matches!(before, Some(Entry::Running | Entry::Forgotten)) {
            self.count(-1);
        }
        wanted
    }

    /// What a reconcile of `key` finds; a finished result is taken.
    pub fn take(&self, key: &ResourceKey) -> Found<T> {
        let mut entries = self.lock();
        sweep(&mut entries, Instant::now());
        match entries.remove(key.uid()) {
            None => Found::Nothing,
            Some(Entry::Finished(parked, _)) => Found::Finished(Box::new(parked.1)),
            Some(running @ (Entry::Running | Entry::Forgotten)) => {
                entries.insert(key.uid().into(), running);
                Found::Running
            }
        }
    }

    /// `key` was deleted: a parked result goes, a running task's result will.
    pub fn forget(&self, key: &ResourceKey) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key.uid()) {
            match entry {
                Entry::Running => *entry = Entry::Forgotten,
                Entry::Finished(..) => {
                    entries.remove(key.uid());
                }
                Entry::Forgotten => {}
            }
        }
    }

    /// Every finished result with its resource's key, taken (at shutdown, when no reconcile
    /// will come for them).
    pub fn take_finished(&self) -> Vec<Box<(ResourceKey, T)>> {
        let mut entries = self.lock();
        let finished: Vec<Box<str>> = entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Finished(..)))
            .map(|(uid, _)| uid.clone())
            .collect();
        finished
            .into_iter()
            .filter_map(|uid| match entries.remove(&uid) {
                Some(Entry::Finished(result, _)) => Some(result),
                _ => None,
            })
            .collect()
    }

    /// Resolves once no detached task runs.
    pub async fn drained(&self) {
        let mut running = self.running.subscribe();
        // The sender lives as long as `self`: this cannot fail while it is borrowed.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Drops the results parked for longer than [`PARKED_AT_MOST`] (every reconcile passes by
/// `take`, so a quiet operator sweeps too).
fn sweep<T>(entries: &mut HashMap<Box<str>, Entry<T>>, now: Instant) {
    entries.retain(|_, e| {
        !matches!(e, Entry::Finished(_, at) if now.saturating_duration_since(*at) > PARKED_AT_MOST)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str) -> ResourceKey {
        crate::api::key::test_key(uid, "ns", uid)
    }

    fn running(table: &InFlight<u32>) -> usize {
        *table.running.borrow()
    }

    #[test]
    fn a_detached_result_is_parked_once_and_taken_once() {
        let table = InFlight::<u32>::default();
        assert!(matches!(table.take(&key("a")), Found::Nothing));
        table.detach(&key("a"));
        assert_eq!(running(&table), 1);
        assert!(
            matches!(table.take(&key("a")), Found::Running),
            "no second request"
        );
        assert!(matches!(table.take(&key("a")), Found::Running));
        assert!(table.finish(&key("a"), 7));
        assert_eq!(running(&table), 0);
        assert!(matches!(table.take(&key("a")), Found::Finished(r) if *r == 7));
        assert!(matches!(table.take(&key("a")), Found::Nothing));
        assert_eq!(table.len(), 0);
        // At shutdown, whatever finished is taken at once; what runs stays.
        table.detach(&key("b"));
        table.detach(&key("c"));
        table.finish(&key("b"), 8);
        let taken: Vec<u32> = table.take_finished().into_iter().map(|r| r.1).collect();
        assert_eq!(taken, vec![8]);
        assert!(matches!(table.take(&key("c")), Found::Running));
    }

    #[test]
    fn a_result_the_reconcile_took_itself_leaves_nothing() {
        let table = InFlight::<u32>::default();
        table.detach(&key("a"));
        table.reclaim(&key("a"));
        assert_eq!((running(&table), table.len()), (0, 0));
        // A reconcile cancelled before it detached: the result is still reported.
        assert!(table.finish(&key("b"), 1));
        assert_eq!(running(&table), 0);
        assert!(matches!(table.take(&key("b")), Found::Finished(_)));
    }

    #[test]
    fn a_resource_deleted_in_flight_keeps_nothing() {
        let table = InFlight::<u32>::default();
        table.detach(&key("gone"));
        table.forget(&key("gone"));
        assert!(matches!(table.take(&key("gone")), Found::Running));
        assert!(
            !table.finish(&key("gone"), 1),
            "no reconcile for a deleted resource"
        );
        assert_eq!((running(&table), table.len()), (0, 0));
        // Parked, then deleted.
        table.detach(&key("late"));
        table.finish(&key("late"), 2);
        table.forget(&key("late"));
        assert_eq!(table.len(), 0);
        table.forget(&key("never-seen"));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_result_no_reconcile_came_for_goes_after_a_while() {
        let table = InFlight::<u32>::default();
        let start = Instant::now();
        table.detach(&key("deleted-while-the-watch-was-down"));
        table.finish_at(&key("deleted-while-the-watch-was-down"), 1, start);
        table.detach(&key("recent"));
        table.finish_at(&key("recent"), 2, start + PARKED_AT_MOST);
        assert_eq!(table.len(), 2, "both within the bound");
        table.detach(&key("later"));
        table.finish_at(
            &key("later"),
            3,
            start + PARKED_AT_MOST + Duration::from_secs(1),
        );
        assert!(matches!(
            table.take(&key("deleted-while-the-watch-was-down")),
            Found::Nothing
        ));
        assert!(matches!(table.take(&key("recent")), Found::Finished(r) if *r == 2));
        assert_eq!(running(&table), 0);
    }

    #[tokio::test]
    async fn the_drain_waits_for_every_detached_task() {
        let table = std::sync::Arc::new(InFlight::<u32>::default());
        table.drained().await;
        table.detach(&key("a"));
        table.detach(&key("b"));
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.drained().await }
        });
        table.finish(&key("a"), 1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b still runs");
        table.forget(&key("b"));
        table.finish(&key("b"), 2);
        waiting.await.unwrap();
    }
}

//! What each resource has outstanding in memory (a held refresh token or token, its request
//! budget, its backoff, a status write not yet seen), by UID: an entry only while something
//! is outstanding, swept when nothing is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::api::{ProviderCredential, ResourceKey};
use crate::rotation::{ChainWrite, HeldToken, RequestBudget};

#[derive(Default)]
struct HeldByUid {
    entries: HashMap<String, Held>,
    last_sweep: Option<Instant>,
}

/// Every live resource is reconciled at least this often (the longest requeue), so an entry
/// untouched for longer belongs to a resource deleted while the watch was not looking.
const STALE_AFTER: Duration = Duration::from_secs(2 * 24 * 3600);
/// How long a reconcile waits for the watch to bring this operator's own status write.
const WAIT_FOR_OWN_WRITE: Duration = Duration::from_secs(10);
/// Entries whose request budget ran out are dropped at the next sweep rather than at their
/// resource's next reconcile (hours later): after a start-up every resource has one.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A state settled but not stored, with the resource it is for.
pub type HeldState = (ResourceKey, Arc<ProviderCredential>, ChainWrite);

/// What a resource has outstanding in memory.
#[derive(Default)]
pub struct Held {
    /// State settled from an answer but not yet stored: it may carry a refresh token that
    /// replaced the stored one, so it is never dropped and never superseded by the older value.
    /// With its resource (and its key), so that shutdown can store it.
    /// Boxed, like `token`: rarely set, and an entry lives in a table slot sized for the
    /// largest field, for every resource with a request budget running.
    pub state: Option<Box<HeldState>>,
    /// A token obtained but not yet written to the target Secret.
    pub token: Option<Box<HeldToken>>,
    /// Reconciles in a row that ended blocked or in error: drives their backoff.
    pub attempts: u32,
    pub budget: RequestBudget,
    /// The generation of an unreadable object already reported (reported once, not on every
    /// event its own status write causes).
    pub unreadable_generation: Option<Option<i64>>,
    /// The resourceVersion this operator's last status write replaced, and when, until a
    /// reconcile sees a newer one: a cached copy still at that version predates the write.
    /// Boxed: set only between a write and its watch event.
    pub status_written_over: Option<Box<(Box<str>, Instant)>>,
    pub touched: Option<Instant>,
}

impl Held {
    /// A held state is never swept: it may carry the only valid refresh token. Anything else
    /// goes once nothing is outstanding, or when untouched for longer than any live resource.
    fn kept_by_sweep(&mut self, now: Instant) -> bool {
        self.state.is_some()
            || (!self.is_empty()
                && self
                    .touched
                    .is_some_and(|t| now.duration_since(t) < STALE_AFTER))
    }

    /// Whether to wait for the watch rather than work from the copy at `resource_version`.
    /// Never while a refresh token or token waits to be stored (storing it must not wait
    /// for a watch), and not past [`WAIT_FOR_OWN_WRITE`]: a watch that lags that long costs
    /// a refused status write, as before, rather than held-up rotations.
    pub fn predates_own_status_write(
        &mut self,
        resource_version: Option<&str>,
        now: Instant,
    ) -> bool {
        let holding = self.state.is_some() || self.token.is_some();
        match (&self.status_written_over, resource_version) {
            (Some(w), Some(rv))
                if *w.0 == *rv && !holding && now.duration_since(w.1) < WAIT_FOR_OWN_WRITE =>
            {
                true
            }
            (None, _) => false,
            _ => {
                self.status_written_over = None;
                false
            }
        }
    }

    pub fn is_empty(&mut self) -> bool {
        self.state.is_none()
            && self.token.is_none()
            && self.attempts == 0
            && self.unreadable_generation.is_none()
            && self.status_written_over.is_none()
            && self.budget.is_idle(Timestamp::now())
    }
}

/// Every resource's [`Held`], by UID.
#[derive(Default)]
pub struct HeldTable(Mutex<HeldByUid>);

impl HeldTable {
    pub fn with<T>(&self, key: &ResourceKey, f: impl FnOnce(&mut Held) -> T) -> T {
        let uid = key.uid();
        let now = Instant::now();
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held
            .last_sweep
            .is_none_or(|t| now.duration_since(t) > SWEEP_EVERY)
        {
            held.last_sweep = Some(now);
            held.entries.retain(|_, h| h.kept_by_sweep(now));
            // The table keeps the size of the largest burst otherwise.
            held.entries.shrink_to_fit();
        }
        // Every reconcile passes here: a resource with nothing held costs no allocation.
        let Some(entry) = held.entries.get_mut(uid) else {
            let mut fresh = Held::default();
            let out = f(&mut fresh);
            if !fresh.is_empty() {
                fresh.touched = Some(now);
                held.entries.insert(uid.to_string(), fresh);
            }
            return out;
        };
        entry.touched = Some(now);
        let out = f(entry);
        if entry.is_empty() {
            held.entries.remove(uid);
        }
        out
    }

    /// Every state held but not stored, with its resource: what shutdown must store.
    pub fn states(&self) -> Vec<HeldState> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.entries
            .values()
            .filter_map(|h| h.state.as_deref().cloned())
            .collect()
    }

    /// A deleted resource's entry.
    pub fn remove(&self, key: &ResourceKey) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .remove(key.uid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_drops_entries_with_nothing_outstanding() {
        let now = Instant::now();
        let touched = |h: Held| Held {
            touched: Some(now),
            ..h
        };
        // A request budget that has run its minute holds nothing.
        assert!(!touched(Held::default()).kept_by_sweep(now));
        let mut spending = touched(Held::default());
        spending
            .budget
            .spend(Timestamp::now(), 6)
            .expect("a fresh budget allows a request");
        assert!(spending.kept_by_sweep(now), "its minute is still running");
        let mut backing_off = touched(Held {
            attempts: 3,
            ..Held::default()
        });
        assert!(
            backing_off.kept_by_sweep(now),
            "its backoff counts attempts"
        );
        assert!(
            !backing_off.kept_by_sweep(now + STALE_AFTER),
            "untouched for longer than any live resource"
        );
    }

    #[test]
    fn a_copy_is_stale_until_the_watch_brings_the_own_status_write() {
        let now = Instant::now();
        let written = |h: &mut Held| h.status_written_over = Some(Box::new(("1".into(), now)));
        let mut h = Held::default();
        assert!(
            !h.predates_own_status_write(Some("1"), now),
            "nothing written yet"
        );
        written(&mut h);
        assert!(!h.is_empty(), "kept until a newer copy is seen");
        assert!(h.predates_own_status_write(Some("1"), now));
        assert!(
            h.predates_own_status_write(Some("1"), now),
            "asked again: still stale"
        );
        assert!(
            !h.predates_own_status_write(Some("2"), now),
            "the write arrived"
        );
        assert!(
            !h.predates_own_status_write(Some("1"), now),
            "forgotten once a newer copy was seen"
        );
        assert!(h.is_empty());

        written(&mut h);
        assert!(!h.predates_own_status_write(None, now));
        assert!(h.is_empty(), "a copy without a version ends the wait too");

        written(&mut h);
        assert!(
            !h.predates_own_status_write(Some("1"), now + WAIT_FOR_OWN_WRITE),
            "a watch lagging that long no longer holds the resource up"
        );
        assert!(h.is_empty());

        written(&mut h);
        let issued = Timestamp::now();
        h.token = Some(Box::new(HeldToken {
            token: crate::provider::response::IssuedToken {
                access_token: "t".to_string().into(),
                token_type: "Bearer".into(),
                issued_at: issued,
                expires_at: issued,
                lifetime_seconds: 0,
                lifetime_source: crate::provider::LifetimeSource::ExpiresIn,
                lifetime_capped_from: None,
                refresh: crate::provider::response::RefreshOutcome::None,
            },
            inputs: String::new(),
            refresh_handled: None,
        }));
        assert!(
            !h.predates_own_status_write(Some("1"), now),
            "a token waiting to be stored is never held up"
        );
    }
}

//! The resources of a namespace whose token request would wait for its turn (its request slots
//! all taken, or its pace or a 429 pause holding the host): they wait here as a name each,
//! instead of as a task holding their resource and plan until the turn comes. At start-up
//! thousands of requests are due at once, and a task each kept their memory as the operator's
//! high-water mark. A request that ends wakes the first waiting resource of its namespace,
//! which is reconciled and plans afresh (what changed while it waited counts); a resource held
//! by its pace is reconciled when the pace allows, and every waiting one at least every
//! [`RECHECK_WAITING`], so a wake that found nothing to do never stalls the line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The longest a waiting resource goes without a reconcile of its own.
pub const RECHECK_WAITING: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Line {
    order: VecDeque<Box<str>>,
    members: HashSet<Box<str>>,
}

/// Waiting resources by namespace (names only; one entry per resource at most).
#[derive(Default)]
pub struct Turns(Mutex<HashMap<Box<str>, Line>>);

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Line>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name`'s request would wait: it waits in line (once).
    pub fn wait(&self, namespace: &str, name: &str) {
        let mut lines = self.lock();
        let line = lines.entry(namespace.into()).or_default();
        if line.members.insert(name.into()) {
            line.order.push_back(name.into());
        }
    }

    /// `name`'s request goes: it waits no more.
    pub fn going(&self, namespace: &str, name: &str) {
        let mut lines = self.lock();
        if let Some(line) = lines.get_mut(namespace)
            && line.members.remove(name)
        {
            line.order.retain(|n| &**n != name);
            if line.members.is_empty() {
                lines.remove(namespace);
            }
        }
    }

    /// A request of `namespace` ended: the first waiting resource, to be reconciled now.
    pub fn next(&self, namespace: &str) -> Option<Box<str>> {
        let mut lines = self.lock();
        let line = lines.get_mut(namespace)?;
        let name = line.order.pop_front()?;
        line.members.remove(&name);
        if line.members.is_empty() {
            lines.remove(namespace);
        }
        Some(name)
    }

    #[cfg(test)]
    fn waiting(&self, namespace: &str) -> Vec<String> {
        self.lock()
            .get(namespace)
            .map(|l| l.order.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_wait_once_each_in_order_and_leave_when_they_go() {
        let turns = Turns::default();
        turns.wait("ns", "a");
        turns.wait("ns", "b");
        turns.wait("ns", "a");
        turns.wait("ns", "c");
        assert_eq!(turns.waiting("ns"), ["a", "b", "c"]);
        // b's own recheck found a free slot.
        turns.going("ns", "b");
        assert_eq!(turns.next("ns").as_deref(), Some("a"));
        assert_eq!(turns.next("ns").as_deref(), Some("c"));
        assert_eq!(turns.next("ns"), None);
        assert!(turns.lock().is_empty(), "an empty line is dropped");
    }

    #[test]
    fn namespaces_wait_apart() {
        let turns = Turns::default();
        turns.wait("noisy", "x");
        turns.wait("noisy", "z");
        assert_eq!(turns.next("quiet"), None);
        turns.wait("quiet", "y");
        assert_eq!(turns.next("quiet").as_deref(), Some("y"));
        assert_eq!(turns.waiting("noisy"), ["x", "z"]);
    }
}

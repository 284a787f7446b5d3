//! Opted-in credentials Secrets kept from their watch, packed, within a byte budget per
//! namespace: anyone may label a Secret as credentials, so a namespace's Secrets beyond its
//! budget are not kept (a reconcile that uses one reads it), and no namespace can fill the
//! operator's memory with them.

use std::collections::BTreeMap;

use super::budget::NamespaceBudget;
use super::packed::{put, take};
use crate::by_namespace::ByNamespace;
use crate::rotation::CredentialsView;

/// A usable credentials Secret's contents, packed into one allocation (each key and value as
/// a 4-byte length and its bytes): one per credentials Secret for as long as it exists, where
/// a map would take a 500-byte node even for two keys, and boxed keys and values an
/// allocation each (five for two keys).
pub struct KeptCredentials {
    packed: Box<[u8]>,
    /// The owner's `tokenrotator.dev/allowed-token-hosts`, if set.
    allowed_hosts: Option<Box<[Box<str>]>>,
}

/// `None` for a key or value too long for its length prefix (never one of a Secret).
fn pack(data: &BTreeMap<String, Vec<u8>>) -> Option<Box<[u8]>> {
    let size = data.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut packed = Vec::with_capacity(size);
    for (key, value) in data {
        put(&mut packed, Some(key.as_bytes()))?;
        put(&mut packed, Some(value))?;
    }
    Some(packed.into_boxed_slice())
}

/// The keys and values of `packed`, in order.
fn unpack(mut packed: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let key = take(&mut packed)??;
        let value = take(&mut packed)??;
        Some((key, value))
    })
}

impl KeptCredentials {
    /// Only what a reconcile may use is kept.
    pub fn of(view: &CredentialsView) -> Option<Self> {
        match view {
            CredentialsView::Found(data) => Some(Self {
                packed: pack(data)?,
                allowed_hosts: None,
            }),
            CredentialsView::Pinned {
                data,
                allowed_hosts,
            } => Some(Self {
                packed: pack(data)?,
                allowed_hosts: Some(allowed_hosts.iter().map(|h| h.as_str().into()).collect()),
            }),
            CredentialsView::NotFound | CredentialsView::NotLabelled => None,
        }
    }

    pub fn view(&self) -> CredentialsView {
        // The keys were packed from strings: they are UTF-8.
        let data = unpack(&self.packed)
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
            .collect();
        match &self.allowed_hosts {
            None => CredentialsView::Found(data),
            Some(hosts) => CredentialsView::Pinned {
                data,
                allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            },
        }
    }

    /// What it takes in memory, roughly: its bytes plus a pointer pair per entry (the charge
    /// of an entry when each key and value was boxed: it errs high).
    fn bytes(&self) -> usize {
        const OVERHEAD: usize = 32;
        let data: usize = unpack(&self.packed)
            .map(|(k, v)| k.len() + v.len() + OVERHEAD)
            .sum();
        let hosts: usize = self
            .allowed_hosts
            .iter()
            .flatten()
            .map(|h| h.len() + OVERHEAD / 2)
            .sum();
        data + hosts + OVERHEAD
    }
}

/// By namespace and name: the version kept (`views::version_id`) and the contents.
pub struct KeptByName {
    entries: ByNamespace<(u64, KeptCredentials)>,
    budget: NamespaceBudget,
}

impl Default for KeptByName {
    fn default() -> Self {
        Self::new(super::budget::DEFAULT_BYTES_PER_NAMESPACE)
    }
}

impl KeptByName {
    pub fn new(bytes_per_namespace: usize) -> Self {
        Self {
            entries: ByNamespace::default(),
            budget: NamespaceBudget::new(bytes_per_namespace),
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&(u64, KeptCredentials)> {
        self.entries.get(namespace, name)
    }

    /// Keeps `kept` if its namespace's budget has room for it; otherwise keeps nothing of that
    /// Secret (any older version is dropped too).
    pub fn insert(
        &mut self,
        namespace: &str,
        name: &str,
        version: u64,
        kept: KeptCredentials,
    ) -> bool {
        // The table's own share: the name, the slot and this charge's entry.
        let overhead = namespace.len() + name.len() + 200;
        let fits = self
            .budget
            .charge(namespace, &(namespace, name), overhead + kept.bytes());
        if fits {
            self.entries.insert(namespace, name, (version, kept));
        } else {
            self.entries.remove(namespace, name);
        }
        fits
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        self.budget.release(&(namespace, name));
        self.entries.remove(namespace, name);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let budget = &mut self.budget;
        self.entries.retain(|namespace, name, _| {
            let kept = keep(namespace, name);
            if !kept {
                budget.release(&(namespace, name));
            }
            kept
        });
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(value_len: usize) -> CredentialsView {
        CredentialsView::Found([("client-secret".to_string(), vec![b'x'; value_len])].into())
    }

    #[test]
    fn a_namespace_keeps_credentials_up_to_its_budget_and_no_further() {
        let mut kept = KeptByName::new(10 * 1024);
        let mut accepted = 0;
        for i in 0..100 {
            let secret = KeptCredentials::of(&view(1000)).unwrap();
            if kept.insert("hostile", &format!("s{i}"), 1, secret) {
                accepted += 1;
            }
        }
        assert!((5..10).contains(&accepted), "{accepted} kept");
        // Another namespace keeps its own.
        let victim = KeptCredentials::of(&view(1000)).unwrap();
        assert!(kept.insert("victim", "s", 1, victim));
        assert!(kept.get("victim", "s").is_some());
        // Removing some makes room in that namespace again.
        for i in 0..100 {
            kept.remove("hostile", &format!("s{i}"));
        }
        kept.retain(|ns, _| ns != "victim");
        assert!(kept.is_empty());
        let again = KeptCredentials::of(&view(9000)).unwrap();
        assert!(kept.insert("hostile", "big", 2, again));
    }

    #[test]
    fn packed_credentials_come_back_whole() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("".to_string(), vec![]),
            ("client_id".to_string(), b"id".to_vec()),
            ("client_secret".to_string(), vec![0, 255, 4, 0, 0, 0]),
            ("\u{e9}t\u{e9}".to_string(), vec![b'x'; 16 * 1024]),
        ]
        .into();
        let kept = KeptCredentials::of(&CredentialsView::Found(data.clone())).unwrap();
        assert!(matches!(kept.view(), CredentialsView::Found(d) if d == data));
        let hosts = vec!["a.example".to_string()];
        let pinned = CredentialsView::Pinned {
            data: data.clone(),
            allowed_hosts: hosts.clone(),
        };
        let kept = KeptCredentials::of(&pinned).unwrap();
        assert!(matches!(
            kept.view(),
            CredentialsView::Pinned { data: d, allowed_hosts: h } if d == data && h == hosts
        ));
        let empty = KeptCredentials::of(&CredentialsView::Found(BTreeMap::new())).unwrap();
        assert!(matches!(empty.view(), CredentialsView::Found(d) if d.is_empty()));
    }

    #[test]
    fn each_secret_has_its_own_charge() {
        // Charged by (namespace, name), not by a string joining them: two Secrets whose
        // joined names read the same are charged apart, each to its own namespace.
        let mut kept = KeptByName::new(3000);
        let secret = || KeptCredentials::of(&view(1000)).unwrap();
        assert!(kept.insert("a/b", "c", 1, secret()));
        assert!(kept.insert("a", "b/c", 1, secret()));
        assert!(kept.insert("a/b", "x", 1, secret()));
        assert!(
            !kept.insert("a/b", "y", 1, secret()),
            "namespace a/b holds two Secrets' worth already"
        );
    }

    #[test]
    fn a_new_version_that_does_not_fit_drops_the_old_one() {
        let mut kept = KeptByName::new(4096);
        let small = KeptCredentials::of(&view(100)).unwrap();
        assert!(kept.insert("ns", "s", 1, small));
        let big = KeptCredentials::of(&view(8000)).unwrap();
        assert!(!kept.insert("ns", "s", 2, big));
        assert!(kept.get("ns", "s").is_none(), "never the stale version");
    }
}

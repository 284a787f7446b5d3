//! A byte budget per namespace for what the operator keeps of tenants' objects. Every field
//! is bounded by the CRDs, but the number of objects is not: without a budget, one namespace
//! could fill the operator's memory (and, the first list after a restart being as large,
//! keep it crash-looping) and take every other namespace's rotations with it. Over its budget
//! a namespace's further objects are kept as a stub that says so, on that namespace only.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};

use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::watcher::Event;

use crate::api::{DELIVERY_FINALIZER, Guarded};
use kube::api::ObjectMeta;

/// `--cache-mib-per-namespace`'s default: room for ~12,000 ordinary resources in one
/// namespace (2.7 KiB each as charged), and a fifth of the chart's memory limit.
pub const DEFAULT_CACHE_MIB_PER_NAMESPACE: u32 = 32;

/// The default budget in bytes.
pub const DEFAULT_BYTES_PER_NAMESPACE: usize = (DEFAULT_CACHE_MIB_PER_NAMESPACE as usize) << 20;

/// Bytes charged per namespace, and to which namespace each object's charge went. Objects and
/// namespaces are held as 8-byte hashes, keyed at random per process (as in `due.rs`), not
/// as copies of their names: the table has an entry per cached object, and copies of a UID
/// and a namespace cost ~250 bytes an object at 10,000 objects. Two keys sharing a hash (about
/// one chance in 10^11 at 10,000 objects; a tenant cannot aim for it without the process's
/// key) would share one charge.
#[derive(Debug)]
pub struct NamespaceBudget {
    limit: usize,
    hasher: RandomState,
    /// By namespace: the bytes charged to it.
    used: HashMap<u64, usize>,
    /// By object: its namespace and the bytes it was charged.
    charged: HashMap<u64, (u64, usize)>,
}

impl NamespaceBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            used: HashMap::new(),
            charged: HashMap::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The key this budget holds `key` (or a namespace) as.
    fn key(&self, key: &(impl Hash + ?Sized)) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Charges `bytes` for the object `key` to `namespace`, in place of what it was charged
    /// before. False, with nothing charged for it any more, when that would take the namespace
    /// over its budget.
    pub fn charge(&mut self, namespace: &str, key: &(impl Hash + ?Sized), bytes: usize) -> bool {
        self.charge_key(namespace, self.key(key), bytes)
    }

    /// As [`NamespaceBudget::charge`], for a key from [`NamespaceBudget::key`].
    fn charge_key(&mut self, namespace: &str, key: u64, bytes: usize) -> bool {
        self.release_key(key);
        let namespace = self.key(namespace);
        let used = self.used.get(&namespace).copied().unwrap_or(0);
        let fits = used
            .checked_add(bytes)
            .is_some_and(|total| total <= self.limit);
        if fits {
            self.used.insert(namespace, used + bytes);
            self.charged.insert(key, (namespace, bytes));
        }
        fits
    }

    /// Charges `bytes` for `key` in place of its earlier charge, over the budget or not.
    fn charge_anyway(&mut self, namespace: &str, key: u64, bytes: usize) {
        self.release_key(key);
        let namespace = self.key(namespace);
        let used = self.used.entry(namespace).or_insert(0);
        *used = used.saturating_add(bytes);
        self.charged.insert(key, (namespace, bytes));
    }

    /// Gives back what `key` was charged, if anything.
    pub fn release(&mut self, key: &(impl Hash + ?Sized)) {
        self.release_key(self.key(key));
    }

    fn release_key(&mut self, key: u64) {
        let Some((namespace, bytes)) = self.charged.remove(&key) else {
            return;
        };
        if let Some(used) = self.used.get_mut(&namespace) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                self.used.remove(&namespace);
            }
        }
    }

    pub fn used(&self, namespace: &str) -> usize {
        self.used.get(&self.key(namespace)).copied().unwrap_or(0)
    }

    pub fn clear(&mut self) {
        self.used.clear();
        self.charged.clear();
    }
}

/// What a value takes in memory, estimated from its JSON without keeping it: the bytes, plus
/// for each string (a `"` opens and closes one) the rest of its 24-byte `String`, and for each
/// list or map (`[`, `{`) its share of a `Vec` or a map node. Counting JSON bytes alone would
/// let lists of empty strings weigh a seventh of what they hold. An escaped quote counts as a
/// string too: the estimate errs high.
#[derive(Default)]
struct Weighed(usize);

const PER_QUOTE: usize = 8;
const PER_CONTAINER: usize = 48;
/// The cache's own entry per resource: the shared pointer, its key's strings, the table slot.
const PER_OBJECT: usize = 512;

impl std::io::Write for Weighed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let extra: usize = buf
            .iter()
            .map(|b| match b {
                b'"' => PER_QUOTE,
                b'{' | b'[' => PER_CONTAINER,
                _ => 0,
            })
            .sum();
        self.0 = self.0.saturating_add(buf.len()).saturating_add(extra);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a cached resource weighs in memory (an estimate that errs high; `tests/crd_bounds.rs`
/// measures it against the heap for the largest objects and for ones full of tiny entries).
pub fn cached_bytes(guard: &Guarded) -> usize {
    let mut weighed = Weighed::default();
    let written = match &guard.0 {
        Ok(pc) => serde_json::to_writer(&mut weighed, pc),
        Err(invalid) => serde_json::to_writer(&mut weighed, &invalid.metadata),
    };
    // Serialising to a counter cannot fail; were it to, the object counts as the largest.
    written.map_or(usize::MAX, |()| weighed.0.saturating_add(PER_OBJECT))
}

/// Whether an unreadable resource is a stub over its namespace's budget (its error starts
/// so; a parse error starts with serde's own words, whatever value it quotes).
pub fn is_stub(invalid: &InvalidObject) -> bool {
    invalid.error.starts_with(STUB_PREFIX)
}

const STUB_PREFIX: &str = "not served: over its namespace's cache budget";

/// The watch of ProviderCredentials, through a budget per namespace: a resource that would
/// take its namespace over the budget is cached as a stub (its metadata and why), reported as
/// such on its status and looked at again at its next spec change. The decision holds for a
/// generation: the operator's own status writes never turn a served resource into a stub or
/// back (that would flap, and a stub could end up showing a served resource's status).
pub struct ResourcesBudget {
    budget: NamespaceBudget,
    /// By UID (its hash, as the budget holds it): the generation decided on, and whether it
    /// is served.
    decided: HashMap<u64, (Option<i64>, bool)>,
    /// During a relist: the UIDs listed so far (decisions of the others go at its end).
    relisted: Option<HashSet<u64>>,
}

/// The budget of a resource without a namespace (not a valid namespace name).
const NO_NAMESPACE: &str = "(no namespace)";

impl ResourcesBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            budget: NamespaceBudget::new(limit),
            decided: HashMap::new(),
            relisted: None,
        }
    }

    pub fn apply(&mut self, event: &mut Event<Guarded>) {
        match event {
            // A relist rebuilds the cache, and the charges with it; the decisions stay.
            Event::Init => {
                self.budget.clear();
                self.relisted = Some(Default::default());
            }
            Event::InitApply(guard) => {
                let uid = self.uid_of(guard);
                if let Some(listed) = &mut self.relisted {
                    listed.insert(uid);
                }
                self.admit(guard, uid);
            }
            Event::Apply(guard) => {
                let uid = self.uid_of(guard);
                self.admit(guard, uid);
            }
            Event::Delete(guard) => {
                let uid = self.uid_of(guard);
                self.budget.release_key(uid);
                self.decided.remove(&uid);
            }
            Event::InitDone => {
                if let Some(listed) = self.relisted.take() {
                    self.decided.retain(|uid, _| listed.contains(uid));
                }
            }
        }
    }

    /// The key of a resource's UID (objects from the API server always have one; the
    /// namespace and name, as far as it has them, are a key of last resort).
    fn uid_of(&self, guard: &Guarded) -> u64 {
        let meta = guard.meta();
        match &meta.uid {
            Some(uid) => self.budget.key(uid.as_str()),
            None => self
                .budget
                .key(&(meta.namespace.as_deref(), meta.name.as_deref())),
        }
    }

    fn admit(&mut self, guard: &mut Guarded, uid: u64) {
        // No API server sends a resource without a namespace; one would share this budget,
        // a name no namespace can have.
        let namespace = guard
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| NO_NAMESPACE.to_string());
        let generation = guard.meta().generation;
        let bytes = cached_bytes(guard);
        let served = match self.decided.get(&uid) {
            Some((decided, served)) if *decided == generation => {
                if *served {
                    self.budget.charge_anyway(&namespace, uid, bytes);
                }
                *served
            }
            _ => self.budget.charge_key(&namespace, uid, bytes),
        };
        self.decided.insert(uid, (generation, served));
        if served {
            return;
        }
        // Stubs are not charged: they are small and bounded, and charging them would leave
        // the served resources no room. Their number is the cluster admin's to bound (a
        // ResourceQuota).
        self.budget.release_key(uid);
        let limit_mib = self.budget.limit() / (1024 * 1024);
        let error = format!(
            "{STUB_PREFIX} (namespace {namespace} already has {} KiB of ProviderCredentials in \
             the operator's cache, and this one takes {} KiB; the budget is {limit_mib} MiB, \
             --cache-mib-per-namespace or Helm value cacheMiBPerNamespace); it is looked at \
             again at its next spec change, or when the operator restarts",
            self.budget.used(&namespace) / 1024,
            bytes.div_ceil(1024),
        );
        let metadata = stub_metadata(guard.meta());
        guard.0 = Err(InvalidObject { error, metadata });
    }
}

/// What a stub keeps: the identity, the version, deletion, the read annotations (each bounded,
/// see `limits::shed_oversized`) and of the finalizers only the operator's own: a tenant may
/// add thousands (up to the apiserver's object size), and a stub's whole point is to be small.
/// Code that writes the finalizer list back reads it fresh for a stub
/// (`delivery::finalize_stub`).
fn stub_metadata(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        deletion_timestamp: meta.deletion_timestamp.clone(),
        annotations: meta.annotations.clone(),
        finalizers: meta.finalizers.as_ref().map(|f| {
            f.iter()
                .filter(|f| *f == DELIVERY_FINALIZER)
                .cloned()
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProviderCredential, ProviderCredentialSpec};

    fn resource(namespace: &str, name: &str, bulk: usize) -> Guarded {
        let spec: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
            "tokenEndpoint": {"url": "https://127.0.0.1/token", "caBundle": "c".repeat(bulk)},
            "credentials": {"secretRef": {"name": "creds"}},
            "target": {"secretName": "out"},
        }))
        .unwrap();
        let mut pc = ProviderCredential::new(name, spec);
        let mut finalizers: Vec<String> = (0..1000).map(|i| format!("example.com/f{i}")).collect();
        finalizers.push(DELIVERY_FINALIZER.into());
        pc.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{namespace}-{name}")),
            finalizers: Some(finalizers),
            ..ObjectMeta::default()
        };
        kube::core::DeserializeGuard(Ok(pc))
    }

    fn served(guard: &Guarded) -> bool {
        guard.0.is_ok()
    }

    #[test]
    fn charges_replace_and_release_per_namespace() {
        let mut budget = NamespaceBudget::new(100);
        assert!(budget.charge("a", "x", 60));
        assert!(
            budget.charge("a", "x", 90),
            "a new version replaces the old charge"
        );
        assert_eq!(budget.used("a"), 90);
        assert!(!budget.charge("a", "y", 20), "over the budget");
        assert!(
            budget.charge("b", "z", 100),
            "another namespace has its own"
        );
        budget.release("x");
        assert_eq!(budget.used("a"), 0);
        assert!(budget.charge("a", "y", 20));
        assert!(!budget.charge("a", "huge", usize::MAX), "no overflow");
    }

    #[test]
    fn a_namespace_over_its_budget_is_stubbed_and_its_neighbour_is_not() {
        let one = cached_bytes(&resource("hostile", "pc-0", 4000));
        let mut budget = ResourcesBudget::new(one * 3);
        let mut kept = Vec::new();
        for i in 0..10 {
            let mut event = Event::Apply(resource("hostile", &format!("pc-{i}"), 4000));
            budget.apply(&mut event);
            let Event::Apply(guard) = event else {
                unreachable!()
            };
            kept.push(guard);
        }
        let served_count = kept.iter().filter(|g| served(g)).count();
        assert_eq!(served_count, 3, "as many as fit");
        let stub = kept.iter().find(|g| !served(g)).unwrap();
        let Err(invalid) = &stub.0 else {
            unreachable!()
        };
        assert!(invalid.error.contains("--cache-mib-per-namespace"));
        assert!(cached_bytes(stub) < 2048, "a stub keeps no spec");
        assert_eq!(
            stub.meta().finalizers.as_deref(),
            Some(&[DELIVERY_FINALIZER.to_string()][..]),
            "of a thousand finalizers, only the operator's own"
        );
        // The victim's namespace is untouched by the hostile one's flood.
        let mut victim = Event::Apply(resource("victim", "pc", 4000));
        budget.apply(&mut victim);
        let Event::Apply(victim) = victim else {
            unreachable!()
        };
        assert!(served(&victim));
    }

    fn applied(budget: &mut ResourcesBudget, guard: Guarded) -> Guarded {
        let mut event = Event::Apply(guard);
        budget.apply(&mut event);
        let Event::Apply(guard) = event else {
            unreachable!()
        };
        guard
    }

    fn at_generation(mut guard: Guarded, generation: i64) -> Guarded {
        if let Ok(pc) = &mut guard.0 {
            pc.metadata.generation = Some(generation);
        }
        guard
    }

    #[test]
    fn a_decision_holds_for_a_generation_and_a_spec_change_or_deletion_revisits_it() {
        let one = cached_bytes(&resource("ns", "pc-0", 4000));
        let mut budget = ResourcesBudget::new(one + one / 2);
        let first = applied(&mut budget, at_generation(resource("ns", "pc-0", 4000), 1));
        assert!(served(&first));
        let second = applied(&mut budget, at_generation(resource("ns", "pc-1", 4000), 1));
        assert!(!served(&second));
        // The operator's own status write grows the served one past the budget: still served
        // (no flapping between served and stub on its own writes).
        let grown = applied(&mut budget, at_generation(resource("ns", "pc-0", 6000), 1));
        assert!(served(&grown));
        budget.apply(&mut Event::Delete(grown));
        // Room now, but the stub's decision holds until its spec changes.
        let again = applied(&mut budget, at_generation(resource("ns", "pc-1", 4000), 1));
        assert!(!served(&again), "a status write alone does not revisit it");
        let changed = applied(&mut budget, at_generation(resource("ns", "pc-1", 4000), 2));
        assert!(
            served(&changed),
            "its next spec change, with room, is served"
        );
        // A relist keeps the decisions and charges from nothing.
        budget.apply(&mut Event::Init);
        for (name, generation, expected) in [("pc-1", 2, true), ("pc-3", 1, false)] {
            let mut listed =
                Event::InitApply(at_generation(resource("ns", name, 4000), generation));
            budget.apply(&mut listed);
            let Event::InitApply(listed) = listed else {
                unreachable!()
            };
            assert_eq!(served(&listed), expected, "{name}");
        }
        budget.apply(&mut Event::InitDone);
        assert_eq!(
            budget.decided.len(),
            2,
            "decisions of what was not listed go"
        );
    }
}

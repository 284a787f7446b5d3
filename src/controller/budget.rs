//! A byte budget per namespace for what the operator keeps of tenants' objects. Every field
//! is bounded by the CRDs, but the number of objects is not: without a budget, one namespace
//! could fill the operator's memory (and, the first list after a restart being as large,
//! keep it crash-looping) and take every other namespace's rotations with it. Over its budget
//! a namespace's further objects are kept as a stub that says so, on that namespace only.

use std::collections::HashMap;

use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::watcher::Event;

use crate::api::{DELIVERY_FINALIZER, Guarded};
use kube::api::ObjectMeta;

/// `--cache-mib-per-namespace`'s default: room for 10,000 ordinary resources in one namespace
/// (about 1–2 KiB each as cached), and a fifth of the chart's memory limit.
pub const DEFAULT_MIB_PER_NAMESPACE: u32 = 32;
pub const DEFAULT_BYTES_PER_NAMESPACE: usize = (DEFAULT_MIB_PER_NAMESPACE as usize) << 20;

/// In the message of a resource not served for its namespace's budget.
pub const OVER_BUDGET: &str = "over its namespace's cache budget";

/// Bytes charged per namespace, and to which namespace each object's charge went.
#[derive(Debug)]
pub struct NamespaceBudget {
    limit: usize,
    used: HashMap<Box<str>, usize>,
    charged: HashMap<Box<str>, (Box<str>, usize)>,
}

impl NamespaceBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: HashMap::new(),
            charged: HashMap::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges `bytes` for the object `key` to `namespace`, in place of what it was charged
    /// before. False, with nothing charged for it any more, when that would take the namespace
    /// over its budget.
    pub fn charge(&mut self, namespace: &str, key: &str, bytes: usize) -> bool {
        self.release(key);
        let used = self.used.get(namespace).copied().unwrap_or(0);
        let fits = used
            .checked_add(bytes)
            .is_some_and(|total| total <= self.limit);
        if fits {
            self.used.insert(namespace.into(), used + bytes);
            self.charged.insert(key.into(), (namespace.into(), bytes));
        }
        fits
    }

    /// Gives back what `key` was charged, if anything.
    pub fn release(&mut self, key: &str) {
        let Some((namespace, bytes)) = self.charged.remove(key) else {
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
        self.used.get(namespace).copied().unwrap_or(0)
    }

    pub fn clear(&mut self) {
        self.used.clear();
        self.charged.clear();
    }
}

/// Counts the bytes a value serialises to, without keeping them.
#[derive(Default)]
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a cached resource weighs: its JSON as kept (after the unread fields were dropped),
/// close to what its strings, lists and maps take in memory.
pub fn cached_bytes(guard: &Guarded) -> usize {
    let mut counted = Counted::default();
    let written = match &guard.0 {
        Ok(pc) => serde_json::to_writer(&mut counted, pc),
        Err(invalid) => serde_json::to_writer(&mut counted, &invalid.metadata),
    };
    // Serialising to a counter cannot fail; were it to, the object counts as the largest.
    written.map_or(usize::MAX, |()| counted.0)
}

/// The watch of ProviderCredentials, through a budget per namespace: a resource that would
/// take its namespace over the budget is cached as a stub (its metadata and why), reported as
/// such on its status and served again after its next change that fits.
pub struct ResourcesBudget(NamespaceBudget);

impl ResourcesBudget {
    pub fn new(limit: usize) -> Self {
        Self(NamespaceBudget::new(limit))
    }

    pub fn apply(&mut self, event: &mut Event<Guarded>) {
        match event {
            // A relist rebuilds the cache, and the charges with it.
            Event::Init => self.0.clear(),
            Event::InitApply(guard) | Event::Apply(guard) => self.admit(guard),
            Event::Delete(guard) => self.0.release(&uid_of(guard)),
            Event::InitDone => {}
        }
    }

    fn admit(&mut self, guard: &mut Guarded) {
        let namespace = guard.meta().namespace.clone().unwrap_or_default();
        let bytes = cached_bytes(guard);
        if self.0.charge(&namespace, &uid_of(guard), bytes) {
            return;
        }
        let limit_mib = self.0.limit() / (1024 * 1024);
        let error = format!(
            "not served: {OVER_BUDGET} (namespace {namespace} already has {} KiB of \
             ProviderCredentials in the operator's cache, and this one takes {} KiB; the budget \
             is {limit_mib} MiB, --cache-mib-per-namespace or Helm value cacheMiBPerNamespace); \
             it is served again after its next change once others shrink or are deleted",
            self.0.used(&namespace) / 1024,
            bytes.div_ceil(1024),
        );
        let metadata = stub_metadata(guard.meta());
        guard.0 = Err(InvalidObject { error, metadata });
        // The stub is charged too while there is room, so that stubs count against their own
        // namespace. Their number is not bounded here (each is its metadata only, at most
        // ~2 KiB): a ResourceQuota on the count is the cluster admin's.
        let stub = cached_bytes(guard);
        self.0.charge(&namespace, &uid_of(guard), stub);
    }
}

/// What a stub keeps: the identity, the version, deletion, the read annotations (each bounded,
/// see `limits::shed_oversized`) and of the finalizers only the operator's own: a tenant may
/// add thousands (up to the apiserver's object size), and a stub's whole point is to be small.
/// Code that writes the finalizer list back reads it fresh for a stub (`FRESH_FINALIZERS`).
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

fn uid_of(guard: &Guarded) -> String {
    let meta = guard.meta();
    // Objects from the API server always have a UID; the name is a key of last resort.
    meta.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    })
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

    #[test]
    fn a_deletion_or_a_relist_makes_room_again() {
        let one = cached_bytes(&resource("ns", "pc-0", 4000));
        let mut budget = ResourcesBudget::new(one + one / 2);
        let mut first = Event::Apply(resource("ns", "pc-0", 4000));
        budget.apply(&mut first);
        let mut second = Event::Apply(resource("ns", "pc-1", 4000));
        budget.apply(&mut second);
        let Event::Apply(stubbed) = &second else {
            unreachable!()
        };
        assert!(!served(stubbed));
        let Event::Apply(first) = first else {
            unreachable!()
        };
        budget.apply(&mut Event::Delete(first));
        let mut again = Event::Apply(resource("ns", "pc-1", 4000));
        budget.apply(&mut again);
        let Event::Apply(again) = again else {
            unreachable!()
        };
        assert!(
            served(&again),
            "served after its next change once there is room"
        );
        // A relist charges from nothing: what is listed first is served.
        budget.apply(&mut Event::Init);
        let mut listed = Event::InitApply(resource("ns", "pc-2", 4000));
        budget.apply(&mut listed);
        let Event::InitApply(listed) = listed else {
            unreachable!()
        };
        assert!(served(&listed));
    }
}

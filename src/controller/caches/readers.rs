//! Which resources read what, kept up to date from the watch of ProviderCredentials, so that an
//! event on a Secret, a TokenDeliveryGrant or a namespace finds the resources it concerns by a
//! lookup instead of a scan of every resource:
//! - credentials Secrets by (namespace, name) → the resources naming them;
//! - namespaces named in spec.delivery.namespaces → the resources naming them;
//! - the resources choosing namespaces by label (spec.delivery.namespaceSelector), the only
//!   ones a namespace's labels must be matched against.
//!
//! Only readable resources are indexed (an unreadable one reads nothing). The index follows
//! the cache: an event is applied before the cache takes it (the cached version is what the
//! index holds for it), and each completed list rebuilds it from the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::core::SelectorExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use crate::api::{Guarded, ProviderCredential};
use crate::rotation::delivery;

/// A resource: namespace and name.
type Named = (Box<str>, Box<str>);
/// Credentials Secret name → names of the resources (in its namespace) naming it.
type BySecret = HashMap<Box<str>, Names>;

/// The names of the resources reading one Secret. Most Secrets are read by one resource,
/// and a set of one takes a whole B-tree node (~200 bytes): one name is kept as it is.
enum Names {
    One(Box<str>),
    Many(BTreeSet<Box<str>>),
}

impl Names {
    fn insert(&mut self, name: Box<str>) {
        match self {
            Names::One(only) if *only == name => {}
            Names::One(only) => {
                let first = std::mem::take(only);
                *self = Names::Many([first, name].into());
            }
            Names::Many(names) => {
                names.insert(name);
            }
        }
    }

    /// Whether any name is left.
    fn remove(&mut self, name: &str) -> bool {
        match self {
            Names::One(only) => **only != *name,
            Names::Many(names) => {
                names.remove(name);
                !names.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Names::One(only) => (Some(&**only), None),
            Names::Many(names) => (None, Some(names.iter().map(|n| &**n))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[derive(Default)]
struct Index {
    /// Namespace → credentials Secret name → names of the resources naming it.
    credentials: HashMap<Box<str>, BySecret>,
    /// Destination namespace → the resources naming it in spec.delivery.namespaces.
    destinations: HashMap<Box<str>, BTreeSet<Named>>,
    /// The resources with spec.delivery.namespaceSelector.
    selecting: BTreeSet<Named>,
}

#[derive(Default)]
pub struct Readers(Mutex<Index>);

/// A resource without a namespace (no API server sends one) is not indexed: nothing could
/// reconcile it by name.
fn named(pc: &ProviderCredential) -> Option<Named> {
    Some((pc.namespace()?.into(), pc.name_any().into()))
}

fn object_ref((namespace, name): &Named) -> ObjectRef<Guarded> {
    ObjectRef::new(name).within(namespace)
}

impl Index {
    fn add(&mut self, pc: &ProviderCredential) {
        let Some((namespace, name)) = named(pc) else {
            return;
        };
        if let Some(secret) = pc.spec.credentials.secret_name() {
            let secrets = self.credentials.entry(namespace.clone()).or_default();
            match secrets.get_mut(secret) {
                Some(names) => names.insert(name.clone()),
                None => {
                    secrets.insert(secret.into(), Names::One(name.clone()));
                }
            }
        }
        let Some(d) = pc.spec.delivery.as_deref() else {
            return;
        };
        for destination in &d.namespaces {
            self.destinations
                .entry(destination.0.as_str().into())
                .or_default()
                .insert((namespace.clone(), name.clone()));
        }
        if d.namespace_selector.is_some() {
            self.selecting.insert((namespace, name));
        }
    }

    fn remove(&mut self, pc: &ProviderCredential) {
        let Some(key) = named(pc) else {
            return;
        };
        if let Some(secrets) = self.credentials.get_mut(&key.0)
            && let Some(secret) = pc.spec.credentials.secret_name()
        {
            if let Some(names) = secrets.get_mut(secret)
                && !names.remove(&key.1)
            {
                secrets.remove(secret);
            }
            if secrets.is_empty() {
                self.credentials.remove(&key.0);
            }
        }
        let Some(d) = pc.spec.delivery.as_deref() else {
            return;
        };
        for destination in &d.namespaces {
            if let Some(resources) = self.destinations.get_mut(destination.0.as_str()) {
                resources.remove(&key);
                if resources.is_empty() {
                    self.destinations.remove(destination.0.as_str());
                }
            }
        }
        self.selecting.remove(&key);
    }
}

impl Readers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows one event of the watch of resources, before the cache (`cached`) takes it.
    pub fn watched(&self, event: &Event<Guarded>, cached: &Store<Guarded>) {
        let (Event::Apply(guard) | Event::InitApply(guard) | Event::Delete(guard)) = event else {
            return;
        };
        let mut index = self.lock();
        let old = cached.get(&ObjectRef::from(guard));
        if let Some(pc) = old.as_ref().and_then(|g| g.0.as_ref().ok()) {
            index.remove(pc);
        }
        match (event, &guard.0) {
            (Event::Delete(_), Ok(pc)) => index.remove(pc),
            (_, Ok(pc)) => index.add(pc),
            (_, Err(_)) => {}
        }
    }

    /// After a completed list, from the cache: resources deleted meanwhile go.
    pub fn rebuild(&self, cached: &Store<Guarded>) {
        let mut index = Index::default();
        for guard in cached.state() {
            if let Ok(pc) = &guard.0 {
                index.add(pc);
            }
        }
        *self.lock() = index;
    }

    /// The resources naming this credentials Secret.
    pub fn of_credentials(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Guarded>> {
        let index = self.lock();
        let Some(names) = index.credentials.get(namespace).and_then(|s| s.get(name)) else {
            return Vec::new();
        };
        names
            .iter()
            .map(|n| ObjectRef::new(n).within(namespace))
            .collect()
    }

    /// The resources whose spec.delivery can reach `namespace` (with these labels): those
    /// naming it, and those whose selector matches it. Costs a lookup, plus a match per
    /// resource that selects by label.
    pub fn reaching(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cached: &Store<Guarded>,
    ) -> Vec<ObjectRef<Guarded>> {
        let index = self.lock();
        let named = index.destinations.get(namespace).into_iter().flatten();
        let selecting = index.selecting.iter().filter(|r| {
            cached
                .get(&object_ref(r))
                .is_some_and(|g| g.0.as_ref().is_ok_and(|pc| reaches(pc, namespace, labels)))
        });
        let mut refs: Vec<ObjectRef<Guarded>> = named.chain(selecting).map(object_ref).collect();
        refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        refs.dedup();
        refs
    }
}

/// Whether `pc`'s spec.delivery can reach `namespace`: named, or chosen by its selector (never
/// its own namespace).
pub fn reaches(
    pc: &ProviderCredential,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if pc.namespace().as_deref() == Some(namespace) {
        return false;
    }
    pc.spec.delivery.as_deref().is_some_and(|d| {
        d.namespaces.iter().any(|n| n.0 == namespace)
            || d.namespace_selector
                .as_ref()
                .and_then(|s| delivery::selector(s).ok())
                .is_some_and(|s| s.matches(labels))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::runtime::reflector;

    /// A readable resource (the mappers' tests use it too).
    pub(in crate::controller) fn pc(
        ns: &str,
        name: &str,
        creds: &str,
        delivery: Option<serde_json::Value>,
    ) -> Guarded {
        let mut spec = serde_json::json!({
            "preset": "rently",
            "tokenEndpoint": {"url": "https://auth.example/token"},
            "credentials": {"secretRef": {"name": creds}},
            "target": {"secretName": format!("{name}-token")},
        });
        if let Some(d) = delivery {
            spec["delivery"] = d;
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}")},
            "spec": spec,
        }))
        .unwrap()
    }

    /// Applies an event to the index and then to the cache, as the watch does.
    fn apply(
        readers: &Readers,
        (store, writer): &mut (Store<Guarded>, reflector::store::Writer<Guarded>),
        event: Event<Guarded>,
    ) {
        readers.watched(&event, store);
        writer.apply_watcher_event(&event);
        if let Event::InitDone = event {
            readers.rebuild(store);
        }
    }

    fn names(refs: Vec<ObjectRef<Guarded>>) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
            .collect()
    }

    fn cache() -> (Store<Guarded>, reflector::store::Writer<Guarded>) {
        let (store, writer) = reflector::store();
        (store, writer)
    }

    #[test]
    fn a_credentials_secret_finds_exactly_the_resources_naming_it() {
        let readers = Readers::default();
        let mut cache = cache();
        apply(&readers, &mut cache, Event::Init);
        for i in 0..300 {
            let event = Event::InitApply(pc("team", &format!("pc-{i}"), "shared", None));
            apply(&readers, &mut cache, event);
        }
        apply(
            &readers,
            &mut cache,
            Event::InitApply(pc("team", "x", "own", None)),
        );
        apply(
            &readers,
            &mut cache,
            Event::InitApply(pc("other", "y", "shared", None)),
        );
        apply(&readers, &mut cache, Event::InitDone);
        assert_eq!(readers.of_credentials("team", "shared").len(), 300);
        assert_eq!(names(readers.of_credentials("team", "own")), ["team/x"]);
        assert_eq!(
            names(readers.of_credentials("other", "shared")),
            ["other/y"]
        );
        assert!(readers.of_credentials("team", "unknown").is_empty());
        // A resource moved to another Secret leaves the first; a deleted one leaves both.
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("team", "pc-0", "own", None)),
        );
        assert_eq!(readers.of_credentials("team", "shared").len(), 299);
        assert_eq!(
            names(readers.of_credentials("team", "own")),
            ["team/pc-0", "team/x"]
        );
        apply(
            &readers,
            &mut cache,
            Event::Delete(pc("team", "x", "own", None)),
        );
        assert_eq!(names(readers.of_credentials("team", "own")), ["team/pc-0"]);
        // A relist that no longer shows a resource (deleted while the watch was down).
        apply(&readers, &mut cache, Event::Init);
        apply(
            &readers,
            &mut cache,
            Event::InitApply(pc("team", "pc-0", "own", None)),
        );
        apply(&readers, &mut cache, Event::InitDone);
        assert!(readers.of_credentials("team", "shared").is_empty());
        assert!(readers.of_credentials("other", "shared").is_empty());
        assert_eq!(names(readers.of_credentials("team", "own")), ["team/pc-0"]);
    }

    #[test]
    fn a_namespace_is_reached_by_name_or_by_selector_never_by_anyone_else() {
        let readers = Readers::default();
        let mut cache = cache();
        let by_name = serde_json::json!({"namespaces": ["dest"]});
        let by_label = serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}}});
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("src", "named", "c", Some(by_name))),
        );
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("src", "sel", "c", Some(by_label))),
        );
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("src", "none", "c", None)),
        );
        let team_a: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let store = &cache.0;
        assert_eq!(
            names(readers.reaching("dest", &BTreeMap::new(), store)),
            ["src/named"]
        );
        assert_eq!(
            names(readers.reaching("dest", &team_a, store)),
            ["src/named", "src/sel"]
        );
        assert_eq!(
            names(readers.reaching("elsewhere", &team_a, store)),
            ["src/sel"]
        );
        assert!(
            readers
                .reaching("elsewhere", &BTreeMap::new(), store)
                .is_empty()
        );
        // Its own namespace is never reached, whatever its labels.
        assert!(readers.reaching("src", &team_a, store).is_empty());
        // Delivery removed: it reaches nothing any more.
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("src", "sel", "c", None)),
        );
        apply(
            &readers,
            &mut cache,
            Event::Apply(pc("src", "named", "c", None)),
        );
        assert!(readers.reaching("dest", &team_a, &cache.0).is_empty());
    }
}

//! The copies spec.delivery wrote, as the watch of managed Secrets (already running) shows
//! them: by the UID of the resource they came from, which token and settings they hold, and
//! their identity and version. A reconcile learns from here which copies are current and which
//! to remove, reading none of them. About 150 bytes per copy.
//!
//! A copy is a managed Secret without owner references that carries both the source's UID
//! label and the `<namespace>/<name>` annotation; a Secret that merely carries the label (a
//! target, or one labelled by hand) is never taken for one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

use crate::api::{DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL, ResourceKey};
use crate::rotation::delivery::stamp;
use crate::target::{FINGERPRINT_ANNOTATION, SETTINGS_ANNOTATION};

/// Namespace and name.
type Place = (Box<str>, Box<str>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySeen {
    pub stamp: u64,
    pub uid: Box<str>,
    pub resource_version: Box<str>,
}

/// The resource a copy claims to come from: `<uid>/<namespace>/<name>`, all three as the copy
/// says. Keyed by all three, so a Secret that claims a resource's UID together with another
/// namespace or name (forged in a namespace someone controls) is filed under a source of its
/// own and cannot hide that resource's real copies.
type SourceKey = Box<str>;

fn source_key(uid: &str, namespace: &str, name: &str) -> SourceKey {
    // A label value (the UID) and a namespace hold no '/', so the key splits back uniquely.
    format!("{uid}/{namespace}/{name}").into()
}

/// The UID, namespace and name of a source key.
fn named_by(key: &str) -> Option<(&str, &str, &str)> {
    let (uid, rest) = key.split_once('/')?;
    let (namespace, name) = rest.split_once('/')?;
    Some((uid, namespace, name))
}

#[derive(Default)]
struct Table {
    by_source: HashMap<SourceKey, BTreeMap<Place, CopySeen>>,
    /// Which source each place holds a copy of (a label can change), by namespace: a
    /// namespace's or grant's event looks up the copies in that namespace only.
    source_of: crate::by_namespace::ByNamespace<SourceKey>,
}

/// What makes a Secret a copy: the source's UID and `<namespace>/<name>`, no owner.
pub fn copy_of(secret: &PartialObjectMeta<Secret>) -> Option<(&str, &str, &str)> {
    if !secret.owner_references().is_empty() {
        return None;
    }
    let uid = secret.labels().get(DELIVERED_FROM_UID_LABEL)?;
    let (namespace, name) = secret
        .annotations()
        .get(DELIVERED_FROM_ANNOTATION)?
        .split_once('/')?;
    Some((uid, namespace, name))
}

/// The stamp of what a Secret holds: its token fingerprint and target settings annotations.
pub fn stamp_of(annotations: &BTreeMap<String, String>) -> u64 {
    let annotation = |key| annotations.get(key).map(String::as_str).unwrap_or_default();
    stamp(
        annotation(FINGERPRINT_ANNOTATION),
        annotation(SETTINGS_ANNOTATION),
    )
}

impl Table {
    fn remove(&mut self, place: &Place) -> Option<CopySeen> {
        let key = self.source_of.get(&place.0, &place.1)?.clone();
        self.source_of.remove(&place.0, &place.1);
        let copies = self.by_source.get_mut(&key)?;
        let seen = copies.remove(place);
        if copies.is_empty() {
            self.by_source.remove(&key);
        }
        seen
    }

    /// `stamp`: what this process wrote, when it wrote this very version (an admission
    /// webhook in the destination may have changed the annotations it reads back: the copy
    /// is still the one decided on, and is not written again for that).
    fn apply(&mut self, secret: &PartialObjectMeta<Secret>, written: Option<u64>) {
        // A Secret an API server shows has both; one without could be neither found nor
        // removed, so it is not filed.
        let (Some(namespace), Some(copy_uid)) = (secret.namespace(), secret.meta().uid.as_deref())
        else {
            return;
        };
        let place: Place = (namespace.into(), secret.name_any().into());
        let rv = secret
            .meta()
            .resource_version
            .as_deref()
            .unwrap_or_default();
        let previous = self.remove(&place);
        let Some((uid, namespace, name)) = copy_of(secret) else {
            return;
        };
        let stamp = written
            .or_else(|| {
                previous
                    .filter(|p| &*p.resource_version == rv)
                    .map(|p| p.stamp)
            })
            .unwrap_or_else(|| stamp_of(secret.annotations()));
        let seen = CopySeen {
            stamp,
            uid: copy_uid.into(),
            resource_version: rv.into(),
        };
        let key = source_key(uid, namespace, name);
        self.source_of.insert(&place.0, &place.1, key.clone());
        self.by_source.entry(key).or_default().insert(place, seen);
    }
}

#[derive(Default)]
struct State {
    current: Table,
    /// Filled during a (re)list, then swapped in.
    relisting: Option<Table>,
    listed: bool,
}

#[derive(Default)]
pub struct Copies(Mutex<State>);

impl Copies {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows one event of the watch of managed Secrets.
    pub fn watched(&self, event: &Event<PartialObjectMeta<Secret>>) {
        let mut state = self.lock();
        match event {
            Event::Apply(s) => state.current.apply(s, None),
            Event::Delete(s) => {
                // Without a namespace it was never filed (`apply`).
                if let Some(namespace) = s.namespace() {
                    state
                        .current
                        .remove(&(namespace.into(), s.name_any().into()));
                }
            }
            Event::Init => state.relisting = Some(Table::default()),
            Event::InitApply(s) => state.relisting.get_or_insert_default().apply(s, None),
            Event::InitDone => {
                state.current = state.relisting.take().unwrap_or_default();
                state.listed = true;
            }
        }
    }

    /// Listed completely at least once: what it does not show does not exist.
    pub fn listed(&self) -> bool {
        self.lock().listed
    }

    /// The copies of one resource (by UID, and naming it), by namespace and name.
    pub fn of(&self, key: &ResourceKey) -> Vec<((String, String), CopySeen)> {
        let state = self.lock();
        let Some(copies) =
            state
                .current
                .by_source
                .get(&source_key(key.uid(), key.namespace(), key.name()))
        else {
            return Vec::new();
        };
        copies
            .iter()
            .map(|((ns, n), seen)| ((ns.to_string(), n.to_string()), seen.clone()))
            .collect()
    }

    /// The resources (UID, namespace, name) that the copies in `namespace` claim to come from:
    /// a lookup of that namespace's copies.
    pub fn sources_in(&self, namespace: &str) -> Vec<(String, String, String)> {
        let state = self.lock();
        let mut sources: Vec<(String, String, String)> = state
            .current
            .source_of
            .in_namespace(namespace)
            .filter_map(|(_, key)| named_by(key))
            .map(|(uid, ns, name)| (uid.to_string(), ns.to_string(), name.to_string()))
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }

    /// Forgets a copy just removed (the watch will say so too).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().current.remove(&(namespace.into(), name.into()));
    }

    /// Remembers a copy just written, with the stamp of what was sent, before the watch shows
    /// it: the next reconcile then knows it even if the watch lags.
    pub fn remember(&self, written: &Secret, sent: u64) {
        let meta = PartialObjectMeta::<Secret> {
            metadata: written.metadata.clone(),
            ..Default::default()
        };
        self.lock().current.apply(&meta, Some(sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::key::test_key;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn copy(
        ns: &str,
        name: &str,
        uid: Option<&str>,
        fingerprint: &str,
        rv: &str,
    ) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("obj-{ns}-{name}")),
                resource_version: Some(rv.into()),
                labels: uid.map(|u| [(DELIVERED_FROM_UID_LABEL.to_string(), u.to_string())].into()),
                annotations: Some(
                    [
                        (FINGERPRINT_ANNOTATION.to_string(), fingerprint.to_string()),
                        (SETTINGS_ANNOTATION.to_string(), "s".to_string()),
                        (DELIVERED_FROM_ANNOTATION.to_string(), "src/pc".to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn copies_are_kept_by_source_and_follow_changes_relists_and_deletes() {
        let copies = Copies::default();
        assert!(!copies.listed());
        copies.watched(&Event::Init);
        copies.watched(&Event::InitApply(copy("a", "t", Some("u1"), "f1", "1")));
        copies.watched(&Event::InitApply(copy("b", "t", Some("u1"), "f1", "2")));
        copies.watched(&Event::InitApply(copy("a", "target", None, "f9", "3")));
        copies.watched(&Event::InitDone);
        assert!(copies.listed());
        let of = copies.of(&test_key("u1", "src", "pc"));
        assert_eq!(of.len(), 2);
        assert_eq!(of[0].1.stamp, stamp("f1", "s"));
        assert!(
            copies.of(&test_key("u1", "src", "other")).is_empty(),
            "must name it"
        );
        assert_eq!(
            copies.sources_in("a"),
            vec![("u1".into(), "src".into(), "pc".into())]
        );
        assert!(copies.sources_in("c").is_empty());
        // A new version; a label moved to another source; a delete.
        copies.watched(&Event::Apply(copy("a", "t", Some("u1"), "f2", "4")));
        assert_eq!(
            copies.of(&test_key("u1", "src", "pc"))[0].1.stamp,
            stamp("f2", "s")
        );
        copies.watched(&Event::Apply(copy("b", "t", Some("u2"), "f1", "5")));
        assert_eq!(
            (
                copies.of(&test_key("u1", "src", "pc")).len(),
                copies.of(&test_key("u2", "src", "pc")).len()
            ),
            (1, 1)
        );
        copies.watched(&Event::Delete(copy("a", "t", Some("u1"), "f2", "4")));
        assert!(copies.of(&test_key("u1", "src", "pc")).is_empty());
        // A relist drops what it no longer shows.
        copies.watched(&Event::Init);
        copies.watched(&Event::InitDone);
        assert!(copies.of(&test_key("u2", "src", "pc")).is_empty());
    }

    #[test]
    fn a_labelled_secret_with_an_owner_or_without_the_annotation_is_no_copy() {
        let copies = Copies::default();
        let mut owned = copy("a", "target", Some("u1"), "f", "1");
        owned.metadata.owner_references = Some(vec![OwnerReference {
            kind: "ProviderCredential".into(),
            name: "pc".into(),
            ..Default::default()
        }]);
        copies.watched(&Event::Apply(owned));
        let mut unannotated = copy("b", "t", Some("u1"), "f", "1");
        unannotated.metadata.annotations = None;
        copies.watched(&Event::Apply(unannotated));
        assert!(copies.of(&test_key("u1", "src", "pc")).is_empty());
    }

    #[test]
    fn a_forged_claim_of_a_sources_uid_hides_none_of_its_copies() {
        let copies = Copies::default();
        let forged = |ns: &str, from: &str, rv: &str| {
            let mut f = copy(ns, "t", Some("u1"), "f-forged", rv);
            f.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(DELIVERED_FROM_ANNOTATION.into(), from.into());
            f
        };
        // After a restart the relist may show the forgery first.
        copies.watched(&Event::Init);
        copies.watched(&Event::InitApply(forged("attacker", "attacker/decoy", "1")));
        copies.watched(&Event::InitApply(copy("a", "t", Some("u1"), "f1", "2")));
        copies.watched(&Event::InitApply(copy("b", "t", Some("u1"), "f1", "3")));
        copies.watched(&Event::InitApply(forged("attacker2", "src/other/x", "4")));
        copies.watched(&Event::InitDone);
        let of = copies.of(&test_key("u1", "src", "pc"));
        let places: Vec<&str> = of.iter().map(|((ns, _), _)| ns.as_str()).collect();
        assert_eq!(places, vec!["a", "b"]);
        assert!(of.iter().all(|(_, seen)| seen.stamp == stamp("f1", "s")));
        // The forgery is only what it claims: a source of its own.
        assert_eq!(copies.of(&test_key("u1", "attacker", "decoy")).len(), 1);
        assert_eq!(copies.of(&test_key("u1", "src", "other/x")).len(), 1);
        assert_eq!(
            copies.sources_in("attacker"),
            vec![("u1".into(), "attacker".into(), "decoy".into())]
        );
        // And after live events too.
        copies.watched(&Event::Apply(forged("attacker", "attacker/decoy", "5")));
        copies.watched(&Event::Apply(copy("a", "t", Some("u1"), "f2", "6")));
        assert_eq!(copies.of(&test_key("u1", "src", "pc")).len(), 2);
    }

    #[test]
    fn what_was_written_keeps_its_stamp_when_read_back_changed() {
        let copies = Copies::default();
        let mut written = copy("a", "t", Some("u1"), "mutated-by-a-webhook", "7");
        copies.remember(
            &Secret {
                metadata: written.metadata.clone(),
                ..Default::default()
            },
            42,
        );
        assert_eq!(copies.of(&test_key("u1", "src", "pc"))[0].1.stamp, 42);
        // The watch shows that same version: still the stamp sent.
        copies.watched(&Event::Apply(written.clone()));
        assert_eq!(copies.of(&test_key("u1", "src", "pc"))[0].1.stamp, 42);
        // A later version is read as it is.
        written.metadata.resource_version = Some("8".into());
        copies.watched(&Event::Apply(written));
        assert_eq!(
            copies.of(&test_key("u1", "src", "pc"))[0].1.stamp,
            stamp("mutated-by-a-webhook", "s")
        );
    }
}

//! The copies spec.delivery wrote, as the watch of managed Secrets (already running) shows
//! them: by the UID of the resource they came from, which token and settings they hold, and
//! their resourceVersion. A reconcile learns from here which copies are current and which to
//! remove, reading none of them. About 100 bytes per copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

use crate::api::DELIVERED_FROM_UID_LABEL;
use crate::rotation::delivery::stamp;
use crate::target::{FINGERPRINT_ANNOTATION, SETTINGS_ANNOTATION};

/// Namespace and name.
type Place = (Box<str>, Box<str>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySeen {
    pub stamp: u64,
    pub resource_version: Box<str>,
}

#[derive(Default)]
struct Table {
    by_source: HashMap<Box<str>, BTreeMap<Place, CopySeen>>,
    /// Which source each place holds a copy of (a label can change).
    source_of: HashMap<Place, Box<str>>,
}

impl Table {
    fn remove(&mut self, place: &Place) {
        if let Some(uid) = self.source_of.remove(place)
            && let Some(copies) = self.by_source.get_mut(&uid)
        {
            copies.remove(place);
            if copies.is_empty() {
                self.by_source.remove(&uid);
            }
        }
    }

    fn apply(&mut self, secret: &PartialObjectMeta<Secret>) {
        let place: Place = (
            secret.namespace().unwrap_or_default().into(),
            secret.name_any().into(),
        );
        self.remove(&place);
        let Some(uid) = secret.labels().get(DELIVERED_FROM_UID_LABEL) else {
            return;
        };
        let annotation = |key| {
            secret
                .annotations()
                .get(key)
                .map(String::as_str)
                .unwrap_or_default()
        };
        let seen = CopySeen {
            stamp: stamp(
                annotation(FINGERPRINT_ANNOTATION),
                annotation(SETTINGS_ANNOTATION),
            ),
            resource_version: secret
                .meta()
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .into(),
        };
        let uid: Box<str> = uid.as_str().into();
        self.source_of.insert(place.clone(), uid.clone());
        self.by_source.entry(uid).or_default().insert(place, seen);
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
            Event::Apply(s) => state.current.apply(s),
            Event::Delete(s) => state.current.remove(&(
                s.namespace().unwrap_or_default().into(),
                s.name_any().into(),
            )),
            Event::Init => state.relisting = Some(Table::default()),
            Event::InitApply(s) => state.relisting.get_or_insert_default().apply(s),
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

    /// The copies of one resource, by namespace and name.
    pub fn of(&self, uid: &str) -> Vec<((String, String), CopySeen)> {
        self.lock()
            .current
            .by_source
            .get(uid)
            .map(|copies| {
                copies
                    .iter()
                    .map(|((ns, name), seen)| ((ns.to_string(), name.to_string()), seen.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a copy just removed (the watch will say so too).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().current.remove(&(namespace.into(), name.into()));
    }

    /// Remembers a copy just written, before the watch shows it: the next reconcile then
    /// knows it even if the watch lags.
    pub fn remember(&self, secret: &Secret) {
        let meta = PartialObjectMeta::<Secret> {
            metadata: secret.metadata.clone(),
            ..Default::default()
        };
        self.lock().current.apply(&meta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                resource_version: Some(rv.into()),
                labels: uid.map(|u| [(DELIVERED_FROM_UID_LABEL.to_string(), u.to_string())].into()),
                annotations: Some(
                    [
                        (FINGERPRINT_ANNOTATION.to_string(), fingerprint.to_string()),
                        (SETTINGS_ANNOTATION.to_string(), "s".to_string()),
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
        let of = copies.of("u1");
        assert_eq!(of.len(), 2);
        assert_eq!(of[0].1.stamp, stamp("f1", "s"));
        assert!(copies.of("u2").is_empty());
        // A new version; a label moved to another source; a delete.
        copies.watched(&Event::Apply(copy("a", "t", Some("u1"), "f2", "4")));
        assert_eq!(copies.of("u1")[0].1.stamp, stamp("f2", "s"));
        copies.watched(&Event::Apply(copy("b", "t", Some("u2"), "f1", "5")));
        assert_eq!((copies.of("u1").len(), copies.of("u2").len()), (1, 1));
        copies.watched(&Event::Delete(copy("a", "t", Some("u1"), "f2", "4")));
        assert!(copies.of("u1").is_empty());
        // A relist drops what it no longer shows.
        copies.watched(&Event::Init);
        copies.watched(&Event::InitDone);
        assert!(copies.of("u2").is_empty());
    }
}

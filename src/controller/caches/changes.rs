//! What the operator reads of a Secret, as a digest: a Secret event triggers reconciles only
//! when it changed (views.rs keeps it, 8 bytes beside each Secret's version): an annotation or
//! a label some other tool sets on a credentials Secret used by hundreds of resources
//! reconciles none of them.
//!
//! - credentials Secrets: their data, the opt-in label and the owner's allowed-token-hosts
//!   annotation;
//! - managed Secrets (targets, state, copies): their owner references, the labels and the
//!   operator's own annotations (`tokenrotator.dev/…`: the token's fingerprint, the target
//!   settings, where a copy came from); for a state Secret also its version (its data, which a
//!   metadata watch does not show, is what the operator reads of it).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{ALLOWED_TOKEN_HOSTS_ANNOTATION, CREDENTIALS_LABEL};

/// The operator's own annotations on the Secrets it writes.
const OWN_PREFIX: &str = "tokenrotator.dev/";
/// What a state Secret's name ends with (`api::state_secret_name`).
const STATE_SUFFIX: &str = "-rotator-state";

fn hasher() -> std::collections::hash_map::DefaultHasher {
    std::collections::hash_map::DefaultHasher::new()
}

/// What the operator reads of a credentials Secret.
pub fn credentials_digest(secret: &Secret) -> u64 {
    let mut h = hasher();
    secret.labels().get(CREDENTIALS_LABEL).hash(&mut h);
    secret
        .annotations()
        .get(ALLOWED_TOKEN_HOSTS_ANNOTATION)
        .hash(&mut h);
    for (key, value) in secret.data.iter().flatten() {
        (key, &value.0).hash(&mut h);
    }
    // A key only in stringData is in data once stored; hashed apart all the same.
    secret.string_data.hash(&mut h);
    h.finish()
}

/// What the operator reads of a managed Secret's metadata.
pub fn managed_digest(secret: &PartialObjectMeta<Secret>) -> u64 {
    let mut h = hasher();
    for r in secret.owner_references() {
        (&r.uid, &r.kind, &r.name, &r.api_version, r.controller).hash(&mut h);
    }
    secret.labels().hash(&mut h);
    own(secret.annotations()).for_each(|kv| kv.hash(&mut h));
    if secret.name_any().ends_with(STATE_SUFFIX) {
        secret.meta().resource_version.hash(&mut h);
    }
    h.finish()
}

fn own(annotations: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    annotations
        .iter()
        .filter(|(k, _)| k.starts_with(OWN_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::caches::views::SecretViews;
    use k8s_openapi::ByteString;
    use kube::runtime::watcher::Event;

    fn creds(rv: &str, value: &str, annotations: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some("creds".into());
        s.metadata.resource_version = Some(rv.into());
        s.metadata.labels = Some([(CREDENTIALS_LABEL.to_string(), "true".to_string())].into());
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.data = Some([("client_secret".to_string(), ByteString(value.into()))].into());
        s
    }

    fn names<K: Resource>(objects: Vec<K>) -> Vec<String> {
        objects.iter().map(|k| k.name_any()).collect()
    }

    /// One watch of Secrets, as the views follow it.
    fn one_watch() -> (SecretViews, usize) {
        let views = SecretViews::default();
        let watch = views.new_watch(None);
        (views, watch)
    }

    #[test]
    fn only_what_the_operator_reads_of_a_credentials_secret_is_a_change() {
        let (views, watch) = one_watch();
        let filter = |event| names(views.watched(watch, event, credentials_digest));
        assert_eq!(filter(Event::Apply(creds("1", "a", &[]))), ["creds"]);
        // Someone else's annotation, a new resourceVersion: nothing the operator reads.
        let noise = [("example.com/last-seen", "monday")];
        assert!(filter(Event::Apply(creds("2", "a", &noise))).is_empty());
        let mut relabelled = creds("3", "a", &noise);
        relabelled
            .labels_mut()
            .insert("app.kubernetes.io/part-of".into(), "x".into());
        assert!(filter(Event::Apply(relabelled)).is_empty());
        // The data, the host pin: changes.
        assert_eq!(filter(Event::Apply(creds("4", "b", &noise))), ["creds"]);
        let pinned = [(ALLOWED_TOKEN_HOSTS_ANNOTATION, "auth.example")];
        assert_eq!(filter(Event::Apply(creds("5", "b", &pinned))), ["creds"]);
        assert!(filter(Event::Apply(creds("6", "b", &pinned))).is_empty());
        // The label's removal is a deletion to this watch.
        assert_eq!(filter(Event::Delete(creds("7", "b", &pinned))), ["creds"]);
        assert_eq!(filter(Event::Apply(creds("8", "b", &pinned))), ["creds"]);
    }

    #[test]
    fn a_relist_reports_what_changed_or_went_while_the_watch_was_down() {
        let (views, watch) = one_watch();
        let filter = |event| names(views.watched(watch, event, credentials_digest));
        let named = |name: &str, value: &str| {
            let mut s = creds("1", value, &[]);
            s.metadata.name = Some(name.into());
            s
        };
        for name in ["kept", "changed", "gone"] {
            filter(Event::Apply(named(name, "a")));
        }
        assert!(filter(Event::Init).is_empty());
        assert!(filter(Event::InitApply(named("kept", "a"))).is_empty());
        assert_eq!(filter(Event::InitApply(named("changed", "b"))), ["changed"]);
        assert_eq!(filter(Event::InitDone), ["gone"]);
        // Gone for good: it comes back as new.
        assert_eq!(filter(Event::Apply(named("gone", "a"))), ["gone"]);
    }

    #[test]
    fn a_managed_secret_changes_with_its_owner_labels_and_own_annotations_only() {
        let (views, watch) = one_watch();
        let target = |rv: &str, fingerprint: &str, other: &str| {
            let mut m = PartialObjectMeta::<Secret>::default();
            m.metadata.namespace = Some("ns".into());
            m.metadata.name = Some("pc-token".into());
            m.metadata.resource_version = Some(rv.into());
            m.metadata.annotations = Some(
                [
                    (
                        crate::target::FINGERPRINT_ANNOTATION.into(),
                        fingerprint.into(),
                    ),
                    ("reloader.example/hash".into(), other.into()),
                ]
                .into(),
            );
            m
        };
        let filter = |event| names(views.watched(watch, event, managed_digest));
        assert_eq!(filter(Event::Apply(target("1", "f1", "x"))), ["pc-token"]);
        assert!(filter(Event::Apply(target("2", "f1", "y"))).is_empty());
        assert_eq!(filter(Event::Apply(target("3", "f2", "y"))), ["pc-token"]);
        let mut disowned = target("4", "f2", "y");
        disowned.metadata.owner_references = Some(vec![Default::default()]);
        assert_eq!(filter(Event::Apply(disowned)), ["pc-token"]);
        // A state Secret's data is read: any new version of it is a change.
        let mut state = target("5", "f", "y");
        state.metadata.name = Some("pc-rotator-state".into());
        assert_eq!(filter(Event::Apply(state.clone())), ["pc-rotator-state"]);
        state.metadata.resource_version = Some("6".into());
        assert_eq!(filter(Event::Apply(state)), ["pc-rotator-state"]);
    }
}

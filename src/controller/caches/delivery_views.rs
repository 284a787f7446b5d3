//! What --cross-namespace-delivery watches besides the resources: namespaces (labels only),
//! TokenDeliveryGrants, and the copies (from the managed-Secrets watch). Shared by the
//! controller's mappers and by spec.delivery's reconcile step (controller/delivery.rs).

use std::collections::BTreeMap;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};

use super::copies::Copies;
use crate::api::{Guarded, TokenDeliveryGrant};

/// A TokenDeliveryGrant as its watch delivers it: readable, or the reason it is not (one
/// unreadable grant must not stop the watch of all the others).
pub type GuardedGrant = DeserializeGuard<TokenDeliveryGrant>;

/// What --cross-namespace-delivery adds to the running controller: the namespaces and
/// TokenDeliveryGrants as their watches show them, and the copies as the watch of managed
/// Secrets shows them.
pub struct Delivery {
    pub grants: Store<GuardedGrant>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub copies: Copies,
}

/// The writers of [`Delivery`]'s stores, for the controller's watches.
pub struct DeliveryWriters {
    pub grants: reflector::store::Writer<GuardedGrant>,
    pub namespaces: reflector::store::Writer<PartialObjectMeta<Namespace>>,
}

impl Delivery {
    pub fn new() -> (Self, DeliveryWriters) {
        let (grants, grants_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        (
            Delivery {
                grants,
                namespaces,
                copies: Copies::default(),
            },
            DeliveryWriters {
                grants: grants_writer,
                namespaces: namespaces_writer,
            },
        )
    }

    /// Every watch listed once. Never waited for: a reconcile holds a slot of the controller's
    /// concurrency, and rotations must not queue behind a watch that cannot list.
    pub fn listed(&self) -> bool {
        let ready = |ready: Option<Result<(), _>>| matches!(ready, Some(Ok(())));
        ready(self.grants.wait_until_ready().now_or_never())
            && ready(self.namespaces.wait_until_ready().now_or_never())
            && self.copies.listed()
    }

    /// The resources with a copy in `namespace`: only those the cache holds, with the UID the
    /// copy claims (a Secret naming any resource, or a resource deleted and created again
    /// under its name, triggers nothing).
    pub fn sources_in(&self, namespace: &str, cached: &Store<Guarded>) -> Vec<ObjectRef<Guarded>> {
        self.copies
            .sources_in(namespace)
            .into_iter()
            .filter_map(|(uid, ns, name)| cached_with_uid(cached, &uid, &ns, &name))
            .collect()
    }

    /// The labels of a namespace as its watch shows it (none if it does not).
    pub fn labels_of(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The resource at `namespace`/`name` if the cache holds it with this UID.
pub fn cached_with_uid(
    cached: &Store<Guarded>,
    uid: &str,
    namespace: &str,
    name: &str,
) -> Option<ObjectRef<Guarded>> {
    let at = ObjectRef::new(name).within(namespace);
    let held = cached.get(&at)?;
    (held.meta().uid.as_deref() == Some(uid)).then_some(at)
}

//! The mappers: from a watched object to the resources that read it, each a lookup in an
//! index or the cache, never a scan of every resource.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::Guarded;
use crate::controller::caches::delivery_views::{Delivery, GuardedGrant};
use crate::controller::caches::readers::{Readers, reaches};

/// The resources a TokenDeliveryGrant's change concerns: those it names and those with a copy
/// in its namespace (a grant edited to no longer name one), if the cache holds them and their
/// spec.delivery reaches its namespace. A lookup per name and per copy there, no scan.
pub fn grant_readers(
    delivery: &Delivery,
    cached: &Store<Guarded>,
    grant: &GuardedGrant,
) -> Vec<ObjectRef<Guarded>> {
    let Some(namespace) = grant.namespace() else {
        return Vec::new();
    };
    let labels = delivery.labels_of(&namespace);
    let named = grant
        .0
        .as_ref()
        .map(|g| g.spec.from.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|f| ObjectRef::new(&f.name).within(&f.namespace.0));
    let mut refs: Vec<ObjectRef<Guarded>> = named
        .chain(delivery.sources_in(&namespace, cached))
        .filter(|r| {
            cached.get(r).is_some_and(|g| {
                g.0.as_ref()
                    .is_ok_and(|pc| reaches(pc, &namespace, &labels))
            })
        })
        .collect();
    sorted(&mut refs);
    refs
}

fn sorted(refs: &mut Vec<ObjectRef<Guarded>>) {
    refs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    refs.dedup();
}

/// The resources a namespace's change concerns: those that name it, those whose selector
/// matches it (the index of readers), and those with a copy in it (it may have left their
/// selection).
pub fn namespace_readers(
    delivery: &Delivery,
    readers: &Readers,
    cached: &Store<Guarded>,
    namespace: &PartialObjectMeta<Namespace>,
) -> Vec<ObjectRef<Guarded>> {
    let name = namespace.name_any();
    let mut refs = readers.reaching(&name, namespace.labels(), cached);
    refs.extend(delivery.sources_in(&name, cached));
    sorted(&mut refs);
    refs
}

/// The resource a copy in another namespace came from, if the cache holds it with the UID
/// the copy's label names: a Secret claiming any resource's name triggers nothing.
pub fn copy_source(
    secret: &PartialObjectMeta<Secret>,
    cached: &Store<Guarded>,
) -> Option<ObjectRef<Guarded>> {
    let (uid, namespace, name) = crate::controller::caches::copies::copy_of(secret)?;
    crate::controller::caches::delivery_views::cached_with_uid(cached, uid, namespace, name)
}

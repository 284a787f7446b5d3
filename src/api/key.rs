//! Who a ProviderCredential is: what the caches, the held table and the per-resource
//! metrics key it by.

use kube::api::ObjectMeta;

/// A resource's UID, namespace and name, all present: built once per reconcile from its
/// metadata, so that nothing is ever keyed by an empty string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    uid: Box<str>,
    namespace: Box<str>,
    name: Box<str>,
}

/// Metadata without a field the key needs (an API server always sets all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the resource has no {0} in its metadata, so nothing can be kept for it")]
pub struct MissingIdentity(pub &'static str);

impl ResourceKey {
    pub fn of(meta: &ObjectMeta) -> Result<Self, MissingIdentity> {
        let field = |value: &Option<String>, what| match value.as_deref() {
            Some(v) if !v.is_empty() => Ok(Box::from(v)),
            _ => Err(MissingIdentity(what)),
        };
        Ok(ResourceKey {
            uid: field(&meta.uid, "uid")?,
            namespace: field(&meta.namespace, "namespace")?,
            name: field(&meta.name, "name")?,
        })
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A key for tests.
#[cfg(test)]
pub fn test_key(uid: &str, namespace: &str, name: &str) -> ResourceKey {
    ResourceKey {
        uid: uid.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: Option<&str>, namespace: Option<&str>, name: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            uid: uid.map(Into::into),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_key_has_all_three_parts() {
        let key = ResourceKey::of(&meta(Some("u-1"), Some("ns"), Some("pc"))).unwrap();
        assert_eq!(
            (key.uid(), key.namespace(), key.name()),
            ("u-1", "ns", "pc")
        );
        assert_eq!(key.to_string(), "ns/pc");
    }

    #[test]
    fn a_resource_without_identity_is_refused_naming_what_is_missing() {
        let no_uid = ResourceKey::of(&meta(None, Some("ns"), Some("pc"))).unwrap_err();
        assert_eq!(no_uid, MissingIdentity("uid"));
        assert!(no_uid.to_string().contains("no uid"), "{no_uid}");
        let no_namespace = ResourceKey::of(&meta(Some("u-1"), None, Some("pc"))).unwrap_err();
        assert!(
            no_namespace.to_string().contains("no namespace"),
            "{no_namespace}"
        );
        let empty_name = ResourceKey::of(&meta(Some("u-1"), Some("ns"), Some(""))).unwrap_err();
        assert_eq!(empty_name, MissingIdentity("name"));
    }
}

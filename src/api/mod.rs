//! The CRD types and their translation into the provider model.

pub mod delivery;
pub mod key;
pub mod limits;
pub mod resolve;
pub mod spec;
pub mod status;

pub use delivery::*;
pub use key::{MissingIdentity, ResourceKey};
pub use resolve::{
    AuthorizationSettings, SpecError, authorization_settings, credentials_from_data,
    credentials_from_spec, provider_config,
};
pub use spec::*;
pub use status::*;

/// Label a credentials Secret must carry to be read by the operator.
pub const CREDENTIALS_LABEL: &str = "tokenrotator.dev/credentials";
/// Label on every Secret the operator creates.
/// On a credentials Secret: the only token endpoint hosts (comma-separated) any
/// ProviderCredential may send its credentials to.
pub const ALLOWED_TOKEN_HOSTS_ANNOTATION: &str = "tokenrotator.dev/allowed-token-hosts";
/// On a ServiceAccount: the only audiences (comma-separated) its tokens may be minted for.
pub const ALLOWED_AUDIENCES_ANNOTATION: &str = "tokenrotator.dev/allowed-audiences";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "token-rotator";
/// Annotation on the target Secret with the token's expiry (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "tokenrotator.dev/expires-at";
/// Annotation whose new value asks for one immediate rotation.
pub const REFRESH_ANNOTATION: &str = "tokenrotator.dev/refresh";

/// A ProviderCredential as the watch delivers it: readable, or the reason it is not.
pub type Guarded = kube::core::DeserializeGuard<ProviderCredential>;

/// Name of the state Secret that keeps a resource's refresh token.
pub fn state_secret_name(resource_name: &str) -> String {
    format!("{resource_name}-rotator-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object the CRD admitted but this version cannot read (a newer field value, a
    /// status written by hand) arrives as an error with its name, not as a failed watch.
    #[test]
    fn an_unreadable_object_keeps_its_identity() {
        let object = serde_json::json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"name": "odd", "namespace": "ns", "uid": "u-1"},
            "spec": {"preset": "fromTheFuture", "tokenEndpoint": {"url": "https://a.test/t"},
                     "credentials": {"secretRef": {"name": "c"}}, "target": {"secretName": "t"}},
        });
        let guarded: Guarded = serde_json::from_value(object).unwrap();
        let error = guarded.0.as_ref().expect_err("an unknown preset");
        assert!(error.to_string().contains("fromTheFuture"), "{error}");
        use kube::ResourceExt;
        assert_eq!(
            (guarded.name_any(), guarded.namespace()),
            ("odd".into(), Some("ns".into()))
        );
    }
}

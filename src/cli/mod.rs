//! Command-line entry points.

pub mod authorize;
pub mod cluster;
pub mod crd;
pub mod fetch;
pub mod manifest;
pub mod refresh;
pub mod run;
pub mod status;

/// A ProviderCredential `name` in namespace `ns` with this status, as the commands read it.
#[cfg(test)]
fn fixture(name: &str, status: serde_json::Value) -> crate::api::ProviderCredential {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "tokenEndpoint": {"url": "https://example.test/token"},
            "credentials": {"secretRef": {"name": "c"}},
            "target": {"secretName": "t"}
        },
        "status": status
    }))
    .expect("a valid ProviderCredential")
}

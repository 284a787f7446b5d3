//! Delivery of a token to other namespaces: what a ProviderCredential asks for
//! (`spec.delivery`), the destination namespace's consent (a `TokenDeliveryGrant` there) and
//! what the status says about each destination.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits;

/// Label on each copy: the UID of the ProviderCredential it came from (a label, so the copies
/// of one resource can be listed; names do not fit in a label value).
pub const DELIVERED_FROM_UID_LABEL: &str = "tokenrotator.dev/delivered-from-uid";
/// Annotation on each copy: `<namespace>/<name>` of the ProviderCredential it came from.
pub const DELIVERED_FROM_ANNOTATION: &str = "tokenrotator.dev/delivered-from";
/// Held on a ProviderCredential that has (or may have) copies in other namespaces: owner
/// references cannot cross namespaces, so the operator removes the copies before it goes.
pub const DELIVERY_FINALIZER: &str = "tokenrotator.dev/delivered-copies";

/// Copies of the target Secret in other namespaces: the same token (one request), written in
/// the same rotation. A namespace receives a copy only if a TokenDeliveryGrant there names this
/// ProviderCredential. Needs the operator's --cross-namespace-delivery (chart value
/// crossNamespaceDelivery.enabled).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)").message("spec.delivery needs namespaces or a namespaceSelector"))]
pub struct DeliverySpec {
    /// Namespaces by name (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::DELIVERY_NAMESPACES))]
    pub namespaces: Vec<NamespaceName>,
    /// Namespaces by label, among those that consent (this resource's own namespace is never
    /// one: its target is there). At most 16 requirements of at most 64 values each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = limits::label_selector)]
    pub namespace_selector: Option<LabelSelector>,
    /// The name of the copies (default: spec.target.secretName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = limits::NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,
}

/// A namespace name (an RFC 1123 label).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(transparent)]
pub struct NamespaceName(
    #[schemars(
        length(min = 1, max = limits::NAMESPACE),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub String,
);

/// Lets ProviderCredentials in other namespaces write copies of their token into this one.
/// Whoever may create it here consents for this namespace (as Gateway API's ReferenceGrant):
/// without one, nothing is written here; deleting it removes the copies it allowed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tokenrotator.dev",
    version = "v1alpha1",
    kind = "TokenDeliveryGrant",
    namespaced,
    shortname = "tdgrant",
    category = "token-rotator",
    doc = "Consent of this namespace to receive copies of tokens from ProviderCredentials in other namespaces.",
    printcolumn(name = "From", type_ = "string", json_path = ".spec.from[*].namespace"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TokenDeliveryGrantSpec {
    /// The ProviderCredentials that may deliver here (at most 32).
    #[schemars(length(min = 1, max = limits::GRANT_SOURCES))]
    pub from: Vec<DeliverySource>,
    /// The only Secret names they may write here (at most 32); empty: any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::GRANT_SECRET_NAMES))]
    pub secret_names: Vec<SecretName>,
}

/// A ProviderCredential in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySource {
    /// Its namespace.
    pub namespace: NamespaceName,
    /// Its name.
    #[schemars(
        length(min = 1, max = limits::NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A Secret name (an RFC 1123 subdomain).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct SecretName(
    #[schemars(
        length(min = 1, max = limits::NAME),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub String,
);

/// One destination of spec.delivery and what became of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// The destination namespace.
    #[schemars(length(max = limits::NAMESPACE))]
    pub namespace: String,
    /// The copy's name there.
    #[schemars(length(max = limits::NAME))]
    pub secret_name: String,
    /// True when the copy holds the current token.
    pub delivered: bool,
    /// Delivered, or why not: NotGranted (the namespace does not exist or has no grant),
    /// SameNamespace, SecretNotOwned, TooManyDestinations, WriteFailed.
    #[schemars(length(max = limits::REASON))]
    pub reason: String,
    /// For a refusal: what is wrong and how to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MESSAGE))]
    pub message: Option<String>,
    /// When the copy was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Time>,
}

//! The bounds of every string, list and map the CRDs hold: one table. The schema's maxLength,
//! maxItems and maxProperties (and a CEL rule on map keys) are written from these constants,
//! and [`check_spec`] / [`shed_oversized`] apply that same schema to objects the API server
//! admitted before the bounds existed: it keeps those, and validation ratcheting lets an
//! update that leaves an over-long field unchanged through. Every resource stays cached for as
//! long as it exists, so these bounds are what bounds the operator's memory per resource.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use schemars::Schema;
use serde_json::{Value, json};

use super::{Guarded, ProviderCredential, ProviderCredentialSpec};

// Strings, in characters (as the API server counts maxLength).
/// A DNS subdomain: Secret, workload and ProviderCredential names.
pub const NAME: u32 = 253;
/// A namespace name (a DNS label).
pub const NAMESPACE: u32 = 63;
/// A label value.
pub const LABEL_VALUE: u32 = 63;
/// A key of any map: a qualified name is at most a 253-character prefix, '/' and 63 characters.
pub const MAP_KEY: u32 = 317;
/// A key of a Secret's data (credential key names).
pub const SECRET_KEY: u32 = 253;
/// URLs: token endpoint, redirect URI, authorization URL, assertion audience.
pub const URL: u32 = 2048;
/// PEM CA certificates (about 30 certificates).
pub const CA_BUNDLE: u32 = 65536;
/// spec.grant.scope, a value of spec.grant.extraParameters.
pub const PARAMETER: u32 = 4096;
/// A JWT claim: issuer, subject, a value of spec.grant.assertion.claims.
pub const CLAIM: u32 = 1024;
/// A wire name of an OAuth parameter (spec.request.fieldNames values).
pub const WIRE_NAME: u32 = 256;
/// A JSON pointer into the token response.
pub const POINTER: u32 = 256;
/// A duration such as 1h30m ("999999999h59m59s" is 17 characters).
pub const DURATION: u32 = 32;
/// A Secret type.
pub const SECRET_TYPE: u32 = 64;
/// A target annotation value.
pub const ANNOTATION_VALUE: u32 = 4096;
/// One template of spec.target.template.
pub const TEMPLATE: u32 = 4096;
/// A label selector operator (In, NotIn, Exists, DoesNotExist).
pub const SELECTOR_OPERATOR: u32 = 16;

// Lists and maps, in entries.
pub const EXTRA_PARAMETERS: u32 = 32;
pub const CLAIMS: u32 = 16;
/// One per OAuth parameter the request names (grant_type … scope).
pub const FIELD_NAMES: u32 = 9;
pub const TARGET_LABELS: u32 = 64;
pub const TARGET_ANNOTATIONS: u32 = 64;
pub const TEMPLATE_KEYS: u32 = 32;
pub const WORKLOADS: u32 = 16;
pub const DELIVERY_NAMESPACES: u32 = 64;
/// matchLabels, and matchExpressions, of spec.delivery.namespaceSelector.
pub const SELECTOR_TERMS: u32 = 16;
/// Values of one matchExpressions requirement.
pub const SELECTOR_VALUES: u32 = 64;
pub const GRANT_SOURCES: u32 = 32;
pub const GRANT_SECRET_NAMES: u32 = 32;

// The status, written by the operator only: generous bounds it never reaches.
/// Conditions (the operator sets three kinds).
pub const CONDITIONS: u32 = 16;
/// A condition type (as metav1.Condition).
pub const CONDITION_TYPE: u32 = 316;
/// A condition status: True, False or Unknown.
pub const CONDITION_STATUS: u32 = 16;
/// A reason word (the operator's own).
pub const REASON: u32 = 128;
/// A message (as metav1.Condition).
pub const MESSAGE: u32 = 32768;
/// A fingerprint (sha256, hex) or a lifetime source word.
pub const FINGERPRINT: u32 = 128;
/// The last tokenrotator.dev/refresh value acted upon.
pub const REFRESH_REQUEST: u32 = 1024;
/// spec.rollout: one record per workload restarted, workloads since removed included.
pub const RESTARTS: u32 = 64;
/// spec.delivery: one line per namespace named or consenting.
pub const DELIVERIES: u32 = 4096;

/// `#[schemars(transform = ...)]` for a map of strings: at most `entries`, each value at most
/// `value` characters, each key at most [`MAP_KEY`] (a CEL rule: structural schemas have no
/// bound on keys).
pub struct Map {
    pub entries: u32,
    pub value: u32,
}

impl schemars::transform::Transform for Map {
    fn transform(&mut self, schema: &mut Schema) {
        bound_map(schema, self.entries, self.value);
    }
}

/// The CEL rule bounding a map's keys.
fn key_rule() -> Value {
    json!({
        "rule": format!("self.all(k, size(k) <= {MAP_KEY})"),
        "message": format!("keys must be at most {MAP_KEY} characters"),
    })
}

fn bound_map(schema: &mut Schema, entries: u32, value: u32) {
    schema.insert("maxProperties".into(), entries.into());
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(Value::as_object_mut)
    {
        values.insert("maxLength".into(), value.into());
    }
    add_rule(schema, key_rule());
}

fn add_rule(schema: &mut Schema, rule: Value) {
    let rules = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(rules) = rules {
        rules.push(rule);
    }
}

/// `#[schemars(transform = ...)]` for spec.delivery.namespaceSelector (a metav1.LabelSelector,
/// whose upstream schema bounds nothing).
pub fn label_selector(schema: &mut Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(labels) = properties.get_mut("matchLabels")
        && let Ok(labels) = <&mut Schema>::try_from(labels)
    {
        bound_map(labels, SELECTOR_TERMS, LABEL_VALUE);
    }
    if let Some(expressions) = properties
        .get_mut("matchExpressions")
        .and_then(Value::as_object_mut)
    {
        expressions.insert("maxItems".into(), SELECTOR_TERMS.into());
        let mut requirement = expressions
            .get_mut("items")
            .and_then(|i| i.get_mut("properties"))
            .and_then(Value::as_object_mut);
        for (name, bound) in [("key", MAP_KEY), ("operator", SELECTOR_OPERATOR)] {
            if let Some(field) = requirement
                .as_deref_mut()
                .and_then(|r| r.get_mut(name))
                .and_then(Value::as_object_mut)
            {
                field.insert("maxLength".into(), bound.into());
            }
        }
        if let Some(values) = requirement
            .and_then(|r| r.get_mut("values"))
            .and_then(Value::as_object_mut)
        {
            values.insert("maxItems".into(), SELECTOR_VALUES.into());
            if let Some(item) = values.get_mut("items").and_then(Value::as_object_mut) {
                item.insert("maxLength".into(), LABEL_VALUE.into());
            }
        }
    }
}

/// `#[schemars(transform = ...)]` for status.conditions (metav1.Condition, whose upstream
/// bounds the generated schema does not carry).
pub fn conditions(schema: &mut Schema) {
    schema.insert("maxItems".into(), CONDITIONS.into());
    let Some(fields) = schema
        .get_mut("items")
        .and_then(|i| i.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, bound) in [
        ("type", CONDITION_TYPE),
        ("status", CONDITION_STATUS),
        ("reason", REASON),
        ("message", MESSAGE),
    ] {
        if let Some(field) = fields.get_mut(name).and_then(Value::as_object_mut) {
            field.insert("maxLength".into(), bound.into());
        }
    }
}

/// A field over its bound: which, by how much, and the bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {what}; at most {limit} {unit} are allowed")]
pub struct Exceeded {
    /// The field's path, e.g. spec.tokenEndpoint.caBundle or spec.target.template[k].
    pub field: String,
    what: String,
    pub limit: u64,
    unit: &'static str,
}

/// The bounds of one node of the schema, as the check walks it.
#[derive(Debug, Default)]
struct Bounds {
    max_length: Option<u64>,
    max_items: Option<u64>,
    max_properties: Option<u64>,
    properties: Vec<(Box<str>, Bounds)>,
    items: Option<Box<Bounds>>,
    /// A map's values (additionalProperties).
    values: Option<Box<Bounds>>,
}

impl Bounds {
    fn of(schema: &Value) -> Bounds {
        let number = |key| schema.get(key).and_then(Value::as_u64);
        let child = |key| {
            schema
                .get(key)
                .filter(|s| s.is_object())
                .map(|s| Box::new(Bounds::of(s)))
        };
        Bounds {
            max_length: number("maxLength"),
            max_items: number("maxItems"),
            max_properties: number("maxProperties"),
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(name, s)| (name.as_str().into(), Bounds::of(s)))
                        .collect()
                })
                .unwrap_or_default(),
            items: child("items"),
            values: child("additionalProperties"),
        }
    }

    fn property(&self, name: &str) -> Option<&Bounds> {
        self.properties
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, b)| b)
    }

    fn check(&self, value: &Value, path: &str) -> Result<(), Exceeded> {
        let over = |what: String, limit: u64, unit| Exceeded {
            field: path.to_string(),
            what,
            limit,
            unit,
        };
        match value {
            Value::String(s) => {
                let length = s.chars().count();
                match self.max_length {
                    Some(max) if length as u64 > max => Err(over(
                        format!("is {length} characters long"),
                        max,
                        "characters",
                    )),
                    _ => Ok(()),
                }
            }
            Value::Array(items) => {
                if let Some(max) = self.max_items.filter(|m| items.len() as u64 > *m) {
                    return Err(over(format!("has {} items", items.len()), max, "items"));
                }
                let Some(bounds) = &self.items else {
                    return Ok(());
                };
                items
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, item)| bounds.check(item, &format!("{path}[{i}]")))
            }
            Value::Object(fields) => {
                if let Some(values) = &self.values {
                    if let Some(max) = self.max_properties.filter(|m| fields.len() as u64 > *m) {
                        return Err(over(
                            format!("has {} entries", fields.len()),
                            max,
                            "entries",
                        ));
                    }
                    for (key, value) in fields {
                        let length = key.chars().count();
                        if length as u64 > u64::from(MAP_KEY) {
                            return Err(over(
                                format!("has a key {length} characters long"),
                                MAP_KEY.into(),
                                "characters",
                            ));
                        }
                        values.check(value, &format!("{path}[{key}]"))?;
                    }
                    return Ok(());
                }
                fields.iter().try_for_each(|(name, value)| {
                    match self.property(name) {
                        Some(bounds) if path.is_empty() => bounds.check(value, name),
                        Some(bounds) => bounds.check(value, &format!("{path}.{name}")),
                        // Not in the schema: the API server prunes such fields.
                        None => Ok(()),
                    }
                })
            }
            _ => Ok(()),
        }
    }
}

/// The ProviderCredential schema's bounds, read once from the CRD this build generates.
static PROVIDER_CREDENTIAL: LazyLock<Bounds> = LazyLock::new(|| {
    let crd = serde_json::to_value(ProviderCredential::crd()).expect("the CRD serialises");
    Bounds::of(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
});

/// A spec within the bounds of the CRD, or the first field over its bound.
pub fn check_spec(spec: &ProviderCredentialSpec) -> Result<(), Exceeded> {
    let value = serde_json::to_value(spec).expect("a spec always serialises");
    match PROVIDER_CREDENTIAL.property("spec") {
        Some(bounds) => bounds.check(&value, "spec"),
        None => Ok(()),
    }
}

/// A whole resource (spec and status) within the bounds of the CRD.
pub fn check_resource(pc: &ProviderCredential) -> Result<(), Exceeded> {
    let value = serde_json::to_value(pc).expect("a resource always serialises");
    PROVIDER_CREDENTIAL.check(&value, "")
}

/// As the watch delivers it: a resource with a field over its bound becomes unreadable (its
/// status says which field), so that the cache does not keep what the CRD would refuse today.
/// An annotation value longer than [`REFRESH_REQUEST`] is dropped: the only one read is the
/// refresh request, which status.lastRefreshRequest could not record.
pub fn shed_oversized(guard: &mut Guarded) {
    use kube::Resource;
    if let Some(annotations) = &mut guard.meta_mut().annotations {
        annotations.retain(|_, v| v.chars().count() <= REFRESH_REQUEST as usize);
    }
    let Ok(pc) = &guard.0 else {
        return;
    };
    if let Err(exceeded) = check_resource(pc) {
        let metadata = pc.metadata.clone();
        guard.0 = Err(kube::core::error_boundary::InvalidObject {
            error: exceeded.to_string(),
            metadata,
        });
    }
}

#[cfg(test)]
mod tests {
    use kube::core::error_boundary::DeserializeGuard;

    use kube::ResourceExt;

    use super::*;
    use crate::api::TokenDeliveryGrant;

    fn schema_of(crd: impl serde::Serialize) -> Value {
        let crd = serde_json::to_value(crd).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// The fields of `node` (at `path`) that hold a string, list or map without a bound.
    fn unbounded(node: &Value, path: &str, found: &mut Vec<String>) {
        let has = |key: &str| node.get(key).is_some();
        match node["type"].as_str() {
            Some("string")
                if !(has("maxLength") || has("enum") || node["format"] == "date-time") =>
            {
                found.push(format!("{path} (maxLength)"));
            }
            Some("array") if !has("maxItems") => found.push(format!("{path} (maxItems)")),
            Some("object") if node["additionalProperties"].is_object() => {
                if !has("maxProperties") {
                    found.push(format!("{path} (maxProperties)"));
                }
                let rules = node["x-kubernetes-validations"].as_array();
                if !rules.is_some_and(|r| r.contains(&key_rule())) {
                    found.push(format!("{path} (keys)"));
                }
            }
            _ => {}
        }
        if let Some(properties) = node["properties"].as_object() {
            for (name, child) in properties {
                unbounded(child, &format!("{path}.{name}"), found);
            }
        }
        for key in ["items", "additionalProperties"] {
            if node[key].is_object() {
                unbounded(&node[key], &format!("{path}[]"), found);
            }
        }
    }

    #[test]
    fn every_string_list_and_map_of_both_crds_is_bounded() {
        let mut found = Vec::new();
        unbounded(&schema_of(ProviderCredential::crd()), "", &mut found);
        unbounded(&schema_of(TokenDeliveryGrant::crd()), "", &mut found);
        assert!(found.is_empty(), "unbounded: {found:#?}");
    }

    fn spec_with(patch: Value) -> ProviderCredentialSpec {
        let mut spec = json!({
            "tokenEndpoint": {"url": "https://auth.example.test/token"},
            "credentials": {"secretRef": {"name": "creds"}},
            "target": {"secretName": "token"},
        });
        json_patch(&mut spec, patch);
        serde_json::from_value(spec).unwrap()
    }

    /// RFC 7386 merge, enough for these tests.
    fn json_patch(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    json_patch(t.entry(k).or_insert(Value::Null), v);
                }
            }
            (t, p) => *t = p,
        }
    }

    fn refusal(patch: Value) -> String {
        match crate::api::provider_config(&spec_with(patch)) {
            Err(e) => e.to_string(),
            Ok(_) => "accepted".into(),
        }
    }

    fn entries(n: usize, key_len: usize, value_len: usize) -> Value {
        (0..n)
            .map(|i| {
                (
                    format!("{i:0>key_len$}"),
                    Value::from("v".repeat(value_len)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn an_over_long_field_admitted_before_is_refused_naming_the_field_and_the_limit() {
        let ca = |n| json!({"tokenEndpoint": {"caBundle": "c".repeat(n)}});
        assert_eq!(refusal(ca(65536)), "accepted");
        assert_eq!(
            refusal(ca(1 << 20)),
            "spec.tokenEndpoint.caBundle is 1048576 characters long; at most 65536 characters are allowed"
        );
        // Characters, not bytes, as the API server counts.
        assert_eq!(
            refusal(json!({"grant": {"scope": "é".repeat(4096)}})),
            "accepted"
        );
        let cases = [
            (
                json!({"response": {"accessToken": format!("/{}", "a".repeat(256))}}),
                "spec.response.accessToken is 257 characters long; at most 256 characters are allowed",
            ),
            (
                json!({"credentials": {"keys": {"clientSecret": "k".repeat(254)}}}),
                "spec.credentials.keys.clientSecret is 254 characters long; at most 253 characters are allowed",
            ),
            (
                json!({"target": {"template": entries(33, 1, 1)}}),
                "spec.target.template has 33 entries; at most 32 entries are allowed",
            ),
            (
                json!({"target": {"template": entries(1, 318, 1)}}),
                "spec.target.template has a key 318 characters long; at most 317 characters are allowed",
            ),
            (
                json!({"target": {"labels": {"app": "v".repeat(64)}}}),
                "spec.target.labels[app] is 64 characters long; at most 63 characters are allowed",
            ),
            (
                json!({"delivery": {"namespaceSelector": {"matchExpressions": [
                    {"key": "k", "operator": "In", "values": vec!["v"; 65]}]}}}),
                "spec.delivery.namespaceSelector.matchExpressions[0].values has 65 items; at most 64 items are allowed",
            ),
            (
                json!({"delivery": {"namespaces": ["a", "n".repeat(64)]}}),
                "spec.delivery.namespaces[1] is 64 characters long; at most 63 characters are allowed",
            ),
        ];
        for (patch, message) in cases {
            assert_eq!(refusal(patch), message);
        }
    }

    fn guard(spec: Value, status: Value) -> Guarded {
        serde_json::from_value(json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"name": "big", "namespace": "ns", "uid": "u-1"},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    /// The cache keeps no field the CRD would refuse today: such a resource is kept as its
    /// identity and the reason, which its status then shows.
    #[test]
    fn the_watch_keeps_an_oversized_resource_as_its_identity_and_the_reason() {
        let spec = serde_json::to_value(spec_with(json!({}))).unwrap();
        let mut fine = guard(spec.clone(), json!({}));
        let refresh = |guard: &mut Guarded, value: String| {
            use kube::Resource;
            guard.meta_mut().annotations =
                Some([(crate::api::REFRESH_ANNOTATION.to_string(), value)].into());
        };
        refresh(&mut fine, "r".repeat(1024));
        shed_oversized(&mut fine);
        assert!(fine.0.is_ok());
        assert_eq!(fine.0.as_ref().unwrap().annotations().len(), 1);
        refresh(&mut fine, "r".repeat(1025));
        shed_oversized(&mut fine);
        assert!(fine.0.as_ref().unwrap().annotations().is_empty());

        let mut bloated = spec.clone();
        json_patch(
            &mut bloated,
            json!({"suspend": true, "tokenEndpoint": {"caBundle": "c".repeat(1 << 20)}}),
        );
        let mut big: DeserializeGuard<ProviderCredential> = guard(bloated, json!({}));
        shed_oversized(&mut big);
        let invalid = big.0.as_ref().expect_err("shed");
        assert!(
            invalid
                .error
                .starts_with("spec.tokenEndpoint.caBundle is 1048576 characters long"),
            "{}",
            invalid.error
        );
        assert_eq!(invalid.metadata.name.as_deref(), Some("big"));
        assert_eq!(invalid.metadata.uid.as_deref(), Some("u-1"));

        let status = json!({"lastFailure": {"time": "2024-01-01T00:00:00Z", "reason": "X", "message": "m".repeat(40_000)}});
        let mut loud = guard(spec, status);
        shed_oversized(&mut loud);
        let invalid = loud.0.as_ref().expect_err("shed");
        assert!(
            invalid
                .error
                .starts_with("status.lastFailure.message is 40000 characters long; at most 32768"),
            "{}",
            invalid.error
        );
    }
}

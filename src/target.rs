//! The target Secret as it should be: keys rendered from the token, labels, annotations.

use std::collections::BTreeMap;

use jiff::Timestamp;
use minijinja::Environment;
use secrecy::ExposeSecret;

use crate::api::{EXPIRES_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TargetSpec};
use crate::provider::IssuedToken;
use crate::template;

pub const FINGERPRINT_ANNOTATION: &str = "tokenrotator.dev/token-fingerprint";
pub const SETTINGS_ANNOTATION: &str = "tokenrotator.dev/target-settings";
pub const ISSUED_AT_ANNOTATION: &str = "tokenrotator.dev/issued-at";
/// The refresh-annotation value this token answered. Kept on the target (always read fresh)
/// so a reconcile working from a stale cached copy cannot act on the same request twice.
pub const REFRESH_HANDLED_ANNOTATION: &str = "tokenrotator.dev/refresh-handled";
/// The request inputs this token was issued with, as a keyed digest (`digest::InputsKey`):
/// a change of credentials is noticed from the target alone, and a reader of the target learns
/// nothing about them. Not carried to copies.
pub const INPUTS_ANNOTATION: &str = "tokenrotator.dev/inputs-digest";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("spec.target.template key `{key}` is not a valid template: {reason}")]
    Template { key: String, reason: String },
    #[error(
        "spec.target.template could produce more than {} bytes in all with the largest token accepted; use fewer or smaller templates",
        template::MAX_TOTAL_BYTES
    )]
    TooLarge,
    #[error(
        "spec.target.template key `{0}` is not a valid Secret key (letters, digits, '-', '_' and '.')"
    )]
    InvalidKey(String),
    #[error(
        "{field} key `{key}` is not a valid Kubernetes key (an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.')"
    )]
    InvalidMetadataKey { field: &'static str, key: String },
    #[error(
        "spec.target.labels value of `{0}` is not a valid label value (up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
    )]
    InvalidLabelValue(String),
    #[error(
        "spec.target.type `{0}` is not allowed: use Opaque (the default), kubernetes.io/basic-auth or kubernetes.io/dockerconfigjson; types the cluster acts on (such as service-account tokens) are refused"
    )]
    ForbiddenType(String),
    #[error(
        "{field} key `{key}` is reserved: keys under kubernetes.io/, k8s.io/ and tokenrotator.dev/ (app.kubernetes.io/ excepted) are not allowed on a target Secret"
    )]
    ReservedMetadataKey { field: &'static str, key: String },
    #[error(
        "the Secret at spec.target.secretName is not this ProviderCredential's (it has no owner reference to it): nothing is copied from it"
    )]
    TargetNotOwned,
    #[error(
        "the target Secret no longer holds what spec.target renders ({0}; changed by hand?): it is not copied until the next rotation rewrites it"
    )]
    TargetChanged(&'static str),
}

/// The target Secret types allowed: none of them makes the cluster act on the Secret (a
/// service-account-token type would have the cluster mint a token into it; a bootstrap token
/// would let nodes join). The CRD refuses others at admission too.
pub const ALLOWED_TYPES: [&str; 3] = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/dockerconfigjson",
];

/// Keys the cluster, Kubernetes components or this operator give meaning to (a target labelled
/// `tokenrotator.dev/credentials=true` would become another resource's credentials).
/// `app.kubernetes.io/` is the recommended, meaning-free label set and stays allowed.
pub fn is_reserved_key(key: &str) -> bool {
    let Some((prefix, _)) = key.rsplit_once('/') else {
        return false;
    };
    let under = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    prefix != "app.kubernetes.io"
        && (under("kubernetes.io") || under("k8s.io") || under("tokenrotator.dev"))
}

/// The parts of the target Secret the operator owns.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredTarget {
    pub secret_type: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Fields a template may use; credentials are deliberately not among them.
struct TokenFields<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_at: String,
    issued_at: String,
    lifetime_seconds: u64,
}

/// The keys of a target Secret without `spec.target.template`.
const DEFAULT_KEYS: [&str; 3] = ["access_token", "token_type", "expires_at"];

/// The keys a target Secret rendered from `spec` holds, in order.
fn rendered_key_names(spec: &TargetSpec) -> std::collections::BTreeSet<&str> {
    if spec.template.is_empty() {
        DEFAULT_KEYS.into_iter().collect()
    } else {
        spec.template.keys().map(String::as_str).collect()
    }
}

fn render_keys(
    spec: &TargetSpec,
    fields: &TokenFields<'_>,
) -> Result<BTreeMap<String, Vec<u8>>, TargetError> {
    if spec.template.is_empty() {
        let values = [
            fields.access_token,
            fields.token_type,
            fields.expires_at.as_str(),
        ];
        return Ok(DEFAULT_KEYS
            .iter()
            .zip(values)
            .map(|(key, value)| (key.to_string(), value.as_bytes().to_vec()))
            .collect());
    }
    let mut env = Environment::new();
    // Belt and braces: the syntax check below already rules out loops.
    env.set_fuel(Some(template::FUEL));
    let ctx = minijinja::context! {
        access_token => fields.access_token,
        token_type => fields.token_type,
        expires_at => fields.expires_at,
        issued_at => fields.issued_at,
        lifetime_seconds => fields.lifetime_seconds,
    };
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    let mut rendered_total = 0usize;
    for (key, source) in &spec.template {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(TargetError::InvalidKey(key.clone()));
        }
        let bound = template::output_bound(source).map_err(|reason| TargetError::Template {
            key: key.clone(),
            reason: reason.to_string(),
        })?;
        total = total.saturating_add(bound);
        if total > template::MAX_TOTAL_BYTES {
            return Err(TargetError::TooLarge);
        }
        // Errors carry only the template's own text position, never a rendered value.
        let rendered = env
            .render_str(source, &ctx)
            .map_err(|e| TargetError::Template {
                key: key.clone(),
                reason: e.kind().to_string(),
            })?;
        // The bound is an estimate; the real output is held to the same limits.
        rendered_total = rendered_total.saturating_add(rendered.len());
        if rendered.len() > template::MAX_KEY_BYTES || rendered_total > template::MAX_TOTAL_BYTES {
            return Err(TargetError::TooLarge);
        }
        out.insert(key.clone(), rendered.into_bytes());
    }
    Ok(out)
}

/// A stand-in shaped like a real access token (a JWT of typical length), so a template that
/// depends on the token's shape fails here, before a token is spent, rather than after.
fn placeholder_token() -> String {
    let segment = |n: usize| "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9".repeat(n);
    format!("{}.{}.{}", segment(1), segment(12), segment(10))
}

/// Everything about the target that can be checked without a token: templates render with a
/// token-shaped placeholder, keys and labels are valid.
pub fn validate(spec: &TargetSpec) -> Result<(), TargetError> {
    let secret_type = secret_type(spec);
    if !ALLOWED_TYPES.contains(&secret_type) {
        return Err(TargetError::ForbiddenType(secret_type.to_string()));
    }
    for (field, keys) in [
        ("spec.target.labels", &spec.labels),
        ("spec.target.annotations", &spec.annotations),
    ] {
        if let Some(key) = keys.keys().find(|k| is_reserved_key(k)) {
            return Err(TargetError::ReservedMetadataKey {
                field,
                key: key.clone(),
            });
        }
    }
    for (key, value) in &spec.labels {
        if !is_qualified_name(key) {
            return Err(TargetError::InvalidMetadataKey {
                field: "spec.target.labels",
                key: key.clone(),
            });
        }
        if !is_label_value(value) {
            return Err(TargetError::InvalidLabelValue(key.clone()));
        }
    }
    if let Some(key) = spec.annotations.keys().find(|k| !is_qualified_name(k)) {
        return Err(TargetError::InvalidMetadataKey {
            field: "spec.target.annotations",
            key: key.clone(),
        });
    }
    let token = placeholder_token();
    let fields = TokenFields {
        access_token: &token,
        token_type: "Bearer",
        expires_at: "2000-01-01T01:00:00Z".into(),
        issued_at: "2000-01-01T00:00:00Z".into(),
        lifetime_seconds: 3600,
    };
    render_keys(spec, &fields).map(|_| ())
}

/// A Kubernetes object name or key prefix (RFC 1123 subdomain).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A Kubernetes qualified name: an optional DNS-subdomain prefix and `/`, then 1–63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// At most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric (or empty).
fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

/// The target Secret's type.
pub fn secret_type(spec: &TargetSpec) -> &str {
    spec.secret_type.as_deref().unwrap_or("Opaque")
}

pub fn desired(
    spec: &TargetSpec,
    token: &IssuedToken,
    refresh_handled: Option<&str>,
    inputs: Option<&str>,
) -> Result<DesiredTarget, TargetError> {
    let fields = TokenFields {
        access_token: token.access_token.expose_secret(),
        token_type: &token.token_type,
        expires_at: token.expires_at.to_string(),
        issued_at: token.issued_at.to_string(),
        lifetime_seconds: token.lifetime_seconds,
    };
    let data = render_keys(spec, &fields)?;
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = spec.annotations.clone();
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), token.expires_at.to_string());
    annotations.insert(ISSUED_AT_ANNOTATION.into(), token.issued_at.to_string());
    if let Some(nonce) = refresh_handled {
        annotations.insert(REFRESH_HANDLED_ANNOTATION.into(), nonce.to_string());
    }
    annotations.insert(FINGERPRINT_ANNOTATION.into(), token.fingerprint());
    if let Some(inputs) = inputs {
        annotations.insert(INPUTS_ANNOTATION.into(), inputs.to_string());
    }
    annotations.insert(
        SETTINGS_ANNOTATION.into(),
        crate::digest::target_settings(spec),
    );
    Ok(DesiredTarget {
        secret_type: secret_type(spec).to_string(),
        labels,
        annotations,
        data,
    })
}

/// The annotations the operator itself puts on a target, carried to its copies.
const OPERATOR_ANNOTATIONS: [&str; 4] = [
    EXPIRES_AT_ANNOTATION,
    ISSUED_AT_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    SETTINGS_ANNOTATION,
];

/// A copy of the target Secret for another namespace (spec.delivery), made only from a target
/// this resource owns and whose type and keys are what `spec` renders: a Secret someone else
/// put at the target's name, or changed by hand, is never carried out of its namespace. Labels
/// and annotations come from `spec` (plus the operator's own annotations and where the copy came
/// from), not from the live object; no owner reference (they cannot cross namespaces).
/// `source`: the resource's namespace, name and UID.
pub fn copy_of(
    target: &k8s_openapi::api::core::v1::Secret,
    spec: &TargetSpec,
    namespace: &str,
    name: &str,
    source: (&str, &str, &str),
    resource_version: Option<String>,
) -> Result<k8s_openapi::api::core::v1::Secret, TargetError> {
    use crate::api::{DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL};
    let (source_namespace, source_name, uid) = source;
    let owned = target
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid);
    if uid.is_empty() || !owned {
        return Err(TargetError::TargetNotOwned);
    }
    let actual_type = target.type_.as_deref().unwrap_or("Opaque");
    if actual_type != secret_type(spec) || !ALLOWED_TYPES.contains(&actual_type) {
        return Err(TargetError::TargetChanged(
            "its type differs from spec.target.type",
        ));
    }
    let data = target.data.clone().unwrap_or_default();
    if !data.keys().map(String::as_str).eq(rendered_key_names(spec)) {
        return Err(TargetError::TargetChanged(
            "its keys differ from spec.target's",
        ));
    }
    let kept = target.metadata.annotations.as_ref();
    if kept.is_none_or(|a| !a.contains_key(FINGERPRINT_ANNOTATION)) {
        return Err(TargetError::TargetChanged("it holds no token"));
    }
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(DELIVERED_FROM_UID_LABEL.into(), uid.into());
    let mut annotations = spec.annotations.clone();
    for key in OPERATOR_ANNOTATIONS {
        if let Some(value) = kept.and_then(|a| a.get(key)) {
            annotations.insert(key.into(), value.clone());
        }
    }
    annotations.insert(
        DELIVERED_FROM_ANNOTATION.into(),
        format!("{source_namespace}/{source_name}"),
    );
    Ok(k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            resource_version,
            ..Default::default()
        },
        type_: Some(actual_type.into()),
        data: Some(data),
        ..Default::default()
    })
}

/// What the operator can tell about an existing target Secret from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTarget {
    pub fingerprint: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub issued_at: Option<Timestamp>,
    pub settings: Option<String>,
    pub refresh_handled: Option<String>,
    pub inputs: Option<String>,
}

impl ObservedTarget {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        ObservedTarget {
            fingerprint: annotations.get(FINGERPRINT_ANNOTATION).cloned(),
            expires_at: annotations
                .get(EXPIRES_AT_ANNOTATION)
                .and_then(|s| s.parse().ok()),
            issued_at: annotations
                .get(ISSUED_AT_ANNOTATION)
                .and_then(|s| s.parse().ok()),
            settings: annotations.get(SETTINGS_ANNOTATION).cloned(),
            refresh_handled: annotations.get(REFRESH_HANDLED_ANNOTATION).cloned(),
            inputs: annotations.get(INPUTS_ANNOTATION).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{LifetimeSource, RefreshOutcome};
    use secrecy::SecretString;

    fn token() -> IssuedToken {
        IssuedToken {
            access_token: SecretString::from("tok-123"),
            token_type: "bearer".into(),
            issued_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            expires_at: "2026-01-01T01:00:00Z".parse().unwrap(),
            lifetime_seconds: 3600,
            lifetime_source: LifetimeSource::ExpiresIn,
            lifetime_capped_from: None,
            refresh: RefreshOutcome::None,
        }
    }

    #[test]
    fn targets_cannot_become_something_else() {
        let mut spec = TargetSpec {
            secret_name: "t".into(),
            ..TargetSpec::default()
        };
        for allowed in ALLOWED_TYPES {
            spec.secret_type = Some(allowed.into());
            assert!(validate(&spec).is_ok(), "{allowed}");
        }
        for refused in [
            "kubernetes.io/service-account-token",
            "bootstrap.kubernetes.io/token",
            "kubernetes.io/dockercfg",
            "example.com/anything",
            "",
        ] {
            spec.secret_type = Some(refused.into());
            assert!(
                matches!(validate(&spec), Err(TargetError::ForbiddenType(_))),
                "{refused}"
            );
        }
        spec.secret_type = None;
        for reserved in [
            "tokenrotator.dev/credentials",
            "kubernetes.io/service-account.name",
            "node-role.kubernetes.io/control-plane",
            "k8s.io/x",
            "sub.k8s.io/x",
            "x.tokenrotator.dev/y",
        ] {
            assert!(is_reserved_key(reserved), "{reserved}");
            spec.labels = [(reserved.to_string(), "true".to_string())].into();
            let err = validate(&spec).unwrap_err().to_string();
            assert!(
                err.contains("spec.target.labels") && err.contains("reserved"),
                "{err}"
            );
            spec.labels.clear();
            spec.annotations = [(reserved.to_string(), "v".to_string())].into();
            let err = validate(&spec).unwrap_err().to_string();
            assert!(err.contains("spec.target.annotations"), "{err}");
            spec.annotations.clear();
        }
        for free in [
            "app.kubernetes.io/name",
            "team",
            "example.com/owner",
            "notkubernetes.io/x",
            "kubernetes.io.example.com/x",
        ] {
            assert!(!is_reserved_key(free), "{free}");
        }
    }

    #[test]
    fn default_keys_and_annotations() {
        let d = desired(&TargetSpec::default(), &token(), None, None).unwrap();
        assert_eq!(d.data["access_token"], b"tok-123");
        assert_eq!(d.data["token_type"], b"bearer");
        assert_eq!(d.data["expires_at"], b"2026-01-01T01:00:00Z");
        assert_eq!(d.annotations[EXPIRES_AT_ANNOTATION], "2026-01-01T01:00:00Z");
        assert_eq!(d.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(d.secret_type, "Opaque");
    }

    #[test]
    fn templates_render_token_fields_only() {
        let spec = TargetSpec {
            template: BTreeMap::from([
                ("Authorization".into(), "Bearer {{ access_token }}".into()),
                ("ttl".into(), "{{ lifetime_seconds }}".into()),
                ("nothing".into(), "{{ password }}{{ client_secret }}".into()),
            ]),
            ..TargetSpec::default()
        };
        let d = desired(&spec, &token(), None, None).unwrap();
        assert_eq!(d.data["Authorization"], b"Bearer tok-123");
        assert_eq!(d.data["ttl"], b"3600");
        assert_eq!(d.data["nothing"], b"");
        assert!(!d.data.contains_key("access_token"));
    }

    #[test]
    fn bad_templates_and_keys_are_reported_by_key() {
        let spec = TargetSpec {
            template: BTreeMap::from([("k".into(), "{{ access_token ".into())]),
            ..TargetSpec::default()
        };
        assert!(matches!(validate(&spec), Err(TargetError::Template { key, .. }) if key == "k"));
        let spec = TargetSpec {
            template: BTreeMap::from([("bad key/".into(), "x".into())]),
            ..TargetSpec::default()
        };
        assert_eq!(
            validate(&spec),
            Err(TargetError::InvalidKey("bad key/".into()))
        );
    }

    #[test]
    fn a_template_that_needs_a_real_token_shape_fails_before_fetching() {
        // Works with a one-letter placeholder, fails with anything JWT-shaped.
        let spec = TargetSpec {
            template: BTreeMap::from([(
                "k".into(),
                "{% if access_token|length > 20 %}{{ access_token|int }}{% endif %}".into(),
            )]),
            ..TargetSpec::default()
        };
        assert!(matches!(validate(&spec), Err(TargetError::Template { key, .. }) if key == "k"));
    }

    #[test]
    fn every_allowed_filter_exists() {
        for filter in crate::template::allowed_filters() {
            let spec = TargetSpec {
                template: BTreeMap::from([(
                    "k".into(),
                    format!("{{{{ token_type | {filter} }}}}"),
                )]),
                ..TargetSpec::default()
            };
            let result = validate(&spec);
            assert!(
                !matches!(&result, Err(TargetError::Template { reason, .. }) if reason.contains("unknown filter")),
                "{filter}: {result:?}"
            );
        }
    }

    #[test]
    fn label_and_annotation_keys_are_checked() {
        let ok = TargetSpec {
            labels: BTreeMap::from([("example.com/team".into(), "a-b".into())]),
            annotations: BTreeMap::from([("note".into(), "anything at all / ok".into())]),
            ..TargetSpec::default()
        };
        assert_eq!(validate(&ok), Ok(()));
        for (labels, annotations) in [
            (
                BTreeMap::from([("bad key".into(), "v".into())]),
                BTreeMap::new(),
            ),
            (BTreeMap::from([("k".into(), "-v".into())]), BTreeMap::new()),
            (
                BTreeMap::from([("k".into(), "v".repeat(64))]),
                BTreeMap::new(),
            ),
            (
                BTreeMap::new(),
                BTreeMap::from([("UPPER.com/x".into(), "v".into())]),
            ),
            (BTreeMap::new(), BTreeMap::from([("/x".into(), "v".into())])),
        ] {
            let spec = TargetSpec {
                labels,
                annotations,
                ..TargetSpec::default()
            };
            assert!(validate(&spec).is_err(), "{spec:?}");
        }
    }

    /// The target as the operator writes it for `spec`, owned by `uid`.
    fn written_target(spec: &TargetSpec, uid: &str) -> k8s_openapi::api::core::v1::Secret {
        let desired = desired(spec, &token(), Some("nonce"), Some("k1:sealed")).unwrap();
        k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(spec.secret_name.clone()),
                labels: Some(desired.labels),
                annotations: Some(desired.annotations),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: uid.into(),
                        kind: "ProviderCredential".into(),
                        name: "pc".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            type_: Some(desired.secret_type),
            data: Some(
                desired
                    .data
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_is_made_only_of_an_owned_target_as_rendered() {
        let spec = TargetSpec {
            secret_name: "t".into(),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            ..TargetSpec::default()
        };
        let copy = |target: &k8s_openapi::api::core::v1::Secret| {
            copy_of(target, &spec, "dest", "t", ("src", "pc", "uid-1"), None)
        };
        let mut target = written_target(&spec, "uid-1");
        let made = copy(&target).unwrap();
        assert_eq!(made.data, target.data);
        assert_eq!(made.type_.as_deref(), Some("Opaque"));
        let annotations = made.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["tokenrotator.dev/delivered-from"], "src/pc");
        assert!(annotations.contains_key(FINGERPRINT_ANNOTATION));
        assert!(!annotations.contains_key(REFRESH_HANDLED_ANNOTATION));
        // The inputs digest stays with the target: it concerns its resource only.
        assert!(
            target
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(INPUTS_ANNOTATION)
        );
        assert!(!annotations.contains_key(INPUTS_ANNOTATION));
        // Labels and annotations added to the live target by hand do not travel.
        target
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tokenrotator.dev/credentials".into(), "true".into());
        target
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("added".into(), "by hand".into());
        let made = copy(&target).unwrap();
        let labels = made.metadata.labels.unwrap();
        assert!(!labels.contains_key("tokenrotator.dev/credentials"));
        assert_eq!(labels["team"], "a");
        assert!(!made.metadata.annotations.unwrap().contains_key("added"));

        // Someone else's Secret at the target's name: another resource's target, or one
        // without owner.
        let theirs = written_target(&spec, "uid-2");
        assert_eq!(copy(&theirs), Err(TargetError::TargetNotOwned));
        let mut unowned = written_target(&spec, "uid-1");
        unowned.metadata.owner_references = None;
        assert_eq!(copy(&unowned), Err(TargetError::TargetNotOwned));
        assert_eq!(
            copy_of(&target, &spec, "dest", "t", ("src", "pc", ""), None),
            Err(TargetError::TargetNotOwned)
        );
        // Changed by hand: a key added or removed, another type, no token.
        let mut extra = written_target(&spec, "uid-1");
        extra
            .data
            .as_mut()
            .unwrap()
            .insert("stolen".into(), k8s_openapi::ByteString(b"x".to_vec()));
        assert!(matches!(copy(&extra), Err(TargetError::TargetChanged(_))));
        let mut fewer = written_target(&spec, "uid-1");
        fewer.data.as_mut().unwrap().remove("token_type");
        assert!(matches!(copy(&fewer), Err(TargetError::TargetChanged(_))));
        let mut retyped = written_target(&spec, "uid-1");
        retyped.type_ = Some("kubernetes.io/service-account-token".into());
        assert!(matches!(copy(&retyped), Err(TargetError::TargetChanged(_))));
        let mut tokenless = written_target(&spec, "uid-1");
        tokenless
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(FINGERPRINT_ANNOTATION);
        assert!(matches!(
            copy(&tokenless),
            Err(TargetError::TargetChanged(_))
        ));
        // A templated target's keys are the template's.
        let templated = TargetSpec {
            template: BTreeMap::from([("header".into(), "Bearer {{ access_token }}".into())]),
            ..spec.clone()
        };
        let target = written_target(&templated, "uid-1");
        assert!(copy_of(&target, &templated, "d", "t", ("s", "p", "uid-1"), None).is_ok());
        assert!(matches!(
            copy_of(&target, &spec, "d", "t", ("s", "p", "uid-1"), None),
            Err(TargetError::TargetChanged(_))
        ));
    }
}

//! The apiserver's audit log, as evidence of what a client really did: the control plane can
//! record every request made by a ServiceAccount (outside kube-system) at `Metadata` level,
//! and [`compare`] holds what one client did against the RBAC rules it was granted.
//!
//! Set `TESTKIT_AUDIT_DIR` and each control plane started in the process writes its log there
//! (`<dir>/<pid>-<n>.jsonl`), one JSON event per line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

/// Where control planes write their audit logs, when set.
pub const AUDIT_DIR_ENV: &str = "TESTKIT_AUDIT_DIR";

/// ServiceAccounts' requests (the operator under test runs as one), once each, when answered;
/// the control plane's own controllers and every other user are left out to keep it small.
pub const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"#;

pub(crate) fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(AUDIT_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// One kind of request: a verb on a resource (`secrets`, `providercredentials/status`) of an
/// API group (`""` for the core group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub api_group: String,
    pub resource: String,
    pub verb: String,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

/// Reads `VERB GROUP/RESOURCE[/SUBRESOURCE]`, or `VERB RESOURCE[/SUBRESOURCE]` for the core
/// group (a group has a dot; a resource never does).
pub fn parse_access(text: &str) -> Option<Access> {
    let (verb, path) = text.trim().split_once(' ')?;
    let (api_group, resource) = match path.trim().split_once('/') {
        Some((group, rest)) if group.contains('.') => (group, rest),
        _ => ("", path.trim()),
    };
    (!verb.is_empty() && !resource.is_empty()).then(|| Access {
        api_group: api_group.into(),
        resource: resource.into(),
        verb: verb.into(),
    })
}

/// A request as the audit log recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited {
    /// The same for both stages a watch is logged at (started, complete).
    pub id: String,
    pub user: String,
    pub user_agent: String,
    pub access: Access,
    /// The authorizer's decision (`authorization.k8s.io/decision`): false when RBAC refused it.
    pub allowed: bool,
}

/// Parses one audit log line; `None` for lines that are not a resource request (non-resource
/// URLs such as `/api`).
pub fn parse_event(line: &str) -> Option<Audited> {
    let event: Value = serde_json::from_str(line).ok()?;
    let object = event.get("objectRef")?;
    let mut resource = object["resource"].as_str()?.to_string();
    if let Some(sub) = object["subresource"].as_str() {
        resource = format!("{resource}/{sub}");
    }
    let decision = event["annotations"]["authorization.k8s.io/decision"].as_str();
    Some(Audited {
        id: event["auditID"].as_str()?.to_string(),
        user: event["user"]["username"].as_str()?.to_string(),
        user_agent: event["userAgent"].as_str().unwrap_or_default().to_string(),
        access: Access {
            api_group: object["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            verb: event["verb"].as_str()?.to_string(),
        },
        allowed: decision == Some("allow"),
    })
}

/// Every access the rules grant, one per verb, resource and group (`resourceNames` narrow a
/// grant but still grant the verb). Wildcards are kept as `*` and so never count as used.
pub fn granted(rules: &[PolicyRule]) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        for group in groups {
            for resource in resources {
                for verb in &rule.verbs {
                    out.insert(Access {
                        api_group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.clone(),
                    });
                }
            }
        }
    }
    out
}

/// What one client did, held against what it was granted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// How often each access was allowed.
    pub used: BTreeMap<Access, u64>,
    /// Granted but never used: more than the client needs.
    pub unused: BTreeSet<Access>,
    /// Refused, and not in the grant at all: the client needs something it was not given.
    pub missing: BTreeMap<Access, u64>,
    /// Refused although the full grant has it: a test narrowed the grant on purpose.
    pub refused_by_narrowed_grants: BTreeMap<Access, u64>,
}

impl Comparison {
    pub fn is_exact(&self) -> bool {
        self.unused.is_empty() && self.missing.is_empty()
    }
}

/// Holds the requests `of_client` selects against `grant`.
pub fn compare(
    grant: &BTreeSet<Access>,
    requests: impl IntoIterator<Item = Audited>,
    of_client: impl Fn(&Audited) -> bool,
) -> Comparison {
    let mut cmp = Comparison::default();
    let mut seen = std::collections::HashSet::new();
    for request in requests.into_iter().filter(|r| of_client(r)) {
        if !seen.insert(request.id.clone()) {
            continue;
        }
        let tally = if request.allowed {
            &mut cmp.used
        } else if grant.contains(&request.access) {
            &mut cmp.refused_by_narrowed_grants
        } else {
            &mut cmp.missing
        };
        *tally.entry(request.access).or_default() += 1;
    }
    cmp.unused = grant
        .iter()
        .filter(|a| !cmp.used.contains_key(*a))
        .cloned()
        .collect();
    cmp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(group: &str, resource: &str, verb: &str) -> Access {
        Access {
            api_group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        }
    }

    fn event(stage: &str, verb: &str, resource: &str, sub: Option<&str>, decision: &str) -> String {
        let id = format!("{verb}-{resource}");
        let mut object =
            serde_json::json!({"resource": resource, "namespace": "ns", "apiVersion": "v1"});
        if let Some(sub) = sub {
            object["subresource"] = sub.into();
        }
        serde_json::json!({
            "kind": "Event", "auditID": id, "stage": stage, "verb": verb,
            "user": {"username": "system:serviceaccount:ns:token-rotator"},
            "userAgent": "token-rotator/0.1.0",
            "objectRef": object,
            "annotations": {"authorization.k8s.io/decision": decision},
        })
        .to_string()
    }

    #[test]
    fn parses_resource_requests_and_skips_the_rest() {
        let parsed = parse_event(&event(
            "ResponseComplete",
            "patch",
            "providercredentials",
            Some("status"),
            "allow",
        ))
        .unwrap();
        assert_eq!(
            parsed.access,
            access("", "providercredentials/status", "patch")
        );
        assert_eq!(parsed.user, "system:serviceaccount:ns:token-rotator");
        assert_eq!(parsed.user_agent, "token-rotator/0.1.0");
        assert!(parsed.allowed);
        let refused = parse_event(&event("ResponseComplete", "get", "secrets", None, "forbid"));
        assert!(!refused.unwrap().allowed);
        let non_resource = serde_json::json!({"stage": "ResponseComplete", "verb": "get", "requestURI": "/api", "user": {"username": "u"}});
        assert_eq!(parse_event(&non_resource.to_string()), None);
        assert_eq!(parse_event("not json"), None);
    }

    #[test]
    fn accesses_parse_with_and_without_a_group() {
        assert_eq!(
            parse_access("update tokenrotator.dev/providercredentials/finalizers"),
            Some(access(
                "tokenrotator.dev",
                "providercredentials/finalizers",
                "update"
            ))
        );
        assert_eq!(
            parse_access("get secrets"),
            Some(access("", "secrets", "get"))
        );
        assert_eq!(
            parse_access("patch pods/status"),
            Some(access("", "pods/status", "patch"))
        );
        assert_eq!(parse_access("secrets"), None);
        assert_eq!(parse_access("get "), None);
    }

    #[test]
    fn grants_expand_per_group_resource_and_verb() {
        let rule = PolicyRule {
            api_groups: Some(vec!["".into(), "events.k8s.io".into()]),
            resources: Some(vec!["events".into()]),
            verbs: vec!["create".into(), "patch".into()],
            ..PolicyRule::default()
        };
        let grant = granted(&[rule]);
        assert_eq!(grant.len(), 4);
        assert!(grant.contains(&access("events.k8s.io", "events", "patch")));
    }

    #[test]
    fn comparison_finds_unused_grants_and_missing_ones() {
        let grant: BTreeSet<Access> = [
            access("", "secrets", "get"),
            access("", "secrets", "delete"),
            access("", "secrets", "list"),
        ]
        .into();
        let ids = std::cell::Cell::new(0);
        let of = |a: Access, allowed: bool| Audited {
            id: {
                ids.set(ids.get() + 1);
                ids.get().to_string()
            },
            user: "system:serviceaccount:ns:token-rotator".into(),
            user_agent: "token-rotator/0.1.0".into(),
            access: a,
            allowed,
        };
        let mut stranger = of(access("", "secrets", "delete"), true);
        stranger.user_agent = "kubectl".into();
        let watch = of(access("", "secrets", "list"), true);
        let requests = vec![
            // A watch, logged when it started and when it ended: one request.
            watch.clone(),
            watch,
            of(access("", "secrets", "get"), true),
            of(access("", "secrets", "get"), true),
            of(access("", "secrets", "list"), false),
            of(access("", "configmaps", "get"), false),
            stranger,
        ];
        let cmp = compare(&grant, requests, |r| {
            r.user_agent.starts_with("token-rotator/")
        });
        assert_eq!(
            cmp.used,
            [
                (access("", "secrets", "get"), 2),
                (access("", "secrets", "list"), 1)
            ]
            .into()
        );
        assert_eq!(cmp.unused, [access("", "secrets", "delete")].into());
        assert_eq!(cmp.missing, [(access("", "configmaps", "get"), 1)].into());
        assert_eq!(
            cmp.refused_by_narrowed_grants,
            [(access("", "secrets", "list"), 1)].into()
        );
        assert!(!cmp.is_exact());
    }
}

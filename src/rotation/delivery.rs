//! spec.delivery, decided: which namespaces receive a copy of the target Secret, whether each
//! has consented, which copies are current, which to write and which to remove. Pure; the
//! controller (controller/steps/delivery.rs) gathers what its watches show and does the writes;
//! [`outcome`] (or [`gated`], [`withdrawn`]) turns what it did into the Delivered condition,
//! `status.deliveries`, the Events and the requeue, which [`super::merge`] applies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::core::{Selector, SelectorExt};

use super::merge::{ConditionChange, EventNote, Feature, FeatureOutcome, Records};
use crate::api::{DELIVERY_FINALIZER, DeliverySpec, DeliveryStatus, TokenDeliveryGrantSpec};
use crate::conditions;

/// At most this many destinations per resource: each costs a write per rotation. The rest are
/// refused (TooManyDestinations), never written.
pub const MAX_DESTINATIONS: usize = 256;
/// At most this many destinations are listed in status (refused ones first); the condition
/// counts them all.
pub const MAX_LISTED: usize = 64;

/// The reasons of a destination's status entry and of the Delivered condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Delivered,
    NotGranted,
    SameNamespace,
    SecretNotOwned,
    TooManyDestinations,
    WriteFailed,
    /// This resource's own rotation is blocked: nothing is copied from its target meanwhile.
    SourceBlocked,
    /// The condition's, for the whole of spec.delivery.
    AllDelivered,
    DeliveryDisabled,
    InvalidSelector,
    FinalizerMissing,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Delivered,
        Reason::NotGranted,
        Reason::SameNamespace,
        Reason::SecretNotOwned,
        Reason::TooManyDestinations,
        Reason::WriteFailed,
        Reason::SourceBlocked,
        Reason::AllDelivered,
        Reason::DeliveryDisabled,
        Reason::InvalidSelector,
        Reason::FinalizerMissing,
    ];

    /// The reason as status.deliveries, the condition and Events show it.
    pub fn reason(self) -> &'static str {
        match self {
            Reason::Delivered => "Delivered",
            Reason::NotGranted => "NotGranted",
            Reason::SameNamespace => "SameNamespace",
            Reason::SecretNotOwned => "SecretNotOwned",
            Reason::TooManyDestinations => "TooManyDestinations",
            Reason::WriteFailed => "WriteFailed",
            Reason::SourceBlocked => "SourceBlocked",
            Reason::AllDelivered => "AllDelivered",
            Reason::DeliveryDisabled => "DeliveryDisabled",
            Reason::InvalidSelector => "InvalidSelector",
            Reason::FinalizerMissing => "FinalizerMissing",
        }
    }

    /// The reason a status entry shows, read back.
    pub fn of(reason: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.reason() == reason)
    }
}

/// Why spec.delivery.namespaceSelector cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "at most {} requirements of at most {} values each",
        MAX_SELECTOR_REQUIREMENTS,
        MAX_SELECTOR_VALUES
    )]
    TooLarge,
    /// What the label selector parser said.
    #[error("{0}")]
    Invalid(String),
}

/// Why a namespace has not consented to a copy (the NotGranted message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum NoConsent {
    #[error(
        "namespace {namespace} does not exist or has no TokenDeliveryGrant naming {source_namespace}/{source_name}; someone who may create one there must consent"
    )]
    NoGrant {
        namespace: String,
        source_namespace: String,
        source_name: String,
    },
    #[error(
        "TokenDeliveryGrant {namespace}/{grant} does not list Secret {secret_name} in spec.secretNames"
    )]
    SecretNotListed {
        namespace: String,
        grant: String,
        secret_name: String,
    },
}

/// The ProviderCredential that delivers.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// A namespace as the watch shows it.
#[derive(Clone, Copy, Debug)]
pub struct NamespaceSeen<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A TokenDeliveryGrant as the watch shows it.
#[derive(Clone, Copy, Debug)]
pub struct GrantSeen<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a TokenDeliveryGrantSpec,
}

/// A Secret managed by the operator at a destination, as the watch of managed Secrets shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occupant {
    /// A copy this resource wrote: which token and settings it holds, which object it is.
    OwnCopy { stamp: u64, copy: Existing },
    /// Anything else the operator manages there (another resource's copy or target).
    Other,
}

/// One existing copy: its identity (deletes are conditional on it) and version (replaces are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub uid: String,
    pub resource_version: String,
}

/// What to do about one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It holds what the target holds.
    Current,
    /// Write it: create (`None`) or replace that copy.
    Write {
        replace: Option<Existing>,
    },
    Refused {
        reason: Reason,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub namespace: String,
    pub secret_name: String,
    pub verdict: Verdict,
}

/// A copy of this resource's that must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decisions {
    pub destinations: Vec<Destination>,
    pub removals: Vec<Removal>,
}

/// What the decision is made from.
pub struct Inputs<'a> {
    pub source: Source<'a>,
    pub spec: &'a DeliverySpec,
    /// The copies' name (spec.delivery.secretName or spec.target.secretName).
    pub secret_name: &'a str,
    /// Every namespace.
    pub namespaces: &'a [NamespaceSeen<'a>],
    /// Every TokenDeliveryGrant.
    pub grants: &'a [GrantSeen<'a>],
    /// Managed Secrets at (namespace, name): at least every destination and every copy of
    /// this resource.
    pub occupants: &'a BTreeMap<(String, String), Occupant>,
    /// The stamp of what the target holds (token and settings); `None`: no target yet.
    pub stamp: Option<u64>,
    /// Why this resource's rotation is blocked, if it is (a plan's `Blocked` reason): no copy
    /// is written then. The Secret at the target's name may be someone else's
    /// (`TargetConflict`), and copying it would carry another resource's token out.
    pub blocked: Option<conditions::Reason>,
}

/// At most this many requirements in spec.delivery.namespaceSelector, and values in one: it is
/// matched against every namespace on every decision.
pub const MAX_SELECTOR_REQUIREMENTS: usize = 16;
pub const MAX_SELECTOR_VALUES: usize = 64;

/// The label selector as a matcher; an invalid one (an unknown operator, too large) is named.
pub fn selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
    let labels = selector.match_labels.as_ref().map_or(0, |m| m.len());
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if labels + expressions.len() > MAX_SELECTOR_REQUIREMENTS
        || expressions.iter().any(|e| {
            e.values
                .as_ref()
                .is_some_and(|v| v.len() > MAX_SELECTOR_VALUES)
        })
    {
        return Err(SelectorError::TooLarge);
    }
    Selector::try_from(selector.clone()).map_err(|e| SelectorError::Invalid(e.to_string()))
}

/// The namespaces spec.delivery chooses, each once: by name (`true`), and by label. `Err`:
/// the selector is invalid, and none is chosen by label.
pub fn selected<'a>(
    spec: &'a DeliverySpec,
    own_namespace: &str,
    namespaces: &[NamespaceSeen<'a>],
) -> (BTreeMap<String, bool>, Result<(), SelectorError>) {
    let mut chosen: BTreeMap<String, bool> = spec
        .namespaces
        .iter()
        .map(|n| (n.0.clone(), true))
        .collect();
    let matcher = spec.namespace_selector.as_ref().map(selector).transpose();
    if let Ok(Some(matcher)) = &matcher {
        for ns in namespaces {
            if ns.name != own_namespace && matcher.matches(ns.labels) {
                chosen.entry(ns.name.to_string()).or_insert(false);
            }
        }
    }
    (chosen, matcher.map(|_| ()))
}

/// Decides every destination and removal.
///
/// A namespace chosen by label that has not consented is no destination at all: it is not
/// listed, so a ProviderCredential's status cannot be used to learn which namespaces exist or
/// how they are labelled. A namespace named explicitly that does not exist reads the same as
/// one that has not consented, for the same reason.
pub fn decide(inputs: &Inputs<'_>) -> (Decisions, Result<(), SelectorError>) {
    let Inputs {
        source,
        secret_name,
        ..
    } = *inputs;
    let (mut chosen, selector_ok) = selected(inputs.spec, source.namespace, inputs.namespaces);
    let own_copies: BTreeSet<&str> = inputs
        .occupants
        .iter()
        .filter(|((_, name), o)| name == secret_name && matches!(o, Occupant::OwnCopy { .. }))
        .map(|((ns, _), _)| ns.as_str())
        .collect();
    if selector_ok.is_err() {
        // A typo in the selector must not remove the copies it chose: they stay chosen.
        for ns in &own_copies {
            chosen.entry(ns.to_string()).or_insert(false);
        }
    }
    let mut by_namespace: BTreeMap<&str, Vec<&GrantSeen<'_>>> = BTreeMap::new();
    for grant in inputs.grants {
        by_namespace.entry(grant.namespace).or_default().push(grant);
    }
    let mut destinations = Vec::with_capacity(chosen.len());
    let mut consenting: Vec<String> = Vec::new();
    for (namespace, named) in chosen {
        let refusal = if namespace == source.namespace {
            refused(
                Reason::SameNamespace,
                format!(
                    "{namespace} is this ProviderCredential's own namespace: its target Secret is already there"
                ),
            )
        } else {
            let grants = by_namespace
                .get(namespace.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            match consent(grants, &namespace, source, secret_name) {
                Ok(()) => {
                    consenting.push(namespace);
                    continue;
                }
                Err(why) if named => refused(Reason::NotGranted, why.to_string()),
                // Chosen by label without consent: not a destination.
                Err(_) => continue,
            }
        };
        destinations.push(Destination {
            namespace,
            secret_name: secret_name.to_string(),
            verdict: refusal,
        });
    }
    // Within the bound, the destinations that already hold a copy come first: a namespace
    // created later never pushes an existing copy out.
    consenting.sort_by_key(|ns| (!own_copies.contains(ns.as_str()), ns.clone()));
    for (i, namespace) in consenting.into_iter().enumerate() {
        let verdict = if i >= MAX_DESTINATIONS {
            refused(
                Reason::TooManyDestinations,
                format!("more than {MAX_DESTINATIONS} namespaces consent; narrow spec.delivery"),
            )
        } else {
            occupied(inputs, &namespace)
        };
        destinations.push(Destination {
            namespace,
            secret_name: secret_name.to_string(),
            verdict,
        });
    }
    destinations.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    // A destination that still consents keeps its copy while the source is blocked: the
    // copy is not refreshed, but nothing the destination relies on is taken away.
    let kept: BTreeSet<(&str, &str)> = destinations
        .iter()
        .filter(|d| match &d.verdict {
            Verdict::Refused { reason, .. } => *reason == Reason::SourceBlocked,
            _ => true,
        })
        .map(|d| (d.namespace.as_str(), d.secret_name.as_str()))
        .collect();
    let removals = inputs
        .occupants
        .iter()
        .filter_map(|((namespace, name), occupant)| match occupant {
            Occupant::OwnCopy { copy, .. }
                if !kept.contains(&(namespace.as_str(), name.as_str())) =>
            {
                Some(Removal {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    uid: copy.uid.clone(),
                })
            }
            _ => None,
        })
        .collect();
    (
        Decisions {
            destinations,
            removals,
        },
        selector_ok,
    )
}

/// Every copy of this resource goes (spec.delivery removed, or the resource deleted).
pub fn remove_all(occupants: &BTreeMap<(String, String), Occupant>) -> Vec<Removal> {
    occupants
        .iter()
        .filter_map(|((namespace, name), occupant)| match occupant {
            Occupant::OwnCopy { copy, .. } => Some(Removal {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: copy.uid.clone(),
            }),
            Occupant::Other => None,
        })
        .collect()
}

fn refused(reason: Reason, message: String) -> Verdict {
    Verdict::Refused { reason, message }
}

/// Whether a TokenDeliveryGrant in `namespace` lets `source` write `secret_name` there; if not,
/// what is missing.
fn consent(
    grants: &[&GrantSeen<'_>],
    namespace: &str,
    source: Source<'_>,
    secret_name: &str,
) -> Result<(), NoConsent> {
    let naming: Vec<&GrantSeen<'_>> = grants
        .iter()
        .copied()
        .filter(|g| {
            g.namespace == namespace
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.namespace.0 == source.namespace && f.name == source.name)
        })
        .collect();
    if naming.iter().any(|g| {
        g.spec.secret_names.is_empty() || g.spec.secret_names.iter().any(|n| n.0 == secret_name)
    }) {
        return Ok(());
    }
    match naming.first() {
        None => Err(NoConsent::NoGrant {
            namespace: namespace.into(),
            source_namespace: source.namespace.into(),
            source_name: source.name.into(),
        }),
        Some(grant) => Err(NoConsent::SecretNotListed {
            namespace: namespace.into(),
            grant: grant.name.into(),
            secret_name: secret_name.into(),
        }),
    }
}

/// A consenting destination: what sits at the copy's place decides.
fn occupied(inputs: &Inputs<'_>, namespace: &str) -> Verdict {
    let key = (namespace.to_string(), inputs.secret_name.to_string());
    match inputs.occupants.get(&key) {
        None => match inputs.blocked {
            Some(blocked) => source_blocked(blocked),
            None => Verdict::Write { replace: None },
        },
        Some(Occupant::OwnCopy { stamp, copy }) => {
            if Some(*stamp) == inputs.stamp {
                Verdict::Current
            } else if let Some(blocked) = inputs.blocked {
                source_blocked(blocked)
            } else {
                Verdict::Write {
                    replace: Some(copy.clone()),
                }
            }
        }
        Some(Occupant::Other) => refused(
            Reason::SecretNotOwned,
            not_owned(namespace, inputs.secret_name),
        ),
    }
}

fn source_blocked(blocked: conditions::Reason) -> Verdict {
    refused(
        Reason::SourceBlocked,
        format!(
            "no copy is written while this resource's rotation is blocked ({}); the Ready condition says how to fix it",
            blocked.reason()
        ),
    )
}

/// The message for a Secret at the copy's place that is not this resource's copy.
pub fn not_owned(namespace: &str, secret_name: &str) -> String {
    format!(
        "Secret {namespace}/{secret_name} exists and is not this ProviderCredential's copy; it is never overwritten (choose another spec.delivery.secretName)"
    )
}

/// The stamp of a target or copy: which token (its fingerprint) and which target settings it
/// holds. Equal stamps, equal contents.
pub fn stamp(fingerprint: &str, settings: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (fingerprint, settings).hash(&mut hasher);
    hasher.finish()
}

/// The Delivered condition from the destinations' status: (ok, reason, message).
pub fn condition(statuses: &[DeliveryStatus]) -> (bool, Reason, String) {
    let refused: Vec<&DeliveryStatus> = statuses.iter().filter(|s| !s.delivered).collect();
    match refused.first() {
        None => (
            true,
            Reason::AllDelivered,
            format!(
                "the current token is in {} namespace{}",
                statuses.len(),
                if statuses.len() == 1 { "" } else { "s" }
            ),
        ),
        Some(first) => {
            let shown: Vec<String> = refused
                .iter()
                .take(8)
                .map(|s| format!("{}: {}", s.namespace, s.reason))
                .collect();
            (
                false,
                // A reason this build does not know (written by another version): a failure.
                Reason::of(&first.reason).unwrap_or(Reason::WriteFailed),
                format!(
                    "{} of {} destinations not delivered ({}{}); status.deliveries says why",
                    refused.len(),
                    statuses.len(),
                    shown.join(", "),
                    if refused.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                ),
            )
        }
    }
}

/// The status list: refused destinations first (they need attention), then by namespace; at
/// most [`MAX_LISTED`].
pub fn listed(mut statuses: Vec<DeliveryStatus>) -> Vec<DeliveryStatus> {
    statuses.sort_by(|a, b| (a.delivered, &a.namespace).cmp(&(b.delivered, &b.namespace)));
    statuses.truncate(MAX_LISTED);
    statuses
}

/// How soon a failed write or removal (or a missing finalizer) is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// How soon a reconcile that found the watches still listing looks again.
pub const NOT_LISTED_RETRY: Duration = Duration::from_secs(2);

/// Why no destination is decided this time, though spec.delivery asks for copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The operator runs without --cross-namespace-delivery.
    Disabled,
    /// The finalizer that removes the copies is not on the resource (yet).
    FinalizerMissing,
    /// A watch (namespaces, grants, copies) has not listed everything once.
    NotListed,
}

/// spec.delivery asks for copies that cannot be decided now: the condition says why (and the
/// records go, without the flag), or only a look again soon.
pub fn gated(gate: Gate) -> FeatureOutcome {
    let unchanged = FeatureOutcome::unchanged(Feature::Delivery);
    match gate {
        Gate::Disabled => FeatureOutcome {
            condition: ConditionChange::Set {
                status: false,
                reason: Reason::DeliveryDisabled.reason(),
                message: "the operator runs without --cross-namespace-delivery (chart value crossNamespaceDelivery.enabled)".into(),
            },
            records: Records::Deliveries(Vec::new()),
            ..unchanged
        },
        Gate::FinalizerMissing => FeatureOutcome {
            condition: ConditionChange::Set {
                status: false,
                reason: Reason::FinalizerMissing.reason(),
                message: format!(
                    "no copy is written before the finalizer {DELIVERY_FINALIZER} that removes them is on this resource; the operator log says why it could not be added"
                ),
            },
            requeue: Some(RETRY),
            ..unchanged
        },
        Gate::NotListed => FeatureOutcome {
            requeue: Some(NOT_LISTED_RETRY),
            ..unchanged
        },
    }
}

/// How the removal of every copy (spec.delivery removed) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawal {
    /// Done, or nothing to do (no finalizer, so no copies; or delivery disabled).
    Done,
    /// The copies' watch has not listed them yet.
    NotListed,
    /// A copy, or the finalizer, is still there: tried again.
    Pending,
}

/// spec.delivery removed: the condition and the records go; looked at again until every copy
/// and the finalizer went.
pub fn withdrawn(withdrawal: Withdrawal) -> FeatureOutcome {
    FeatureOutcome {
        condition: ConditionChange::Removed,
        records: Records::Deliveries(Vec::new()),
        requeue: match withdrawal {
            Withdrawal::Done => None,
            Withdrawal::NotListed => Some(NOT_LISTED_RETRY),
            Withdrawal::Pending => Some(RETRY),
        },
        ..FeatureOutcome::unchanged(Feature::Delivery)
    }
}

/// What became of one destination's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Nothing was to be written (its verdict was `Current` or `Refused`).
    NotAttempted,
    /// The first copy there.
    Created,
    /// A stale copy replaced (or removed and created again, its type having changed).
    Replaced,
    /// A Secret that is not this resource's copy took the name meanwhile (AlreadyExists).
    Taken,
    /// The target Secret holds no token to copy yet.
    NoToken,
    /// The copy cannot be made from the target (the message says why).
    Unrenderable(String),
    /// The API server refused or failed: its status code, if any, and a short error.
    Failed { code: Option<u16>, error: String },
}

/// What [`outcome`] is made from.
pub struct Carried<'a> {
    pub decisions: &'a Decisions,
    /// One per destination of `decisions`, in its order.
    pub written: &'a [Written],
    /// A removal of `decisions` failed (it is tried again).
    pub removal_failed: bool,
    /// What [`decide`] said of spec.delivery.namespaceSelector.
    pub selector: &'a Result<(), SelectorError>,
    /// status.deliveries before this reconcile.
    pub previous: &'a [DeliveryStatus],
    /// The copies' name.
    pub secret_name: &'a str,
    pub now: Timestamp,
}

/// The decisions as carried out: `status.deliveries` (a copy still current keeps the time it
/// was written), the Delivered condition, an Event naming the namespaces that received their
/// first copy (a routine rotation's replacements make none: one per rotation would double the
/// Events of a resource for nothing new), and a look again within [`RETRY`] after a failure.
pub fn outcome(c: &Carried<'_>) -> FeatureOutcome {
    let mut statuses = Vec::with_capacity(c.decisions.destinations.len());
    let mut created = Vec::new();
    let mut retry = c.removal_failed;
    let not_written = Written::NotAttempted;
    for (k, destination) in c.decisions.destinations.iter().enumerate() {
        let written = c.written.get(k).unwrap_or(&not_written);
        let entry = destination_status(destination, written, c);
        if matches!(destination.verdict, Verdict::Write { .. }) {
            retry |= entry.reason == Reason::WriteFailed.reason();
            if *written == Written::Created {
                created.push(destination.namespace.clone());
            }
        }
        statuses.push(entry);
    }
    let (status, why, message) = match c.selector {
        Err(e) => (
            false,
            Reason::InvalidSelector,
            format!(
                "spec.delivery.namespaceSelector is invalid ({e}): no namespace is added by label, and copies it chose before are kept"
            ),
        ),
        Ok(()) => condition(&statuses),
    };
    let events = if created.is_empty() {
        Vec::new()
    } else {
        vec![EventNote {
            warning: false,
            reason: Reason::Delivered.reason().into(),
            note: format!(
                "Secret {} created in {}; it follows every rotation",
                c.secret_name,
                created.join(", ")
            ),
            action: "Deliver",
        }]
    };
    FeatureOutcome {
        feature: Feature::Delivery,
        condition: ConditionChange::Set {
            status,
            reason: why.reason(),
            message,
        },
        records: Records::Deliveries(listed(statuses)),
        events,
        requeue: retry.then_some(RETRY),
    }
}

/// One destination's status entry, from its verdict and what became of its write.
fn destination_status(d: &Destination, written: &Written, c: &Carried<'_>) -> DeliveryStatus {
    let status = |delivered: bool, reason: Reason, message: Option<String>| DeliveryStatus {
        namespace: d.namespace.clone(),
        secret_name: d.secret_name.clone(),
        delivered,
        reason: reason.reason().to_string(),
        message,
        delivered_at: None,
    };
    let failed = |message: String| status(false, Reason::WriteFailed, Some(message));
    match (&d.verdict, written) {
        (Verdict::Current, _) => DeliveryStatus {
            delivered_at: c
                .previous
                .iter()
                .find(|p| p.namespace == d.namespace && p.secret_name == d.secret_name)
                .and_then(|p| p.delivered_at.clone()),
            ..status(true, Reason::Delivered, None)
        },
        (Verdict::Refused { reason, message }, _) => status(false, *reason, Some(message.clone())),
        (Verdict::Write { .. }, Written::Created | Written::Replaced) => DeliveryStatus {
            delivered_at: Some(Time(c.now)),
            ..status(true, Reason::Delivered, None)
        },
        (Verdict::Write { .. }, Written::Taken) => status(
            false,
            Reason::SecretNotOwned,
            Some(not_owned(&d.namespace, &d.secret_name)),
        ),
        (Verdict::Write { .. }, Written::NoToken) => {
            failed("the target Secret holds no token yet; retried".into())
        }
        (Verdict::Write { .. }, Written::Unrenderable(message)) => failed(message.clone()),
        (Verdict::Write { .. }, Written::Failed { code, error }) => {
            let remedy = match code {
                Some(403) => {
                    "; the operator may lack permission there, or an admission policy refused it"
                }
                Some(409) => "; it changed meanwhile and is retried",
                _ => "; retried",
            };
            failed(format!("the write failed ({error}){remedy}"))
        }
        // Due, yet not attempted by this reconcile: tried again.
        (Verdict::Write { .. }, Written::NotAttempted) => failed("not written yet; retried".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DeliverySource, NamespaceName, SecretName};

    const SRC: Source<'static> = Source {
        namespace: "platform",
        name: "reltio",
    };

    fn grant(from: &[(&str, &str)], names: &[&str]) -> TokenDeliveryGrantSpec {
        TokenDeliveryGrantSpec {
            from: from
                .iter()
                .map(|(ns, n)| DeliverySource {
                    namespace: NamespaceName(ns.to_string()),
                    name: n.to_string(),
                })
                .collect(),
            secret_names: names.iter().map(|n| SecretName(n.to_string())).collect(),
        }
    }

    fn spec(names: &[&str], selector: Option<serde_json::Value>) -> DeliverySpec {
        DeliverySpec {
            namespaces: names.iter().map(|n| NamespaceName(n.to_string())).collect(),
            namespace_selector: selector.map(|s| serde_json::from_value(s).unwrap()),
            secret_name: None,
        }
    }

    struct World {
        namespaces: Vec<(String, BTreeMap<String, String>)>,
        grants: Vec<(String, String, TokenDeliveryGrantSpec)>,
        occupants: BTreeMap<(String, String), Occupant>,
    }

    impl World {
        fn new(namespaces: &[(&str, &[(&str, &str)])]) -> Self {
            World {
                namespaces: namespaces
                    .iter()
                    .map(|(n, labels)| {
                        (
                            n.to_string(),
                            labels
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        )
                    })
                    .collect(),
                grants: Vec::new(),
                occupants: BTreeMap::new(),
            }
        }

        fn grant(mut self, ns: &str, spec: TokenDeliveryGrantSpec) -> Self {
            self.grants.push((ns.into(), format!("g-{ns}"), spec));
            self
        }

        fn occupant(mut self, ns: &str, name: &str, o: Occupant) -> Self {
            self.occupants.insert((ns.into(), name.into()), o);
            self
        }

        fn decide(&self, spec: &DeliverySpec) -> (Decisions, Result<(), SelectorError>) {
            self.decide_blocked(spec, None)
        }

        fn decide_blocked(
            &self,
            spec: &DeliverySpec,
            blocked: Option<conditions::Reason>,
        ) -> (Decisions, Result<(), SelectorError>) {
            let namespaces: Vec<NamespaceSeen<'_>> = self
                .namespaces
                .iter()
                .map(|(name, labels)| NamespaceSeen { name, labels })
                .collect();
            let grants: Vec<GrantSeen<'_>> = self
                .grants
                .iter()
                .map(|(namespace, name, spec)| GrantSeen {
                    namespace,
                    name,
                    spec,
                })
                .collect();
            decide(&Inputs {
                source: SRC,
                spec,
                secret_name: "token",
                namespaces: &namespaces,
                grants: &grants,
                occupants: &self.occupants,
                stamp: Some(7),
                blocked,
            })
        }
    }

    fn own(stamp: u64, uid: &str) -> Occupant {
        Occupant::OwnCopy {
            stamp,
            copy: Existing {
                uid: uid.into(),
                resource_version: format!("rv-{uid}"),
            },
        }
    }

    fn verdicts(d: &Decisions) -> Vec<(&str, &Verdict)> {
        d.destinations
            .iter()
            .map(|d| (d.namespace.as_str(), &d.verdict))
            .collect()
    }

    /// No wildcard: a new reason does not compile until its wire string is written down.
    #[test]
    fn every_reason_keeps_its_wire_string_and_reads_back() {
        let wire = |r: Reason| match r {
            Reason::Delivered => "Delivered",
            Reason::NotGranted => "NotGranted",
            Reason::SameNamespace => "SameNamespace",
            Reason::SecretNotOwned => "SecretNotOwned",
            Reason::TooManyDestinations => "TooManyDestinations",
            Reason::WriteFailed => "WriteFailed",
            Reason::SourceBlocked => "SourceBlocked",
            Reason::AllDelivered => "AllDelivered",
            Reason::DeliveryDisabled => "DeliveryDisabled",
            Reason::InvalidSelector => "InvalidSelector",
            Reason::FinalizerMissing => "FinalizerMissing",
        };
        let reasons = Reason::ALL.map(Reason::reason);
        assert_eq!(reasons, Reason::ALL.map(wire));
        crate::conditions::tests::assert_unique(&reasons);
        for r in Reason::ALL {
            assert_eq!(Reason::of(r.reason()), Some(r));
        }
        assert_eq!(Reason::of("Unknown"), None);
    }

    fn reason_of_verdict(v: &Verdict) -> &str {
        match v {
            Verdict::Refused { reason, .. } => reason.reason(),
            Verdict::Current => "Current",
            Verdict::Write { .. } => "Write",
        }
    }

    #[test]
    fn without_consent_nothing_is_written() {
        let world = World::new(&[("platform", &[]), ("team-a", &[]), ("team-b", &[])])
            // A grant for someone else, and one in another namespace.
            .grant("team-a", grant(&[("platform", "other")], &[]))
            .grant("team-b", grant(&[("elsewhere", "reltio")], &[]));
        let (d, ok) = world.decide(&spec(&["team-a", "team-b"], None));
        assert!(ok.is_ok());
        for (_, v) in verdicts(&d) {
            let Verdict::Refused { reason, message } = v else {
                panic!("{v:?}")
            };
            assert_eq!(*reason, Reason::NotGranted);
            assert!(message.contains("platform/reltio"), "{message}");
        }
        assert!(d.removals.is_empty());
    }

    #[test]
    fn a_grant_naming_the_source_lets_it_write_once_and_then_it_is_current() {
        let world = World::new(&[("platform", &[]), ("team-a", &[])])
            .grant("team-a", grant(&[("platform", "reltio")], &[]));
        let (d, _) = world.decide(&spec(&["team-a"], None));
        assert_eq!(
            verdicts(&d),
            vec![("team-a", &Verdict::Write { replace: None })]
        );
        let current = world.occupant("team-a", "token", own(7, "c1"));
        let (d, _) = current.decide(&spec(&["team-a"], None));
        assert_eq!(verdicts(&d), vec![("team-a", &Verdict::Current)]);
        let stale = World {
            occupants: BTreeMap::from([(
                ("team-a".to_string(), "token".to_string()),
                own(6, "c1"),
            )]),
            ..current
        };
        let (d, _) = stale.decide(&spec(&["team-a"], None));
        assert_eq!(
            verdicts(&d),
            vec![(
                "team-a",
                &Verdict::Write {
                    replace: Some(Existing {
                        uid: "c1".into(),
                        resource_version: "rv-c1".into()
                    })
                }
            )]
        );
    }

    #[test]
    fn a_blocked_source_writes_nothing_and_takes_nothing_away() {
        // team-a consents and has no copy yet; team-b consents and holds a stale copy;
        // team-c holds the current one; team-d no longer consents.
        let world = World::new(&[
            ("platform", &[]),
            ("team-a", &[]),
            ("team-b", &[]),
            ("team-c", &[]),
            ("team-d", &[]),
        ])
        .grant("team-a", grant(&[("platform", "reltio")], &[]))
        .grant("team-b", grant(&[("platform", "reltio")], &[]))
        .grant("team-c", grant(&[("platform", "reltio")], &[]))
        .occupant("team-b", "token", own(6, "b1"))
        .occupant("team-c", "token", own(7, "c1"))
        .occupant("team-d", "token", own(6, "d1"));
        let spec = spec(&["team-a", "team-b", "team-c", "team-d"], None);
        let (d, _) = world.decide_blocked(&spec, Some(conditions::Reason::TargetConflict));
        let got: Vec<(&str, &str)> = verdicts(&d)
            .into_iter()
            .map(|(ns, v)| (ns, reason_of_verdict(v)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("team-a", Reason::SourceBlocked.reason()),
                ("team-b", Reason::SourceBlocked.reason()),
                ("team-c", "Current"),
                ("team-d", Reason::NotGranted.reason()),
            ]
        );
        let Verdict::Refused { message, .. } = &d.destinations[0].verdict else {
            panic!()
        };
        assert!(message.contains("TargetConflict"), "{message}");
        // Only the copy whose consent went is removed.
        let removed: Vec<&str> = d.removals.iter().map(|r| r.namespace.as_str()).collect();
        assert_eq!(removed, vec!["team-d"]);
        // Unblocked, the same world writes.
        let (d, _) = world.decide(&spec);
        assert_eq!(reason_of_verdict(&d.destinations[0].verdict), "Write");
        assert_eq!(reason_of_verdict(&d.destinations[1].verdict), "Write");
    }

    #[test]
    fn secret_names_in_the_grant_limit_what_may_be_written() {
        let world = World::new(&[("team-a", &[])])
            .grant("team-a", grant(&[("platform", "reltio")], &["other"]));
        let (d, _) = world.decide(&spec(&["team-a"], None));
        let Verdict::Refused { reason, message } = &d.destinations[0].verdict else {
            panic!()
        };
        assert_eq!(*reason, Reason::NotGranted);
        assert!(message.contains("spec.secretNames"), "{message}");
        let allowed = World::new(&[("team-a", &[])]).grant(
            "team-a",
            grant(&[("platform", "reltio")], &["other", "token"]),
        );
        let (d, _) = allowed.decide(&spec(&["team-a"], None));
        assert_eq!(d.destinations[0].verdict, Verdict::Write { replace: None });
    }

    #[test]
    fn a_secret_that_is_not_our_copy_is_never_overwritten() {
        let world = World::new(&[("team-a", &[])])
            .grant("team-a", grant(&[("platform", "reltio")], &[]))
            .occupant("team-a", "token", Occupant::Other);
        let (d, _) = world.decide(&spec(&["team-a"], None));
        assert_eq!(
            reason_of_verdict(&d.destinations[0].verdict),
            Reason::SecretNotOwned.reason()
        );
        assert!(d.removals.is_empty(), "not ours: never removed either");
    }

    #[test]
    fn missing_own_and_too_many_namespaces_are_refused_with_their_reason() {
        let world = World::new(&[("platform", &[]), ("quiet", &[])]);
        let (d, _) = world.decide(&spec(&["platform", "gone", "quiet"], None));
        assert_eq!(
            verdicts(&d)
                .into_iter()
                .map(|(n, v)| (n, reason_of_verdict(v)))
                .collect::<Vec<_>>(),
            vec![
                ("gone", Reason::NotGranted.reason()),
                ("platform", Reason::SameNamespace.reason()),
                ("quiet", Reason::NotGranted.reason())
            ]
        );
        // A missing namespace reads like one that has not consented: status tells nobody
        // which namespaces exist.
        let message = |n: usize| match &d.destinations[n].verdict {
            Verdict::Refused { message, .. } => message.replace("gone", "quiet"),
            v => panic!("{v:?}"),
        };
        assert_eq!(message(0), message(2));
        let many: Vec<(String, BTreeMap<String, String>)> = (0..MAX_DESTINATIONS + 3)
            .map(|i| {
                (
                    format!("ns-{i:04}"),
                    BTreeMap::from([("team".into(), "yes".into())]),
                )
            })
            .collect();
        let mut world = World::new(&[]);
        world.namespaces = many;
        for i in 0..MAX_DESTINATIONS + 3 {
            world = world.grant(&format!("ns-{i:04}"), grant(&[("platform", "reltio")], &[]));
        }
        let (d, _) = world.decide(&spec(
            &[],
            Some(serde_json::json!({"matchLabels": {"team": "yes"}})),
        ));
        let too_many: Vec<&str> = d
            .destinations
            .iter()
            .filter(|d| reason_of_verdict(&d.verdict) == Reason::TooManyDestinations.reason())
            .map(|d| d.namespace.as_str())
            .collect();
        assert_eq!(d.destinations.len(), MAX_DESTINATIONS + 3);
        assert_eq!(too_many, vec!["ns-0256", "ns-0257", "ns-0258"]);
        // A namespace that sorts first, created later, never pushes an existing copy out;
        // namespaces that do not consent take no place.
        let mut world = world.occupant("ns-0258", "token", own(7, "c"));
        world.namespaces.insert(
            0,
            (
                "aaa".into(),
                BTreeMap::from([("team".into(), "yes".into())]),
            ),
        );
        world.namespaces.insert(
            0,
            (
                "aab".into(),
                BTreeMap::from([("team".into(), "yes".into())]),
            ),
        );
        world = world.grant("aaa", grant(&[("platform", "reltio")], &[]));
        let (d, _) = world.decide(&spec(
            &[],
            Some(serde_json::json!({"matchLabels": {"team": "yes"}})),
        ));
        let verdict = |ns: &str| {
            d.destinations
                .iter()
                .find(|d| d.namespace == ns)
                .map(|d| reason_of_verdict(&d.verdict).to_string())
        };
        assert_eq!(verdict("ns-0258").as_deref(), Some("Current"));
        assert_eq!(verdict("aab"), None, "no consent, not listed");
        assert_eq!(
            verdict("ns-0255").as_deref(),
            Some(Reason::TooManyDestinations.reason())
        );
        assert!(d.removals.is_empty());
    }

    #[test]
    fn the_selector_picks_labelled_namespaces_but_never_the_own_one() {
        let world = World::new(&[
            ("platform", &[("tokens", "reltio")]),
            ("team-a", &[("tokens", "reltio")]),
            ("team-b", &[("tokens", "other")]),
            ("team-c", &[]),
            ("team-d", &[("tokens", "reltio")]),
        ])
        .grant("team-a", grant(&[("platform", "reltio")], &[]))
        .grant("team-b", grant(&[("platform", "reltio")], &[]))
        .grant("platform", grant(&[("platform", "reltio")], &[]));
        // team-d is labelled but has not consented: not a destination, not listed.
        let (d, ok) = world.decide(&spec(
            &["team-c"],
            Some(serde_json::json!({"matchExpressions": [{"key": "tokens", "operator": "In", "values": ["reltio"]}]})),
        ));
        assert!(ok.is_ok());
        let names: Vec<&str> = d
            .destinations
            .iter()
            .map(|d| d.namespace.as_str())
            .collect();
        assert_eq!(names, vec!["team-a", "team-c"]);
        let (d, bad) = world.decide(&spec(
            &["team-c"],
            Some(serde_json::json!({"matchExpressions": [{"key": "tokens", "operator": "Near", "values": ["x"]}]})),
        ));
        assert!(bad.is_err());
        assert_eq!(d.destinations.len(), 1, "the names still count");
        // An invalid selector keeps the copies it chose before (their consent still counts).
        let kept = world.occupant("team-a", "token", own(7, "c"));
        let (d, _) = kept.decide(&spec(
            &["team-c"],
            Some(serde_json::json!({"matchExpressions": [{"key": "tokens", "operator": "Near", "values": ["x"]}]})),
        ));
        assert!(d.removals.is_empty(), "{:?}", d.removals);
        assert_eq!(verdicts(&d)[0], ("team-a", &Verdict::Current));
        let values: Vec<String> = (0..=MAX_SELECTOR_VALUES).map(|i| i.to_string()).collect();
        let (_, huge) = kept.decide(&spec(
            &[],
            Some(serde_json::json!({"matchExpressions": [{"key": "k", "operator": "In", "values": values}]})),
        ));
        assert!(huge.unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn copies_no_longer_chosen_or_granted_are_removed_and_others_kept() {
        let own = |uid: &str| own(7, uid);
        let world = World::new(&[("team-a", &[]), ("team-b", &[]), ("team-c", &[])])
            .grant("team-a", grant(&[("platform", "reltio")], &[]))
            .occupant("team-a", "token", own("1"))
            // Consent withdrawn.
            .occupant("team-b", "token", own("2"))
            // No longer chosen.
            .occupant("team-c", "token", own("3"))
            // Renamed copies: the old name goes.
            .occupant("team-a", "old-name", own("4"))
            .occupant("team-c", "someone-else", Occupant::Other);
        let (d, _) = world.decide(&spec(&["team-a", "team-b"], None));
        let removed: Vec<(&str, &str, &str)> = d
            .removals
            .iter()
            .map(|r| (r.namespace.as_str(), r.name.as_str(), r.uid.as_str()))
            .collect();
        assert_eq!(
            removed,
            vec![
                ("team-a", "old-name", "4"),
                ("team-b", "token", "2"),
                ("team-c", "token", "3")
            ]
        );
        assert_eq!(remove_all(&world.occupants).len(), 4);
    }

    #[test]
    fn the_condition_names_refusals_and_the_list_shows_them_first() {
        let entry = |ns: &str, delivered: bool, reason: &str| DeliveryStatus {
            namespace: ns.into(),
            secret_name: "token".into(),
            delivered,
            reason: reason.into(),
            message: None,
            delivered_at: None,
        };
        let all = vec![
            entry("a", true, Reason::Delivered.reason()),
            entry("b", false, Reason::NotGranted.reason()),
            entry("c", true, Reason::Delivered.reason()),
        ];
        let (ok, why, message) = condition(&all);
        assert!(!ok);
        assert_eq!(why, Reason::NotGranted);
        assert!(message.starts_with("1 of 3"), "{message}");
        assert_eq!(listed(all.clone())[0].namespace, "b");
        let (ok, why, _) = condition(&[entry("a", true, Reason::Delivered.reason())]);
        assert!(ok && why == Reason::AllDelivered);
        let many: Vec<DeliveryStatus> = (0..MAX_LISTED + 5)
            .map(|i| entry(&format!("n{i}"), true, Reason::Delivered.reason()))
            .collect();
        assert_eq!(listed(many).len(), MAX_LISTED);
    }

    #[test]
    fn stamps_differ_with_token_or_settings() {
        assert_eq!(stamp("f", "s"), stamp("f", "s"));
        assert_ne!(stamp("f", "s"), stamp("g", "s"));
        assert_ne!(stamp("f", "s"), stamp("f", "t"));
        assert_ne!(stamp("fs", ""), stamp("f", "s"));
    }

    mod reporting {
        use super::*;
        use crate::conditions::{self, ConditionType};
        use crate::rotation::Report;
        use crate::rotation::merge::merge;

        fn t(s: i64) -> Timestamp {
            Timestamp::from_second(s).unwrap()
        }

        fn to(namespace: &str, verdict: Verdict) -> Destination {
            Destination {
                namespace: namespace.into(),
                secret_name: "token".into(),
                verdict,
            }
        }

        fn write(replace: bool) -> Verdict {
            Verdict::Write {
                replace: replace.then(|| Existing {
                    uid: "u".into(),
                    resource_version: "1".into(),
                }),
            }
        }

        fn delivered(namespace: &str, at: Option<i64>) -> DeliveryStatus {
            DeliveryStatus {
                namespace: namespace.into(),
                secret_name: "token".into(),
                delivered: true,
                reason: Reason::Delivered.reason().into(),
                message: None,
                delivered_at: at.map(|s| Time(t(s))),
            }
        }

        fn refused(namespace: &str, why: &str, message: &str) -> DeliveryStatus {
            DeliveryStatus {
                namespace: namespace.into(),
                secret_name: "token".into(),
                delivered: false,
                reason: why.into(),
                message: Some(message.into()),
                delivered_at: None,
            }
        }

        fn run(
            destinations: Vec<Destination>,
            written: &[Written],
            previous: &[DeliveryStatus],
            removal_failed: bool,
        ) -> FeatureOutcome {
            let decisions = Decisions {
                destinations,
                removals: Vec::new(),
            };
            outcome(&Carried {
                decisions: &decisions,
                written,
                removal_failed,
                selector: &Ok(()),
                previous,
                secret_name: "token",
                now: t(2_000),
            })
        }

        fn set(o: &FeatureOutcome) -> (bool, &'static str, &str) {
            match &o.condition {
                ConditionChange::Set {
                    status,
                    reason,
                    message,
                } => (*status, *reason, message.as_str()),
                other => panic!("no condition set: {other:?}"),
            }
        }

        fn deliveries(o: &FeatureOutcome) -> &[DeliveryStatus] {
            match &o.records {
                Records::Deliveries(d) => d,
                other => panic!("no deliveries: {other:?}"),
            }
        }

        #[test]
        fn writes_made_are_delivered_now_and_a_current_copy_keeps_its_time() {
            let o = run(
                vec![
                    to("a", Verdict::Current),
                    to("b", write(false)),
                    to("c", write(true)),
                ],
                &[Written::NotAttempted, Written::Created, Written::Replaced],
                &[delivered("a", Some(1_500)), delivered("c", Some(1_400))],
                false,
            );
            assert_eq!(
                deliveries(&o),
                &[
                    delivered("a", Some(1_500)),
                    delivered("b", Some(2_000)),
                    delivered("c", Some(2_000))
                ]
            );
            assert_eq!(
                set(&o),
                (
                    true,
                    Reason::AllDelivered.reason(),
                    "the current token is in 3 namespaces"
                )
            );
            // Only a first copy is news; a replacement (every rotation) is not.
            assert_eq!(
                o.events,
                vec![EventNote {
                    warning: false,
                    reason: "Delivered".into(),
                    note: "Secret token created in b; it follows every rotation".into(),
                    action: "Deliver",
                }]
            );
            assert_eq!(o.requeue, None);
        }

        #[test]
        fn each_failed_write_says_why_and_is_retried_a_taken_name_is_not() {
            let destinations = vec![
                to("a", write(false)),
                to("b", write(true)),
                to("c", write(true)),
                to("d", write(false)),
                to("e", write(false)),
                to("f", write(false)),
                to("g", write(false)),
            ];
            let written = [
                Written::Taken,
                Written::Failed {
                    code: Some(403),
                    error: "403 Forbidden".into(),
                },
                Written::Failed {
                    code: Some(409),
                    error: "409 Conflict".into(),
                },
                Written::Failed {
                    code: None,
                    error: "connection refused".into(),
                },
                Written::NoToken,
                Written::Unrenderable("the target's type changed".into()),
                Written::NotAttempted,
            ];
            let o = run(destinations.clone(), &written, &[], false);
            let failed = |ns: &str, m: &str| refused(ns, Reason::WriteFailed.reason(), m);
            assert_eq!(
                deliveries(&o),
                &[
                    refused(
                        "a",
                        Reason::SecretNotOwned.reason(),
                        &not_owned("a", "token")
                    ),
                    failed(
                        "b",
                        "the write failed (403 Forbidden); the operator may lack permission there, or an admission policy refused it"
                    ),
                    failed(
                        "c",
                        "the write failed (409 Conflict); it changed meanwhile and is retried"
                    ),
                    failed("d", "the write failed (connection refused); retried"),
                    failed("e", "the target Secret holds no token yet; retried"),
                    failed("f", "the target's type changed"),
                    failed("g", "not written yet; retried"),
                ]
            );
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::SecretNotOwned.reason(),
                    "7 of 7 destinations not delivered (a: SecretNotOwned, b: WriteFailed, c: WriteFailed, d: WriteFailed, e: WriteFailed, f: WriteFailed, g: WriteFailed); status.deliveries says why"
                )
            );
            assert!(o.events.is_empty());
            assert_eq!(o.requeue, Some(RETRY));
            // Someone else's Secret is not retried: it is not going away by itself.
            let o = run(destinations[..1].to_vec(), &written[..1], &[], false);
            assert_eq!(o.requeue, None);
            // A failed write is.
            let o = run(destinations[3..4].to_vec(), &written[3..4], &[], false);
            assert_eq!(o.requeue, Some(RETRY));
        }

        #[test]
        fn refusals_keep_their_reason_and_a_failed_removal_is_retried() {
            let o = run(
                vec![
                    to("a", Verdict::Current),
                    to(
                        "b",
                        Verdict::Refused {
                            reason: Reason::NotGranted,
                            message: "no grant".into(),
                        },
                    ),
                ],
                &[Written::NotAttempted, Written::NotAttempted],
                &[],
                false,
            );
            assert_eq!(
                deliveries(&o)[0],
                refused("b", Reason::NotGranted.reason(), "no grant")
            );
            assert_eq!(deliveries(&o)[1], delivered("a", None));
            assert_eq!(set(&o).1, Reason::NotGranted.reason());
            assert_eq!(o.requeue, None);
            let o = run(
                vec![to("a", Verdict::Current)],
                &[Written::NotAttempted],
                &[],
                true,
            );
            assert!(set(&o).0);
            assert_eq!(o.requeue, Some(RETRY));
        }

        #[test]
        fn an_invalid_selector_is_the_condition() {
            let decisions = Decisions::default();
            let o = outcome(&Carried {
                decisions: &decisions,
                written: &[],
                removal_failed: false,
                selector: &Err(SelectorError::Invalid("too many requirements".into())),
                previous: &[],
                secret_name: "token",
                now: t(2_000),
            });
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::InvalidSelector.reason(),
                    "spec.delivery.namespaceSelector is invalid (too many requirements): no namespace is added by label, and copies it chose before are kept"
                )
            );
            assert_eq!(o.requeue, None);
        }

        #[test]
        fn what_holds_delivery_back_is_said_or_only_looked_at_again() {
            let o = gated(Gate::Disabled);
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::DeliveryDisabled.reason(),
                    "the operator runs without --cross-namespace-delivery (chart value crossNamespaceDelivery.enabled)"
                )
            );
            assert!(deliveries(&o).is_empty());
            assert_eq!(o.requeue, None);
            let o = gated(Gate::FinalizerMissing);
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::FinalizerMissing.reason(),
                    "no copy is written before the finalizer tokenrotator.dev/delivered-copies that removes them is on this resource; the operator log says why it could not be added"
                )
            );
            assert_eq!(o.records, Records::Unchanged, "the copies are still there");
            assert_eq!(o.requeue, Some(RETRY));
            let o = gated(Gate::NotListed);
            assert_eq!(o.condition, ConditionChange::Unchanged);
            assert_eq!(o.records, Records::Unchanged);
            assert!(o.events.is_empty());
            assert_eq!(o.requeue, Some(NOT_LISTED_RETRY));
            for (w, requeue) in [
                (Withdrawal::Done, None),
                (Withdrawal::NotListed, Some(NOT_LISTED_RETRY)),
                (Withdrawal::Pending, Some(RETRY)),
            ] {
                let o = withdrawn(w);
                assert_eq!(o.condition, ConditionChange::Removed);
                assert_eq!(o.records, Records::Deliveries(Vec::new()));
                assert_eq!(o.requeue, requeue, "{w:?}");
            }
        }

        #[test]
        fn merged_a_failure_warns_once_and_recovers_in_silence() {
            let mut report = Report {
                status: Default::default(),
                requeue: None,
                events: Vec::new(),
                failure: None,
                expires_at: None,
                backing_off: false,
            };
            let failing = || run(vec![to("b", write(false))], &[Written::NoToken], &[], false);
            merge(&mut report, failing(), Some(2), t(2_000));
            assert_eq!(report.events.len(), 1);
            assert_eq!(
                (
                    report.events[0].warning,
                    report.events[0].reason.as_str(),
                    report.events[0].action
                ),
                (true, Reason::WriteFailed.reason(), "Deliver")
            );
            assert_eq!(report.requeue, Some(RETRY));
            report.events.clear();
            merge(&mut report, failing(), Some(2), t(2_030));
            assert!(report.events.is_empty(), "{:?}", report.events);
            let ok = run(vec![to("b", write(false))], &[Written::Created], &[], false);
            merge(&mut report, ok, Some(2), t(2_060));
            // The first copy's Event, no Warning; the condition turned at 2_060.
            assert_eq!(report.events.len(), 1);
            assert!(!report.events[0].warning);
            let c = conditions::get(&report.status.conditions, ConditionType::Delivered).unwrap();
            assert_eq!(c.last_transition_time, Time(t(2_060)));
            assert_eq!(c.status, "True");
        }
    }
}

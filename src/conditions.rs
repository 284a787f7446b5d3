//! Pure construction of status conditions. A condition keeps its lastTransitionTime while its
//! status is unchanged, so an idle reconcile produces an identical status (and no write).
//!
//! The condition types and the rotation's reasons are enums; their wire strings (what users'
//! alerts, the README and `kubectl` show) are spelled once, in `as_str` and `reason`.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types the operator sets on a ProviderCredential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The target Secret holds an unexpired token.
    Ready,
    /// Refreshing is failing or blocked (while the old token may still be valid).
    Degraded,
    /// The provider's tokens live too briefly for spec.refresh: renewal falls back to half the
    /// lifetime, with a floor.
    ShortLifetime,
    /// Token requests take less time than spec.tokenEndpoint.timeoutSeconds allows: the
    /// operator's leader-election lease covers no longer request.
    TimeoutCapped,
    /// spec.rollout: True when every listed workload runs the current token (or will at its
    /// planned restart).
    WorkloadsRestarted,
    /// spec.delivery: True when every destination holds the current token.
    Delivered,
}

impl ConditionType {
    pub const ALL: [ConditionType; 6] = [
        ConditionType::Ready,
        ConditionType::Degraded,
        ConditionType::ShortLifetime,
        ConditionType::TimeoutCapped,
        ConditionType::WorkloadsRestarted,
        ConditionType::Delivered,
    ];

    /// The condition's `type` on the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Degraded => "Degraded",
            ConditionType::ShortLifetime => "ShortLifetime",
            ConditionType::TimeoutCapped => "TimeoutCapped",
            ConditionType::WorkloadsRestarted => "WorkloadsRestarted",
            ConditionType::Delivered => "Delivered",
        }
    }
}

/// The reasons of the rotation's conditions (Ready, Degraded, ShortLifetime, TimeoutCapped) and
/// of status.lastFailure, beyond the provider's error classes (`ErrorClass::reason`) and the
/// leader gate's (`Withheld::reason`). spec.rollout and spec.delivery have their own
/// (`rotation::rollout::Reason`, `rotation::delivery::Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    TokenIssued,
    RefreshSucceeded,
    CredentialsNotFound,
    CredentialsNotLabelled,
    TokenHostNotAllowed,
    TargetConflict,
    ReauthorizationRequired,
    Suspended,
    InvalidSpec,
    TokenExpired,
    RequestBudgetExceeded,
    LifetimeShorterThanMargin,
    LifetimeSufficient,
    LeaseTooShort,
    TimeoutAsSpecified,
    /// Only a spec change clears it: the token could not be rendered into the target Secret
    /// (it was requested, so requesting again would loop).
    TemplateFailed,
    /// The handling of this resource hit a bug (a panic).
    InternalError,
    /// A token was obtained but a Secret write failed (retried with backoff).
    SecretWriteFailed,
    /// Another rotation replaced the refresh chain this one started from.
    ChainSuperseded,
    ServiceAccountNotFound,
    ServiceAccountNotLabelled,
    AudienceRefused,
    TokenRequestForbidden,
    TokenRequestFailed,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::TokenIssued,
        Reason::RefreshSucceeded,
        Reason::CredentialsNotFound,
        Reason::CredentialsNotLabelled,
        Reason::TokenHostNotAllowed,
        Reason::TargetConflict,
        Reason::ReauthorizationRequired,
        Reason::Suspended,
        Reason::InvalidSpec,
        Reason::TokenExpired,
        Reason::RequestBudgetExceeded,
        Reason::LifetimeShorterThanMargin,
        Reason::LifetimeSufficient,
        Reason::LeaseTooShort,
        Reason::TimeoutAsSpecified,
        Reason::TemplateFailed,
        Reason::InternalError,
        Reason::SecretWriteFailed,
        Reason::ChainSuperseded,
        Reason::ServiceAccountNotFound,
        Reason::ServiceAccountNotLabelled,
        Reason::AudienceRefused,
        Reason::TokenRequestForbidden,
        Reason::TokenRequestFailed,
    ];

    /// The reason as the status (and Events, and metrics) show it.
    pub fn reason(self) -> &'static str {
        match self {
            Reason::TokenIssued => "TokenIssued",
            Reason::RefreshSucceeded => "RefreshSucceeded",
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::CredentialsNotLabelled => "CredentialsNotLabelled",
            Reason::TokenHostNotAllowed => "TokenHostNotAllowed",
            Reason::TargetConflict => "TargetConflict",
            Reason::ReauthorizationRequired => "ReauthorizationRequired",
            Reason::Suspended => "Suspended",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TokenExpired => "TokenExpired",
            Reason::RequestBudgetExceeded => "RequestBudgetExceeded",
            Reason::LifetimeShorterThanMargin => "LifetimeShorterThanMargin",
            Reason::LifetimeSufficient => "LifetimeSufficient",
            Reason::LeaseTooShort => "LeaseTooShort",
            Reason::TimeoutAsSpecified => "TimeoutAsSpecified",
            Reason::TemplateFailed => "TemplateFailed",
            Reason::InternalError => "InternalError",
            Reason::SecretWriteFailed => "SecretWriteFailed",
            Reason::ChainSuperseded => "ChainSuperseded",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::ServiceAccountNotLabelled => "ServiceAccountNotLabelled",
            Reason::AudienceRefused => "AudienceRefused",
            Reason::TokenRequestForbidden => "TokenRequestForbidden",
            Reason::TokenRequestFailed => "TokenRequestFailed",
        }
    }
}

/// Sets (or replaces) a condition, preserving its transition time when the status holds.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (type_, status) = (type_.as_str(), if status { "True" } else { "False" });
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

pub fn get(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// A condition changed in a way worth an Event: its status or its reason.
pub fn transitioned(before: &[Condition], after: &[Condition], type_: ConditionType) -> bool {
    let key = |cs: &[Condition]| get(cs, type_).map(|c| (c.status.clone(), c.reason.clone()));
    key(before) != key(after)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_same_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut cs = Vec::new();
        set(
            &mut cs,
            ConditionType::Ready,
            true,
            "A",
            "m1".into(),
            Some(1),
            t0,
        );
        set(
            &mut cs,
            ConditionType::Ready,
            true,
            "B",
            "m2".into(),
            Some(2),
            t1,
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert_eq!(cs[0].reason, "B");
        let before = cs.clone();
        set(
            &mut cs,
            ConditionType::Ready,
            false,
            "C",
            "m3".into(),
            Some(2),
            t1,
        );
        assert_eq!(cs[0].last_transition_time, Time(t1));
        assert!(transitioned(&before, &cs, ConditionType::Ready));
        assert!(!transitioned(&cs, &cs, ConditionType::Ready));
    }

    /// Every condition type and reason with its wire string, which users' alerts and the README
    /// rely on: no wildcard, so a new variant does not compile until it is written down here.
    #[test]
    fn every_type_and_reason_keeps_its_wire_string() {
        let type_wire = |t: ConditionType| match t {
            ConditionType::Ready => "Ready",
            ConditionType::Degraded => "Degraded",
            ConditionType::ShortLifetime => "ShortLifetime",
            ConditionType::TimeoutCapped => "TimeoutCapped",
            ConditionType::WorkloadsRestarted => "WorkloadsRestarted",
            ConditionType::Delivered => "Delivered",
        };
        let reason_wire = |r: Reason| match r {
            Reason::TokenIssued => "TokenIssued",
            Reason::RefreshSucceeded => "RefreshSucceeded",
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::CredentialsNotLabelled => "CredentialsNotLabelled",
            Reason::TokenHostNotAllowed => "TokenHostNotAllowed",
            Reason::TargetConflict => "TargetConflict",
            Reason::ReauthorizationRequired => "ReauthorizationRequired",
            Reason::Suspended => "Suspended",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TokenExpired => "TokenExpired",
            Reason::RequestBudgetExceeded => "RequestBudgetExceeded",
            Reason::LifetimeShorterThanMargin => "LifetimeShorterThanMargin",
            Reason::LifetimeSufficient => "LifetimeSufficient",
            Reason::LeaseTooShort => "LeaseTooShort",
            Reason::TimeoutAsSpecified => "TimeoutAsSpecified",
            Reason::TemplateFailed => "TemplateFailed",
            Reason::InternalError => "InternalError",
            Reason::SecretWriteFailed => "SecretWriteFailed",
            Reason::ChainSuperseded => "ChainSuperseded",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::ServiceAccountNotLabelled => "ServiceAccountNotLabelled",
            Reason::AudienceRefused => "AudienceRefused",
            Reason::TokenRequestForbidden => "TokenRequestForbidden",
            Reason::TokenRequestFailed => "TokenRequestFailed",
        };
        let types: Vec<&str> = ConditionType::ALL.map(|t| t.as_str()).to_vec();
        assert_eq!(types, ConditionType::ALL.map(type_wire).to_vec());
        assert_unique(&types);
        let reasons: Vec<&str> = Reason::ALL.map(Reason::reason).to_vec();
        assert_eq!(reasons, Reason::ALL.map(reason_wire).to_vec());
        assert_unique(&reasons);
    }

    /// Each wire string once (so each variant once in its `ALL`).
    pub(crate) fn assert_unique(wires: &[&str]) {
        let distinct: std::collections::BTreeSet<&&str> = wires.iter().collect();
        assert_eq!(
            distinct.len(),
            wires.len(),
            "a wire string twice: {wires:?}"
        );
    }
}

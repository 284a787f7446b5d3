//! Pure construction of status conditions. A condition keeps its lastTransitionTime while its
//! status is unchanged, so an idle reconcile produces an identical status (and no write).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
/// The provider's tokens live too briefly for spec.refresh: renewal falls back to half the
/// lifetime, with a floor.
pub const SHORT_LIFETIME: &str = "ShortLifetime";
/// Token requests take less time than spec.tokenEndpoint.timeoutSeconds allows: the
/// operator's leader-election lease covers no longer request.
pub const TIMEOUT_CAPPED: &str = "TimeoutCapped";
/// spec.rollout: True when every listed workload runs the current token (or will at its
/// planned restart).
pub const WORKLOADS_RESTARTED: &str = "WorkloadsRestarted";
/// spec.delivery: True when every destination holds the current token.
pub const DELIVERED: &str = "Delivered";

/// Condition reasons beyond the provider's error classes.
pub mod reason {
    pub const TOKEN_ISSUED: &str = "TokenIssued";
    pub const REFRESH_SUCCEEDED: &str = "RefreshSucceeded";
    pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
    pub const CREDENTIALS_NOT_LABELLED: &str = "CredentialsNotLabelled";
    pub const TOKEN_HOST_NOT_ALLOWED: &str = "TokenHostNotAllowed";
    pub const TARGET_CONFLICT: &str = "TargetConflict";
    pub const REAUTHORIZATION_REQUIRED: &str = "ReauthorizationRequired";
    pub const SUSPENDED: &str = "Suspended";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const TOKEN_EXPIRED: &str = "TokenExpired";
    pub const REQUEST_BUDGET_EXCEEDED: &str = "RequestBudgetExceeded";
    pub const LIFETIME_SHORTER_THAN_MARGIN: &str = "LifetimeShorterThanMargin";
    pub const LIFETIME_SUFFICIENT: &str = "LifetimeSufficient";
    pub const LEASE_TOO_SHORT: &str = "LeaseTooShort";
    pub const TIMEOUT_AS_SPECIFIED: &str = "TimeoutAsSpecified";
}

/// Sets (or replaces) a condition, preserving its transition time when the status holds.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status,
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

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A condition changed in a way worth an Event: its status or its reason.
pub fn transitioned(before: &[Condition], after: &[Condition], type_: &str) -> bool {
    let key = |cs: &[Condition]| get(cs, type_).map(|c| (c.status.clone(), c.reason.clone()));
    key(before) != key(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_same_status() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut cs = Vec::new();
        set(&mut cs, READY, true, "A", "m1".into(), Some(1), t0);
        set(&mut cs, READY, true, "B", "m2".into(), Some(2), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Time(t0));
        assert_eq!(cs[0].reason, "B");
        let before = cs.clone();
        set(&mut cs, READY, false, "C", "m3".into(), Some(2), t1);
        assert_eq!(cs[0].last_transition_time, Time(t1));
        assert!(transitioned(&before, &cs, READY));
        assert!(!transitioned(&cs, &cs, READY));
    }
}

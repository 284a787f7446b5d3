//! Whether a workload is restarted after a rotation (spec.rollout): pure decisions. A restart
//! is the one `kubectl rollout restart` makes (the pod template's
//! kubectl.kubernetes.io/restartedAt), so the workload's own annotation says when it was last
//! restarted, by this resource, another one, or a person.

use std::time::Duration;

use jiff::Timestamp;

/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The workload's consent: a comma-separated list of ProviderCredential names (same
/// namespace) that may restart it.
pub const RESTART_ON: &str = "tokenrotator.dev/restart-on";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// At least this long between two restarts of one workload.
    pub min_interval: Duration,
    /// This long after a rotation, at the earliest.
    pub delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_interval: Duration::from_secs(300),
            delay: Duration::ZERO,
        }
    }
}

/// What the workload looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Missing,
    /// It does not list this resource in tokenrotator.dev/restart-on.
    NotOptedIn,
    Found {
        last_restart: Option<Timestamp>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restarted at or after the rotation: its pods started with the new token.
    UpToDate,
    RestartNow,
    /// Not before then (the delay, or the minimum interval since its last restart).
    WaitUntil(Timestamp),
    Refused(&'static str),
}

pub mod reason {
    pub const NOT_FOUND: &str = "WorkloadNotFound";
    pub const NOT_OPTED_IN: &str = "WorkloadNotOptedIn";
    pub const RESTART_FAILED: &str = "RestartFailed";
    pub const RESTARTS_DISABLED: &str = "RestartsDisabled";
}

/// Whether `name` is in a tokenrotator.dev/restart-on value.
pub fn consents(annotation: Option<&str>, name: &str) -> bool {
    annotation.is_some_and(|list| list.split(',').any(|n| n.trim() == name))
}

/// Clocks of the people and tools that write restartedAt may run this far ahead.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    // A delay too large to add is a time that never comes: the latest one that can be held.
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Whether a restart at `restart` started pods after a rotation at `rotated_at`. Both are
/// known to the second only (restartedAt and status times are written so), so a restart in
/// the same second as the rotation may have come before it: only a later second counts.
pub fn covers(restart: Timestamp, rotated_at: Timestamp) -> bool {
    restart.as_second() > rotated_at.as_second()
}

/// One workload, after the token was rotated at `rotated_at`.
pub fn decide(rotated_at: Timestamp, seen: &Seen, policy: Policy, now: Timestamp) -> Decision {
    let last = match seen {
        Seen::Missing => return Decision::Refused(reason::NOT_FOUND),
        Seen::NotOptedIn => return Decision::Refused(reason::NOT_OPTED_IN),
        Seen::Found { last_restart } => *last_restart,
    };
    // A restart "in the future" (a clock ahead, a hand-written value) says nothing about
    // when pods started: it covers no rotation and holds no restart back.
    let last = last.filter(|l| *l <= plus(now, CLOCK_SKEW));
    if last.is_some_and(|l| covers(l, rotated_at)) {
        return Decision::UpToDate;
    }
    // Not before the next whole second, so that the restart's own time covers the rotation.
    let next_second =
        Timestamp::from_second(rotated_at.as_second().saturating_add(1)).unwrap_or(Timestamp::MAX);
    let mut due = plus(rotated_at, policy.delay).max(next_second);
    if let Some(last) = last {
        due = due.max(plus(last, policy.min_interval));
    }
    if now >= due {
        Decision::RestartNow
    } else {
        Decision::WaitUntil(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const POLICY: Policy = Policy {
        min_interval: Duration::from_secs(600),
        delay: Duration::from_secs(30),
    };

    fn found(last: Option<i64>) -> Seen {
        Seen::Found {
            last_restart: last.map(t),
        }
    }

    #[test]
    fn a_rotation_restarts_once_after_the_delay() {
        let rotated = t(1_000);
        assert_eq!(
            decide(rotated, &found(None), POLICY, t(1_010)),
            Decision::WaitUntil(t(1_030))
        );
        assert_eq!(
            decide(rotated, &found(None), POLICY, t(1_030)),
            Decision::RestartNow
        );
        // Once restarted (by anyone) at or after the rotation, nothing more.
        assert_eq!(
            decide(rotated, &found(Some(1_030)), POLICY, t(5_000)),
            Decision::UpToDate
        );
    }

    #[test]
    fn two_rotations_within_the_delay_share_one_restart() {
        // A rotates at 1000 and restarts at 1030; B rotated at 1020: served by that restart.
        assert_eq!(
            decide(t(1_020), &found(Some(1_030)), POLICY, t(1_050)),
            Decision::UpToDate
        );
    }

    #[test]
    fn restarts_keep_the_minimum_interval() {
        // Restarted at 1030 for A; B rotates at 1100: not before 1030 + 600.
        assert_eq!(
            decide(t(1_100), &found(Some(1_030)), POLICY, t(1_200)),
            Decision::WaitUntil(t(1_630))
        );
        assert_eq!(
            decide(t(1_100), &found(Some(1_030)), POLICY, t(1_630)),
            Decision::RestartNow
        );
    }

    #[test]
    fn a_restart_in_the_rotations_second_does_not_count() {
        let rotated = Timestamp::from_millisecond(1_000_400).unwrap();
        let no_delay = Policy {
            delay: Duration::ZERO,
            ..POLICY
        };
        // Asked at once: it waits for the next second, whose restart then covers it.
        assert_eq!(
            decide(rotated, &found(None), no_delay, rotated),
            Decision::WaitUntil(t(1_001))
        );
        assert_eq!(
            decide(rotated, &found(None), no_delay, t(1_001)),
            Decision::RestartNow
        );
        assert_eq!(
            decide(rotated, &found(Some(1_001)), no_delay, t(1_002)),
            Decision::UpToDate
        );
        // Someone restarted it within that second: maybe before the rotation, so once more.
        assert_eq!(
            decide(rotated, &found(Some(1_000)), no_delay, t(1_002)),
            Decision::WaitUntil(t(1_600))
        );
    }

    #[test]
    fn a_restart_dated_in_the_future_counts_for_nothing() {
        // Written by a clock an hour ahead: neither covers the rotation nor delays the restart.
        let ahead = found(Some(1_000 + 3_600));
        assert_eq!(
            decide(t(900), &ahead, POLICY, t(1_000)),
            Decision::RestartNow
        );
    }

    #[test]
    fn consent_and_existence_are_required() {
        assert_eq!(
            decide(t(1), &Seen::Missing, POLICY, t(100)),
            Decision::Refused(reason::NOT_FOUND)
        );
        assert_eq!(
            decide(t(1), &Seen::NotOptedIn, POLICY, t(100)),
            Decision::Refused(reason::NOT_OPTED_IN)
        );
        assert!(consents(Some("a, billing ,c"), "billing"));
        assert!(!consents(Some("billing-2"), "billing"));
        assert!(!consents(Some(""), "billing"));
        assert!(!consents(None, "billing"));
    }

    #[test]
    fn enormous_durations_do_not_overflow() {
        let huge = Policy {
            min_interval: Duration::MAX,
            delay: Duration::MAX,
        };
        assert_eq!(
            decide(t(1), &found(Some(0)), huge, t(100)),
            Decision::WaitUntil(Timestamp::MAX)
        );
    }
}

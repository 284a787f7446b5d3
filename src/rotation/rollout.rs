//! Whether a workload is restarted after a rotation (spec.rollout): pure decisions. A restart
//! is the one `kubectl rollout restart` makes (the pod template's
//! kubectl.kubernetes.io/restartedAt), so the workload's own annotation says when it was last
//! restarted, by this resource, another one, or a person.
//!
//! [`outcome`] turns what controller/rollout.rs saw and did into the condition, the
//! `status.restarts` records, the Events and the requeue; [`super::merge`] applies them.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::merge::{ConditionChange, Feature, FeatureOutcome, Records};
use super::status::EventNote;
use crate::api::{ProviderCredentialStatus, RolloutSpec, WorkloadRef, WorkloadRestartStatus};

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
    /// Condition reasons when nothing is refused.
    pub const RESTART_PLANNED: &str = "RestartPlanned";
    pub const UP_TO_DATE: &str = "UpToDate";
    /// The Event of a restart made.
    pub const WORKLOADS_RESTARTED: &str = "WorkloadsRestarted";
}

impl Policy {
    /// spec.rollout's durations; one that cannot be read (the API server validates them) is
    /// the default.
    pub fn of(spec: &RolloutSpec) -> Policy {
        let defaults = Policy::default();
        let parse = |field, value: &Option<String>, default| {
            value
                .as_deref()
                .and_then(|v| crate::api::resolve::parse_duration(field, v).ok())
                .unwrap_or(default)
        };
        Policy {
            min_interval: parse(
                "spec.rollout.minInterval",
                &spec.min_interval,
                defaults.min_interval,
            ),
            delay: parse("spec.rollout.delay", &spec.delay, defaults.delay),
        }
    }
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

/// How soon a failed read or restart is tried again: soon enough for the pods' old token,
/// rare enough to be no burden on the API server.
pub const RETRY_FAILED: Duration = Duration::from_secs(60);
/// Requeues are at most this far out (the resource's own renewal brings it back anyway).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// When the current token was written, to the second as the status holds it (the same
/// decision before and after the status write). `None`: no token yet, nothing to restart for.
pub fn rotated_at(status: &ProviderCredentialStatus) -> Option<Timestamp> {
    let issued = status.access_token.as_ref()?.issued_at.0;
    Timestamp::from_second(issued.as_second()).ok()
}

/// The workloads spec.rollout lists, sorted, each once.
pub fn listed(spec: &RolloutSpec) -> Vec<WorkloadRef> {
    let mut workloads = spec.workloads.clone();
    workloads.sort();
    workloads.dedup();
    workloads
}

fn is(record: &WorkloadRestartStatus, workload: &WorkloadRef) -> bool {
    record.kind == workload.kind.as_str() && record.name == workload.name
}

/// The workloads to read: listed and not restarted for this rotation already by what
/// status.restarts records (those need no read); none when restarts are disabled.
pub fn to_look(
    spec: &RolloutSpec,
    previous: &[WorkloadRestartStatus],
    rotated_at: Timestamp,
    enabled: bool,
) -> Vec<WorkloadRef> {
    if !enabled {
        return Vec::new();
    }
    listed(spec)
        .into_iter()
        .filter(|w| {
            !previous
                .iter()
                .any(|r| is(r, w) && covers(r.restarted_at.0, rotated_at))
        })
        .collect()
}

/// What the I/O step saw of one workload it read, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// It could not be read (a short API error).
    Unreadable(String),
    /// Read, and not restarted by this reconcile: [`decide`] did not say `RestartNow`.
    Looked(Seen),
    Restarted,
    /// The restart was refused or failed (a short API error).
    RestartFailed(String),
}

/// What [`outcome`] is made from.
pub struct Inputs<'a> {
    pub spec: &'a RolloutSpec,
    /// The ProviderCredential's name (workloads consent to it) and its target Secret's.
    pub resource: &'a str,
    pub target_secret: &'a str,
    /// From [`rotated_at`].
    pub rotated_at: Timestamp,
    pub now: Timestamp,
    /// The operator runs with --restart-workloads.
    pub enabled: bool,
    /// status.restarts before this reconcile.
    pub previous: &'a [WorkloadRestartStatus],
    /// Each workload of [`to_look`] and what became of it.
    pub observed: &'a [(WorkloadRef, Observed)],
}

/// spec.rollout removed: its condition and records go with it.
pub fn withdrawn() -> FeatureOutcome {
    FeatureOutcome {
        condition: ConditionChange::Removed,
        records: Records::Restarts(Vec::new()),
        ..FeatureOutcome::unchanged(Feature::Rollout)
    }
}

/// What was seen and done, as the WorkloadsRestarted condition (False with the first refusal's
/// reason, naming every refusal; else True: a restart planned, or every workload up to date),
/// status.restarts (the listed workloads' restarts covering the rotation, whoever made them),
/// an Event naming the restarts made, and when to look again (at the planned restart; within
/// [`RETRY_FAILED`] after a failure).
pub fn outcome(i: &Inputs<'_>) -> FeatureOutcome {
    let listed = listed(i.spec);
    let mut restarts: Vec<WorkloadRestartStatus> = i
        .previous
        .iter()
        .filter(|r| listed.iter().any(|w| is(r, w)))
        .cloned()
        .collect();
    let mut refused: Vec<(&'static str, String)> = Vec::new();
    if !i.enabled {
        refused.push((
            reason::RESTARTS_DISABLED,
            "the operator runs without --restart-workloads (chart value rolloutRestarts.enabled)"
                .into(),
        ));
    }
    let mut waiting: Option<Timestamp> = None;
    let mut restarted: Vec<String> = Vec::new();
    let mut retry = false;
    for (workload, observed) in i.observed {
        let shown = format!("{}/{}", workload.kind.as_str(), workload.name);
        match observed {
            Observed::Unreadable(e) => {
                refused.push((
                    reason::RESTART_FAILED,
                    format!("{shown} cannot be read ({e})"),
                ));
                retry = true;
            }
            Observed::RestartFailed(e) => {
                refused.push((
                    reason::RESTART_FAILED,
                    format!("{shown}: the restart failed ({e})"),
                ));
                retry = true;
            }
            Observed::Restarted => {
                record(&mut restarts, workload, i.now);
                restarted.push(shown);
            }
            Observed::Looked(seen) => {
                match decide(i.rotated_at, seen, Policy::of(i.spec), i.now) {
                    // Restarted since (for another resource, or by a person): shown here too,
                    // never at a time to come (a clock ahead must not hold restarts back).
                    Decision::UpToDate => {
                        if let Seen::Found {
                            last_restart: Some(at),
                        } = seen
                        {
                            record(&mut restarts, workload, (*at).min(i.now));
                        }
                    }
                    Decision::WaitUntil(at) => waiting = Some(waiting.map_or(at, |w| w.min(at))),
                    // Due, yet not restarted by this reconcile: looked at again at once.
                    Decision::RestartNow => waiting = Some(i.now),
                    Decision::Refused(why) => refused.push((why, refusal(why, &shown, i.resource))),
                }
            }
        }
    }
    FeatureOutcome {
        condition: condition(&refused, waiting),
        records: Records::Restarts(restarts),
        events: restarted_event(&restarted, i.target_secret),
        requeue: requeue(waiting, retry, i.now),
        feature: Feature::Rollout,
    }
}

fn refusal(why: &str, shown: &str, resource: &str) -> String {
    match why {
        reason::NOT_FOUND => format!("{shown} does not exist"),
        _ => format!("{shown} does not list {resource} in its annotation {RESTART_ON}"),
    }
}

fn condition(refused: &[(&'static str, String)], waiting: Option<Timestamp>) -> ConditionChange {
    let (status, reason, message) = match (refused.first(), waiting) {
        (Some((why, _)), _) => {
            let all: Vec<&str> = refused.iter().map(|(_, m)| m.as_str()).collect();
            (false, *why, format!("not restarted: {}", all.join("; ")))
        }
        (None, Some(at)) => (
            true,
            reason::RESTART_PLANNED,
            format!("restart planned at {at}"),
        ),
        (None, None) => (
            true,
            reason::UP_TO_DATE,
            "every listed workload started after the current token was written".to_string(),
        ),
    };
    ConditionChange::Set {
        status,
        reason,
        message,
    }
}

fn restarted_event(restarted: &[String], target_secret: &str) -> Vec<EventNote> {
    if restarted.is_empty() {
        return Vec::new();
    }
    vec![EventNote {
        warning: false,
        reason: reason::WORKLOADS_RESTARTED.into(),
        note: format!(
            "restarted {} after the token in Secret {target_secret} changed",
            restarted.join(", ")
        ),
        action: "Restart",
    }]
}

/// At the planned restart (at least a second away, at most [`MAX_WAIT`]), and within
/// [`RETRY_FAILED`] after a failure.
fn requeue(waiting: Option<Timestamp>, retry: bool, now: Timestamp) -> Option<Duration> {
    let again = waiting.map(|at| {
        Duration::from_millis(
            u64::try_from(at.as_millisecond().saturating_sub(now.as_millisecond())).unwrap_or(0),
        )
        .clamp(Duration::from_secs(1), MAX_WAIT)
    });
    if retry {
        return Some(again.map_or(RETRY_FAILED, |a| a.min(RETRY_FAILED)));
    }
    again
}

fn record(restarts: &mut Vec<WorkloadRestartStatus>, workload: &WorkloadRef, at: Timestamp) {
    restarts.retain(|r| !is(r, workload));
    restarts.push(WorkloadRestartStatus {
        kind: workload.kind.as_str().into(),
        name: workload.name.clone(),
        restarted_at: Time(at),
    });
    restarts.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
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

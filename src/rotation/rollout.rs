//! Whether a workload is restarted after a rotation (spec.rollout): pure decisions. A restart
//! is the one `kubectl rollout restart` makes (the pod template's
//! kubectl.kubernetes.io/restartedAt), so the workload's own annotation says when it was last
//! restarted, by this resource, another one, or a person.
//!
//! [`outcome`] turns what controller/steps/rollout.rs saw and did into the condition, the
//! `status.restarts` records, the Events and the requeue; [`super::merge`] applies them.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::merge::{ConditionChange, EventNote, Feature, FeatureOutcome, Records};
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
    Refused(Reason),
}

/// The WorkloadsRestarted condition's reasons, and the restart Event's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    WorkloadNotFound,
    WorkloadNotOptedIn,
    RestartFailed,
    RestartsDisabled,
    /// Nothing refused, a restart to come.
    RestartPlanned,
    /// Nothing refused, every workload started after the current token was written.
    UpToDate,
    /// The Event of a restart made.
    WorkloadsRestarted,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::WorkloadNotFound,
        Reason::WorkloadNotOptedIn,
        Reason::RestartFailed,
        Reason::RestartsDisabled,
        Reason::RestartPlanned,
        Reason::UpToDate,
        Reason::WorkloadsRestarted,
    ];

    /// The reason as the status and Events show it.
    pub fn reason(self) -> &'static str {
        match self {
            Reason::WorkloadNotFound => "WorkloadNotFound",
            Reason::WorkloadNotOptedIn => "WorkloadNotOptedIn",
            Reason::RestartFailed => "RestartFailed",
            Reason::RestartsDisabled => "RestartsDisabled",
            Reason::RestartPlanned => "RestartPlanned",
            Reason::UpToDate => "UpToDate",
            Reason::WorkloadsRestarted => "WorkloadsRestarted",
        }
    }
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
        Seen::Missing => return Decision::Refused(Reason::WorkloadNotFound),
        Seen::NotOptedIn => return Decision::Refused(Reason::WorkloadNotOptedIn),
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
    let mut refused: Vec<(Reason, String)> = Vec::new();
    if !i.enabled {
        refused.push((
            Reason::RestartsDisabled,
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
                    Reason::RestartFailed,
                    format!("{shown} cannot be read ({e})"),
                ));
                retry = true;
            }
            Observed::RestartFailed(e) => {
                refused.push((
                    Reason::RestartFailed,
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

fn refusal(why: Reason, shown: &str, resource: &str) -> String {
    match why {
        Reason::WorkloadNotFound => format!("{shown} does not exist"),
        _ => format!("{shown} does not list {resource} in its annotation {RESTART_ON}"),
    }
}

fn condition(refused: &[(Reason, String)], waiting: Option<Timestamp>) -> ConditionChange {
    let (status, reason, message) = match (refused.first(), waiting) {
        (Some((why, _)), _) => {
            let all: Vec<&str> = refused.iter().map(|(_, m)| m.as_str()).collect();
            (
                false,
                why.reason(),
                format!("not restarted: {}", all.join("; ")),
            )
        }
        (None, Some(at)) => (
            true,
            Reason::RestartPlanned.reason(),
            format!("restart planned at {at}"),
        ),
        (None, None) => (
            true,
            Reason::UpToDate.reason(),
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
        reason: Reason::WorkloadsRestarted.reason().into(),
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
            Decision::Refused(Reason::WorkloadNotFound)
        );
        assert_eq!(
            decide(t(1), &Seen::NotOptedIn, POLICY, t(100)),
            Decision::Refused(Reason::WorkloadNotOptedIn)
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

    mod reporting {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

        use super::*;
        use crate::api::{AccessTokenStatus, WorkloadKind};
        use crate::conditions::{self, ConditionType};
        use crate::rotation::Report;
        use crate::rotation::merge::{ConditionChange, merge};

        const ROTATED: i64 = 1_000;

        fn w(kind: WorkloadKind, name: &str) -> WorkloadRef {
            WorkloadRef {
                kind,
                name: name.into(),
            }
        }

        fn deployment(name: &str) -> WorkloadRef {
            w(WorkloadKind::Deployment, name)
        }

        fn spec(workloads: Vec<WorkloadRef>, delay: Option<&str>) -> RolloutSpec {
            RolloutSpec {
                workloads,
                min_interval: Some("10m".into()),
                delay: delay.map(Into::into),
            }
        }

        fn rec(kind: &str, name: &str, at: i64) -> WorkloadRestartStatus {
            WorkloadRestartStatus {
                kind: kind.into(),
                name: name.into(),
                restarted_at: Time(t(at)),
            }
        }

        fn run(
            spec: &RolloutSpec,
            previous: &[WorkloadRestartStatus],
            observed: &[(WorkloadRef, Observed)],
            now: i64,
            enabled: bool,
        ) -> FeatureOutcome {
            outcome(&Inputs {
                spec,
                resource: "billing",
                target_secret: "billing-token",
                rotated_at: t(ROTATED),
                now: t(now),
                enabled,
                previous,
                observed,
            })
        }

        /// No wildcard: a new reason does not compile until its wire string is written down.
        #[test]
        fn every_reason_keeps_its_wire_string() {
            let wire = |r: Reason| match r {
                Reason::WorkloadNotFound => "WorkloadNotFound",
                Reason::WorkloadNotOptedIn => "WorkloadNotOptedIn",
                Reason::RestartFailed => "RestartFailed",
                Reason::RestartsDisabled => "RestartsDisabled",
                Reason::RestartPlanned => "RestartPlanned",
                Reason::UpToDate => "UpToDate",
                Reason::WorkloadsRestarted => "WorkloadsRestarted",
            };
            let reasons = Reason::ALL.map(Reason::reason);
            assert_eq!(reasons, Reason::ALL.map(wire));
            crate::conditions::tests::assert_unique(&reasons);
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

        fn restarts(o: &FeatureOutcome) -> &[WorkloadRestartStatus] {
            match &o.records {
                Records::Restarts(r) => r,
                other => panic!("no restarts: {other:?}"),
            }
        }

        #[test]
        fn the_rotation_time_is_the_statuses_to_the_second() {
            let mut status = ProviderCredentialStatus::default();
            assert_eq!(rotated_at(&status), None);
            status.access_token = Some(AccessTokenStatus {
                issued_at: Time(Timestamp::from_millisecond(1_000_700).unwrap()),
                expires_at: Time(t(5_000)),
                fingerprint: "f".into(),
                lifetime_source: "expiresIn".into(),
                secret_name: "s".into(),
            });
            assert_eq!(rotated_at(&status), Some(t(1_000)));
        }

        #[test]
        fn the_policy_is_read_from_the_spec_with_defaults_for_what_is_unreadable() {
            let mut s = spec(vec![deployment("a")], Some("30s"));
            assert_eq!(
                Policy::of(&s),
                Policy {
                    min_interval: Duration::from_secs(600),
                    delay: Duration::from_secs(30),
                }
            );
            s.min_interval = Some("soon".into());
            s.delay = None;
            assert_eq!(Policy::of(&s), Policy::default());
        }

        #[test]
        fn only_listed_workloads_not_restarted_for_this_rotation_are_read_once_each() {
            let s = spec(
                vec![
                    deployment("b"),
                    deployment("a"),
                    deployment("b"),
                    deployment("c"),
                ],
                None,
            );
            // "a" restarted after the rotation; "c" restarted in its second (maybe before it).
            let previous = [
                rec("Deployment", "a", ROTATED + 5),
                rec("Deployment", "c", ROTATED),
            ];
            assert_eq!(
                to_look(&s, &previous, t(ROTATED), true),
                vec![deployment("b"), deployment("c")]
            );
            assert!(to_look(&s, &previous, t(ROTATED), false).is_empty());
        }

        #[test]
        fn without_the_flag_nothing_is_read_and_the_condition_names_it() {
            let s = spec(vec![deployment("a")], None);
            let previous = [rec("Deployment", "a", 900), rec("Deployment", "gone", 900)];
            let o = run(&s, &previous, &[], 2_000, false);
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::RestartsDisabled.reason(),
                    "not restarted: the operator runs without --restart-workloads (chart value rolloutRestarts.enabled)"
                )
            );
            // Records of workloads no longer listed go; the others stay.
            assert_eq!(restarts(&o), &[rec("Deployment", "a", 900)]);
            assert!(o.events.is_empty());
            assert_eq!(o.requeue, None);
        }

        #[test]
        fn a_restart_made_is_recorded_announced_and_up_to_date() {
            let s = spec(vec![deployment("api"), deployment("web")], None);
            let o = run(
                &s,
                &[rec("Deployment", "web", ROTATED + 1)],
                &[(deployment("api"), Observed::Restarted)],
                2_000,
                true,
            );
            assert_eq!(
                set(&o),
                (
                    true,
                    Reason::UpToDate.reason(),
                    "every listed workload started after the current token was written"
                )
            );
            assert_eq!(
                restarts(&o),
                &[
                    rec("Deployment", "api", 2_000),
                    rec("Deployment", "web", ROTATED + 1)
                ]
            );
            assert_eq!(
                o.events,
                vec![EventNote {
                    warning: false,
                    reason: "WorkloadsRestarted".into(),
                    note:
                        "restarted Deployment/api after the token in Secret billing-token changed"
                            .into(),
                    action: "Restart",
                }]
            );
            assert_eq!(o.requeue, None);
        }

        #[test]
        fn refusals_are_all_named_the_first_reason_wins_and_failures_retry() {
            let s = spec(
                vec![
                    deployment("a"),
                    deployment("b"),
                    w(WorkloadKind::StatefulSet, "c"),
                    w(WorkloadKind::DaemonSet, "d"),
                ],
                None,
            );
            let observed = [
                (deployment("a"), Observed::Looked(Seen::Missing)),
                (deployment("b"), Observed::Looked(Seen::NotOptedIn)),
                (
                    w(WorkloadKind::StatefulSet, "c"),
                    Observed::Unreadable("503 ServiceUnavailable".into()),
                ),
                (
                    w(WorkloadKind::DaemonSet, "d"),
                    Observed::RestartFailed("409 Conflict".into()),
                ),
            ];
            let o = run(&s, &[], &observed, 2_000, true);
            assert_eq!(
                set(&o),
                (
                    false,
                    Reason::WorkloadNotFound.reason(),
                    "not restarted: Deployment/a does not exist; Deployment/b does not list billing in its annotation tokenrotator.dev/restart-on; StatefulSet/c cannot be read (503 ServiceUnavailable); DaemonSet/d: the restart failed (409 Conflict)"
                )
            );
            assert!(o.events.is_empty());
            assert_eq!(o.requeue, Some(RETRY_FAILED));
            // A failure alone: its own reason; a refusal alone is not retried (a change is
            // what brings the resource back).
            let o = run(&s, &[], &observed[2..3], 2_000, true);
            assert_eq!(set(&o).1, Reason::RestartFailed.reason());
            let o = run(&s, &[], &observed[1..2], 2_000, true);
            assert_eq!(set(&o).1, Reason::WorkloadNotOptedIn.reason());
            assert_eq!(o.requeue, None);
        }

        #[test]
        fn a_planned_restart_is_true_and_looked_at_again_at_its_time() {
            let s = spec(vec![deployment("a"), deployment("b")], Some("30s"));
            let fresh = Observed::Looked(Seen::Found { last_restart: None });
            // "b" restarted 100 s before the rotation: the minimum interval holds it until 1_500.
            let held = Observed::Looked(Seen::Found {
                last_restart: Some(t(900)),
            });
            let o = run(
                &s,
                &[],
                &[
                    (deployment("a"), fresh.clone()),
                    (deployment("b"), held.clone()),
                ],
                1_010,
                true,
            );
            assert_eq!(
                set(&o),
                (
                    true,
                    Reason::RestartPlanned.reason(),
                    "restart planned at 1970-01-01T00:17:10Z"
                )
            );
            assert_eq!(o.requeue, Some(Duration::from_secs(20)));
            assert!(restarts(&o).is_empty());
            // Together with a failure: the sooner of the planned time and the retry.
            let failed = (deployment("b"), Observed::RestartFailed("x".into()));
            let o = run(
                &s,
                &[],
                &[(deployment("a"), fresh.clone()), failed],
                1_010,
                true,
            );
            assert_eq!(o.requeue, Some(Duration::from_secs(20)));
            let o = run(
                &s,
                &[],
                &[
                    (deployment("b"), held),
                    (deployment("a"), Observed::Unreadable("x".into())),
                ],
                1_010,
                true,
            );
            assert_eq!(o.requeue, Some(RETRY_FAILED));
        }

        #[test]
        fn requeues_are_at_least_a_second_and_at_most_a_day() {
            let mut s = spec(vec![deployment("a")], None);
            s.min_interval = Some("100h".into());
            let held = Observed::Looked(Seen::Found {
                last_restart: Some(t(900)),
            });
            let o = run(&s, &[], &[(deployment("a"), held)], 1_010, true);
            assert_eq!(o.requeue, Some(MAX_WAIT));
            // Due, yet not restarted (the I/O did not): looked at again, a second on.
            let due = Observed::Looked(Seen::Found { last_restart: None });
            let o = run(&s, &[], &[(deployment("a"), due)], 1_010, true);
            assert_eq!(set(&o).1, Reason::RestartPlanned.reason());
            assert_eq!(o.requeue, Some(Duration::from_secs(1)));
        }

        #[test]
        fn a_restart_by_someone_else_is_recorded_never_at_a_time_to_come() {
            let s = spec(vec![deployment("a"), deployment("b")], None);
            let o = run(
                &s,
                &[],
                &[
                    (
                        deployment("a"),
                        Observed::Looked(Seen::Found {
                            last_restart: Some(t(1_005)),
                        }),
                    ),
                    // 30 s ahead of this clock: within the skew allowed, shown as now.
                    (
                        deployment("b"),
                        Observed::Looked(Seen::Found {
                            last_restart: Some(t(1_040)),
                        }),
                    ),
                ],
                1_010,
                true,
            );
            assert_eq!(set(&o).1, Reason::UpToDate.reason());
            assert_eq!(
                restarts(&o),
                &[rec("Deployment", "a", 1_005), rec("Deployment", "b", 1_010)]
            );
            assert!(o.events.is_empty(), "no restart was made by this resource");
        }

        #[test]
        fn merged_a_refusal_warns_once_and_spec_rollout_removed_takes_everything_away() {
            let s = spec(vec![deployment("a")], None);
            let observed = [(deployment("a"), Observed::Looked(Seen::Missing))];
            let mut report = Report {
                status: Default::default(),
                requeue: None,
                events: Vec::new(),
                failure: None,
                expires_at: None,
                backing_off: false,
            };
            merge(
                &mut report,
                run(&s, &[], &observed, 2_000, true),
                Some(4),
                t(2_000),
            );
            assert_eq!(
                report.events,
                vec![EventNote {
                    warning: true,
                    reason: Reason::WorkloadNotFound.reason().into(),
                    note: "not restarted: Deployment/a does not exist".into(),
                    action: "Restart",
                }]
            );
            report.events.clear();
            merge(
                &mut report,
                run(&s, &[], &observed, 2_100, true),
                Some(4),
                t(2_100),
            );
            assert!(report.events.is_empty(), "{:?}", report.events);
            let c = conditions::get(&report.status.conditions, ConditionType::WorkloadsRestarted)
                .unwrap();
            assert_eq!(c.last_transition_time, Time(t(2_000)));
            report.status.restarts = vec![rec("Deployment", "a", 1_500)];
            merge(&mut report, withdrawn(), Some(5), t(2_200));
            assert!(
                conditions::get(&report.status.conditions, ConditionType::WorkloadsRestarted)
                    .is_none()
            );
            assert!(report.status.restarts.is_empty());
            assert!(report.events.is_empty());
            assert_eq!(report.requeue, None);
        }
    }
}

//! One merge of what was decided into the Report, in the spirit of a `compute_conditions`: the
//! only place that sets a feature's condition (its lastTransitionTime kept while its status
//! holds), that turns condition transitions into Events, and that caps Event notes.
//! `status_after` announces its own conditions through [`transition_events`]; the features
//! (spec.rollout, spec.delivery) hand their [`FeatureOutcome`] to [`merge`].

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{DeliveryStatus, ProviderCredentialStatus, WorkloadRestartStatus};
use crate::conditions::{self, ConditionType};

/// An Event to publish with the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: String,
    pub note: String,
    pub action: &'static str,
}

/// What a reconcile reports: `status_after` makes it, the features' outcomes are merged in,
/// controller/steps/report.rs writes and publishes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub status: ProviderCredentialStatus,
    /// When to look again; `None`: only when something changes.
    pub requeue: Option<Duration>,
    /// Events for condition transitions, published once the status is written.
    pub events: Vec<EventNote>,
    /// The failure to count, when this reconcile failed: the wire string of a provider error
    /// class, a `conditions::Reason` or the leader gate's `Withheld` (three modules' enums).
    pub failure: Option<&'static str>,
    /// When the token in the target Secret expires.
    pub expires_at: Option<Timestamp>,
    /// A blocked resource is rechecked with its backoff: this counts as one more attempt.
    pub backing_off: bool,
}

/// A note is cut after this many characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// events.k8s.io refuses a note longer than 1 KiB, counted in bytes.
const MAX_NOTE_BYTES: usize = 1024;

/// An Event note (or a message that becomes one) within what events.k8s.io accepts: at most
/// [`MAX_NOTE_CHARS`] characters and 1 KiB, an ellipsis where it was cut.
pub fn capped(text: &str) -> String {
    const ELLIPSIS: char = '…';
    if text.chars().count() <= MAX_NOTE_CHARS && text.len() <= MAX_NOTE_BYTES {
        return text.to_string();
    }
    let room = MAX_NOTE_BYTES - ELLIPSIS.len_utf8();
    let mut cut = String::with_capacity(MAX_NOTE_BYTES);
    for c in text.chars().take(MAX_NOTE_CHARS) {
        if cut.len() + c.len_utf8() > room {
            break;
        }
        cut.push(c);
    }
    cut.push(ELLIPSIS);
    cut
}

/// Which of a condition's transitions make an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recoveries {
    /// A change to healthy makes a Normal Event, also when the condition is new.
    Announced,
    /// As `Announced`, but a condition that appears healthy is no news.
    AnnouncedUnlessNew,
    /// Only changes to unhealthy make an Event (a Warning).
    Silent,
}

/// How a condition's transitions (status or reason changed) are announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub type_: ConditionType,
    /// The status that means all is well (True for Ready, False for Degraded).
    pub healthy: bool,
    pub recoveries: Recoveries,
    pub action: &'static str,
}

/// The Events for the transitions of the `announced` conditions from `before` to `after`: a
/// Warning for a change to unhealthy, a Normal Event for a recovery if it is announced. A
/// condition that went makes none.
pub fn transition_events(
    before: &[Condition],
    after: &[Condition],
    announced: &[Announced],
) -> Vec<EventNote> {
    let mut notes = Vec::new();
    for a in announced {
        if !conditions::transitioned(before, after, a.type_) {
            continue;
        }
        let Some(c) = conditions::get(after, a.type_) else {
            continue;
        };
        let healthy = (c.status == "True") == a.healthy;
        let news = match a.recoveries {
            Recoveries::Announced => true,
            Recoveries::AnnouncedUnlessNew => conditions::get(before, a.type_).is_some(),
            Recoveries::Silent => false,
        };
        if healthy && !news {
            continue;
        }
        notes.push(EventNote {
            warning: !healthy,
            reason: c.reason.clone(),
            note: capped(&c.message),
            action: a.action,
        });
    }
    notes
}

/// A feature that reports on the resource besides the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Rollout,
    Delivery,
}

impl Feature {
    /// Its condition, and how its transitions are announced: only failures are news (its
    /// successes have Events of their own, saying what was done).
    pub const fn announced(self) -> Announced {
        match self {
            Feature::Rollout => Announced {
                type_: ConditionType::WorkloadsRestarted,
                healthy: true,
                recoveries: Recoveries::Silent,
                action: "Restart",
            },
            Feature::Delivery => Announced {
                type_: ConditionType::Delivered,
                healthy: true,
                recoveries: Recoveries::Silent,
                action: "Deliver",
            },
        }
    }
}

/// What becomes of a feature's condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionChange {
    Unchanged,
    Set {
        status: bool,
        /// The wire string of the feature's reason (`rollout::Reason`, `delivery::Reason`):
        /// this module cannot name their enums (they import it).
        reason: &'static str,
        message: String,
    },
    /// The feature is no longer asked for: its condition goes.
    Removed,
}

/// What becomes of a feature's status records.
#[derive(Clone, Debug, PartialEq)]
pub enum Records {
    Unchanged,
    /// status.restarts, in full.
    Restarts(Vec<WorkloadRestartStatus>),
    /// status.deliveries, in full.
    Deliveries(Vec<DeliveryStatus>),
}

/// What a feature decided from what its I/O step observed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureOutcome {
    pub feature: Feature,
    pub condition: ConditionChange,
    pub records: Records,
    /// Events saying what was done (a condition's transitions are the merge's).
    pub events: Vec<EventNote>,
    /// Look again within this long at the latest.
    pub requeue: Option<Duration>,
}

impl FeatureOutcome {
    /// Nothing changes.
    pub fn unchanged(feature: Feature) -> Self {
        FeatureOutcome {
            feature,
            condition: ConditionChange::Unchanged,
            records: Records::Unchanged,
            events: Vec::new(),
            requeue: None,
        }
    }
}

/// Applies a feature's outcome to the report: its condition (its message capped as a note: it
/// becomes one), its records, its Events, the Warning for its condition's transition, and the
/// sooner of the two requeues.
pub fn merge(
    report: &mut Report,
    outcome: FeatureOutcome,
    generation: Option<i64>,
    now: Timestamp,
) {
    let announced = outcome.feature.announced();
    let before = report.status.conditions.clone();
    match outcome.condition {
        ConditionChange::Unchanged => {}
        ConditionChange::Set {
            status,
            reason,
            message,
        } => conditions::set(
            &mut report.status.conditions,
            announced.type_,
            status,
            reason,
            capped(&message),
            generation,
            now,
        ),
        ConditionChange::Removed => report
            .status
            .conditions
            .retain(|c| c.type_ != announced.type_.as_str()),
    }
    match outcome.records {
        Records::Unchanged => {}
        Records::Restarts(restarts) => report.status.restarts = restarts,
        Records::Deliveries(deliveries) => report.status.deliveries = deliveries,
    }
    report
        .events
        .extend(outcome.events.into_iter().map(|e| EventNote {
            note: capped(&e.note),
            ..e
        }));
    report.events.extend(transition_events(
        &before,
        &report.status.conditions,
        &[announced],
    ));
    if let Some(delay) = outcome.requeue {
        report.requeue = Some(report.requeue.map_or(delay, |r| r.min(delay)));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::conditions::ConditionType::{Degraded, Ready};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn report() -> Report {
        Report {
            status: Default::default(),
            requeue: None,
            events: Vec::new(),
            failure: None,
            expires_at: None,
            backing_off: false,
        }
    }

    fn set(status: bool, reason: &'static str, message: &str) -> FeatureOutcome {
        FeatureOutcome {
            condition: ConditionChange::Set {
                status,
                reason,
                message: message.into(),
            },
            ..FeatureOutcome::unchanged(Feature::Delivery)
        }
    }

    #[test]
    fn a_failure_warns_once_and_its_transition_time_holds() {
        let mut r = report();
        merge(&mut r, set(false, "NotGranted", "m1"), Some(3), t(100));
        assert_eq!(
            r.events,
            vec![EventNote {
                warning: true,
                reason: "NotGranted".into(),
                note: "m1".into(),
                action: "Deliver",
            }]
        );
        let c = conditions::get(&r.status.conditions, ConditionType::Delivered).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "NotGranted", "m1")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, Time(t(100)));
        // The same failure again, reworded: no Event, the transition time stays.
        r.events.clear();
        merge(&mut r, set(false, "NotGranted", "m2"), Some(3), t(200));
        assert!(r.events.is_empty(), "{:?}", r.events);
        let c = conditions::get(&r.status.conditions, ConditionType::Delivered).unwrap();
        assert_eq!(c.last_transition_time, Time(t(100)));
        assert_eq!(c.message, "m2");
        // Another reason is news, though the status holds.
        merge(&mut r, set(false, "WriteFailed", "m3"), Some(3), t(300));
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].reason, "WriteFailed");
        let c = conditions::get(&r.status.conditions, ConditionType::Delivered).unwrap();
        assert_eq!(c.last_transition_time, Time(t(100)));
    }

    #[test]
    fn a_recovery_of_a_feature_is_silent_and_restarts_the_transition_time() {
        let mut r = report();
        merge(&mut r, set(false, "NotGranted", "m1"), None, t(100));
        r.events.clear();
        merge(&mut r, set(true, "AllDelivered", "ok"), None, t(200));
        assert!(r.events.is_empty(), "{:?}", r.events);
        let c = conditions::get(&r.status.conditions, ConditionType::Delivered).unwrap();
        assert_eq!(c.last_transition_time, Time(t(200)));
        // A healthy condition on creation is no news either.
        let mut fresh = report();
        merge(&mut fresh, set(true, "AllDelivered", "ok"), None, t(200));
        assert!(fresh.events.is_empty());
    }

    #[test]
    fn a_removed_condition_goes_without_an_event_and_other_conditions_stay() {
        let mut r = report();
        conditions::set(
            &mut r.status.conditions,
            Ready,
            true,
            "TokenIssued",
            "m".into(),
            None,
            t(1),
        );
        merge(&mut r, set(false, "NotGranted", "m1"), None, t(100));
        r.events.clear();
        r.status.deliveries = vec![DeliveryStatus {
            namespace: "a".into(),
            secret_name: "s".into(),
            delivered: false,
            reason: "NotGranted".into(),
            message: None,
            delivered_at: None,
        }];
        let removed = FeatureOutcome {
            condition: ConditionChange::Removed,
            records: Records::Deliveries(Vec::new()),
            ..FeatureOutcome::unchanged(Feature::Delivery)
        };
        merge(&mut r, removed, None, t(200));
        assert!(r.events.is_empty());
        assert!(conditions::get(&r.status.conditions, ConditionType::Delivered).is_none());
        assert!(conditions::get(&r.status.conditions, Ready).is_some());
        assert!(r.status.deliveries.is_empty());
    }

    #[test]
    fn notes_and_feature_messages_are_capped_in_one_place() {
        let long = "x".repeat(5000);
        let mut r = report();
        let mut outcome = set(false, "WriteFailed", &long);
        outcome.feature = Feature::Rollout;
        outcome.events.push(EventNote {
            warning: false,
            reason: "WorkloadsRestarted".into(),
            note: long.clone(),
            action: "Restart",
        });
        merge(&mut r, outcome, None, t(1));
        let c = conditions::get(&r.status.conditions, ConditionType::WorkloadsRestarted).unwrap();
        assert_eq!(
            c.message.chars().count(),
            MAX_NOTE_CHARS + 1,
            "cut, and an ellipsis"
        );
        // The feature's own Event first, then its condition's transition.
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[0].reason, "WorkloadsRestarted");
        assert!(!r.events[0].warning);
        assert_eq!(r.events[1].action, "Restart");
        assert!(r.events[1].warning);
        for e in &r.events {
            assert!(e.note.len() <= 1024, "{}", e.note.len());
        }
    }

    #[test]
    fn a_note_of_wide_characters_stays_within_a_kib() {
        // events.k8s.io counts bytes: 1000 two-byte characters are 2000 of them.
        let wide = "é".repeat(MAX_NOTE_CHARS);
        let note = capped(&wide);
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(note.ends_with('…'));
        assert!(note.starts_with("éé"));
        // ASCII is cut where it always was.
        let ascii = capped(&"x".repeat(5000));
        assert_eq!(ascii, format!("{}…", "x".repeat(MAX_NOTE_CHARS)));
        assert_eq!(capped("short"), "short");
    }

    #[test]
    fn the_sooner_requeue_wins_and_none_keeps_the_reports() {
        let mut r = report();
        r.requeue = Some(Duration::from_secs(100));
        let mut outcome = FeatureOutcome::unchanged(Feature::Rollout);
        merge(&mut r, outcome.clone(), None, t(1));
        assert_eq!(r.requeue, Some(Duration::from_secs(100)));
        outcome.requeue = Some(Duration::from_secs(500));
        merge(&mut r, outcome.clone(), None, t(1));
        assert_eq!(r.requeue, Some(Duration::from_secs(100)));
        outcome.requeue = Some(Duration::from_secs(30));
        merge(&mut r, outcome.clone(), None, t(1));
        assert_eq!(r.requeue, Some(Duration::from_secs(30)));
        let mut idle = report();
        outcome.requeue = Some(Duration::from_secs(60));
        merge(&mut idle, outcome, None, t(1));
        assert_eq!(idle.requeue, Some(Duration::from_secs(60)));
        assert!(idle.status.conditions.is_empty());
        assert!(idle.events.is_empty());
    }

    #[test]
    fn recoveries_are_announced_as_each_condition_asks() {
        const READY_A: Announced = Announced {
            type_: Ready,
            healthy: true,
            recoveries: Recoveries::Announced,
            action: "Rotate",
        };
        const DEGRADED_A: Announced = Announced {
            type_: Degraded,
            healthy: false,
            recoveries: Recoveries::AnnouncedUnlessNew,
            action: "Refresh",
        };
        let mut after = Vec::new();
        conditions::set(
            &mut after,
            Ready,
            true,
            "TokenIssued",
            "r".into(),
            None,
            t(1),
        );
        conditions::set(&mut after, Degraded, false, "Ok", "d".into(), None, t(1));
        // New and healthy: Ready is announced, Degraded=False is not.
        let notes = transition_events(&[], &after, &[READY_A, DEGRADED_A]);
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].warning, notes[0].action), (false, "Rotate"));
        // Degraded=True, then False again: both announced, a Warning then a Normal Event.
        let before = after.clone();
        conditions::set(&mut after, Degraded, true, "Bad", "d".into(), None, t(2));
        let notes = transition_events(&before, &after, &[READY_A, DEGRADED_A]);
        assert_eq!(notes.len(), 1);
        assert_eq!(
            (notes[0].warning, notes[0].reason.as_str(), notes[0].action),
            (true, "Bad", "Refresh")
        );
        let before = after.clone();
        conditions::set(&mut after, Degraded, false, "Ok", "d".into(), None, t(3));
        let notes = transition_events(&before, &after, &[READY_A, DEGRADED_A]);
        assert_eq!(notes.len(), 1);
        assert!(!notes[0].warning);
        // Nothing changed: nothing to say.
        assert!(transition_events(&after, &after, &[READY_A, DEGRADED_A]).is_empty());
    }
}

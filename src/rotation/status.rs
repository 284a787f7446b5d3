//! Status after a reconcile: conditions, token tracking, failures, the Events worth
//! publishing, and when to look again. The controller writes the status only if it changed.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};

use super::merge::{Announced, EventNote, Recoveries, Report, transition_events};
use super::plan::{Baseline, Blocked, CurrentToken, Plan, TokenSource};
use super::schedule::{self, MIN_INTERVAL};
use super::settle::ChainEnd;
use crate::api::{
    AccessTokenStatus, FailureStatus, ProviderCredential, ProviderCredentialStatus,
    REFRESH_ANNOTATION, RefreshTokenStatus, SecretKeyRef, state_secret_name,
};
use crate::conditions::ConditionType::{Degraded, Ready, ShortLifetime, TimeoutCapped};
use crate::conditions::{self, ConditionType, Reason};
use crate::provider::{FetchError, IssuedToken, RefreshOutcome};
use crate::state;

/// The longest the controller sleeps on one resource, so no far-future time (a token that
/// expires in year 9999) can overflow a timer; waking early is harmless (nothing is due).
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

/// The longest `Retry-After` honoured: a provider cannot silence a resource for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A token was obtained but could not be stored in the target Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFailure {
    pub reason: Reason,
    pub message: String,
    /// Retried with backoff (a Kubernetes-side failure), or held until the spec changes.
    pub retry: bool,
}

/// How the reconcile ended.
pub enum Outcome<'a> {
    Wait(Timestamp),
    HoldRejected,
    Blocked(&'a Blocked),
    Issued {
        plan: &'a Plan,
        token: &'a IssuedToken,
    },
    Failed {
        plan: &'a Plan,
        error: &'a FetchError,
        chain_end: ChainEnd,
    },
    NotStored {
        plan: &'a Plan,
        failure: &'a StoreFailure,
    },
    /// The resource's request budget was spent: nothing was sent until then.
    Deferred {
        until: Timestamp,
    },
    /// The gate has kept the request back since then (leader election: the lease is not
    /// confirmed for its timeout), for long enough to say so; looked at again after `retry`.
    Withheld {
        since: Timestamp,
        /// `leader::Withheld::reason` (leader imports this module, so cannot be named here).
        reason: &'static str,
        retry: Duration,
    },
}

/// `attempts`: how many reconciles of this resource in a row ended blocked or in error.
pub fn status_after(
    pc: &ProviderCredential,
    base: &Baseline,
    outcome: Outcome<'_>,
    now: Timestamp,
    attempts: u32,
) -> Report {
    let mut r = Reporter {
        generation: pc.meta().generation,
        resource: pc.name_any(),
        now,
        status: base.status.clone(),
        current: base.current.clone(),
        failure: None,
        backing_off: false,
    };
    let requeue = match outcome {
        Outcome::Wait(at) => {
            r.mark_ready_while_token_valid();
            let shown_ready =
                conditions::get(&r.status.conditions, Ready).is_some_and(|c| c.status == "True");
            if r.current.is_none() && shown_ready {
                // The token shown as ready expired while waiting (for its renewal time, or a
                // retry after failures).
                r.set(
                    Ready,
                    false,
                    Reason::TokenExpired.reason(),
                    format!("the last token expired; the next is requested at {at}"),
                );
            }
            if r.status.consecutive_failures.unwrap_or(0) == 0 {
                r.status.next_refresh_at = Some(Time(at));
            }
            r.requeue_at(at)
        }
        Outcome::HoldRejected => {
            r.mark_ready_while_token_valid();
            r.requeue_at_expiry_or_never()
        }
        Outcome::Blocked(b) => {
            if *b == Blocked::Suspended {
                r.seen_while_suspended(pc);
            }
            r.blocked(b, attempts)
        }
        Outcome::Issued { plan, token } => {
            r.attempted(plan);
            r.issued(plan, token, &base.status)
        }
        Outcome::Failed {
            plan,
            error,
            chain_end,
        } => {
            r.attempted(plan);
            r.failed(plan, error, chain_end)
        }
        Outcome::NotStored { plan, failure } => {
            r.attempted(plan);
            r.not_stored(failure)
        }
        Outcome::Deferred { until } => r.deferred(until),
        Outcome::Withheld {
            since,
            reason,
            retry,
        } => r.withheld(since, reason, retry),
    };
    let events = events(&base.status.conditions, &r.status.conditions);
    Report {
        events,
        requeue,
        failure: r.failure,
        expires_at: r.current.as_ref().map(|c| c.expires_at),
        backing_off: r.backing_off,
        status: r.status,
    }
}

/// A bug (a panic) while handling this resource: reported on the resource and retried with
/// backoff, while every other resource carries on. Nothing of the panic's text is shown: it
/// could hold anything.
pub fn status_after_panic(pc: &ProviderCredential, now: Timestamp, attempts: u32) -> Report {
    let mut r = Reporter {
        generation: pc.meta().generation,
        resource: pc.name_any(),
        now,
        status: pc.status.clone().unwrap_or_default(),
        current: None,
        failure: Some(Reason::InternalError.reason()),
        backing_off: true,
    };
    let delay = schedule::backoff(attempts.saturating_add(1), None, 0.5);
    r.set(
        Degraded,
        true,
        Reason::InternalError.reason(),
        format!(
            "the operator hit a bug while handling this resource (reported in its log at {now}); retrying in {}s. Other resources are not affected",
            delay.as_secs()
        ),
    );
    let before = pc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    Report {
        events: events(&before, &r.status.conditions),
        requeue: Some(delay),
        failure: r.failure,
        expires_at: None,
        backing_off: true,
        status: r.status,
    }
}

struct Reporter {
    generation: Option<i64>,
    resource: String,
    now: Timestamp,
    status: ProviderCredentialStatus,
    current: Option<CurrentToken>,
    failure: Option<&'static str>,
    backing_off: bool,
}

impl Reporter {
    fn set(&mut self, type_: ConditionType, status: bool, reason: &str, message: String) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    /// Between rotations: Ready=True while a valid token is in place; a Ready that is already
    /// true is left alone (so an identical status is not written).
    fn mark_ready_while_token_valid(&mut self) {
        let ready =
            conditions::get(&self.status.conditions, Ready).is_some_and(|c| c.status == "True");
        if let Some(c) = self.current.clone().filter(|_| !ready) {
            self.set(
                Ready,
                true,
                Reason::TokenIssued.reason(),
                format!("token valid until {}", c.expires_at),
            );
        }
    }

    /// Ready while the last good token is valid (saying what is wrong), else not Ready.
    fn set_ready_despite(&mut self, why: &str, message: &str, while_valid: &str) {
        match self.current.clone() {
            Some(c) => self.set(
                Ready,
                true,
                Reason::TokenIssued.reason(),
                format!("token valid until {}; {while_valid}", c.expires_at),
            ),
            None => self.set(Ready, false, why, message.to_string()),
        }
    }

    /// A state that needs a person (or a change) before any token request.
    fn blocked(&mut self, b: &Blocked, attempts: u32) -> Option<Duration> {
        let (why, message) = (b.reason().reason(), b.message());
        self.set_ready_despite(why, &message, &format!("no refresh possible: {message}"));
        let degraded = *b != Blocked::Suspended;
        self.set(Degraded, degraded, why, message);
        self.status.next_refresh_at = None;
        let at_expiry = self.requeue_at_expiry_or_never();
        // Rechecks back off: changes no watch delivers (a foreign Secret removed, a
        // credentials Secret created without the label) are noticed soon, then rarely.
        if b.recheck() {
            self.backing_off = true;
            let delay = schedule::backoff(attempts.saturating_add(1), None, 0.5);
            shorter(at_expiry, delay)
        } else {
            at_expiry
        }
    }

    /// A refresh request made while suspended is recorded as seen: it gets no token, and
    /// whoever asked (`refresh --wait`) learns so now instead of at its timeout; resuming
    /// does not act on it later.
    fn seen_while_suspended(&mut self, pc: &ProviderCredential) {
        if let Some(value) = pc.annotations().get(REFRESH_ANNOTATION) {
            self.status.last_refresh_request = Some(value.clone());
        }
    }

    /// A token request was made for this plan: a refresh request it answers is handled, and
    /// a timeout shortened to fit the lease is said (once it no longer is, that too).
    fn attempted(&mut self, plan: &Plan) {
        if let Some(r) = &plan.refresh_request {
            self.status.last_refresh_request = Some(r.clone());
        }
        if !matches!(plan.source, TokenSource::Request(_)) {
            return;
        }
        if let Some(c) = plan.timeout_capped {
            self.set(
                TimeoutCapped,
                true,
                Reason::LeaseTooShort.reason(),
                format!(
                    "token requests get {}s, not the {}s of spec.tokenEndpoint.timeoutSeconds: the operator's leader-election lease (--lease-duration-seconds {}, --lease-renew-margin-seconds {}) must outlive every request, and covers no longer one; a slower answer fails as ProviderUnavailable. Raise --lease-duration-seconds",
                    c.cap.at_most.as_secs(),
                    c.asked.as_secs(),
                    c.cap.lease_duration.as_secs(),
                    c.cap.renew_margin.as_secs()
                ),
            );
        } else if conditions::get(&self.status.conditions, TimeoutCapped)
            .is_some_and(|c| c.status == "True")
        {
            self.set(
                TimeoutCapped,
                false,
                Reason::TimeoutAsSpecified.reason(),
                "token requests get the timeout spec.tokenEndpoint.timeoutSeconds asks for".into(),
            );
        }
    }

    fn issued(
        &mut self,
        plan: &Plan,
        token: &IssuedToken,
        before: &ProviderCredentialStatus,
    ) -> Option<Duration> {
        let fingerprint = token.fingerprint();
        let same_token = before.access_token.as_ref().map(|a| a.fingerprint.as_str())
            == Some(fingerprint.as_str());
        let renewal = schedule::renewal(
            token.issued_at,
            token.expires_at,
            &plan.policy,
            schedule::jitter_for(&fingerprint),
        );
        let next = if same_token {
            // The provider hands out the same token until it expires: ask again then.
            schedule::add(token.expires_at, SignedDuration::from_secs(1))
        } else {
            renewal.at
        };
        self.short_lifetime(renewal.short_lifetime, token, plan);
        self.current = Some(CurrentToken {
            expires_at: token.expires_at,
            issued_at: token.issued_at,
            fingerprint: fingerprint.clone(),
        });
        let issued_at = match (&before.access_token, same_token) {
            (Some(a), true) => a.issued_at.clone(),
            _ => Time(token.issued_at),
        };
        self.status.access_token = Some(AccessTokenStatus {
            issued_at,
            expires_at: Time(token.expires_at),
            fingerprint,
            lifetime_source: token.lifetime_source.as_str().to_string(),
            secret_name: plan.target_secret.name.clone(),
        });
        self.status.next_refresh_at = Some(Time(next));
        self.status.consecutive_failures = None;
        self.status.refresh_token = match (&token.refresh, self.status.refresh_token.take()) {
            (RefreshOutcome::NewlyIssued(t), _) => Some(Box::new(self.refresh_status(t, 0))),
            (RefreshOutcome::Rotated(t), old) => {
                let rotations = old.map(|o| o.rotations.saturating_add(1)).unwrap_or(1);
                Some(Box::new(self.refresh_status(t, rotations)))
            }
            (RefreshOutcome::Kept, old) => old,
            (RefreshOutcome::None, _) => None,
        };
        self.set(
            Ready,
            true,
            Reason::TokenIssued.reason(),
            format!(
                "token valid until {} (lifetime from {}{}, next refresh at {next})",
                token.expires_at,
                token.lifetime_source.as_str(),
                token
                    .lifetime_capped_from
                    .map(|c| format!(
                        "; the provider claimed {c}s, capped at {}s",
                        token.lifetime_seconds
                    ))
                    .unwrap_or_default()
            ),
        );
        self.set(
            Degraded,
            false,
            Reason::RefreshSucceeded.reason(),
            "the last token request succeeded".into(),
        );
        self.requeue_at(next)
    }

    /// Warns while the provider's tokens live too briefly for the renewal policy; the
    /// condition appears only once that has happened.
    fn short_lifetime(&mut self, short: bool, token: &IssuedToken, plan: &Plan) {
        if short {
            let margin = plan.policy.minimum_margin.as_secs();
            self.set(
                ShortLifetime,
                true,
                Reason::LifetimeShorterThanMargin.reason(),
                format!(
                    "the provider's token lives {}s, too short to renew {margin}s before expiry (spec.refresh.minimumMargin) or as spec.refresh asks; renewing at half its lifetime, at least {}s after issue. Lower spec.refresh.minimumMargin or ask the provider for longer-lived tokens",
                    token.lifetime_seconds,
                    schedule::SHORT_LIFETIME_FLOOR.as_secs()
                ),
            );
        } else if conditions::get(&self.status.conditions, ShortLifetime).is_some() {
            self.set(
                ShortLifetime,
                false,
                Reason::LifetimeSufficient.reason(),
                "the token's lifetime allows renewal as spec.refresh asks".into(),
            );
        }
    }

    fn refresh_status(&self, token: &SecretString, rotations: u32) -> RefreshTokenStatus {
        RefreshTokenStatus {
            secret_ref: SecretKeyRef {
                name: state_secret_name(&self.resource),
                key: state::REFRESH_TOKEN_KEY.into(),
            },
            issued_at: Time(self.now),
            fingerprint: crate::provider::fingerprint(token.expose_secret()),
            rotations,
        }
    }

    fn record_failure(&mut self, reason: &'static str, http_status: Option<u16>, message: String) {
        self.status.consecutive_failures = Some(
            self.status
                .consecutive_failures
                .unwrap_or(0)
                .saturating_add(1),
        );
        self.status.last_failure = Some(Box::new(FailureStatus {
            time: Time(self.now),
            reason: reason.into(),
            http_status,
            message,
        }));
        self.failure = Some(reason);
    }

    fn failed(&mut self, plan: &Plan, error: &FetchError, chain_end: ChainEnd) -> Option<Duration> {
        let class = error.class();
        self.record_failure(class.reason(), error.http_status(), error.to_string());
        let failures = self.status.consecutive_failures.unwrap_or(1);
        let (why, message, retry) = match chain_end {
            ChainEnd::FallBackToPrimary => (
                class.reason(),
                format!(
                    "the refresh token was rejected ({error}); requesting a new token with the {} grant",
                    plan.config.grant.wire_value()
                ),
                Some(Duration::ZERO),
            ),
            ChainEnd::NeedsReauthorization => (
                Reason::ReauthorizationRequired.reason(),
                format!(
                    "the provider ended the refresh chain ({error}); obtain a new authorization code and put it in the credentials Secret"
                ),
                None,
            ),
            ChainEnd::Intact
                if super::settle::retried_with_backoff(
                    class,
                    plan.config.service_account.is_some(),
                ) =>
            {
                let asked = error.retry_after();
                let retry_after = asked.map(|d| d.min(MAX_RETRY_AFTER));
                let delay = schedule::backoff(failures, retry_after, rand_unit(self));
                let mut message = error.to_string();
                if let Some(asked) = asked.filter(|d| *d > MAX_RETRY_AFTER) {
                    message.push_str(&format!(
                        " (Retry-After {}s is capped at {}s)",
                        asked.as_secs(),
                        MAX_RETRY_AFTER.as_secs()
                    ));
                }
                (class.reason(), message, Some(delay))
            }
            ChainEnd::Intact => (
                class.reason(),
                format!("{error}; not retried until the credentials or the spec change"),
                None,
            ),
        };
        self.degrade(why, message, retry)
    }

    fn not_stored(&mut self, failure: &StoreFailure) -> Option<Duration> {
        self.record_failure(failure.reason.reason(), None, failure.message.clone());
        let failures = self.status.consecutive_failures.unwrap_or(1);
        let retry = failure
            .retry
            .then(|| schedule::backoff(failures, None, rand_unit(self)));
        self.degrade(failure.reason.reason(), failure.message.clone(), retry)
    }

    fn deferred(&mut self, until: Timestamp) -> Option<Duration> {
        let why = Reason::RequestBudgetExceeded.reason();
        self.failure = Some(why);
        let message = format!(
            "too many token requests for this resource in the last minute (the operator's --token-requests-per-minute); paused until {until}. Something keeps asking for tokens: check the ShortLifetime condition, the tokenrotator.dev/refresh annotation and the operator log"
        );
        self.set_ready_despite(
            why,
            &message,
            "refreshing it is paused (RequestBudgetExceeded)",
        );
        self.set(Degraded, true, why, message);
        self.status.next_refresh_at = Some(Time(until));
        Some(requeue_delay(self.now, until))
    }

    /// No request for a while: the leader-election lease is not confirmed for its timeout.
    /// Nothing was sent, so no failure is counted; the next request goes as soon as it is.
    fn withheld(
        &mut self,
        since: Timestamp,
        why: &'static str,
        retry: Duration,
    ) -> Option<Duration> {
        self.failure = Some(why);
        let message = format!(
            "no token request has been sent since {since}: this replica leads, but its leader-election Lease has not been confirmed for as long as a request may take (its timeout + 2 s). Check the operator's log, its RBAC on the Lease (get, list, watch) and --lease-duration-seconds; the request goes as soon as the lease is confirmed"
        );
        self.set_ready_despite(why, &message, &format!("refreshing it waits ({why})"));
        self.set(Degraded, true, why, message);
        Some(retry)
    }

    /// Degraded for `why`; Ready only while the last good token is valid. `retry`: when to try
    /// again (recorded as the next refresh time), else only after a change.
    fn degrade(&mut self, why: &str, message: String, retry: Option<Duration>) -> Option<Duration> {
        self.set_ready_despite(why, &message, &format!("refreshing it is failing ({why})"));
        self.set(Degraded, true, why, message);
        match retry {
            Some(delay) => {
                let at = schedule::add(
                    self.now,
                    SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX),
                );
                self.status.next_refresh_at = Some(Time(at));
                shorter(self.requeue_at_expiry_or_never(), delay)
            }
            None => {
                self.status.next_refresh_at = None;
                self.requeue_at_expiry_or_never()
            }
        }
    }

    fn requeue_at(&self, at: Timestamp) -> Option<Duration> {
        Some(requeue_delay(self.now, at))
    }

    /// Look again when the current token expires (to report it), or wait for a change.
    fn requeue_at_expiry_or_never(&self) -> Option<Duration> {
        self.current
            .as_ref()
            .and_then(|c| self.requeue_at(c.expires_at))
    }
}

/// Backoff jitter, drawn from the clock: pure for a fixed `now`, spread across resources
/// whose failures land at different instants.
fn rand_unit(r: &Reporter) -> f64 {
    f64::from(r.now.subsec_nanosecond().unsigned_abs() % 1_000_000) / 1_000_000.0
}

/// From now until `at`, at least [`MIN_INTERVAL`] and at most [`MAX_REQUEUE`].
pub fn requeue_delay(now: Timestamp, at: Timestamp) -> Duration {
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    wait.clamp(MIN_INTERVAL, MAX_REQUEUE)
}

/// The sooner of two looks.
fn shorter(next: Option<Duration>, delay: Duration) -> Option<Duration> {
    let delay = delay.clamp(MIN_INTERVAL, MAX_REQUEUE);
    Some(next.map_or(delay, |d| d.min(delay)))
}

/// How the rotation's conditions announce their transitions: Ready's every change; the others'
/// too, but a condition that appears healthy (Degraded=False right after creation) is no news.
const ANNOUNCED: [Announced; 4] = [
    Announced {
        type_: Ready,
        healthy: true,
        recoveries: Recoveries::Announced,
        action: "Rotate",
    },
    Announced {
        type_: Degraded,
        healthy: false,
        recoveries: Recoveries::AnnouncedUnlessNew,
        action: "Refresh",
    },
    Announced {
        type_: ShortLifetime,
        healthy: false,
        recoveries: Recoveries::AnnouncedUnlessNew,
        action: "Refresh",
    },
    Announced {
        type_: TimeoutCapped,
        healthy: false,
        recoveries: Recoveries::AnnouncedUnlessNew,
        action: "Refresh",
    },
];

/// Events for the rotation's condition transitions (status or reason changed).
fn events(before: &[Condition], after: &[Condition]) -> Vec<EventNote> {
    transition_events(before, after, &ANNOUNCED)
}

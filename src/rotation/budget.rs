//! The per-resource request budget: whatever asks for a token (a schedule, a watch event, a
//! bug), one resource sends at most a few requests per rolling minute. When it runs out, the
//! resource pauses, and each further exhaustion doubles the pause (1 min, 2 min, … 1 h) until
//! an hour passes without one.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::schedule::add;

const WINDOW: SignedDuration = SignedDuration::from_secs(60);
const FIRST_PAUSE: Duration = Duration::from_secs(60);
const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// An hour without exhausting the budget forgets the earlier exhaustions.
const FORGIVE_AFTER: SignedDuration = SignedDuration::from_secs(3600);

#[derive(Clone, Debug, Default)]
pub struct RequestBudget {
    /// Requests in the last window, oldest first.
    recent: VecDeque<Timestamp>,
    /// Exhaustions since the last quiet hour.
    strikes: u32,
    paused_until: Option<Timestamp>,
}

impl RequestBudget {
    /// Spends one request now if the budget allows, else says when the next one may go.
    pub fn spend(&mut self, now: Timestamp, per_minute: u32) -> Result<(), Timestamp> {
        if let Some(until) = self.paused_until.filter(|u| *u > now) {
            return Err(until);
        }
        self.forget_before(now);
        if self.recent.len() < per_minute.max(1) as usize {
            // Most resources spend one request a minute, and every one that did keeps its
            // budget for that minute: room for one, not the four a first push makes.
            if self.recent.capacity() == 0 {
                self.recent.reserve_exact(1);
            }
            self.recent.push_back(now);
            return Ok(());
        }
        if self.quiet_since_pause(now) {
            self.strikes = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        let pause = FIRST_PAUSE
            .saturating_mul(1 << (self.strikes - 1).min(16))
            .min(MAX_PAUSE);
        let until = add(now, SignedDuration::try_from(pause).unwrap_or(WINDOW));
        self.paused_until = Some(until);
        Err(until)
    }

    /// Gives back the request spent last: it was never sent (withheld by the gate).
    pub fn refund(&mut self) {
        self.recent.pop_back();
    }

    /// An hour has passed since the last pause ended (or there never was one).
    fn quiet_since_pause(&self, now: Timestamp) -> bool {
        self.paused_until
            .is_none_or(|u| now.duration_since(u) > FORGIVE_AFTER)
    }

    /// Nothing worth remembering: no recent request, no pause, no recent exhaustion.
    pub fn is_idle(&mut self, now: Timestamp) -> bool {
        self.forget_before(now);
        self.recent.is_empty() && self.quiet_since_pause(now)
    }

    fn forget_before(&mut self, now: Timestamp) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_few_per_minute_then_exponential_pauses() {
        let mut b = RequestBudget::default();
        // A loop asking every second: six go through in the first minute…
        let mut sent = Vec::new();
        let mut t = 0;
        while t < 8 * 3600 {
            match b.spend(at(t), 6) {
                Ok(()) => {
                    sent.push(t);
                    t += 1;
                }
                Err(until) => t = until.as_second() - 1_800_000_000,
            }
        }
        assert_eq!(&sent[..6], &[0, 1, 2, 3, 4, 5]);
        // …then the pauses double: 1, 2, 4, … minutes, capped at an hour.
        let bursts: Vec<i64> = sent.chunks(6).map(|c| c[0]).collect();
        let gaps: Vec<i64> = bursts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..4], &[66, 126, 246, 486], "{gaps:?}");
        assert!(gaps.iter().all(|g| *g <= 3600 + 6));
        assert!(sent.len() < 6 * 20, "{} requests in 8 hours", sent.len());
    }

    #[test]
    fn a_schedule_within_the_budget_is_never_paused() {
        let mut b = RequestBudget::default();
        for minute in 0..120 {
            assert_eq!(b.spend(at(minute * 30), 6), Ok(()));
        }
        assert!(!b.is_idle(at(120 * 30)));
        assert!(b.is_idle(at(120 * 30 + 3600)));
    }

    #[test]
    fn a_request_never_sent_is_refunded() {
        let mut b = RequestBudget::default();
        for t in 0..6 {
            b.spend(at(t), 6).unwrap();
            // Withheld every time: nothing was sent, nothing counts.
            b.refund();
        }
        assert_eq!(b.spend(at(6), 6), Ok(()));
        assert!(!b.is_idle(at(7)));
        b.refund();
        assert!(b.is_idle(at(7)));
        // A refund of nothing is harmless.
        b.refund();
        assert!(b.is_idle(at(8)));
    }

    #[test]
    fn an_hour_of_quiet_forgives() {
        let mut b = RequestBudget::default();
        for t in 0..6 {
            b.spend(at(t), 6).unwrap();
        }
        assert_eq!(b.spend(at(6), 6), Err(at(66)));
        for t in 3667..3673 {
            b.spend(at(t), 6).unwrap();
        }
        assert_eq!(
            b.spend(at(3673), 6),
            Err(at(3733)),
            "back to the first pause"
        );
    }
}

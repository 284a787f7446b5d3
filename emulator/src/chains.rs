//! Refresh-token chains: the lineage of refresh tokens that one primary grant (Retently's
//! authorization-code exchange, Reltio's password grant) starts and every refresh extends.
//! Replaced tokens are remembered, so a provider can honour a grace period (as Okta's
//! rotation grace period and Auth0's reuse interval do) and the counters can tell a client
//! that reuses a replaced token from one that sends garbage.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::state::Counters;
use crate::tokens::opaque;

/// Identifies a chain; every successor inherits its predecessor's.
pub(crate) type ChainId = u64;

/// One process-wide sequence, never reused (not even by a reset), so an in-flight mark
/// taken before a reset can never be mistaken for a chain started after it.
static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

/// Replaced tokens remembered at most, oldest forgotten first, so a demo that rotates for
/// days stays small. A forgotten token is merely unknown: refused all the same, just no
/// longer counted as stale.
const MAX_REPLACED: usize = 100_000;

struct Entry {
    subject: String,
    chain: ChainId,
    /// When a successor replaced it; `None` while it is the live end of a branch.
    replaced_at: Option<Timestamp>,
}

/// Where a presented refresh token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    Live,
    /// Replaced, but still accepted: the grace period has not passed.
    InGrace,
    /// Replaced and past the grace period (or the grace is zero): refused.
    PastGrace,
}

/// A refresh token the store knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// Whom it was issued to: Retently's client id, Reltio's user.
    pub subject: String,
    pub chain: ChainId,
    pub standing: Standing,
}

impl Found {
    pub fn accepted(&self) -> bool {
        self.standing != Standing::PastGrace
    }

    /// Books a presented token into the chain counters; `stale_in_chain` is what
    /// [`RefreshTokens::note_presented`] answered for it.
    pub fn count(&self, counters: &mut Counters, stale_in_chain: u64) {
        if self.standing != Standing::Live {
            counters.stale_refresh_presented += 1;
            counters.most_stale_in_one_chain = counters.most_stale_in_one_chain.max(stale_in_chain);
        }
        if self.standing == Standing::PastGrace {
            counters.stale_refresh_refused += 1;
        }
    }
}

/// The refresh tokens of one provider, live and replaced.
#[derive(Default)]
pub(crate) struct RefreshTokens {
    tokens: HashMap<String, Entry>,
    /// Replaced tokens in replacement order, to forget the oldest beyond [`MAX_REPLACED`].
    replaced: VecDeque<String>,
    /// Replaced tokens presented, per chain: a client that loses one unstored answer per
    /// crash presents at most one per crash in each chain, however many chains it keeps.
    stale_by_chain: HashMap<ChainId, u64>,
}

impl RefreshTokens {
    /// A new refresh token heading a new chain.
    pub fn start_chain(&mut self, subject: &str) -> String {
        let chain = NEXT_CHAIN.fetch_add(1, Ordering::Relaxed);
        self.insert(subject, chain)
    }

    /// The chain `token` belongs to, live or replaced.
    pub fn chain_of(&self, token: &str) -> Option<ChainId> {
        self.tokens.get(token).map(|e| e.chain)
    }

    /// Looks `token` up; a replaced token is judged against `grace` as it is now, so a
    /// changed knob applies to tokens replaced before the change too.
    pub fn lookup(&self, token: &str, grace: Duration, now: Timestamp) -> Option<Found> {
        let e = self.tokens.get(token)?;
        let standing = match e.replaced_at {
            None => Standing::Live,
            Some(at) if within(at, grace, now) => Standing::InGrace,
            Some(_) => Standing::PastGrace,
        };
        Some(Found {
            subject: e.subject.clone(),
            chain: e.chain,
            standing,
        })
    }

    /// Issues the successor of `presented` (found as `found`) in the same chain and marks
    /// `presented` replaced. A token replaced already keeps its first replacement time: the
    /// grace runs from there, however often it is reused.
    pub fn successor(&mut self, presented: &str, found: &Found, now: Timestamp) -> String {
        if let Some(e) = self.tokens.get_mut(presented)
            && e.replaced_at.is_none()
        {
            e.replaced_at = Some(now);
            self.replaced.push_back(presented.to_owned());
            while self.replaced.len() > MAX_REPLACED {
                if let Some(old) = self.replaced.pop_front() {
                    self.tokens.remove(&old);
                }
            }
        }
        self.insert(&found.subject, found.chain)
    }

    /// Books `found` as presented; answers how many replaced tokens its chain has had
    /// presented so far (0 for a live one).
    pub fn note_presented(&mut self, found: &Found) -> u64 {
        if found.standing == Standing::Live {
            return 0;
        }
        let n = self.stale_by_chain.entry(found.chain).or_default();
        *n += 1;
        *n
    }

    pub fn clear(&mut self) {
        self.tokens.clear();
        self.replaced.clear();
        self.stale_by_chain.clear();
    }

    fn insert(&mut self, subject: &str, chain: ChainId) -> String {
        let token = opaque();
        self.tokens.insert(
            token.clone(),
            Entry {
                subject: subject.to_owned(),
                chain,
                replaced_at: None,
            },
        );
        token
    }
}

/// Whether `now` is still within `grace` of `replaced_at`. Zero grace is strict, whatever
/// the wall clock does.
fn within(replaced_at: Timestamp, grace: Duration, now: Timestamp) -> bool {
    let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    !grace.is_zero() && now.duration_since(replaced_at) < grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    fn standing(s: &RefreshTokens, t: &str, grace_ms: u64, now: Timestamp) -> Option<Standing> {
        s.lookup(t, Duration::from_millis(grace_ms), now)
            .map(|f| f.standing)
    }

    #[test]
    fn successors_inherit_the_chain_and_replace_their_predecessor() {
        let mut s = RefreshTokens::default();
        let a1 = s.start_chain("u");
        let b1 = s.start_chain("u");
        let found = s.lookup(&a1, Duration::ZERO, at(0)).unwrap();
        assert_eq!(found.standing, Standing::Live);
        let a2 = s.successor(&a1, &found, at(0));
        assert_eq!(s.chain_of(&a2), s.chain_of(&a1));
        assert_ne!(s.chain_of(&a1), s.chain_of(&b1));
        assert_eq!(s.lookup(&a2, Duration::ZERO, at(0)).unwrap().subject, "u");
        assert_eq!(standing(&s, &a1, 0, at(0)), Some(Standing::PastGrace));
        assert_eq!(standing(&s, &a2, 0, at(0)), Some(Standing::Live));
        assert_eq!(standing(&s, "made-up", 0, at(0)), None);
    }

    #[test]
    fn grace_runs_from_the_first_replacement() {
        let mut s = RefreshTokens::default();
        let t1 = s.start_chain("u");
        let found = s.lookup(&t1, Duration::ZERO, at(0)).unwrap();
        s.successor(&t1, &found, at(0));
        assert_eq!(standing(&s, &t1, 300, at(299)), Some(Standing::InGrace));
        // Reusing it within the grace does not restart the grace.
        let again = s.lookup(&t1, Duration::from_millis(300), at(100)).unwrap();
        let t3 = s.successor(&t1, &again, at(100));
        assert_eq!(standing(&s, &t1, 300, at(300)), Some(Standing::PastGrace));
        assert_eq!(standing(&s, &t3, 300, at(300)), Some(Standing::Live));
    }

    #[test]
    fn counters_tell_reuse_from_a_broken_chain() {
        let mut c = Counters::default();
        let found = |standing| Found {
            subject: "u".into(),
            chain: 1,
            standing,
        };
        let mut s = RefreshTokens::default();
        for standing in [Standing::Live, Standing::InGrace, Standing::PastGrace] {
            let f = found(standing);
            f.count(&mut c, s.note_presented(&f));
        }
        assert_eq!((c.stale_refresh_presented, c.stale_refresh_refused), (2, 1));
        assert_eq!(c.most_stale_in_one_chain, 2);
        // Another chain's first stale token does not raise the per-chain figure.
        let other = Found {
            chain: 2,
            ..found(Standing::InGrace)
        };
        other.count(&mut c, s.note_presented(&other));
        assert_eq!(
            (c.stale_refresh_presented, c.most_stale_in_one_chain),
            (3, 2)
        );
        assert!(found(Standing::InGrace).accepted() && !found(Standing::PastGrace).accepted());
    }

    #[test]
    fn huge_grace_saturates_and_clear_forgets_everything() {
        let mut s = RefreshTokens::default();
        let t1 = s.start_chain("u");
        let found = s.lookup(&t1, Duration::ZERO, at(0)).unwrap();
        s.successor(&t1, &found, at(0));
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(
            s.lookup(&t1, forever, at(1_000_000)).unwrap().standing,
            Standing::InGrace
        );
        s.clear();
        assert_eq!(s.chain_of(&t1), None);
    }
}

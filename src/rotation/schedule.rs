//! When to look again: renewal time with per-token jitter, and backoff after failures.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::resolve::{RenewBefore, RenewalPolicy};

/// The floor between two token requests for one resource, so a zero lifetime cannot spin.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Jitter is at most this share of the lifetime…
const JITTER_SHARE: f64 = 0.05;
/// …and never more than this.
const MAX_JITTER: Duration = Duration::from_secs(300);
/// Backoff after failures.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// A token whose renewal, by the policy, would come in the first tenth of its lifetime (the
/// margin is as long as the lifetime, or the lifetime is zero) renews at half its lifetime
/// instead, and never sooner than this after it was issued: never a hot loop.
pub const SHORT_LIFETIME_FLOOR: Duration = Duration::from_secs(30);

/// When to renew one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    pub at: Timestamp,
    /// The policy could not be followed: the lifetime is too short for it.
    pub short_lifetime: bool,
}

/// When to renew a token issued at `issued_at` expiring at `expires_at`.
pub fn next_refresh_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    policy: &RenewalPolicy,
    jitter: f64,
) -> Timestamp {
    renewal(issued_at, expires_at, policy, jitter).at
}

/// When to renew a token issued at `issued_at` expiring at `expires_at`. `jitter` (0..1) is
/// drawn once per rotation by the caller and moves the time earlier only.
pub fn renewal(
    issued_at: Timestamp,
    expires_at: Timestamp,
    policy: &RenewalPolicy,
    jitter: f64,
) -> Renewal {
    let lifetime = expires_at
        .duration_since(issued_at)
        .max(SignedDuration::ZERO);
    let renew_before = match policy.renew_before {
        RenewBefore::Percentage(p) => lifetime.mul_f64(f64::from(p) / 100.0),
        RenewBefore::Fixed(d) => SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX),
    };
    let margin = SignedDuration::try_from(policy.minimum_margin).unwrap_or(SignedDuration::ZERO);
    let jitter_span = lifetime
        .mul_f64(JITTER_SHARE)
        .min(SignedDuration::try_from(MAX_JITTER).expect("small"));
    let jitter = jitter_span.mul_f64(jitter.clamp(0.0, 1.0));
    let earliest = add(
        issued_at,
        SignedDuration::try_from(MIN_INTERVAL).expect("small"),
    );
    let planned = sub(expires_at, renew_before.max(margin)).min(sub(expires_at, margin));
    if planned < add(issued_at, lifetime / 10) {
        let floor = SignedDuration::try_from(SHORT_LIFETIME_FLOOR).expect("small");
        return Renewal {
            at: add(issued_at, (lifetime / 2).max(floor)),
            short_lifetime: true,
        };
    }
    Renewal {
        at: sub(planned, jitter).max(earliest),
        short_lifetime: false,
    }
}

/// Capped exponential backoff with full jitter; a provider's `Retry-After` wins when longer.
pub fn backoff(consecutive_failures: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    let ceiling = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    // Half fixed, half jittered: spread retries without ever retrying immediately.
    let delay = ceiling / 2 + ceiling.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
    match retry_after {
        Some(ra) if ra > delay => ra,
        _ => delay,
    }
}

/// How soon a Blocked state that may clear without any watch event (a foreign Secret removed)
/// is looked at again, after `attempts` reconciles in a row that ended blocked or in error:
/// what `status_after` asks of a Blocked recheck (with the token's expiry, when sooner).
pub fn blocked_recheck(attempts: u32) -> Duration {
    backoff(attempts.saturating_add(1), None, 0.5)
}

/// Jitter for one rotation, derived from the token's fingerprint: drawn once per token, the
/// same in every reconcile and after a restart, different across tokens.
pub fn jitter_for(fingerprint: &str) -> f64 {
    let hex = fingerprint.trim_start_matches("sha256:");
    let bits = u32::from_str_radix(hex.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    f64::from(bits) / f64::from(u32::MAX)
}

pub(crate) fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

pub(crate) fn sub(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pct(p: u8, margin: u64) -> RenewalPolicy {
        RenewalPolicy {
            renew_before: RenewBefore::Percentage(p),
            minimum_margin: Duration::from_secs(margin),
        }
    }

    #[test]
    fn renews_at_two_thirds_by_default() {
        let issued = at("2026-01-01T00:00:00Z");
        let expires = at("2026-01-01T03:00:00Z");
        let next = next_refresh_at(issued, expires, &pct(33, 120), 0.0);
        assert_eq!(next.duration_since(issued).as_secs(), 7236); // 67% of 3h
    }

    #[test]
    fn fixed_renew_before_and_margin() {
        let issued = at("2026-01-01T00:00:00Z");
        let expires = at("2026-01-01T01:00:00Z");
        let fixed = RenewalPolicy {
            renew_before: RenewBefore::Fixed(Duration::from_secs(600)),
            minimum_margin: Duration::from_secs(120),
        };
        assert_eq!(
            next_refresh_at(issued, expires, &fixed, 0.0),
            at("2026-01-01T00:50:00Z")
        );
        // A 1% window is narrower than the 2-minute margin: the margin wins.
        assert_eq!(
            next_refresh_at(issued, expires, &pct(1, 120), 0.0),
            at("2026-01-01T00:58:00Z")
        );
    }

    #[test]
    fn a_lifetime_shorter_than_the_margin_renews_at_half_with_a_floor() {
        let issued = at("2026-01-01T00:00:00Z");
        let r = renewal(issued, at("2026-01-01T00:02:00Z"), &pct(33, 180), 0.7);
        assert_eq!((r.at, r.short_lifetime), (at("2026-01-01T00:01:00Z"), true));
        for expires in [
            issued,
            at("2026-01-01T00:00:20Z"),
            at("2025-01-01T00:00:00Z"),
        ] {
            let r = renewal(issued, expires, &pct(33, 120), 0.0);
            assert_eq!((r.at, r.short_lifetime), (at("2026-01-01T00:00:30Z"), true));
        }
        // A fixed renewBefore longer than the lifetime is the same case.
        let fixed = RenewalPolicy {
            renew_before: RenewBefore::Fixed(Duration::from_secs(3600)),
            minimum_margin: Duration::from_secs(1),
        };
        assert!(renewal(issued, at("2026-01-01T00:10:00Z"), &fixed, 0.0).short_lifetime);
        // Fast but sane schedules are followed as asked.
        let r = renewal(issued, at("2026-01-01T00:00:06Z"), &pct(50, 1), 0.0);
        assert_eq!(
            (r.at, r.short_lifetime),
            (at("2026-01-01T00:00:03Z"), false)
        );
    }

    #[test]
    fn tiny_lifetimes_cannot_spin() {
        let issued = at("2026-01-01T00:00:00Z");
        for expires in [
            issued,
            at("2026-01-01T00:00:01Z"),
            at("2026-01-01T00:01:00Z"),
        ] {
            let next = next_refresh_at(issued, expires, &pct(33, 120), 1.0);
            assert!(
                next.duration_since(issued) >= SignedDuration::from_secs(1),
                "{expires}"
            );
        }
    }

    #[test]
    fn jitter_only_moves_earlier_and_is_bounded() {
        let issued = at("2026-01-01T00:00:00Z");
        let expires = at("2026-01-02T00:00:00Z");
        let plain = next_refresh_at(issued, expires, &pct(33, 120), 0.0);
        let jittered = next_refresh_at(issued, expires, &pct(33, 120), 1.0);
        let shift = plain.duration_since(jittered);
        assert!(
            shift > SignedDuration::ZERO && shift <= SignedDuration::from_secs(300),
            "{shift}"
        );
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        assert_eq!(backoff(1, None, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, None, 1.0), BACKOFF_CAP);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(30)), 1.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(8, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(128)
        );
    }
}

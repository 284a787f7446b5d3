//! Working out when a token expires, from whatever clue the provider gives.

use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// Which clue the lifetime came from, reported so users can trust (or fix) it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LifetimeSource {
    /// A relative lifetime in seconds (`expires_in`), as a number or numeric string.
    ExpiresIn,
    /// An absolute expiry time in the answer.
    ExpiresAt,
    /// The `exp` claim of a JWT access token.
    JwtExp,
    /// The configured default lifetime.
    Default,
}

impl LifetimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LifetimeSource::ExpiresIn => "expiresIn",
            LifetimeSource::ExpiresAt => "expiresAt",
            LifetimeSource::JwtExp => "jwtExp",
            LifetimeSource::Default => "default",
        }
    }
}

/// A number of seconds, from a JSON number or a string holding one.
pub fn seconds_from_json(value: &Value) -> Option<u64> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    // Absurdly large values are kept (saturating) so the lifetime cap can say what was asked.
    (secs >= 0.0).then_some(secs as u64)
}

/// An absolute time from RFC 3339, HTTP date / RFC 2822, a zone-less ISO date-time (taken as
/// UTC), or epoch seconds (milliseconds when implausibly large).
pub fn instant_from_json(value: &Value) -> Option<Timestamp> {
    match value {
        Value::Number(n) => epoch(n.as_f64()?),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return epoch(n);
            }
            if let Ok(ts) = s.parse::<Timestamp>() {
                return Some(ts);
            }
            if let Ok(zoned) = jiff::fmt::rfc2822::parse(s) {
                return Some(zoned.timestamp());
            }
            if let Ok(t) = httpdate::parse_http_date(s) {
                return Timestamp::try_from(t).ok();
            }
            s.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
        }
        _ => None,
    }
}

fn epoch(n: f64) -> Option<Timestamp> {
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let secs = if n > 1e11 { n / 1000.0 } else { n };
    Timestamp::from_second(secs as i64).ok()
}

/// The `exp` claim of a JWT, without verifying it (we only schedule by it).
pub fn jwt_expiry(token: &str) -> Option<Timestamp> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    // RFC 7519 NumericDate: always seconds (no milliseconds guess), saturating at the end of
    // representable time so the lifetime cap, not a parse failure, decides.
    let exp = claims.get("exp")?.as_f64()?;
    if !exp.is_finite() || exp <= 0.0 {
        return None;
    }
    Some(Timestamp::from_second(exp as i64).unwrap_or(Timestamp::MAX))
}

/// The longest lifetime believed: a token that claims more is renewed as if it lived this
/// long (a year and a day), so no provider number can push a time past what is representable.
pub const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The resolved lifetime of a token issued at `now`.
pub struct Lifetime {
    pub expires_at: Timestamp,
    pub seconds: u64,
    pub source: LifetimeSource,
    /// The lifetime in seconds the provider claimed, when it was over [`MAX_LIFETIME`].
    pub capped_from: Option<u64>,
}

pub fn resolve(
    now: Timestamp,
    expires_in: Option<&Value>,
    expires_at: Option<&Value>,
    access_token: &str,
    default: Duration,
) -> Lifetime {
    let max = MAX_LIFETIME.as_secs();
    let relative = |secs: u64, source| {
        let capped = secs.min(max);
        Lifetime {
            expires_at: now
                .checked_add(jiff::SignedDuration::from_secs(capped as i64))
                .unwrap_or(Timestamp::MAX),
            seconds: capped,
            source,
            capped_from: (secs > max).then_some(secs),
        }
    };
    let absolute = |at: Timestamp, source| {
        let secs = at.duration_since(now).as_secs().max(0) as u64;
        if secs > max {
            relative(secs, source)
        } else {
            Lifetime {
                expires_at: at,
                seconds: secs,
                source,
                capped_from: None,
            }
        }
    };
    if let Some(secs) = expires_in.and_then(seconds_from_json) {
        return relative(secs, LifetimeSource::ExpiresIn);
    }
    if let Some(at) = expires_at.and_then(instant_from_json) {
        return absolute(at, LifetimeSource::ExpiresAt);
    }
    if let Some(at) = jwt_expiry(access_token) {
        return absolute(at, LifetimeSource::JwtExp);
    }
    relative(default.as_secs(), LifetimeSource::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn seconds_accept_numbers_and_numeric_strings() {
        assert_eq!(seconds_from_json(&json!(3599)), Some(3599));
        assert_eq!(seconds_from_json(&json!("3599")), Some(3599));
        assert_eq!(seconds_from_json(&json!(" 60.5 ")), Some(60));
        assert_eq!(seconds_from_json(&json!("soon")), None);
        assert_eq!(seconds_from_json(&json!(-5)), None);
        assert_eq!(seconds_from_json(&json!(1e308)), Some(u64::MAX));
        assert_eq!(seconds_from_json(&json!(null)), None);
    }

    #[test]
    fn absolute_expiry_formats() {
        let want: Timestamp = "2026-11-26T13:00:00Z".parse().unwrap();
        for v in [
            json!("2026-11-26T13:00:00Z"),
            json!("2026-11-26T14:00:00+01:00"),
            json!("Thu, 26 Nov 2026 13:00:00 GMT"),
            json!("Thu, 26 Nov 2026 13:00:00 +0000"),
            json!("2026-11-26T13:00:00"),
            json!(want.as_second()),
            json!(want.as_second().to_string()),
            json!(want.as_millisecond()),
        ] {
            assert_eq!(instant_from_json(&v), Some(want), "{v}");
        }
        assert_eq!(instant_from_json(&json!("tomorrow")), None);
    }

    #[test]
    fn resolution_order_and_source() {
        let jwt = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{{\"exp\":{}}}", now().as_second() + 120))
        );
        let d = Duration::from_secs(300);
        let l = resolve(
            now(),
            Some(&json!("60")),
            Some(&json!("2026-11-26T13:00:00Z")),
            &jwt,
            d,
        );
        assert_eq!((l.seconds, l.source), (60, LifetimeSource::ExpiresIn));
        let l = resolve(now(), None, Some(&json!("2026-11-26T13:00:00Z")), &jwt, d);
        assert_eq!((l.seconds, l.source), (3600, LifetimeSource::ExpiresAt));
        let l = resolve(now(), Some(&json!("x")), None, &jwt, d);
        assert_eq!((l.seconds, l.source), (120, LifetimeSource::JwtExp));
        let l = resolve(now(), None, None, "opaque", d);
        assert_eq!((l.seconds, l.source), (300, LifetimeSource::Default));
        assert_eq!(l.expires_at, "2026-11-26T12:05:00Z".parse().unwrap());
    }

    #[test]
    fn absurd_lifetimes_are_capped_and_say_so() {
        let d = Duration::from_secs(300);
        let max = MAX_LIFETIME.as_secs();
        for (expires_in, expires_at) in [
            (Some(json!(1e308)), None),
            (Some(json!("99999999999999999999")), None),
            (None, Some(json!("9999-12-30T00:00:00Z"))),
            (None, Some(json!(99_999_999_999_u64))),
        ] {
            let l = resolve(now(), expires_in.as_ref(), expires_at.as_ref(), "opaque", d);
            assert_eq!(l.seconds, max, "{expires_in:?} {expires_at:?}");
            assert!(l.capped_from.is_some_and(|c| c > max));
            assert_eq!(
                l.expires_at,
                now() + jiff::SignedDuration::from_secs(max as i64)
            );
        }
        let l = resolve(now(), Some(&json!(0)), None, "opaque", d);
        assert_eq!((l.seconds, l.capped_from), (0, None));
        // A JWT exp past the year 9999 is seconds all the same, and capped.
        let jwt = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":253402214400}"#)
        );
        let l = resolve(now(), None, None, &jwt, d);
        assert_eq!((l.seconds, l.source), (max, LifetimeSource::JwtExp));
    }
}

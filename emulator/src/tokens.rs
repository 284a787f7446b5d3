//! Opaque tokens (UUID-shaped, like Retently's and Reltio's) and their store.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

/// Who a token was issued to and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    pub subject: String,
    pub expires_at: Timestamp,
}

impl Issued {
    pub fn new(subject: &str, lifetime_secs: u64, now: Timestamp) -> Self {
        Issued {
            subject: subject.to_owned(),
            expires_at: expiry(now, lifetime_secs),
        }
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Whole seconds left (rounded down), zero when expired.
    pub fn remaining_secs(&self, now: Timestamp) -> u64 {
        u64::try_from(self.expires_at.duration_since(now).as_secs()).unwrap_or(0)
    }
}

/// `now + secs`, saturating at the end of jiff's range for absurd lifetimes.
pub(crate) fn expiry(now: Timestamp, secs: u64) -> Timestamp {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    now.saturating_add(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

/// A random version-4 UUID in its usual hyphenated form.
pub(crate) fn opaque() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Issued opaque access tokens of one provider.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, Issued>,
}

impl TokenStore {
    /// Mints a new token; expired ones are dropped first so the store stays small.
    pub fn issue(&mut self, subject: &str, lifetime_secs: u64, now: Timestamp) -> String {
        self.tokens.retain(|_, t| t.is_valid_at(now));
        let token = opaque();
        self.tokens
            .insert(token.clone(), Issued::new(subject, lifetime_secs, now));
        token
    }

    /// The token's grant when it exists and has not expired.
    pub fn valid(&self, token: &str, now: Timestamp) -> Option<&Issued> {
        self.tokens.get(token).filter(|t| t.is_valid_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_look_like_uuids() {
        let t = opaque();
        assert_eq!(t.len(), 36);
        assert_eq!(t.as_bytes()[14], b'4');
        assert_ne!(t, opaque());
    }

    #[test]
    fn store_forgets_expired_tokens() {
        let now = Timestamp::from_second(1_000).unwrap();
        let mut s = TokenStore::default();
        let t = s.issue("u", 5, now);
        assert!(s.valid(&t, now).is_some());
        assert!(s.valid(&t, expiry(now, 5)).is_none());
    }
}

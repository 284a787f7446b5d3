//! Compact JWS assertions (RFC 7515 §7.1, RFC 7523), parsed and verified by hand with ring, so
//! the emulator checks the operator's JWTs independently of any JWT library: base64url (no
//! padding) header, payload and signature; JSON objects for header and claims; the signature
//! over the first two segments exactly as received.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde_json::{Map, Value};

use super::clients::{JwsAlgorithm, PublicKey};

/// A compact JWS whose segments decoded; nothing in it is verified yet.
pub(crate) struct Jws {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jws {
    /// Three base64url segments, header and payload JSON objects; else `None`.
    pub fn parse(compact: &str) -> Option<Jws> {
        let mut parts = compact.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || h.is_empty() || p.is_empty() {
            return None;
        }
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        Some(Jws {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature: URL_SAFE_NO_PAD.decode(s).ok()?,
        })
    }

    /// The header's `alg`, when it is a string.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg")?.as_str()
    }

    /// Whether the header asks for extensions this server would have to understand
    /// (RFC 7515 §4.1.11: an unknown `crit` must be refused).
    pub fn has_crit(&self) -> bool {
        self.header.contains_key("crit")
    }

    /// Verifies the signature with a public key, for `alg` (which the caller has already
    /// matched against the registration; HS256 never verifies here).
    pub fn verify_public(&self, alg: JwsAlgorithm, key: &PublicKey) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match alg {
            JwsAlgorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            JwsAlgorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            JwsAlgorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            JwsAlgorithm::EdDSA => &signature::ED25519,
            JwsAlgorithm::HS256 => return false,
        };
        signature::UnparsedPublicKey::new(algorithm, &key.bytes)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }

    /// Verifies an HS256 signature keyed with `secret` (constant time).
    pub fn verify_hs256(&self, secret: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, self.signing_input.as_bytes(), &self.signature).is_ok()
    }

    /// The first two segments, exactly as received (what the signature covers).
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name)?.as_str()
    }
}

/// What a grant demands of an assertion's time, audience and identifier claims.
pub(crate) struct Policy<'a> {
    /// Accepted `aud` values; the claim must be one of them, as a string or as an array
    /// holding only that string.
    pub audiences: &'a [String],
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// `exp` at most this many seconds after now.
    pub max_exp_ahead: Option<i64>,
    /// `exp - iat` at most this many seconds (Google: one hour).
    pub max_lifetime: Option<i64>,
    pub require_iat: bool,
    pub require_jti: bool,
}

/// Tolerated clock skew for `iat` and `nbf` in the future.
pub(crate) const SKEW_SECS: i64 = 60;

/// Why an assertion's claims were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    WrongAud,
    MissingExp,
    /// A time claim that is not a NumericDate; names the claim.
    NotNumericDate(&'static str),
    Expired,
    ExpTooFar,
    MissingIat,
    IatInFuture,
    NbfInFuture,
    LifetimeTooLong,
    MissingJti,
}

/// The claims that passed, as the caller needs them (replay bookkeeping).
pub(crate) struct Checked {
    pub exp: i64,
    pub jti: Option<String>,
}

/// RFC 7519 §2 NumericDate: a JSON number of seconds (fractions allowed, floored).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, ClaimError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| Some(f.floor() as i64))
                    .ok_or(ClaimError::NotNumericDate(name))
            }
        }
        Some(_) => Err(ClaimError::NotNumericDate(name)),
    }
}

fn aud_matches(aud: Option<&Value>, accepted: &[String]) -> bool {
    let single = match aud {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::String(s) => s.as_str(),
            _ => return false,
        },
        _ => return false,
    };
    accepted.iter().any(|a| a == single)
}

/// Checks `aud`, `exp`, `iat`, `nbf` and the presence of `jti` (not its reuse).
pub(crate) fn check_claims(jws: &Jws, policy: &Policy<'_>) -> Result<Checked, ClaimError> {
    let claims = &jws.claims;
    if !aud_matches(claims.get("aud"), policy.audiences) {
        return Err(ClaimError::WrongAud);
    }
    let exp = numeric_date(claims, "exp")?.ok_or(ClaimError::MissingExp)?;
    let iat = numeric_date(claims, "iat")?;
    let nbf = numeric_date(claims, "nbf")?;
    if exp <= policy.now {
        return Err(ClaimError::Expired);
    }
    if let Some(max) = policy.max_exp_ahead
        && exp - policy.now > max
    {
        return Err(ClaimError::ExpTooFar);
    }
    match iat {
        None if policy.require_iat => return Err(ClaimError::MissingIat),
        Some(iat) if iat > policy.now + SKEW_SECS => return Err(ClaimError::IatInFuture),
        Some(iat) => {
            if let Some(max) = policy.max_lifetime
                && exp - iat > max
            {
                return Err(ClaimError::LifetimeTooLong);
            }
        }
        None => {}
    }
    if let Some(nbf) = nbf
        && nbf > policy.now + SKEW_SECS
    {
        return Err(ClaimError::NbfInFuture);
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => Some(j.clone()),
        None if !policy.require_jti => None,
        _ => return Err(ClaimError::MissingJti),
    };
    Ok(Checked { exp, jti })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jws(claims: Value) -> Jws {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"k"), input.as_bytes());
        Jws::parse(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))).unwrap()
    }

    #[test]
    fn parse_is_strict() {
        assert!(Jws::parse("a.b").is_none());
        assert!(Jws::parse("a.b.c.d").is_none());
        let ok = jws(json!({}));
        assert!(ok.verify_hs256(b"k"));
        assert!(!ok.verify_hs256(b"other"));
        // Padding is not base64url without padding.
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert!(Jws::parse(&format!("{h}=.e30.")).is_none());
        assert!(Jws::parse(&format!("{h}.e30.")).is_some());
        // Header and claims must be objects.
        assert!(Jws::parse(&format!("{h}.W10.")).is_none());
    }

    #[test]
    fn claim_rules() {
        let aud = ["https://as/token".to_owned()];
        let p = Policy {
            audiences: &aud,
            now: 1000,
            max_exp_ahead: Some(600),
            max_lifetime: None,
            require_iat: false,
            require_jti: true,
        };
        let base = json!({"aud": "https://as/token", "exp": 1100, "jti": "j"});
        assert_eq!(check_claims(&jws(base.clone()), &p).unwrap().exp, 1100);
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            check_claims(&jws(c), &p).err()
        };
        assert_eq!(with("aud", json!(["https://as/token"])), None);
        assert_eq!(
            with("aud", json!(["https://as/token", "x"])),
            Some(ClaimError::WrongAud)
        );
        assert_eq!(
            with("aud", json!("https://as/other")),
            Some(ClaimError::WrongAud)
        );
        assert_eq!(with("exp", json!(1000)), Some(ClaimError::Expired));
        assert_eq!(with("exp", json!(1100.5)), None);
        assert_eq!(
            with("exp", json!("1100")),
            Some(ClaimError::NotNumericDate("exp"))
        );
        assert_eq!(with("exp", json!(1601)), Some(ClaimError::ExpTooFar));
        assert_eq!(with("iat", json!(1061)), Some(ClaimError::IatInFuture));
        assert_eq!(with("iat", json!(1060)), None);
        assert_eq!(with("nbf", json!(1061)), Some(ClaimError::NbfInFuture));
        assert_eq!(with("jti", json!("")), Some(ClaimError::MissingJti));
        assert_eq!(with("jti", json!(7)), Some(ClaimError::MissingJti));
    }
}

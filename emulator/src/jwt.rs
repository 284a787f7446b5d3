//! Minimal HS256 JWTs for the providers that hand out JWTs (Rently, Carrental). The key is
//! emulator-internal: clients only decode the payload (for `exp`), never verify it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use ring::hmac;
use serde_json::{Map, Value, json};

use crate::provider::Provider;
use crate::tokens::{Issued, expiry};

/// Signs `claims` with HS256.
pub(crate) fn sign(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// The claims of a token signed with `key`, or `None` when it is malformed or forged.
pub(crate) fn verify(token: &str, key: &[u8]) -> Option<Map<String, Value>> {
    let (input, sig) = token.rsplit_once('.')?;
    let (_, payload) = input.split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        input.as_bytes(),
        &sig,
    )
    .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Issues a provider JWT: `sub`, `iat`, `exp`, a unique `jti` (so two tokens issued in the
/// same second still differ), `aud` naming the provider, plus `extra` claims.
pub(crate) fn issue(
    key: &[u8],
    provider: Provider,
    subject: &str,
    lifetime_secs: u64,
    now: Timestamp,
    extra: Map<String, Value>,
) -> String {
    let mut claims = json!({
        "iss": format!("provider-emulator/{provider}"),
        "aud": provider.as_str(),
        "sub": subject,
        "iat": now.as_second(),
        "exp": expiry(now, lifetime_secs).as_second(),
        "jti": crate::tokens::opaque(),
    });
    if let Value::Object(m) = &mut claims {
        m.extend(extra);
    }
    sign(&claims, key)
}

/// A provider JWT that is genuine, meant for `provider` and unexpired at `now`.
pub(crate) fn validate(
    key: &[u8],
    provider: Provider,
    token: &str,
    now: Timestamp,
) -> Option<(Issued, Map<String, Value>)> {
    let claims = verify(token, key)?;
    if claims.get("aud")?.as_str()? != provider.as_str() {
        return None;
    }
    let issued = Issued {
        subject: claims.get("sub")?.as_str()?.to_owned(),
        expires_at: Timestamp::from_second(claims.get("exp")?.as_i64()?).ok()?,
    };
    issued.is_valid_at(now).then_some((issued, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; 32];
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let t = issue(&key, Provider::Rently, "bob", 60, now, Map::new());
        let (who, claims) = validate(&key, Provider::Rently, &t, now).unwrap();
        assert_eq!(who.subject, "bob");
        assert_eq!(claims["exp"], 1_700_000_060);
        assert!(validate(&key, Provider::Carrental, &t, now).is_none());
        assert!(validate(&[8u8; 32], Provider::Rently, &t, now).is_none());
        assert!(validate(&key, Provider::Rently, &t, expiry(now, 60)).is_none());
    }
}

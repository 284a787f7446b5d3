//! Signed JWT assertions (RFC 7523): a client proving itself with a short-lived signed JWT
//! instead of sending its secret (`private_key_jwt`, `client_secret_jwt`: RFC 7523 §2.2,
//! OpenID Connect Core §9), and the JWT bearer grant, where the assertion is the grant
//! (§2.1, as Google service accounts use it). A fresh assertion per request.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::error::FetchError;

/// `client_assertion_type` for a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Claims the operator sets itself; `spec.grant.assertion.claims` cannot replace them.
pub const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

/// The JWS algorithms assertions are signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (an RSA private key).
    RS256,
    /// RSASSA-PSS with SHA-256 (an RSA private key).
    PS256,
    /// ECDSA P-256 with SHA-256 (an EC P-256 private key, in SEC1 or PKCS#8).
    ES256,
    /// Ed25519 (an Ed25519 private key in PKCS#8).
    EdDSA,
    /// HMAC SHA-256 with the client secret (`clientSecretJwt` only).
    HS256,
}

impl SigningAlgorithm {
    fn jose(self) -> Algorithm {
        match self {
            SigningAlgorithm::RS256 => Algorithm::RS256,
            SigningAlgorithm::PS256 => Algorithm::PS256,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::HS256 => Algorithm::HS256,
        }
    }
}

/// How assertions are made: `spec.grant.assertion`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionSettings {
    /// `None`: from the private key's type (RSA: RS256, EC: ES256, Ed25519: EdDSA).
    pub algorithm: Option<SigningAlgorithm>,
    /// `aud`; `None`: the token endpoint URL.
    pub audience: Option<String>,
    /// From `iat` to `exp`.
    pub lifetime: Duration,
    /// JWT bearer grant: `iss` (default: the client id credential) and `sub`.
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// Without `subject`: `sub` = `iss`, as RFC 7523 §3 requires a `sub`; Google's service
    /// accounts take none (a `sub` there asks for domain-wide delegation).
    pub subject_is_issuer: bool,
    /// JWT bearer grant: further string claims.
    pub claims: BTreeMap<String, String>,
}

impl Default for AssertionSettings {
    fn default() -> Self {
        AssertionSettings {
            algorithm: None,
            audience: None,
            lifetime: Duration::from_secs(60),
            issuer: None,
            subject: None,
            subject_is_issuer: true,
            claims: BTreeMap::new(),
        }
    }
}

/// What signs: a private key (PEM) with an optional key id, or the client secret.
pub enum SigningKey<'a> {
    Private {
        pem: &'a str,
        key_id: Option<&'a str>,
        key_name: &'a str,
    },
    ClientSecret(&'a str),
}

/// The claims of one assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a BTreeMap<String, String>,
}

/// Who the assertion is about, and for whom.
pub struct Subject<'a> {
    pub issuer: &'a str,
    pub subject: Option<&'a str>,
    pub audience: &'a str,
    pub scope: Option<&'a str>,
    pub extra: &'a BTreeMap<String, String>,
}

/// 16 random bytes: a `jti` the server can refuse to see twice.
fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key and algorithm, with errors that name the credentials key and never its content.
fn encoding_key(
    key: &SigningKey<'_>,
    wanted: Option<SigningAlgorithm>,
) -> Result<(Algorithm, EncodingKey), FetchError> {
    match key {
        SigningKey::ClientSecret(secret) => {
            if wanted.is_some_and(|a| a != SigningAlgorithm::HS256) {
                return Err(FetchError::Configuration(
                    "clientSecretJwt signs with the client secret: spec.grant.assertion.algorithm must be HS256 (or unset)".into(),
                ));
            }
            let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|_| {
                FetchError::Configuration("the client secret cannot be an HMAC key".into())
            })?;
            Ok((Algorithm::HS256, key))
        }
        SigningKey::Private { pem, key_name, .. } => {
            let not_a_key = |what: &str| {
                FetchError::Configuration(format!(
                    "the credentials key `{key_name}` is not {what} in PEM; convert another form (an encrypted key, say) with `openssl pkcs8 -topk8 -nocrypt`"
                ))
            };
            let (family, key) = private_key(pem).ok_or_else(|| {
                not_a_key("an RSA, EC P-256 (SEC1 or PKCS#8) or PKCS#8 Ed25519 private key")
            })?;
            let algorithm = match (wanted, family) {
                (Some(SigningAlgorithm::HS256), _) => {
                    return Err(FetchError::Configuration(
                        "HS256 signs with the client secret: use clientAuthentication clientSecretJwt, or an asymmetric algorithm with a private key".into(),
                    ));
                }
                (Some(a @ (SigningAlgorithm::RS256 | SigningAlgorithm::PS256)), KeyFamily::Rsa) => {
                    a
                }
                (Some(SigningAlgorithm::ES256), KeyFamily::EcP256) => SigningAlgorithm::ES256,
                (Some(SigningAlgorithm::EdDSA), KeyFamily::Ed25519) => SigningAlgorithm::EdDSA,
                (Some(SigningAlgorithm::RS256 | SigningAlgorithm::PS256), _) => {
                    return Err(not_a_key("an RSA private key"));
                }
                (Some(SigningAlgorithm::ES256), _) => {
                    return Err(not_a_key("an EC P-256 private key"));
                }
                (Some(SigningAlgorithm::EdDSA), _) => {
                    return Err(not_a_key("a PKCS#8 Ed25519 private key"));
                }
                (None, KeyFamily::Rsa) => SigningAlgorithm::RS256,
                (None, KeyFamily::EcP256) => SigningAlgorithm::ES256,
                (None, KeyFamily::Ed25519) => SigningAlgorithm::EdDSA,
            };
            Ok((algorithm.jose(), key))
        }
    }
}

/// A private key PEM is larger than this only if it is not one: an RSA 4096 key in PKCS#8 is
/// about 3.3 KB. Checked before any parsing.
const MAX_PRIVATE_KEY_PEM: usize = 16 * 1024;

enum KeyFamily {
    Rsa,
    EcP256,
    Ed25519,
}

/// The key in `pem`, parsed only by rustls' PEM reader (base64, no ASN.1) and ring (whose DER
/// reader does not recurse): jsonwebtoken's own PEM parsing recurses without a depth limit
/// and is quadratic on long identifiers, so a crafted key could crash or stall the process.
fn private_key(pem: &str) -> Option<(KeyFamily, EncodingKey)> {
    use ring::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
    };
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    if pem.len() > MAX_PRIVATE_KEY_PEM {
        return None;
    }
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()? {
        PrivateKeyDer::Pkcs1(der) => {
            let der = der.secret_pkcs1_der();
            RsaKeyPair::from_der(der).ok()?;
            Some((KeyFamily::Rsa, EncodingKey::from_rsa_der(der)))
        }
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            if RsaKeyPair::from_pkcs8(der).is_ok() {
                Some((KeyFamily::Rsa, EncodingKey::from_rsa_der(der)))
            } else if EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &ring::rand::SystemRandom::new(),
            )
            .is_ok()
            {
                Some((KeyFamily::EcP256, EncodingKey::from_ec_der(der)))
            } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
                Some((KeyFamily::Ed25519, EncodingKey::from_ed_der(der)))
            } else {
                None
            }
        }
        PrivateKeyDer::Sec1(der) => {
            // ring reads EC keys only in PKCS#8: the SEC1 key goes inside one as it is.
            let pkcs8 =
                secrecy::zeroize::Zeroizing::new(sec1_p256_as_pkcs8(der.secret_sec1_der())?);
            EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &pkcs8,
                &ring::rand::SystemRandom::new(),
            )
            .ok()?;
            Some((KeyFamily::EcP256, EncodingKey::from_ec_der(&pkcs8)))
        }
        _ => None,
    }
}

/// A SEC1 `ECPrivateKey` (RFC 5915) wrapped, unread, in a PKCS#8 `PrivateKeyInfo` (RFC 5208)
/// that names the key id-ecPublicKey on P-256. Nothing of the SEC1 bytes is parsed here:
/// ring then reads them (without recursion) and refuses a key of another curve (its
/// parameters must name P-256, its scalar and public key must be P-256's).
fn sec1_p256_as_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    /// version 0, then AlgorithmIdentifier { id-ecPublicKey, prime256v1 }.
    const HEAD: [u8; 24] = [
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
        0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut key = Vec::with_capacity(sec1.len() + 4);
    der_header(0x04, sec1.len(), &mut key)?;
    key.extend_from_slice(sec1);
    let mut out = Vec::with_capacity(HEAD.len() + key.len() + 4);
    der_header(0x30, HEAD.len() + key.len(), &mut out)?;
    out.extend_from_slice(&HEAD);
    out.extend_from_slice(&key);
    secrecy::zeroize::Zeroize::zeroize(&mut key);
    Some(out)
}

/// A DER tag and definite length (up to 64 KiB, far above the PEM bound).
fn der_header(tag: u8, len: usize, out: &mut Vec<u8>) -> Option<()> {
    out.push(tag);
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        0x100..=0xffff => out.extend([0x82, (len >> 8) as u8, len as u8]),
        _ => return None,
    }
    Some(())
}

/// One signed assertion, valid from `now` for `settings.lifetime`.
pub fn sign(
    settings: &AssertionSettings,
    key: &SigningKey<'_>,
    who: &Subject<'_>,
    now: Timestamp,
) -> Result<SecretString, FetchError> {
    super::jose::install();
    let (algorithm, encoding_key) = encoding_key(key, settings.algorithm)?;
    let mut header = Header::new(algorithm);
    if let SigningKey::Private {
        key_id: Some(kid), ..
    } = key
    {
        header.kid = Some((*kid).to_string());
    }
    let iat = now.as_second();
    let lifetime = i64::try_from(settings.lifetime.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims {
        iss: who.issuer,
        sub: who.subject,
        aud: who.audience,
        iat,
        exp: iat.saturating_add(lifetime),
        jti: new_jti(),
        scope: who.scope,
        extra: who.extra,
    };
    jsonwebtoken::encode(&header, &claims, &encoding_key)
        .map(SecretString::from)
        .map_err(|e| {
            // The error kinds name the key type or algorithm, never key material.
            FetchError::Configuration(format!(
                "cannot sign the assertion with {algorithm:?}: {}",
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey =>
                        "the EC key is not a P-256 key".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) =>
                        "the RSA key is not usable (at least 2048 bits)".to_string(),
                    other => format!("{other:?}"),
                }
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let mut it = jwt.split('.');
        let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(it.next().is_none());
        let json =
            |part: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
        (
            json(h),
            json(p),
            URL_SAFE_NO_PAD.decode(s).unwrap(),
            format!("{h}.{p}"),
        )
    }

    fn who<'a>(extra: &'a BTreeMap<String, String>) -> Subject<'a> {
        Subject {
            issuer: "client-1",
            subject: Some("client-1"),
            audience: "https://idp.example.test/token",
            scope: None,
            extra,
        }
    }

    #[test]
    fn a_client_secret_jwt_is_an_hs256_over_the_standard_claims() {
        let extra = BTreeMap::new();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let jwt = sign(
            &AssertionSettings::default(),
            &SigningKey::ClientSecret("s3cret"),
            &who(&extra),
            now,
        )
        .unwrap();
        let (header, claims, signature, signed) = parts(jwt.expose_secret());
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://idp.example.test/token");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_060);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        ring::hmac::verify(&key, signed.as_bytes(), &signature).expect("valid HMAC");
        // A fresh jti every time.
        let again = sign(
            &AssertionSettings::default(),
            &SigningKey::ClientSecret("s3cret"),
            &who(&extra),
            now,
        )
        .unwrap();
        assert_ne!(parts(again.expose_secret()).1["jti"], claims["jti"]);
    }

    #[test]
    fn private_keys_sign_with_the_algorithm_of_their_type_and_verify() {
        use ring::signature::{self, UnparsedPublicKey};
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        for (pair, alg, verify_alg) in [
            (
                &ec,
                "ES256",
                &signature::ECDSA_P256_SHA256_FIXED as &dyn signature::VerificationAlgorithm,
            ),
            (&ed, "EdDSA", &signature::ED25519),
        ] {
            let pem = pair.serialize_pem();
            let key = SigningKey::Private {
                pem: &pem,
                key_id: Some("k1"),
                key_name: "private_key",
            };
            let jwt = sign(
                &AssertionSettings::default(),
                &key,
                &who(&BTreeMap::new()),
                Timestamp::now(),
            )
            .unwrap();
            let (header, _, sig, signed) = parts(jwt.expose_secret());
            assert_eq!(
                (header["alg"].as_str(), header["kid"].as_str()),
                (Some(alg), Some("k1"))
            );
            UnparsedPublicKey::new(verify_alg, pair.public_key_raw())
                .verify(signed.as_bytes(), &sig)
                .unwrap_or_else(|_| panic!("{alg} verifies"));
        }
    }

    /// The SEC1 form of an rcgen EC key (`EC PRIVATE KEY`), as `openssl ecparam -genkey`
    /// writes it: with the curve in `[0]`, the public key in `[1]`, and an `EC PARAMETERS`
    /// block before it.
    fn sec1_pem(pair: &rcgen::KeyPair, curve_oid: &[u8], scalar_len: u8) -> String {
        let pkcs8 = pair.serialize_der();
        // The private scalar: version 1, then an OCTET STRING of the scalar's length.
        let marker = [0x02, 0x01, 0x01, 0x04, scalar_len];
        let at = pkcs8
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("an ECPrivateKey inside the PKCS#8")
            + marker.len();
        let scalar = &pkcs8[at..at + usize::from(scalar_len)];
        let public = pair.public_key_raw();
        let tlv = |tag: u8, body: &[u8]| {
            let mut out = vec![tag];
            match body.len() {
                0..=0x7f => out.push(body.len() as u8),
                len => out.extend([0x81, len as u8]),
            }
            out.extend_from_slice(body);
            out
        };
        let mut bit_string = vec![0x00];
        bit_string.extend_from_slice(public);
        let body = [
            tlv(0x02, &[0x01]),
            tlv(0x04, scalar),
            tlv(0xa0, &tlv(0x06, curve_oid)),
            tlv(0xa1, &tlv(0x03, &bit_string)),
        ]
        .concat();
        let sec1 = tlv(0x30, &body);
        format!(
            "{}{}",
            pem("EC PARAMETERS", &tlv(0x06, curve_oid)),
            pem("EC PRIVATE KEY", &sec1)
        )
    }

    const P256_OID: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: [u8; 5] = [0x2b, 0x81, 0x04, 0x00, 0x22];

    #[test]
    fn a_sec1_ec_key_signs_es256_and_verifies() {
        use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let text = sec1_pem(&pair, &P256_OID, 32);
        assert!(text.contains("-----BEGIN EC PRIVATE KEY-----"), "{text}");
        for wanted in [None, Some(SigningAlgorithm::ES256)] {
            let key = SigningKey::Private {
                pem: &text,
                key_id: None,
                key_name: "private_key",
            };
            let settings = AssertionSettings {
                algorithm: wanted,
                ..AssertionSettings::default()
            };
            let jwt = sign(&settings, &key, &who(&BTreeMap::new()), Timestamp::now())
                .unwrap_or_else(|e| panic!("{wanted:?}: {e}"));
            let (header, _, sig, signed) = parts(jwt.expose_secret());
            assert_eq!(header["alg"], "ES256");
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key_raw())
                .verify(signed.as_bytes(), &sig)
                .expect("the ES256 signature verifies with the key's public half");
        }
        // The curve in the key decides, not the wrapping: a P-384 key in SEC1 is refused.
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let text = sec1_pem(&p384, &P384_OID, 48);
        let key = SigningKey::Private {
            pem: &text,
            key_id: None,
            key_name: "private_key",
        };
        let err = sign(
            &AssertionSettings::default(),
            &key,
            &who(&BTreeMap::new()),
            Timestamp::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`private_key` is not an RSA, EC P-256"),
            "{err}"
        );
        // The bound holds for SEC1 as for every form: an oversized one is refused unread.
        let huge = pem("EC PRIVATE KEY", &vec![0x04; 700_000]);
        let key = SigningKey::Private {
            pem: &huge,
            key_id: None,
            key_name: "private_key",
        };
        assert!(
            sign(
                &AssertionSettings::default(),
                &key,
                &who(&BTreeMap::new()),
                Timestamp::now()
            )
            .is_err()
        );
    }

    #[test]
    fn wrong_keys_are_named_without_their_content() {
        let extra = BTreeMap::new();
        let pem = "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::Private {
            pem,
            key_id: None,
            key_name: "signing.pem",
        };
        let err = sign(
            &AssertionSettings::default(),
            &key,
            &who(&extra),
            Timestamp::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "`signing.pem` is not an RSA, EC P-256 (SEC1 or PKCS#8) or PKCS#8 Ed25519 private key"
            ),
            "{err}"
        );
        assert!(!err.contains("bm90LWEta2V5"), "{err}");
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let settings = AssertionSettings {
            algorithm: Some(SigningAlgorithm::RS256),
            ..AssertionSettings::default()
        };
        let key = SigningKey::Private {
            pem: &ec,
            key_id: None,
            key_name: "private_key",
        };
        let err = sign(&settings, &key, &who(&extra), Timestamp::now())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`private_key` is not an RSA private key"),
            "{err}"
        );
        let settings = AssertionSettings {
            algorithm: Some(SigningAlgorithm::ES256),
            ..AssertionSettings::default()
        };
        let err = sign(
            &settings,
            &SigningKey::ClientSecret("s"),
            &who(&extra),
            Timestamp::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be HS256"), "{err}");
    }

    /// DER of `depth` SEQUENCEs nested in one another.
    fn nested_sequences(depth: usize) -> Vec<u8> {
        let mut der = vec![0x30, 0x00];
        for _ in 0..depth {
            let len = der.len();
            let mut outer = vec![0x30];
            match len {
                0..=0x7f => outer.push(len as u8),
                0x80..=0xff => outer.extend([0x81, len as u8]),
                _ => outer.extend([0x82, (len >> 8) as u8, len as u8]),
            }
            outer.extend(der);
            der = outer;
        }
        der
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::engine::general_purpose::STANDARD;
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn hostile_keys_are_refused_without_parsing_them_deeply() {
        let extra = BTreeMap::new();
        let sign_with = |text: &str| {
            let key = SigningKey::Private {
                pem: text,
                key_id: None,
                key_name: "private_key",
            };
            sign(
                &AssertionSettings::default(),
                &key,
                &who(&extra),
                Timestamp::now(),
            )
        };
        // Deep enough to overflow a recursive parser's stack; within the size cap.
        let deep = nested_sequences(3_000);
        for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
            let text = pem(label, &deep);
            assert!(text.len() < MAX_PRIVATE_KEY_PEM, "{}", text.len());
            let err = sign_with(&text).unwrap_err().to_string();
            assert!(
                err.contains("is not an RSA, EC P-256 (SEC1 or PKCS#8)"),
                "{label}: {err}"
            );
        }
        // Enormous: refused by its size, before any parsing.
        let huge = pem("PRIVATE KEY", &vec![0x06; 700_000]);
        assert!(sign_with(&huge).is_err());
        // Public keys and certificates are not private keys.
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(sign_with(&ec.public_key_pem()).is_err());
    }
}

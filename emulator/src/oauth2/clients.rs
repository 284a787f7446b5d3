//! Registered OAuth 2.0 clients and JWT-bearer issuers, and the minimal PEM/DER reading that
//! turns a registered public key into the bytes ring verifies with.
//!
//! Public keys are registered as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`, what
//! `openssl pkey -pubout` and rcgen's `public_key_pem()` write); RSA keys may also be given as
//! PKCS#1 (`-----BEGIN RSA PUBLIC KEY-----`). ring wants, per key type, the content of the
//! SPKI's BIT STRING: for RSA the PKCS#1 `RSAPublicKey` DER, for P-256 the uncompressed point
//! (`04 || X || Y`), for Ed25519 the 32 raw bytes. The SPKI is parsed just far enough to check
//! the algorithm (and curve) and take that BIT STRING; nothing else is trusted from it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::EmulatorError;

/// JWS algorithms (RFC 7518 §3.1 names) a client may register for its assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (private_key_jwt; RSA key of 2048 bits or more).
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 (private_key_jwt; RSA key).
    PS256,
    /// ECDSA with P-256 and SHA-256, signature as the fixed-width `r || s` (private_key_jwt).
    ES256,
    /// EdDSA with Ed25519 (RFC 8037; private_key_jwt).
    EdDSA,
    /// HMAC with SHA-256 keyed with the client secret (client_secret_jwt only).
    HS256,
}

impl JwsAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::EdDSA => "EdDSA",
            JwsAlgorithm::HS256 => "HS256",
        }
    }

    /// Parses an `alg` header value (case-sensitive, as RFC 7515 says).
    pub fn from_header(alg: &str) -> Option<JwsAlgorithm> {
        [
            JwsAlgorithm::RS256,
            JwsAlgorithm::PS256,
            JwsAlgorithm::ES256,
            JwsAlgorithm::EdDSA,
            JwsAlgorithm::HS256,
        ]
        .into_iter()
        .find(|a| a.as_str() == alg)
    }

    fn key_type(self) -> Option<KeyType> {
        match self {
            JwsAlgorithm::RS256 | JwsAlgorithm::PS256 => Some(KeyType::Rsa),
            JwsAlgorithm::ES256 => Some(KeyType::EcP256),
            JwsAlgorithm::EdDSA => Some(KeyType::Ed25519),
            JwsAlgorithm::HS256 => None,
        }
    }
}

impl std::fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a client authenticates at `POST /oauth2/token`. In the admin API's JSON the variant is
/// the `method` field, named as in OAuth 2.0 Dynamic Client Registration
/// (`token_endpoint_auth_method`): `{"method":"private_key_jwt","algorithm":"ES256",
/// "public_key_pem":"…"}`, `{"method":"client_secret_jwt","secret":"…"}`,
/// `{"method":"self_signed_tls_client_auth","certificate_pem":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum ClientMethod {
    /// `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): a JWS signed with the
    /// private key whose public half is registered here as SPKI PEM
    /// (`-----BEGIN PUBLIC KEY-----`; RSA also as `-----BEGIN RSA PUBLIC KEY-----`).
    /// `algorithm` is RS256, PS256, ES256 or EdDSA and must fit the key.
    PrivateKeyJwt {
        algorithm: JwsAlgorithm,
        public_key_pem: String,
    },
    /// `client_secret_jwt`: a JWS with HS256 keyed with this secret (its UTF-8 bytes).
    ClientSecretJwt { secret: String },
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): the client's TLS certificate must be
    /// this one (PEM `-----BEGIN CERTIFICATE-----`), byte for byte.
    #[serde(rename = "self_signed_tls_client_auth")]
    Tls { certificate_pem: String },
}

impl ClientMethod {
    /// The `token_endpoint_auth_method` name.
    pub fn name(&self) -> &'static str {
        match self {
            ClientMethod::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientMethod::ClientSecretJwt { .. } => "client_secret_jwt",
            ClientMethod::Tls { .. } => "self_signed_tls_client_auth",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    EcP256,
    Ed25519,
}

/// A public key as ring takes it (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub key_type: KeyType,
    pub bytes: Vec<u8>,
}

/// A client as the token endpoint checks it.
#[derive(Clone, Debug)]
pub(crate) enum RegisteredClient {
    PrivateKeyJwt {
        algorithm: JwsAlgorithm,
        key: PublicKey,
    },
    ClientSecretJwt {
        secret: Vec<u8>,
    },
    Tls {
        certificate_der: Vec<u8>,
        /// `x5t#S256`: base64url SHA-256 of the DER.
        thumbprint: String,
    },
}

impl RegisteredClient {
    pub fn method_name(&self) -> &'static str {
        match self {
            RegisteredClient::PrivateKeyJwt { .. } => "private_key_jwt",
            RegisteredClient::ClientSecretJwt { .. } => "client_secret_jwt",
            RegisteredClient::Tls { .. } => "self_signed_tls_client_auth",
        }
    }

    /// Checks a registration and prepares its keys.
    pub fn from_method(method: &ClientMethod) -> Result<RegisteredClient, EmulatorError> {
        match method {
            ClientMethod::PrivateKeyJwt {
                algorithm,
                public_key_pem,
            } => {
                let Some(wanted) = algorithm.key_type() else {
                    return Err(invalid(
                        "private_key_jwt takes RS256, PS256, ES256 or EdDSA; HS256 is client_secret_jwt",
                    ));
                };
                let key = parse_public_key_pem(public_key_pem)?;
                if key.key_type != wanted {
                    return Err(invalid(&format!(
                        "the public key does not fit {algorithm} (it is {:?})",
                        key.key_type
                    )));
                }
                Ok(RegisteredClient::PrivateKeyJwt {
                    algorithm: *algorithm,
                    key,
                })
            }
            ClientMethod::ClientSecretJwt { secret } => {
                if secret.is_empty() {
                    return Err(invalid("client_secret_jwt needs a non-empty secret"));
                }
                Ok(RegisteredClient::ClientSecretJwt {
                    secret: secret.as_bytes().to_vec(),
                })
            }
            ClientMethod::Tls { certificate_pem } => {
                let der = pem_block(certificate_pem, "CERTIFICATE")
                    .ok_or_else(|| invalid("certificate_pem holds no PEM CERTIFICATE block"))?;
                Ok(RegisteredClient::Tls {
                    thumbprint: thumbprint(&der),
                    certificate_der: der,
                })
            }
        }
    }
}

/// `x5t#S256` of a DER certificate (RFC 8705 §3.1): base64url SHA-256, no padding.
pub(crate) fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn invalid(why: &str) -> EmulatorError {
    EmulatorError::Registration(why.to_owned())
}

/// An RSA public key for the JWT-bearer grant (RS256, as Google's service accounts sign).
pub(crate) fn parse_rsa_public_key_pem(pem: &str) -> Result<PublicKey, EmulatorError> {
    let key = parse_public_key_pem(pem)?;
    if key.key_type != KeyType::Rsa {
        return Err(invalid(
            "JWT-bearer issuers sign with RS256: an RSA key is needed",
        ));
    }
    Ok(key)
}

/// A SubjectPublicKeyInfo PEM (or a PKCS#1 RSA public key PEM) as ring takes it.
pub(crate) fn parse_public_key_pem(pem: &str) -> Result<PublicKey, EmulatorError> {
    if let Some(der) = pem_block(pem, "PUBLIC KEY") {
        return parse_spki(&der).ok_or_else(|| {
            invalid("the public key is not an RSA, P-256 or Ed25519 SubjectPublicKeyInfo")
        });
    }
    if let Some(der) = pem_block(pem, "RSA PUBLIC KEY") {
        // Check it is one DER SEQUENCE; ring checks the rest when it verifies.
        return match read_tlv(&der) {
            Some((SEQUENCE, _, [])) => Ok(PublicKey {
                key_type: KeyType::Rsa,
                bytes: der,
            }),
            _ => Err(invalid("the RSA PUBLIC KEY block is not a DER SEQUENCE")),
        };
    }
    Err(invalid(
        "public_key_pem holds no PEM PUBLIC KEY (SubjectPublicKeyInfo) block",
    ))
}

/// The DER of the first PEM block labelled `label`.
pub(crate) fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok().filter(|der| !der.is_empty())
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
/// 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.2.1
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 (prime256v1 / secp256r1)
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.101.112
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// One DER TLV: (tag, value, rest). Definite lengths up to four bytes only.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `SEQUENCE { SEQUENCE { OID algorithm, parameters }, BIT STRING key }`.
fn parse_spki(der: &[u8]) -> Option<PublicKey> {
    let (SEQUENCE, spki, []) = read_tlv(der)? else {
        return None;
    };
    let (SEQUENCE, algorithm, rest) = read_tlv(spki)? else {
        return None;
    };
    let (BIT_STRING, bits, []) = read_tlv(rest)? else {
        return None;
    };
    let (OID, oid, params) = read_tlv(algorithm)? else {
        return None;
    };
    // The first byte of a BIT STRING counts unused bits: keys are whole bytes.
    let (0, key) = bits.split_first()? else {
        return None;
    };
    let key_type = match oid {
        RSA_ENCRYPTION => KeyType::Rsa,
        EC_PUBLIC_KEY => {
            let (OID, curve, []) = read_tlv(params)? else {
                return None;
            };
            if curve != P256 || key.len() != 65 || key[0] != 0x04 {
                return None;
            }
            KeyType::EcP256
        }
        ED25519 if params.is_empty() && key.len() == 32 => KeyType::Ed25519,
        _ => return None,
    };
    Some(PublicKey {
        key_type,
        bytes: key.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_of_every_key_type() {
        for (alg, want) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyType::EcP256),
            (&rcgen::PKCS_ED25519, KeyType::Ed25519),
        ] {
            let kp = rcgen::KeyPair::generate_for(alg).unwrap();
            let key = parse_public_key_pem(&kp.public_key_pem()).unwrap();
            assert_eq!(key.key_type, want);
            assert_eq!(key.bytes, kp.public_key_raw());
        }
        let rsa = parse_public_key_pem(crate::keys::RSA_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(rsa.key_type, KeyType::Rsa);
        assert_eq!(rsa.bytes[0], SEQUENCE);
    }

    #[test]
    fn bad_registrations_are_refused() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mismatched = ClientMethod::PrivateKeyJwt {
            algorithm: JwsAlgorithm::RS256,
            public_key_pem: ec.public_key_pem(),
        };
        assert!(RegisteredClient::from_method(&mismatched).is_err());
        let hs = ClientMethod::PrivateKeyJwt {
            algorithm: JwsAlgorithm::HS256,
            public_key_pem: ec.public_key_pem(),
        };
        assert!(RegisteredClient::from_method(&hs).is_err());
        let garbage = ClientMethod::PrivateKeyJwt {
            algorithm: JwsAlgorithm::ES256,
            public_key_pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
        };
        assert!(RegisteredClient::from_method(&garbage).is_err());
        let no_cert = ClientMethod::Tls {
            certificate_pem: ec.public_key_pem(),
        };
        assert!(RegisteredClient::from_method(&no_cert).is_err());
    }

    #[test]
    fn method_json_uses_registration_names() {
        let m: ClientMethod = serde_json::from_str(
            r#"{"method":"private_key_jwt","algorithm":"EdDSA","public_key_pem":"x"}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMethod::PrivateKeyJwt {
                algorithm: JwsAlgorithm::EdDSA,
                ..
            }
        ));
        let m: ClientMethod = serde_json::from_str(
            r#"{"method":"self_signed_tls_client_auth","certificate_pem":"x"}"#,
        )
        .unwrap();
        assert_eq!(m.name(), "self_signed_tls_client_auth");
    }
}

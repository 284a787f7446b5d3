//! Workload identity federation: clients that authenticate with a token another issuer signed
//! (a Kubernetes ServiceAccount token), as Keycloak's `federated-jwt` clients, Entra ID's
//! federated identity credentials and Google's workload identity pools accept them. The
//! issuer's keys come from its JWKS (RSA keys for RS256, P-256 keys for ES256: Kubernetes
//! signs with the algorithm of its signing key); each token is verified here: signature,
//! `iss`, `aud`, `sub`, `exp` and a `jti` seen once.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde::Deserialize;

use super::assertion::{self, ClaimError, Jws, Policy};
use crate::EmulatorError;

/// `grant_type` of RFC 8693 token exchange.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token types.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// One key of an issuer's JWKS.
#[derive(Clone, Debug)]
pub(crate) struct Jwk {
    kid: Option<String>,
    key: KeyMaterial,
}

#[derive(Clone, Debug)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed P-256 point, `04 || x || y`.
    P256(Vec<u8>),
}

/// A client that authenticates as a workload of a registered issuer: tokens of `issuer` with
/// exactly `subject` and `audience`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedClient {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
}

/// Issuers (by `iss`) with their keys, and the federated clients (by client id).
#[derive(Default)]
pub(crate) struct Federation {
    issuers: HashMap<String, Vec<Jwk>>,
    clients: HashMap<String, FederatedClient>,
}

/// A token that passed: who it is, for the access token's record.
#[derive(Debug)]
pub(crate) struct Workload {
    pub client_id: String,
    pub subject: String,
    pub exp: i64,
    pub jti: Option<String>,
}

impl Federation {
    pub fn register_issuer(&mut self, issuer: &str, jwks: &str) -> Result<(), EmulatorError> {
        self.issuers.insert(issuer.to_owned(), parse_jwks(jwks)?);
        Ok(())
    }

    pub fn register_client(&mut self, client_id: &str, client: FederatedClient) {
        self.clients.insert(client_id.to_owned(), client);
    }

    /// Whether `iss` is a registered issuer of workload tokens.
    pub fn knows_issuer(&self, iss: &str) -> bool {
        self.issuers.contains_key(iss)
    }

    /// Verifies a workload token and finds its client: the one named by `client_id` (whose
    /// subject must then be the token's), else the one registered for its issuer and subject.
    /// The error is the description a server would answer with.
    pub fn verify(
        &self,
        compact: &str,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<Workload, String> {
        let jws = Jws::parse(compact).ok_or("the token is not a well-formed compact JWS")?;
        let iss = jws.claim_str("iss").ok_or("the token has no iss")?;
        let keys = self
            .issuers
            .get(iss)
            .ok_or_else(|| format!("issuer {iss} is not trusted"))?;
        if jws.has_crit() {
            return Err("the token's crit header is not supported".into());
        }
        let kid = jws.header.get("kid").and_then(|k| k.as_str());
        let signed = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .any(|k| verify(&jws, &k.key));
        if !signed {
            return Err("the token's signature does not verify with the issuer's JWKS".into());
        }
        let sub = jws.claim_str("sub").ok_or("the token has no sub")?;
        let (id, client) = match client_id {
            Some(id) => {
                let client = self
                    .clients
                    .get(id)
                    .ok_or_else(|| format!("unknown client {id}"))?;
                if client.subject != sub || client.issuer != iss {
                    return Err(format!(
                        "client_id {id} does not match the token's iss and sub"
                    ));
                }
                (id.to_owned(), client)
            }
            None => self
                .clients
                .iter()
                .find(|(_, c)| c.issuer == iss && c.subject == sub)
                .map(|(id, c)| (id.clone(), c))
                .ok_or_else(|| format!("no client federates {sub} of {iss}"))?,
        };
        let audiences = [client.audience.clone()];
        let policy = Policy {
            audiences: &audiences,
            now,
            max_exp_ahead: None,
            max_lifetime: None,
            require_iat: false,
            require_jti: true,
        };
        let checked = assertion::check_claims(&jws, &policy).map_err(|e| match e {
            ClaimError::WrongAud => format!("the token's aud must be {}", client.audience),
            ClaimError::Expired => "the token has expired".to_owned(),
            other => format!("the token's claims are refused ({other:?})"),
        })?;
        Ok(Workload {
            client_id: id,
            subject: sub.to_owned(),
            exp: checked.exp,
            jti: checked.jti,
        })
    }
}

/// The signature, with the algorithm the key type fixes (never one the header claims for
/// another key type).
fn verify(jws: &Jws, key: &KeyMaterial) -> bool {
    let (input, signature) = (jws.signing_input().as_bytes(), jws.signature());
    match (jws.alg(), key) {
        (Some("RS256"), KeyMaterial::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, input, signature)
            .is_ok(),
        (Some("ES256"), KeyMaterial::P256(point)) => {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(input, signature)
                .is_ok()
        }
        _ => false,
    }
}

/// The RSA and P-256 keys of a JWKS document (`{"keys": [{"kty": "RSA", "kid", "n", "e"},
/// {"kty": "EC", "crv": "P-256", "x", "y"}, …]}`); other keys are skipped.
fn parse_jwks(text: &str) -> Result<Vec<Jwk>, EmulatorError> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Raw>,
    }
    #[derive(Deserialize)]
    struct Raw {
        kty: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        crv: Option<String>,
        #[serde(default)]
        n: Option<String>,
        #[serde(default)]
        e: Option<String>,
        #[serde(default)]
        x: Option<String>,
        #[serde(default)]
        y: Option<String>,
    }
    let bad = |why: &str| EmulatorError::Registration(format!("JWKS: {why}"));
    let decode = |v: Option<String>| {
        URL_SAFE_NO_PAD
            .decode(v.ok_or_else(|| bad("a key without its parameters"))?)
            .map_err(|_| bad("a key parameter is not base64url"))
    };
    let jwks: Jwks = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let mut keys = Vec::new();
    for k in jwks.keys {
        let key = match (k.kty.as_str(), k.crv.as_deref()) {
            ("RSA", _) => KeyMaterial::Rsa {
                n: decode(k.n)?,
                e: decode(k.e)?,
            },
            ("EC", Some("P-256")) => {
                let (x, y) = (decode(k.x)?, decode(k.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad("a P-256 coordinate is not 32 bytes"));
                }
                KeyMaterial::P256([&[4u8][..], &x, &y].concat())
            }
            _ => continue,
        };
        keys.push(Jwk { kid: k.kid, key });
    }
    if keys.is_empty() {
        return Err(bad("no RSA or P-256 key"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_without_rsa_keys_is_refused() {
        assert!(parse_jwks(r#"{"keys": []}"#).is_err());
        assert!(parse_jwks(r#"{"keys": [{"kty": "EC", "crv": "P-256"}]}"#).is_err());
        let p384 = r#"{"keys": [{"kty": "EC", "crv": "P-384", "x": "AQAB", "y": "AQAB"}]}"#;
        assert!(parse_jwks(p384).is_err());
        let short = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}"#;
        assert!(parse_jwks(short).is_err());
        assert!(parse_jwks(r#"{"keys": [{"kty": "RSA", "n": "AQAB"}]}"#).is_err());
        assert!(parse_jwks("not json").is_err());
    }

    #[test]
    fn an_unknown_issuer_or_a_forged_token_is_refused() {
        let mut f = Federation::default();
        f.register_issuer(
            "https://127.0.0.1:1",
            r#"{"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}"#,
        )
        .unwrap();
        let token = |claims: serde_json::Value| {
            let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k"}"#);
            let p = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(b"not a signature"))
        };
        let other = token(serde_json::json!({"iss": "https://elsewhere", "sub": "s"}));
        assert!(
            f.verify(&other, None, 0)
                .unwrap_err()
                .contains("not trusted")
        );
        let forged = token(serde_json::json!({"iss": "https://127.0.0.1:1", "sub": "s"}));
        assert!(
            f.verify(&forged, None, 0)
                .unwrap_err()
                .contains("signature")
        );
    }
}

//! jsonwebtoken's signing, through ring: the one crypto provider of this binary (rustls, kube
//! and reqwest use it too). jsonwebtoken does the JOSE part (PEM keys, headers, compact
//! serialisation); this module only hands it ring's signature primitives.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};

/// ring's algorithms for JWS signing. Verification is never needed by the operator: it reads
/// the claims of access tokens it was given, it does not judge them.
static RING: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: no_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the provider once; later calls (and a provider installed first) are fine.
pub fn install() {
    let _ = RING.install_default();
}

enum Key {
    Hmac(ring::hmac::Key),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: Key,
}

fn invalid(kind: ErrorKind) -> Error {
    kind.into()
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let der = key.as_bytes();
    // PKCS#1 or PKCS#8: assertion.rs hands over the DER as the PEM held it.
    let rsa = |encoding: &'static dyn signature::RsaEncoding| {
        RsaKeyPair::from_der(der)
            .or_else(|_| RsaKeyPair::from_pkcs8(der))
            .map(|pair| Key::Rsa(pair, encoding))
            .map_err(|e| invalid(ErrorKind::InvalidRsaKey(e.to_string())))
    };
    let key = match algorithm {
        Algorithm::HS256 => Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, der)),
        Algorithm::RS256 => rsa(&signature::RSA_PKCS1_SHA256)?,
        Algorithm::PS256 => rsa(&signature::RSA_PSS_SHA256)?,
        Algorithm::ES256 => EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map(Key::Ecdsa)
        .map_err(|_| invalid(ErrorKind::InvalidEcdsaKey))?,
        Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(Key::Ed25519)
            .map_err(|_| invalid(ErrorKind::InvalidEddsaKey))?,
        _ => return Err(invalid(ErrorKind::InvalidAlgorithm)),
    };
    Ok(Box::new(RingSigner {
        algorithm: *algorithm,
        key,
    }))
}

fn no_verifier(_: &Algorithm, _: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    Err(invalid(ErrorKind::InvalidAlgorithm))
}

impl ::signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, ::signature::Error> {
        let failed = |_| ::signature::Error::new();
        let rng = SystemRandom::new();
        match &self.key {
            Key::Hmac(key) => Ok(ring::hmac::sign(key, message).as_ref().to_vec()),
            Key::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, message, &mut out)
                    .map_err(failed)?;
                Ok(out)
            }
            Key::Ecdsa(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Key::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

//! Key material for tests of the standards OAuth 2.0 server (`/oauth2`): fresh EC P-256 and
//! Ed25519 key pairs, one fixed RSA key pair (ring cannot generate RSA keys), and self-signed
//! client certificates for mutual TLS.
//!
//! **Test-only keys.** The RSA key below is public, in this source file, and must never
//! protect anything real.
//!
//! Formats: private keys as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`; the RSA key also as
//! PKCS#1 `-----BEGIN RSA PRIVATE KEY-----`), public keys as SubjectPublicKeyInfo PEM
//! (`-----BEGIN PUBLIC KEY-----`, what [`crate::ClientMethod::PrivateKeyJwt`] and
//! [`crate::Control::register_jwt_bearer_issuer`] take), certificates as
//! `-----BEGIN CERTIFICATE-----` PEM.

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};

/// A key pair as PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestKeyPair {
    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub private_key_pem: String,
    /// SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub public_key_pem: String,
}

impl TestKeyPair {
    /// The private key's PKCS#8 DER (what ring's `*KeyPair::from_pkcs8` take).
    pub fn private_key_der(&self) -> Vec<u8> {
        pem_to_der(&self.private_key_pem, "PRIVATE KEY").expect("a PKCS#8 PEM block")
    }
}

/// A self-signed client certificate and its key, for `self_signed_tls_client_auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// `-----BEGIN CERTIFICATE-----`: register this one.
    pub certificate_pem: String,
    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`), EC P-256.
    pub private_key_pem: String,
}

impl ClientCertificate {
    /// Key and certificate in one PEM buffer, as `reqwest::Identity::from_pem` takes them.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.private_key_pem, self.certificate_pem)
    }

    /// The certificate's DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        pem_to_der(&self.certificate_pem, "CERTIFICATE").expect("a CERTIFICATE PEM block")
    }

    /// `x5t#S256` (RFC 8705 §3.1): base64url SHA-256 of the DER, as a bound token's
    /// `cnf` names it.
    pub fn thumbprint(&self) -> String {
        crate::oauth2::clients::thumbprint(&self.certificate_der())
    }
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> TestKeyPair {
    let kp = KeyPair::generate_for(alg).expect("ring generates the key");
    TestKeyPair {
        private_key_pem: kp.serialize_pem(),
        public_key_pem: kp.public_key_pem(),
    }
}

/// A fresh EC P-256 key pair (ES256).
pub fn ec_p256() -> TestKeyPair {
    generate(&rcgen::PKCS_ECDSA_P256_SHA256)
}

/// A fresh Ed25519 key pair (EdDSA). The PKCS#8 is version 2 (public key included), as
/// ring's `Ed25519KeyPair::from_pkcs8` wants.
pub fn ed25519() -> TestKeyPair {
    generate(&rcgen::PKCS_ED25519)
}

/// The fixed RSA 2048 test key pair (RS256, PS256); always the same key.
pub fn rsa() -> TestKeyPair {
    TestKeyPair {
        private_key_pem: RSA_PRIVATE_KEY_PEM.to_owned(),
        public_key_pem: RSA_PUBLIC_KEY_PEM.to_owned(),
    }
}

/// A fresh self-signed client certificate (EC P-256 key, `clientAuth` extended key usage)
/// with `common_name` as its subject.
pub fn client_certificate(common_name: &str) -> ClientCertificate {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ring generates the key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .self_signed(&key)
        .expect("rcgen signs the certificate");
    ClientCertificate {
        certificate_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
    }
}

fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    crate::oauth2::clients::pem_block(pem, label)
}

/// TEST-ONLY RSA 2048 private key, PKCS#8. Published here; never use it for anything real.
pub const RSA_PRIVATE_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCumkedT63/vOn5\n\
p0PrQhVJFWJydbERHNaXhXpEhr1OYYGpoTjwam5TvQZ7dVAzut0BOKTxSGkPCFjn\n\
qDZB7q57LOq1anmjKM3oJI2TMx8QwjAGenQ0xMaTPa8VzKWJRVgLXs/ZkP9J2yuq\n\
09hN7X0AtSJBT8doLTEBlbDyqnk1hKPXfZKUz4YMazNVg6wQ/mLq5dPw3ealsBFw\n\
7ZWNtDjZaObGTlHTgE2AILS0gz1Y0f87JJhTey8yNYW96uS6D00e9KFbpGh3uQbm\n\
uDt5I0KepCE6K3lB+WQ+qj0AiNG+0lH1jVrF18iklqJrZ/oPsbt1x9XSzdlYdjwa\n\
y4Hca8P3AgMBAAECggEAI+ofLfgMUezhcdVajqM2rqRD7khQJjV43Iz7o+nVObCr\n\
06ESjb1OuVHJ6g4s858Nw6kLoIfk+E8evnPmyTQX1sVb9/oRUCLeC9CtAGjFDJTs\n\
/QAmNA5/zByljYXdTPmjDR+xAE8ne+Elv8s4lHrzufgINkf7O+4DxRAt6BRxvzSU\n\
JnZIG5TsLvatqEYz/wuyCLm1roKKQB2x52S5dOJ7M3HykpzeSkajUGk/+q8rGrR0\n\
re5+uN2gUxR8rsjRFymxdtKDIfyS7N6FATq/diEVcJOwEPwkWJfC824z4ZM+7jBz\n\
GjF+vfFzVIkVeCUWUevu/3atk3v8kCm4PIpZbwZiqQKBgQDxHglVV6EOHpJbp4Ab\n\
U/+KPlugJA1DTK8A58eVfI5ekLJFoS0Roq0qoYQ7+7mAXbouCwvYYmWX6yCyCvt+\n\
N+otwEyibMnnS4qJ0VOAb3GuwmHS+efpQHwFSiCVrxttQ/ExM8EIfCjvWleCUts6\n\
ob2ySEDU6yOM1FrHtj/KJlclDwKBgQC5YTnaF73LHmEuhhH+MbTxmbJeaQt0tE0v\n\
7Nh3IAwIml6IXvTt058LOcEgB0gzAi9PeePZX11Lh9K8Qnlbx3k6hCc5Cyx831Gr\n\
s0PrzEv/JMCeF8W+sHI5BK03eAhJnB1oTPU37iol8eyEXs2+OTPfo2gpkd2NlXMY\n\
5GDDCCuCmQKBgQDq9G/335orXhMUiRZGiwW6OqWiWT8rU3A9G57axjMdZzawryxx\n\
wOmpXxayNMtAkRS5hT4Xr1p8PTzxAc6r4eSqjHag2A2u+2eWgIoz32UR/IzCv48D\n\
NjkkFmXGNootYUWIwnvZvtNM2eXoMsE6Ux28ureiQzezJcMIVUm3vMCydQKBgBuG\n\
fzON4OV+/kkNKTDIKqjQ/HYePNA4UVmzXjTZ8k94tF6lUtLZYD0ndzCNREAmq+Wu\n\
IJHPIigr47OGX0SsaqiwpK5IpXNpKVRISuaBMCuTRnJy7y6wPlWPBzU8QmbDom4x\n\
Nxv15hY6RLcm6H+9OKGVPsslWHNEZJGmn2N2HBfJAoGALyPlZZw30OWrAu0+1dOW\n\
b+9nI+iHVAtgp8DDsgZuqNaCje7JBYw/pkxApq0ntQS8otIfqQbOLk+ggJ26bgnj\n\
9sUikHeNDvfYZULI25Nv1XcjYAzmxlvnKaudk6nhyQoQfj6MZD8FbLlQBsbbG9Ui\n\
TBhHdfhwqVKd8rVuOgP0ycs=\n\
-----END PRIVATE KEY-----\n";

/// TEST-ONLY: the same RSA private key as [`RSA_PRIVATE_KEY_PEM`], PKCS#1
/// (`-----BEGIN RSA PRIVATE KEY-----`).
pub const RSA_PRIVATE_KEY_PKCS1_PEM: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEArppHnU+t/7zp+adD60IVSRVicnWxERzWl4V6RIa9TmGBqaE4\n\
8GpuU70Ge3VQM7rdATik8UhpDwhY56g2Qe6ueyzqtWp5oyjN6CSNkzMfEMIwBnp0\n\
NMTGkz2vFcyliUVYC17P2ZD/SdsrqtPYTe19ALUiQU/HaC0xAZWw8qp5NYSj132S\n\
lM+GDGszVYOsEP5i6uXT8N3mpbARcO2VjbQ42Wjmxk5R04BNgCC0tIM9WNH/OySY\n\
U3svMjWFverkug9NHvShW6Rod7kG5rg7eSNCnqQhOit5QflkPqo9AIjRvtJR9Y1a\n\
xdfIpJaia2f6D7G7dcfV0s3ZWHY8GsuB3GvD9wIDAQABAoIBACPqHy34DFHs4XHV\n\
Wo6jNq6kQ+5IUCY1eNyM+6Pp1Tmwq9OhEo29TrlRyeoOLPOfDcOpC6CH5PhPHr5z\n\
5sk0F9bFW/f6EVAi3gvQrQBoxQyU7P0AJjQOf8wcpY2F3Uz5ow0fsQBPJ3vhJb/L\n\
OJR687n4CDZH+zvuA8UQLegUcb80lCZ2SBuU7C72rahGM/8Lsgi5ta6CikAdsedk\n\
uXTiezNx8pKc3kpGo1BpP/qvKxq0dK3ufrjdoFMUfK7I0RcpsXbSgyH8kuzehQE6\n\
v3YhFXCTsBD8JFiXwvNuM+GTPu4wcxoxfr3xc1SJFXglFlHr7v92rZN7/JApuDyK\n\
WW8GYqkCgYEA8R4JVVehDh6SW6eAG1P/ij5boCQNQ0yvAOfHlXyOXpCyRaEtEaKt\n\
KqGEO/u5gF26LgsL2GJll+sgsgr7fjfqLcBMomzJ50uKidFTgG9xrsJh0vnn6UB8\n\
BUogla8bbUPxMTPBCHwo71pXglLbOqG9skhA1OsjjNRax7Y/yiZXJQ8CgYEAuWE5\n\
2he9yx5hLoYR/jG08ZmyXmkLdLRNL+zYdyAMCJpeiF707dOfCznBIAdIMwIvT3nj\n\
2V9dS4fSvEJ5W8d5OoQnOQssfN9Rq7ND68xL/yTAnhfFvrByOQStN3gISZwdaEz1\n\
N+4qJfHshF7Nvjkz36NoKZHdjZVzGORgwwgrgpkCgYEA6vRv99+aK14TFIkWRosF\n\
ujqlolk/K1NwPRue2sYzHWc2sK8sccDpqV8WsjTLQJEUuYU+F69afD088QHOq+Hk\n\
qox2oNgNrvtnloCKM99lEfyMwr+PAzY5JBZlxjaKLWFFiMJ72b7TTNnl6DLBOlMd\n\
vLq3okM3syXDCFVJt7zAsnUCgYAbhn8zjeDlfv5JDSkwyCqo0Px2HjzQOFFZs140\n\
2fJPeLRepVLS2WA9J3cwjURAJqvlriCRzyIoK+Ozhl9ErGqosKSuSKVzaSlUSErm\n\
gTArk0Zycu8usD5Vjwc1PEJmw6JuMTcb9eYWOkS3Juh/vTihlT7LJVhzRGSRpp9j\n\
dhwXyQKBgC8j5WWcN9DlqwLtPtXTlm/vZyPoh1QLYKfAw7IGbqjWgo3uyQWMP6ZM\n\
QKatJ7UEvKLSH6kGzi5PoICdum4J4/bFIpB3jQ732GVCyNuTb9V3I2AM5sZb5ymr\n\
nZOp4ckKEH4+jGQ/BWy5UAbG2xvVIkwYR3X4cKlSnfK1bjoD9MnL\n\
-----END RSA PRIVATE KEY-----\n";

/// TEST-ONLY: the public half of [`RSA_PRIVATE_KEY_PEM`], SubjectPublicKeyInfo.
pub const RSA_PUBLIC_KEY_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArppHnU+t/7zp+adD60IV\n\
SRVicnWxERzWl4V6RIa9TmGBqaE48GpuU70Ge3VQM7rdATik8UhpDwhY56g2Qe6u\n\
eyzqtWp5oyjN6CSNkzMfEMIwBnp0NMTGkz2vFcyliUVYC17P2ZD/SdsrqtPYTe19\n\
ALUiQU/HaC0xAZWw8qp5NYSj132SlM+GDGszVYOsEP5i6uXT8N3mpbARcO2VjbQ4\n\
2Wjmxk5R04BNgCC0tIM9WNH/OySYU3svMjWFverkug9NHvShW6Rod7kG5rg7eSNC\n\
nqQhOit5QflkPqo9AIjRvtJR9Y1axdfIpJaia2f6D7G7dcfV0s3ZWHY8GsuB3GvD\n\
9wIDAQAB\n\
-----END PUBLIC KEY-----\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rsa_forms_are_one_key() {
        use ring::signature::{self, KeyPair as _};
        let der = rsa().private_key_der();
        let pair = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        let pkcs1 = pem_to_der(RSA_PRIVATE_KEY_PKCS1_PEM, "RSA PRIVATE KEY").unwrap();
        let same = signature::RsaKeyPair::from_der(&pkcs1).unwrap();
        assert_eq!(pair.public_key().as_ref(), same.public_key().as_ref());
        let spki = crate::oauth2::clients::parse_public_key_pem(RSA_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(spki.bytes, pair.public_key().as_ref());
        assert_eq!(pair.public().modulus_len(), 256);
    }

    #[test]
    fn fresh_material_parses() {
        use ring::signature::{self, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let ec = ec_p256();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ec.private_key_der(),
            &rng,
        )
        .unwrap();
        let spki = crate::oauth2::clients::parse_public_key_pem(&ec.public_key_pem).unwrap();
        assert_eq!(spki.bytes, pair.public_key().as_ref());
        let ed = ed25519();
        let pair = signature::Ed25519KeyPair::from_pkcs8(&ed.private_key_der()).unwrap();
        let spki = crate::oauth2::clients::parse_public_key_pem(&ed.public_key_pem).unwrap();
        assert_eq!(spki.bytes, pair.public_key().as_ref());
        let cert = client_certificate("client-a");
        assert_ne!(
            cert.thumbprint(),
            client_certificate("client-a").thumbprint()
        );
        assert!(cert.identity_pem().contains("BEGIN CERTIFICATE"));
    }
}

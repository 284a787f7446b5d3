//! A throwaway PKI for one control plane: CA, serving certificate, client certificates and
//! the ServiceAccount token signing key. Everything is ECDSA P-256 generated with ring.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// A PEM certificate with its PEM (PKCS#8) private key.
pub(crate) struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

pub(crate) struct Pki {
    pub ca_pem: String,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
    pub controller_manager: CertAndKey,
    pub sa_key_pem: String,
    pub sa_public_pem: String,
}

/// Names the apiserver answers to: loopback for tests, the in-cluster names for completeness.
const SERVING_NAMES: [&str; 7] = [
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    // First address of --service-cluster-ip-range, the `kubernetes` Service's ClusterIP.
    "10.0.0.1",
];

fn key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate().map_err(|source| Error::Certificate { what, source })
}

fn params(
    what: &'static str,
    names: &[&str],
    common_name: &str,
    organization: Option<&str>,
) -> Result<CertificateParams> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params =
        CertificateParams::new(names).map_err(|source| Error::Certificate { what, source })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    params.distinguished_name = dn;
    Ok(params)
}

fn leaf(
    what: &'static str,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertAndKey> {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = key(what)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| Error::Certificate { what, source })?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate for `common_name` in group `organization`, as the apiserver's
/// x509 authenticator maps them to user name and group.
fn client(
    what: &'static str,
    common_name: &str,
    organization: Option<&str>,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertAndKey> {
    let params = params(what, &[], common_name, organization)?;
    leaf(what, params, ExtendedKeyUsagePurpose::ClientAuth, issuer)
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let mut ca_params = params("CA certificate", &[], "token-rotator-test-ca", None)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = key("CA key")?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|source| Error::Certificate {
                what: "CA certificate",
                source,
            })?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving = leaf(
            "apiserver serving certificate",
            params(
                "apiserver serving certificate",
                &SERVING_NAMES,
                "kube-apiserver",
                None,
            )?,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        )?;
        // system:masters is bound to cluster-admin by the RBAC bootstrap policy.
        let admin = client(
            "admin client certificate",
            "admin",
            Some("system:masters"),
            &issuer,
        )?;
        // The RBAC bootstrap policy grants this user name what the controller manager needs.
        let controller_manager = client(
            "controller-manager client certificate",
            "system:kube-controller-manager",
            None,
            &issuer,
        )?;
        let sa_key = key("ServiceAccount signing key")?;

        Ok(Self {
            ca_pem: ca_cert.pem(),
            serving,
            admin,
            controller_manager,
            sa_key_pem: sa_key.serialize_pem(),
            sa_public_pem: sa_key.public_key_pem(),
        })
    }
}

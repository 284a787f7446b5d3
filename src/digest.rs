//! Digests that are stored (in the state Secret and on the target Secret) to notice that the
//! request inputs or the target settings changed. Each is computed from an explicit, versioned
//! struct serialised by serde (fixed field order, the CRD's own wire names), never from `Debug`
//! output: a renamed Rust type or variant must not make every resource fetch a new token after
//! an upgrade. Changing a struct here means a new version prefix.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::TargetSpec;
use crate::provider::{
    BodyEncoding, ClientAuthentication, Credentials, GrantType, Param, ProviderConfig,
};

const VERSION: &str = "v1";

/// A salted digest: lets us notice a change without storing (or exposing) the value. The salt
/// is the resource's UID so equal passwords in two resources do not hash alike.
pub fn salted_hash(salt: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Everything that shapes a token request, except the credential values (hashed separately).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestShapeV1<'a> {
    token_url: &'a str,
    grant: GrantType,
    client_authentication: ClientAuthentication,
    encoding: BodyEncoding,
    send_grant_type: bool,
    field_names: &'a BTreeMap<String, String>,
    extra_parameters: &'a BTreeMap<String, String>,
    redirect_uri: Option<&'a str>,
    scope: Option<&'a str>,
}

const HASHED_CREDENTIALS: [Param; 4] = [
    Param::ClientId,
    Param::ClientSecret,
    Param::Username,
    Param::Password,
];

/// Credentials of the signed-assertion and TLS methods: hashed too, but appended only when
/// present, so that digests of resources that use none of them stay what they were.
const KEY_CREDENTIALS: [Param; 4] = [
    Param::PrivateKey,
    Param::KeyId,
    Param::TlsCertificate,
    Param::TlsKey,
];

/// How assertions are made, when not the defaults (appended like [`KEY_CREDENTIALS`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AssertionShapeV1<'a> {
    algorithm: Option<crate::provider::assertion::SigningAlgorithm>,
    audience: Option<&'a str>,
    lifetime_seconds: u64,
    issuer: Option<&'a str>,
    subject: Option<&'a str>,
    subject_is_issuer: bool,
    claims: &'a BTreeMap<String, String>,
}

/// Digest of the request settings and credentials: a change means the current token may no
/// longer be what the user asked for.
pub fn request_inputs(salt: &str, config: &ProviderConfig, credentials: &Credentials) -> String {
    let shape = RequestShapeV1 {
        token_url: config.token_url.as_str(),
        grant: config.grant,
        client_authentication: config.client_authentication,
        encoding: config.encoding,
        send_grant_type: config.send_grant_type,
        field_names: &config.field_names,
        extra_parameters: &config.extra_parameters,
        redirect_uri: config.redirect_uri.as_deref(),
        scope: config.scope.as_deref(),
    };
    let shape = serde_json::to_string(&shape).expect("plain data serialises");
    let mut parts = vec![shape.as_str()];
    parts.extend(HASHED_CREDENTIALS.map(|p| credentials.get(p).map_or("", |v| v.expose_secret())));
    let a = &config.assertion;
    let assertion = (*a != Default::default()).then(|| {
        serde_json::to_string(&AssertionShapeV1 {
            algorithm: a.algorithm,
            audience: a.audience.as_deref(),
            lifetime_seconds: a.lifetime.as_secs(),
            issuer: a.issuer.as_deref(),
            subject: a.subject.as_deref(),
            subject_is_issuer: a.subject_is_issuer,
            claims: &a.claims,
        })
        .expect("plain data serialises")
    });
    if let Some(assertion) = &assertion {
        parts.extend(["assertion", assertion.as_str()]);
    }
    // Which ServiceAccount, for which audience and how long: appended only when set, so
    // other resources' digests stay what they were.
    let lifetime = config
        .service_account
        .as_ref()
        .map(|sa| sa.lifetime_seconds.to_string());
    if let (Some(sa), Some(lifetime)) = (&config.service_account, &lifetime) {
        parts.extend([
            "service-account",
            sa.name.as_str(),
            sa.audience.as_str(),
            lifetime.as_str(),
        ]);
    }
    for param in KEY_CREDENTIALS {
        if let Some(value) = credentials.get(param) {
            parts.extend([param.oauth_name(), value.expose_secret()]);
        }
    }
    format!("{VERSION}:{}", salted_hash(salt, &parts))
}

/// Whether a stored request digest describes these inputs. Digests written before versioning
/// (no `v1:` prefix) are still recognised, so an upgrade fetches nothing.
pub fn request_inputs_match(
    stored: Option<&str>,
    salt: &str,
    config: &ProviderConfig,
    credentials: &Credentials,
) -> bool {
    match stored {
        Some(s) if s.starts_with("v1:") => s == request_inputs(salt, config, credentials),
        Some(s) => s == legacy::request_inputs(salt, config, credentials),
        None => false,
    }
}

/// Where a refresh token may be sent: the token endpoint and the client it was issued to. A
/// refresh token is never sent where this differs (a changed URL must not carry it away).
pub fn refresh_binding(salt: &str, config: &ProviderConfig, credentials: &Credentials) -> String {
    let client_id = credentials
        .get(Param::ClientId)
        .map_or("", |v| v.expose_secret());
    format!(
        "{VERSION}:{}",
        salted_hash(
            salt,
            &["refresh-binding", config.token_url.as_str(), client_id]
        )
    )
}

/// Digest of a one-time value (a seed refresh token, an authorization code).
pub fn secret_value(salt: &str, value: &SecretString) -> String {
    salted_hash(salt, &[value.expose_secret()])
}

/// The key of the inputs digests written on target Secrets. A target is read by its
/// consumers, and an unkeyed digest of the credentials would let them test guesses of a weak
/// password offline; keyed, it tells nothing to whoever lacks the key (an HMAC-SHA256 of the
/// salted digest above). The id names the key in each digest, so that digests made with a key
/// since lost or replaced are recognised as such instead of read as a change of credentials.
#[derive(Clone)]
pub struct InputsKey {
    key: ring::hmac::Key,
    id: String,
}

/// Fewer bytes than this is not a key worth the name (HMAC-SHA256's own block of entropy).
pub const INPUTS_KEY_MIN_BYTES: usize = 32;

/// How a target's keyed inputs digest compares with the inputs of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyedInputs {
    Same,
    Changed,
    /// Made with another key (lost or replaced since): tells nothing either way.
    OtherKey,
}

impl InputsKey {
    /// `None` when `bytes` is too short to be a key.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < INPUTS_KEY_MIN_BYTES {
            return None;
        }
        let mut h = Sha256::new();
        h.update(b"token-rotator inputs key id");
        h.update(bytes);
        Some(InputsKey {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
            id: hex::encode(&h.finalize()[..4]),
        })
    }

    /// The digest written on the target: `<key id>:<HMAC of the inputs digest>`.
    pub fn seal(&self, inputs: &str) -> String {
        let tag = ring::hmac::sign(&self.key, inputs.as_bytes());
        format!("{}:{}", self.id, hex::encode(tag.as_ref()))
    }

    pub fn check(&self, sealed: &str, inputs: &str) -> KeyedInputs {
        match sealed.split_once(':') {
            // Verified in constant time: the target's writers choose what is compared.
            Some((id, tag)) if id == self.id => match hex::decode(tag) {
                Ok(tag) if ring::hmac::verify(&self.key, inputs.as_bytes(), &tag).is_ok() => {
                    KeyedInputs::Same
                }
                _ => KeyedInputs::Changed,
            },
            Some(_) => KeyedInputs::OtherKey,
            None => KeyedInputs::Changed,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TargetSettingsV1<'a> {
    secret_type: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    template: &'a BTreeMap<String, String>,
}

/// Digest of the target settings, stored on the target Secret to notice spec changes.
pub fn target_settings(spec: &TargetSpec) -> String {
    let settings = TargetSettingsV1 {
        secret_type: spec.secret_type.as_deref(),
        labels: &spec.labels,
        annotations: &spec.annotations,
        template: &spec.template,
    };
    let text = serde_json::to_string(&settings).expect("plain data serialises");
    format!("{VERSION}:{}", &salted_hash("target", &[&text])[..16])
}

/// Whether a stored target-settings digest describes this spec (legacy digests included).
pub fn target_settings_match(stored: Option<&str>, spec: &TargetSpec) -> bool {
    match stored {
        Some(s) if s.starts_with("v1:") => s == target_settings(spec),
        Some(s) => s == legacy::target_settings(spec),
        None => false,
    }
}

/// The digests of release 0.1, frozen: recognised so that an upgrade does not fetch every
/// token again, and replaced by v1 digests at each resource's next rotation. Do not change.
pub(crate) mod legacy {
    use super::{Credentials, HASHED_CREDENTIALS, ProviderConfig, TargetSpec, salted_hash};
    use secrecy::ExposeSecret;

    pub(crate) fn request_inputs(
        salt: &str,
        config: &ProviderConfig,
        credentials: &Credentials,
    ) -> String {
        let shape = format!(
            "{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
            config.token_url,
            config.grant,
            config.client_authentication,
            config.encoding,
            config.send_grant_type,
            config.field_names,
            config.extra_parameters,
            config.redirect_uri,
            config.scope,
        );
        let mut parts = vec![shape.as_str()];
        parts.extend(
            HASHED_CREDENTIALS.map(|p| credentials.get(p).map_or("", |v| v.expose_secret())),
        );
        salted_hash(salt, &parts)
    }

    pub(crate) fn target_settings(spec: &TargetSpec) -> String {
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}",
            spec.secret_type, spec.labels, spec.annotations, spec.template
        );
        salted_hash("target", &[&text])[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ProviderCredentialSpec, credentials_from_data, provider_config};

    fn fixture() -> (ProviderConfig, Credentials, TargetSpec) {
        let spec: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
            "preset": "reltio",
            "tokenEndpoint": {"url": "https://auth.example.test/oauth/token"},
            "grant": {"scope": "read write", "extraParameters": {"audience": "crm"}},
            "credentials": {"secretRef": {"name": "login"}},
            "target": {"secretName": "tok", "type": "Opaque", "labels": {"team": "a"},
                       "template": {"Authorization": "Bearer {{ access_token }}"}},
        }))
        .unwrap();
        let data = BTreeMap::from([
            ("client_id".to_string(), b"cid".to_vec()),
            ("client_secret".to_string(), b"csecret".to_vec()),
            ("username".to_string(), b"user".to_vec()),
            ("password".to_string(), b"pw".to_vec()),
        ]);
        let credentials = credentials_from_data(&spec, &data);
        (provider_config(&spec).unwrap(), credentials, spec.target)
    }

    /// Pinned: if this changes, every resource would fetch a new token after an upgrade. Bump
    /// the version (and keep recognising the old one) instead of editing the expected value.
    #[test]
    fn digests_are_pinned() {
        let (config, credentials, target) = fixture();
        assert_eq!(
            request_inputs("uid-1", &config, &credentials),
            "v1:d1d6ddb7b218e28ac5fc554a94d67c2914d386170833df3ae045be5a2921f041"
        );
        assert_eq!(target_settings(&target), "v1:5de608fc3d49cf40");
    }

    #[test]
    fn keyed_inputs_tell_nothing_without_the_key_and_name_their_key() {
        assert!(InputsKey::new(&[7; INPUTS_KEY_MIN_BYTES - 1]).is_none());
        let key = InputsKey::new(&[7; 32]).unwrap();
        let other = InputsKey::new(&[8; 32]).unwrap();
        let sealed = key.seal("v1:abc");
        // Neither the inputs digest nor anything computable without the key.
        assert!(!sealed.contains("abc"));
        assert_ne!(sealed, other.seal("v1:abc"));
        assert_eq!(key.check(&sealed, "v1:abc"), KeyedInputs::Same);
        assert_eq!(key.check(&sealed, "v1:abd"), KeyedInputs::Changed);
        assert_eq!(other.check(&sealed, "v1:abc"), KeyedInputs::OtherKey);
        // Whatever a writer of the target puts there is never read as the same inputs.
        for forged in [
            "",
            ":",
            "garbage",
            &format!("{}:", &sealed[..8]),
            &sealed[..20],
        ] {
            assert_ne!(key.check(forged, "v1:abc"), KeyedInputs::Same, "{forged}");
        }
    }

    #[test]
    fn legacy_digests_are_recognised() {
        let (config, credentials, target) = fixture();
        let old = legacy::request_inputs("uid-1", &config, &credentials);
        assert!(request_inputs_match(
            Some(&old),
            "uid-1",
            &config,
            &credentials
        ));
        assert!(!request_inputs_match(
            Some(&old),
            "uid-2",
            &config,
            &credentials
        ));
        assert!(target_settings_match(
            Some(&legacy::target_settings(&target)),
            &target
        ));
        assert!(!target_settings_match(Some("v1:0000"), &target));
        assert!(!request_inputs_match(None, "uid-1", &config, &credentials));
    }

    #[test]
    fn every_input_counts() {
        let (config, credentials, target) = fixture();
        let base = request_inputs("u", &config, &credentials);
        let mut other = config.clone();
        other.scope = Some("read".into());
        assert_ne!(request_inputs("u", &other, &credentials), base);
        let mut other = config.clone();
        other.token_url = "https://auth.example.test/other".parse().unwrap();
        assert_ne!(request_inputs("u", &other, &credentials), base);
        let mut creds = credentials.clone();
        creds.insert(Param::Password, "password", "pw2");
        assert_ne!(request_inputs("u", &config, &creds), base);
        // The keys and settings of assertions and mutual TLS count too.
        for param in KEY_CREDENTIALS {
            let mut creds = credentials.clone();
            creds.insert(param, param.oauth_name(), "pem-1");
            let one = request_inputs("u", &config, &creds);
            assert_ne!(one, base, "{param:?}");
            creds.insert(param, param.oauth_name(), "pem-2");
            assert_ne!(request_inputs("u", &config, &creds), one, "{param:?}");
        }
        let mut other = config.clone();
        other.assertion.subject = Some("user@example.com".into());
        assert_ne!(request_inputs("u", &other, &credentials), base);
        let mut other = config.clone();
        other.assertion.claims.insert("k".into(), "v".into());
        assert_ne!(request_inputs("u", &other, &credentials), base);
        let mut t = target.clone();
        t.annotations.insert("a".into(), "b".into());
        assert_ne!(target_settings(&t), target_settings(&target));
    }

    #[test]
    fn salted_parts_do_not_run_together() {
        assert_ne!(salted_hash("uid-1", &["pw"]), salted_hash("uid-2", &["pw"]));
        assert_ne!(
            salted_hash("u", &["ab", "c"]),
            salted_hash("u", &["a", "bc"])
        );
    }
}

//! Where the key of the inputs digests on target Secrets (`digest::InputsKey`) lives: a Secret
//! in the operator's own namespace, made by the first operator that finds none (32 random bytes)
//! and read by every replica and shard after it. Only who may read Secrets in that namespace
//! can read it; the tenants whose targets carry the digests cannot.
//!
//! Lost or replaced (the Secret deleted), a new key is made at the next start: digests made
//! with the old one are recognised as such and taken as "unchanged", so no token is requested
//! because of it; each target gets a digest with the new key at its next rotation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use ring::rand::SecureRandom;

use crate::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::digest::{INPUTS_KEY_MIN_BYTES, InputsKey};

/// The chart's name for it (`--inputs-key-secret`).
pub const DEFAULT_SECRET_NAME: &str = "token-rotator-inputs-key";
/// The data key holding it.
pub const DATA_KEY: &str = "key";
/// A larger value is not a key anyone meant (and is not held in memory).
const MAX_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputsKeyError {
    #[error(
        "could not {action} Secret {namespace}/{name}, which holds the key of the inputs digests on target Secrets ({reason}); grant the operator get and create on Secrets in namespace {namespace} (the chart does), or name another namespace with --inputs-key-namespace"
    )]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "Secret {namespace}/{name} holds no usable key of the inputs digests: key `{DATA_KEY}` must hold {INPUTS_KEY_MIN_BYTES} to {MAX_BYTES} bytes and holds {len}. Delete the Secret (kubectl -n {namespace} delete secret {name}) and the operator makes a new key at its next start: no token is requested because of it"
    )]
    Unusable {
        namespace: String,
        name: String,
        len: usize,
    },
    #[error("no random bytes for a new key of the inputs digests")]
    Random,
}

/// The key in Secret `namespace/name`, made there first if there is none.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<InputsKey, InputsKeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let failed = |action| {
        move |e: kube::Error| InputsKeyError::Api {
            action,
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason: crate::secrets::short_api_error(&e),
        }
    };
    // Twice at most: another replica may create it between our read and our create.
    for _ in 0..2 {
        if let Some(secret) = api.get_opt(name).await.map_err(failed("read"))? {
            return key_in(&secret, namespace, name);
        }
        match api.create(&PostParams::default(), &new_secret(name)?).await {
            Ok(secret) => return key_in(&secret, namespace, name),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(failed("create")(e)),
        }
    }
    Err(InputsKeyError::Api {
        action: "read",
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: "it was created and deleted again while being read".into(),
    })
}

fn new_secret(name: &str) -> Result<Secret, InputsKeyError> {
    let mut bytes = vec![0u8; INPUTS_KEY_MIN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| InputsKeyError::Random)?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            // The admission policy lets the operator create only Secrets it manages.
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), ByteString(bytes))])),
        ..Secret::default()
    })
}

fn key_in(secret: &Secret, namespace: &str, name: &str) -> Result<InputsKey, InputsKeyError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map_or(&[][..], |b| b.0.as_slice());
    let unusable = || InputsKeyError::Unusable {
        namespace: namespace.to_string(),
        name: name.to_string(),
        len: bytes.len(),
    };
    if bytes.len() > MAX_BYTES {
        return Err(unusable());
    }
    InputsKey::new(bytes).ok_or_else(unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(bytes: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                DATA_KEY.to_string(),
                ByteString(bytes.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_new_key_is_random_managed_and_usable() {
        let (a, b) = (new_secret("k").unwrap(), new_secret("k").unwrap());
        assert_ne!(a.data, b.data);
        assert_eq!(
            a.metadata
                .labels
                .unwrap()
                .get(MANAGED_BY_LABEL)
                .map(String::as_str),
            Some(MANAGED_BY_VALUE)
        );
        assert!(key_in(&b, "ns", "k").is_ok());
    }

    #[test]
    fn an_unusable_key_is_refused_naming_the_secret_and_the_fix_never_its_bytes() {
        for bytes in [&b""[..], &[b'q'; 31][..], &[b'q'; MAX_BYTES + 1][..]] {
            let e = key_in(&with_key(bytes), "ops", "k")
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("ops/k") && e.contains("delete secret k"), "{e}");
            assert!(!e.contains("qqqq"), "{e}");
        }
        assert!(key_in(&Secret::default(), "ops", "k").is_err());
        assert!(key_in(&with_key(&[1; 32]), "ops", "k").is_ok());
    }
}

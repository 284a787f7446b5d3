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
/// Marks the Secret as the key the operator made: a Secret of that name without it (another
/// ProviderCredential's target, or one planted by hand) is never taken as the key.
pub const MARKER_LABEL: &str = "tokenrotator.dev/inputs-key";
const MARKER_VALUE: &str = "v1";
/// Reads and creates that fail for a passing reason (a timeout, an apiserver restarting) are
/// tried again this often before the start-up gives up.
const ATTEMPTS: u32 = 5;

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
        /// Not a refusal (401, 403, 404 of the namespace, 422): tried again.
        transient: bool,
    },
    #[error(
        "Secret {namespace}/{name} holds no usable key of the inputs digests: key `{DATA_KEY}` must hold {INPUTS_KEY_MIN_BYTES} to {MAX_BYTES} bytes and holds {len}. Delete the Secret (kubectl -n {namespace} delete secret {name}) and the operator makes a new key at its next start: no token is requested because of it"
    )]
    Unusable {
        namespace: String,
        name: String,
        len: usize,
    },
    #[error(
        "Secret {namespace}/{name} exists but was not made by token-rotator as the key of the inputs digests (no label {MARKER_LABEL}={MARKER_VALUE}, or it has an owner, e.g. a ProviderCredential's target); it is left alone. Name another Secret with --inputs-key-secret"
    )]
    NotTheKey { namespace: String, name: String },
    #[error("no random bytes for a new key of the inputs digests")]
    Random,
}

impl InputsKeyError {
    /// Worth another try: the API failed for a reason that may pass (not a refusal).
    fn is_transient(&self) -> bool {
        matches!(
            self,
            InputsKeyError::Api {
                transient: true,
                ..
            }
        )
    }
}

/// The key for `token-rotator run`: none without a namespace (an empty one too), else loaded
/// or made there, a passing API failure tried again with backoff.
pub async fn for_run(
    client: &Client,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<InputsKey>, InputsKeyError> {
    let Some(namespace) = namespace.filter(|ns| !ns.is_empty()) else {
        tracing::info!(
            "no --inputs-key-namespace: each resource keeps its inputs digest in a state Secret"
        );
        return Ok(None);
    };
    let mut attempt = 1;
    loop {
        match load_or_create(client, namespace, name).await {
            Ok(key) => return Ok(Some(key)),
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "the key of the inputs digests: trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
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
            transient: passing(&e),
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
        transient: true,
    })
}

/// A failure that may pass (the apiserver busy or restarting, a timeout), unlike a refusal.
fn passing(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429)
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
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                (MARKER_LABEL.to_string(), MARKER_VALUE.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), ByteString(bytes))])),
        ..Secret::default()
    })
}

fn key_in(secret: &Secret, namespace: &str, name: &str) -> Result<InputsKey, InputsKeyError> {
    let marked = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MARKER_LABEL))
        .is_some_and(|v| v == MARKER_VALUE);
    let owned = secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    if !marked || owned {
        return Err(InputsKeyError::NotTheKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
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
        let mut secret = new_secret("k").unwrap();
        secret.data = Some(BTreeMap::from([(
            DATA_KEY.to_string(),
            ByteString(bytes.to_vec()),
        )]));
        secret
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
        assert!(
            key_in(
                &new_secret("k")
                    .map(|mut s| {
                        s.data = None;
                        s
                    })
                    .unwrap(),
                "ops",
                "k"
            )
            .is_err()
        );
        assert!(key_in(&with_key(&[1; 32]), "ops", "k").is_ok());
    }

    /// A Secret of that name the operator did not make as its key (another resource's target,
    /// one planted by hand) is never taken as the key, whatever it holds.
    #[test]
    fn only_the_key_the_operator_made_is_taken() {
        let mut unmarked = with_key(&[1; 32]);
        unmarked.metadata.labels = None;
        let mut owned = with_key(&[1; 32]);
        owned.metadata.owner_references = Some(vec![Default::default()]);
        for other in [unmarked, owned] {
            let e = key_in(&other, "ops", "k").err().unwrap();
            assert!(matches!(e, InputsKeyError::NotTheKey { .. }), "{e}");
            assert!(e.to_string().contains("--inputs-key-secret"), "{e}");
        }
    }

    #[test]
    fn only_passing_api_failures_are_tried_again() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!([500, 503, 504, 429].map(|c| passing(&api(c))) == [true; 4]);
        assert!([400, 401, 403, 404, 422].map(|c| passing(&api(c))) == [false; 5]);
    }
}

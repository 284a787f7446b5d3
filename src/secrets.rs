//! Reading and writing the Secrets around a ProviderCredential. Secret objects are never
//! formatted with `Debug` here: k8s-openapi would print their data.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::{CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProviderCredential};
use crate::state::StateData;
use crate::target::DesiredTarget;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot {action} Secret {name}: {source}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {0} exists and is not owned by this ProviderCredential; it is left untouched")]
    NotOwned(String),
    #[error(
        "Secret {0} has another type than spec.target.type and a Secret's type cannot change; delete the Secret and it will be recreated"
    )]
    TypeChanged(String),
    #[error("Secret {name} changed while being written ({attempts} attempts); will retry")]
    Contended { name: String, attempts: u32 },
}

fn api_error(action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> SecretsError {
    let name = name.to_string();
    move |source| SecretsError::Api {
        action,
        name,
        source,
    }
}

pub fn decoded(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

pub enum CredentialsLookup {
    Found(BTreeMap<String, Vec<u8>>),
    NotFound,
    NotLabelled,
}

/// Reads the credentials Secret on demand; its data is never cached.
pub async fn read_credentials(
    api: &Api<Secret>,
    name: &str,
) -> Result<CredentialsLookup, SecretsError> {
    match api.get_opt(name).await.map_err(api_error("read", name))? {
        None => Ok(CredentialsLookup::NotFound),
        Some(s) if s.labels().get(CREDENTIALS_LABEL).map(String::as_str) != Some("true") => {
            Ok(CredentialsLookup::NotLabelled)
        }
        Some(s) => Ok(CredentialsLookup::Found(decoded(&s))),
    }
}

pub fn is_owned_by(secret: &Secret, owner_uid: &str) -> bool {
    secret.owner_references().iter().any(|r| r.uid == owner_uid)
}

pub enum Owned {
    Absent,
    Owned(Box<Secret>),
    Foreign,
}

pub async fn read_owned(
    api: &Api<Secret>,
    name: &str,
    owner_uid: &str,
) -> Result<Owned, SecretsError> {
    Ok(
        match api.get_opt(name).await.map_err(api_error("read", name))? {
            None => Owned::Absent,
            Some(s) if is_owned_by(&s, owner_uid) => Owned::Owned(Box::new(s)),
            Some(_) => Owned::Foreign,
        },
    )
}

fn owned_meta(
    owner: &ProviderCredential,
    name: &str,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: owner.namespace(),
        labels: Some(labels),
        // blockOwnerDeletion makes foreground deletion wait for these Secrets; setting it needs
        // `update` on providercredentials/finalizers (OwnerReferencesPermissionEnforcement).
        owner_references: owner.controller_owner_ref(&()).map(|mut r| {
            r.block_owner_deletion = Some(true);
            vec![r]
        }),
        ..ObjectMeta::default()
    }
}

fn encode(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}

/// Writes the state Secret: created if absent, otherwise replaced under a resourceVersion
/// precondition so a stale writer (a paused ex-leader) cannot overwrite a newer refresh token.
/// Conflicts are retried by re-reading; the caller keeps the value in memory until this
/// returns Ok.
pub async fn write_state(
    api: &Api<Secret>,
    owner: &ProviderCredential,
    name: &str,
    mut current: Option<Secret>,
    state: &StateData,
) -> Result<Secret, SecretsError> {
    const ATTEMPTS: u32 = 5;
    let owner_uid = owner.uid().unwrap_or_default();
    for attempt in 1..=ATTEMPTS {
        let result = match current.take() {
            None => {
                let secret = Secret {
                    metadata: owned_meta(
                        owner,
                        name,
                        BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into())]),
                    ),
                    type_: Some("Opaque".into()),
                    data: Some(encode(state.to_data())),
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
            Some(mut existing) => {
                if !is_owned_by(&existing, &owner_uid) {
                    return Err(SecretsError::NotOwned(name.to_string()));
                }
                existing.data = Some(encode(state.to_data()));
                existing.string_data = None;
                api.replace(name, &PostParams::default(), &existing).await
            }
        };
        match result {
            Ok(written) => return Ok(written),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                current = api.get_opt(name).await.map_err(api_error("read", name))?;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(SecretsError::Contended {
                    name: name.to_string(),
                    attempts: ATTEMPTS,
                });
            }
            Err(e) => return Err(api_error("write", name)(e)),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Creates the target Secret, or replaces one this resource owns. Never touches another's.
pub async fn write_target(
    api: &Api<Secret>,
    owner: &ProviderCredential,
    name: &str,
    existing: Option<Secret>,
    desired: DesiredTarget,
) -> Result<(), SecretsError> {
    let mut meta = owned_meta(owner, name, desired.labels);
    meta.annotations = Some(desired.annotations);
    let mut secret = Secret {
        metadata: meta,
        type_: Some(desired.secret_type),
        data: Some(encode(desired.data)),
        ..Secret::default()
    };
    let result = match existing {
        None => api.create(&PostParams::default(), &secret).await,
        Some(current) => {
            if !is_owned_by(&current, &owner.uid().unwrap_or_default()) {
                return Err(SecretsError::NotOwned(name.to_string()));
            }
            secret.metadata.resource_version = current.metadata.resource_version.clone();
            if current.type_ != secret.type_ {
                // A Secret's type is immutable, and the operator holds no delete permission.
                return Err(SecretsError::TypeChanged(name.to_string()));
            }
            api.replace(name, &PostParams::default(), &secret).await
        }
    };
    match result {
        Ok(_) => Ok(()),
        // Someone created it between our read and our create: it is theirs.
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
            Err(SecretsError::NotOwned(name.to_string()))
        }
        Err(e) => Err(api_error("write", name)(e)),
    }
}

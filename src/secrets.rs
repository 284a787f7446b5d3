//! Reading and writing the Secrets around a ProviderCredential. Secret objects are never
//! formatted with `Debug` here: k8s-openapi would print their data.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};

use crate::api::{
    ALLOWED_TOKEN_HOSTS_ANNOTATION, CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ProviderCredential,
};
use crate::rotation::{self, ChainWrite, CredentialsView, Rebase, SecretWrite, Slot};
use crate::state::StateData;
use crate::target::DesiredTarget;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The API error in its short form only: it reaches status and Events.
    #[error("cannot {action} Secret {name}: {}", short_api_error(source))]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {0} exists and is not owned by this ProviderCredential; it is left untouched")]
    NotOwned(String),
    #[error("Secret {name} changed while being written ({attempts} attempts); will retry")]
    Contended { name: String, attempts: u32 },
}

/// The longest reason kept from an API error: the API server's own reasons are a word, but a
/// webhook chooses its own.
const MAX_REASON_CHARS: usize = 64;

/// An API error in a few words (its status code and reason), as status, Events and logs show
/// it: never its message, which an admission webhook or policy writes and may quote what was
/// sent (a Secret's data), at any length.
pub fn short_api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let reason: String = s
                .reason
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(MAX_REASON_CHARS)
                .collect();
            format!("{} {reason}", s.code)
        }
        other => crate::provider::scrub::truncate_chars(&other.to_string(), 120),
    }
}

fn api_error(action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> SecretsError {
    let name = name.to_string();
    move |source| SecretsError::Api {
        action,
        name,
        source,
    }
}

/// The decoded data of a Secret: `data` overlaid by `stringData`, as the API server does (a
/// manifest on disk may use either; an object read from the API has only `data`).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    data
}

/// Reads the credentials Secret; returns what it holds for this operator and its
/// resourceVersion.
pub async fn read_credentials(
    api: &Api<Secret>,
    name: &str,
) -> Result<(CredentialsView, Option<String>), SecretsError> {
    let secret = api.get_opt(name).await.map_err(api_error("read", name))?;
    let resource_version = secret.as_ref().and_then(|s| s.resource_version());
    Ok((credentials_view(secret.as_ref()), resource_version))
}

/// What a reconcile may use of a credentials Secret (only one carrying the opt-in label).
pub fn credentials_view(secret: Option<&Secret>) -> CredentialsView {
    match secret {
        None => CredentialsView::NotFound,
        Some(s) if s.labels().get(CREDENTIALS_LABEL).map(String::as_str) != Some("true") => {
            CredentialsView::NotLabelled
        }
        Some(s) => match s.annotations().get(ALLOWED_TOKEN_HOSTS_ANNOTATION) {
            Some(hosts) => CredentialsView::Pinned {
                data: secret_data(s),
                allowed_hosts: hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            None => CredentialsView::Found(secret_data(s)),
        },
    }
}

pub fn is_owned_by(secret: &Secret, owner_uid: &str) -> bool {
    secret.owner_references().iter().any(|r| r.uid == owner_uid)
}

/// Reads a Secret this resource may own; a Secret owned by anyone else is only reported.
pub async fn read_owned(
    api: &Api<Secret>,
    name: &str,
    owner_uid: &str,
) -> Result<Slot<Secret>, SecretsError> {
    Ok(read_owned_or_version(api, name, owner_uid).await?.0)
}

/// As [`read_owned`], and the resourceVersion of a Secret there that is someone else's (so
/// that what was found can be remembered without its contents).
pub async fn read_owned_or_version(
    api: &Api<Secret>,
    name: &str,
    owner_uid: &str,
) -> Result<(Slot<Secret>, Option<String>), SecretsError> {
    Ok(
        match api.get_opt(name).await.map_err(api_error("read", name))? {
            None => (Slot::Absent, None),
            Some(s) if is_owned_by(&s, owner_uid) => (Slot::Owned(s), None),
            Some(s) => (Slot::Foreign, s.metadata.resource_version),
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

/// How a state write ended.
#[derive(Debug)]
pub enum StateStored {
    /// Stored (or found already stored); the state Secret's resourceVersion after it.
    Written(Option<String>),
    /// Another writer stored a newer refresh token meanwhile; it was left in place.
    /// `discarded`: the write carried a token the provider issued, now set aside.
    Superseded { discarded: bool },
}

/// Writes the state Secret as a compare-and-swap on the refresh chain: created if absent,
/// otherwise patched under the resourceVersion it was read at (metadata others added is kept;
/// keys not in the state are removed). On a conflict it re-reads what is stored and lets
/// [`rotation::rebase`] decide: write again over bookkeeping changes, or leave a newer chain
/// in place. Bounded; the caller holds the state in memory until this returns Ok.
pub async fn write_state(
    api: &Api<Secret>,
    owner: &ProviderCredential,
    at: &SecretWrite,
    write: &ChainWrite,
) -> Result<StateStored, SecretsError> {
    const ATTEMPTS: u32 = 5;
    let owner_uid = owner.uid().unwrap_or_default();
    let name = at.name.as_str();
    let mut state = write.state.clone();
    let mut resource_version = at.resource_version.clone();
    for attempt in 1..=ATTEMPTS {
        let data = encode(state.to_data());
        let result = match resource_version.take() {
            None => {
                let secret = Secret {
                    metadata: owned_meta(
                        owner,
                        name,
                        BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into())]),
                    ),
                    type_: Some("Opaque".into()),
                    data: Some(data),
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &secret).await
            }
            Some(rv) => {
                let mut fields = serde_json::Map::new();
                for key in crate::state::KEYS {
                    fields.insert(key.into(), serde_json::Value::Null);
                }
                for (key, value) in &data {
                    fields.insert(key.clone(), serde_json::to_value(value).unwrap_or_default());
                }
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": rv},
                    "data": fields,
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        };
        match result {
            Ok(written) => return Ok(StateStored::Written(written.metadata.resource_version)),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                let stored = match read_owned(api, name, &owner_uid).await? {
                    Slot::Absent => continue,
                    Slot::Owned(s) => s,
                    Slot::Foreign => return Err(SecretsError::NotOwned(name.to_string())),
                };
                let stored_state = StateData::from_data(&secret_data(&stored));
                match rotation::rebase(write, &stored_state) {
                    Rebase::Superseded { discarded } => {
                        return Ok(StateStored::Superseded { discarded });
                    }
                    Rebase::Write(rebased) if rebased == stored_state => {
                        return Ok(StateStored::Written(stored.metadata.resource_version));
                    }
                    Rebase::Write(rebased) => {
                        state = rebased;
                        resource_version = stored.metadata.resource_version;
                    }
                }
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

/// Deletes a state Secret that holds nothing a state Secret is needed for any more, as it was
/// written (`resource_version`): one changed since (another writer stored a chain) stays.
/// Returns whether it is gone.
pub async fn delete_state(
    api: &Api<Secret>,
    name: &str,
    resource_version: &str,
) -> Result<bool, SecretsError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(resource_version.to_string()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(api_error("delete", name)(e)),
    }
}

/// Creates the target Secret, or replaces the one this resource owns under the resourceVersion
/// it was read at (ownership and type were checked by the plan). Returns it as written.
pub async fn write_target(
    api: &Api<Secret>,
    owner: &ProviderCredential,
    at: &SecretWrite,
    desired: DesiredTarget,
) -> Result<Secret, SecretsError> {
    let name = at.name.as_str();
    let mut meta = owned_meta(owner, name, desired.labels);
    meta.annotations = Some(desired.annotations);
    meta.resource_version = at.resource_version.clone();
    let secret = Secret {
        metadata: meta,
        type_: Some(desired.secret_type),
        data: Some(encode(desired.data)),
        ..Secret::default()
    };
    let result = match &at.resource_version {
        None => api.create(&PostParams::default(), &secret).await,
        Some(_) => api.replace(name, &PostParams::default(), &secret).await,
    };
    match result {
        Ok(written) => Ok(written),
        // Someone created it between our read and our create: it is theirs.
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
            Err(SecretsError::NotOwned(name.to_string()))
        }
        Err(e) => Err(api_error("write", name)(e)),
    }
}

impl SecretsError {
    /// What the user can do about it, for the status message.
    pub fn remedy(&self) -> &'static str {
        match self {
            SecretsError::Api {
                source: kube::Error::Api(e),
                ..
            } => match e.code {
                403 if e.message.contains("quota") => {
                    "a ResourceQuota in this namespace forbids it; raise the quota for Secrets"
                }
                403 => {
                    "the operator lacks permission; check its ClusterRole (the chart's RBAC) and admission policies"
                }
                409 => "the Secret changed while being written; it is retried",
                422 => "the API server rejected the Secret as invalid; check spec.target",
                _ => "the API server failed; it is retried",
            },
            SecretsError::Api { .. } => "the API server could not be reached; it is retried",
            SecretsError::NotOwned(_) => {
                "another owner created it first; choose another spec.target.secretName"
            }
            SecretsError::Contended { .. } => "it is retried",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an admission webhook may answer: a reason of its own choosing, and a message
    /// quoting what was sent.
    fn refused_by_a_webhook() -> kube::Error {
        let status = kube::core::Status {
            code: 403,
            reason: format!("Denied\n\u{1b}[31m{}", "Long".repeat(5_000)),
            message: "admission webhook denied: data.access_token=s3cr3t-t0ken".into(),
            ..Default::default()
        };
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_reach_status_only_in_their_short_form() {
        let short = short_api_error(&refused_by_a_webhook());
        assert!(short.starts_with("403 Denied31mLong"), "{short}");
        assert!(short.len() <= 4 + MAX_REASON_CHARS, "{}", short.len());
        assert!(!short.contains("s3cr3t"));
        let failure = SecretsError::Api {
            action: "write",
            name: "target".into(),
            source: refused_by_a_webhook(),
        }
        .to_string();
        assert!(!failure.contains("s3cr3t"), "{failure}");
        assert!(!failure.chars().any(char::is_control), "{failure:?}");
        assert!(failure.len() < 120, "{}", failure.len());
    }
}

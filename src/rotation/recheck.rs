//! Whether a token request that waited for its turn is still wanted, decided from the
//! resource and the credentials as the watches show them now (the controller's `recheck`
//! reads them): sending it anyway would act for someone who no longer asks.

use kube::Resource;

use super::{CredentialsView, Plan, request_inputs_now, usable_credentials};
use crate::api::ProviderCredential;

/// Why a request that waited is no longer sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoLongerWanted {
    #[error("the resource was deleted while its request waited")]
    Deleted,
    #[error("the resource changed while its request waited")]
    Changed,
    #[error("the credentials Secret no longer offers its credentials for this host")]
    ConsentWithdrawn,
    #[error("cannot confirm the request is still wanted: {0}")]
    Unconfirmed(String),
}

/// The resource as the API shows it now against what the request was planned from.
pub fn resource_unchanged(
    planned: &ProviderCredential,
    now: Option<&kube::api::ObjectMeta>,
) -> Result<(), NoLongerWanted> {
    let Some(now) = now.filter(|m| m.uid == planned.meta().uid) else {
        return Err(NoLongerWanted::Deleted);
    };
    if now.deletion_timestamp.is_some() {
        return Err(NoLongerWanted::Deleted);
    }
    // The generation moves with every spec change (suspend, endpoint, credentials named).
    if now.generation != planned.meta().generation {
        return Err(NoLongerWanted::Changed);
    }
    Ok(())
}

/// The credentials Secret as it is now still offers the very credentials the request was
/// planned with to the planned host.
pub fn consent_holds(
    pc: &ProviderCredential,
    name: &str,
    view: &CredentialsView,
    plan: &Plan,
) -> Result<(), NoLongerWanted> {
    let data = usable_credentials(name, view, &plan.config.token_url)
        .map_err(|_| NoLongerWanted::ConsentWithdrawn)?;
    if request_inputs_now(pc, &plan.config, data) != plan.inputs {
        return Err(NoLongerWanted::Changed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn resource(generation: i64) -> ProviderCredential {
        let spec = serde_json::from_value(serde_json::json!({
            "tokenEndpoint": {"url": "https://127.0.0.1/token"},
            "credentials": {"secretRef": {"name": "creds"}},
            "target": {"secretName": "out"},
        }))
        .unwrap();
        let mut pc = ProviderCredential::new("pc", spec);
        pc.metadata.uid = Some("uid-1".into());
        pc.metadata.generation = Some(generation);
        pc
    }

    #[test]
    fn a_resource_deleted_replaced_or_changed_meanwhile_is_not_served() {
        let planned = resource(3);
        let same = planned.metadata.clone();
        assert_eq!(resource_unchanged(&planned, Some(&same)), Ok(()));
        assert_eq!(
            resource_unchanged(&planned, None),
            Err(NoLongerWanted::Deleted)
        );
        let replaced = ObjectMeta {
            uid: Some("uid-2".into()),
            ..same.clone()
        };
        assert_eq!(
            resource_unchanged(&planned, Some(&replaced)),
            Err(NoLongerWanted::Deleted),
            "another resource of the same name"
        );
        let deleting = ObjectMeta {
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            )),
            ..same.clone()
        };
        assert_eq!(
            resource_unchanged(&planned, Some(&deleting)),
            Err(NoLongerWanted::Deleted)
        );
        let suspended = ObjectMeta {
            generation: Some(4),
            ..same
        };
        assert_eq!(
            resource_unchanged(&planned, Some(&suspended)),
            Err(NoLongerWanted::Changed)
        );
    }
}

//! A token request that waited for its turn (its namespace's pace, a 429 pause, its request
//! slots) is looked at again before it is sent: meanwhile the resource may have been
//! suspended, changed or deleted, and the owner of its credentials Secret may have withdrawn
//! consent (the opt-in label, the allowed hosts). Sending it anyway would act for someone who
//! no longer asks, with credentials no longer offered. Both come from the watches' caches,
//! like the plan: the check costs no API call (a waiting request is the rule at start-up,
//! when a namespace's new resources queue for its request slots).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::context::Context;
use crate::api::ProviderCredential;
use crate::rotation::{CredentialsView, Plan, request_inputs_now, usable_credentials};
use crate::secrets::{credentials_view, short_api_error};

/// A request that waited at least this long is checked again before it is sent.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

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

/// From the watches' caches, as the plan was made from them: no API call, except a read of
/// a credentials Secret the cache does not hold (larger than what is kept, over its
/// namespace's budget, or changed and not yet shown).
pub async fn still_wanted(
    ctx: &Context,
    pc: &ProviderCredential,
    plan: &Plan,
) -> Result<(), NoLongerWanted> {
    let namespace = pc.namespace().unwrap_or_default();
    let now = ctx.cached_resource(&namespace, &pc.name_any());
    resource_unchanged(pc, now.as_deref().map(|guard| guard.meta()))?;
    let Some(name) = pc.spec.credentials.secret_name() else {
        // A ServiceAccount's consent is checked when its token is minted, after this.
        return Ok(());
    };
    let view = match ctx.views.credentials(&namespace, name) {
        Some(view) => view,
        None => {
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(|e| NoLongerWanted::Unconfirmed(short_api_error(&e)))?;
            credentials_view(secret.as_ref())
        }
    };
    consent_holds(pc, name, &view, plan)
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

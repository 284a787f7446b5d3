//! A token request that waited for its turn (its namespace's pace, a 429 pause, its request
//! slots) is looked at again before it is sent: meanwhile the resource may have been
//! suspended, changed or deleted, and the owner of its credentials Secret may have withdrawn
//! consent (the opt-in label, the allowed hosts). Sending it anyway would act for someone who
//! no longer asks, with credentials no longer offered. Both come from the watches' caches,
//! like the plan: the check costs no API call (a waiting request is the rule at start-up,
//! when a namespace's new resources queue for its request slots).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::Api;

use super::context::Context;
use crate::api::{ProviderCredential, ResourceKey};
use crate::rotation::Plan;
use crate::rotation::recheck::{NoLongerWanted, consent_holds, resource_unchanged};
use crate::secrets::{credentials_view, short_api_error};

/// A request that waited at least this long is checked again before it is sent.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// From the watches' caches, as the plan was made from them: no API call, except a read of
/// a credentials Secret the cache does not hold (larger than what is kept, over its
/// namespace's budget, or changed and not yet shown).
pub async fn still_wanted(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    plan: &Plan,
) -> Result<(), NoLongerWanted> {
    let namespace = key.namespace();
    let now = ctx.cached_resource(key);
    resource_unchanged(pc, now.as_deref().map(|guard| guard.meta()))?;
    let Some(name) = pc.spec.credentials.secret_name() else {
        // A ServiceAccount's consent is checked when its token is minted, after this.
        return Ok(());
    };
    let view = match ctx.views.credentials(namespace, name) {
        Some(view) => view,
        None => {
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| NoLongerWanted::Unconfirmed(short_api_error(&e)))?;
            credentials_view(secret.as_ref())
        }
    };
    consent_holds(pc, name, &view, plan)
}

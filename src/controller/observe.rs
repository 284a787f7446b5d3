//! Observe: read the Secrets around a resource. A state settled from an earlier answer but not
//! yet stored (it may hold the only valid refresh token) is stored first of all.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::debug;

use super::context::Context;
use crate::api::{ProviderCredential, state_secret_name};
use crate::rotation::{Observed, SecretWrite, Slot, StateView, TargetView};
use crate::secrets::{self, SecretsError};
use crate::state::StateData;
use crate::target::ObservedTarget;

pub async fn observe<'a>(
    ctx: &Context,
    pc: &'a ProviderCredential,
    api: &Api<Secret>,
) -> Result<Observed<'a>, SecretsError> {
    let uid = pc.uid().unwrap_or_default();
    let state_name = state_secret_name(&pc.name_any());
    let mut state = secrets::read_owned(api, &state_name, &uid)
        .await?
        .map(|s| StateView {
            resource_version: s.metadata.resource_version.clone(),
            data: StateData::from_data(&secrets::secret_data(&s)),
        });
    if let Some(unstored) = ctx.unstored_state(&uid) {
        state = store_held_state(ctx, pc, api, &uid, state_name, state, unstored).await?;
    }
    let target = secrets::read_owned(api, &pc.spec.target.secret_name, &uid)
        .await?
        .map(|s| TargetView {
            resource_version: s.metadata.resource_version.clone(),
            secret_type: s.type_.clone(),
            token: ObservedTarget::from_annotations(s.annotations()),
        });
    let credentials = secrets::read_credentials(api, &pc.spec.credentials.secret_ref.name).await?;
    Ok(Observed {
        pc,
        now: Timestamp::now(),
        target,
        state,
        credentials,
        held: ctx.unwritten_token(&uid),
    })
}

async fn store_held_state(
    ctx: &Context,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    uid: &str,
    name: String,
    state: Slot<StateView>,
    unstored: StateData,
) -> Result<Slot<StateView>, SecretsError> {
    let resource_version = match &state {
        // Never written over a Secret someone else owns; the plan reports the conflict.
        Slot::Foreign => return Ok(state),
        Slot::Absent => None,
        Slot::Owned(s) => s.resource_version.clone(),
    };
    let at = SecretWrite {
        name,
        resource_version,
    };
    let resource_version = secrets::write_state(api, pc, &at, &unstored).await?;
    ctx.stored_state(uid, &unstored);
    debug!("held state stored");
    Ok(Slot::Owned(StateView {
        resource_version,
        data: unstored,
    }))
}

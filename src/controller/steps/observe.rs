//! Observe: read the Secrets around a resource. A state settled from an earlier answer but not
//! yet stored (it may hold the only valid refresh token) is stored first of all.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::context::Context;
use crate::api::{ProviderCredential, ResourceKey, state_secret_name};
use crate::controller::caches::views::Known;
use crate::rotation::{
    self, ChainWrite, CredentialsView, Observed, Rebase, SecretWrite, Slot, StateView, TargetView,
};
use crate::secrets::{self, SecretsError, StateStored};
use crate::state::StateData;
use crate::target::ObservedTarget;

pub async fn observe<'a>(
    ctx: &'a Context,
    key: &ResourceKey,
    pc: &'a ProviderCredential,
    api: &Api<Secret>,
) -> Result<Observed<'a>, SecretsError> {
    let state = match ctx.unstored_state(key) {
        Some((_, unstored)) => store_held_state(ctx, key, pc, api, unstored).await?,
        None => read_state(ctx, key, api).await?,
    };
    let target = read_target(ctx, key, api, pc).await?;
    let credentials = read_credentials(ctx, key, api, pc).await?;
    Ok(Observed {
        pc,
        now: Timestamp::now(),
        target,
        state,
        credentials,
        held: ctx.unwritten_token(key),
        timeout_cap: ctx.gate.timeout_cap(),
        inputs_key: ctx.inputs_key.as_ref(),
    })
}

/// The target Secret: as last seen if the watch shows that version still, else read.
async fn read_target(
    ctx: &Context,
    key: &ResourceKey,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<Slot<TargetView>, SecretsError> {
    let name = &pc.spec.target.secret_name;
    // As last seen, or as just written once the watch shows it.
    if let Some(view) = ctx.views.target_once_shown(key, name, SHOWN_WAIT).await {
        return Ok(Slot::Owned(view));
    }
    // Absent, or someone else's, as last read: not read again for an unrelated trigger.
    if let Some(slot) = ctx.views.target_unowned(key, name, pc.meta().generation) {
        return Ok(slot);
    }
    if rotation::target_may_be_assumed_absent(pc.status.as_ref()) {
        // Known absent from the complete watch beats a read (a 404) per new resource. A
        // Secret of someone else's there makes the create fail; that is read and reported
        // (TargetConflict), and the status then has every later reconcile read first.
        ctx.views
            .listed(key.namespace(), FIRST_LIST_WAIT, || false)
            .await;
        if ctx.views.target_known_absent(key, name) {
            return Ok(Slot::Absent);
        }
    }
    reread_target(ctx, key, api, pc).await
}

/// The target as the API has it now (read), remembered for the next reconciles.
pub async fn reread_target(
    ctx: &Context,
    key: &ResourceKey,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<Slot<TargetView>, SecretsError> {
    let name = &pc.spec.target.secret_name;
    let (target, foreign_version) = secrets::read_owned_or_version(api, name, key.uid()).await?;
    let target = target.map(|s| TargetView {
        resource_version: s.metadata.resource_version.clone(),
        secret_type: s.type_.clone(),
        token: ObservedTarget::from_annotations(s.annotations()),
    });
    remember_target(ctx, key, pc, &target, foreign_version.as_deref());
    Ok(target)
}

/// Remembers the target as read: owned (its view), absent, or someone else's (its version,
/// until the TargetConflict recheck this reconcile is about to ask for).
fn remember_target(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    target: &Slot<TargetView>,
    foreign_version: Option<&str>,
) {
    let name = &pc.spec.target.secret_name;
    match (target, foreign_version) {
        (Slot::Owned(view), _) => ctx.views.remember_target(key, name, Some(view.clone())),
        (Slot::Absent, _) => ctx.views.remember_target_absent(key, name),
        (Slot::Foreign, Some(version)) => ctx.views.remember_target_foreign(
            key,
            name,
            pc.meta().generation,
            version,
            rotation::blocked_recheck(ctx.attempts(key)),
        ),
        (Slot::Foreign, None) => ctx.views.remember_target(key, name, None),
    }
}

/// How long a reconcile at start-up waits for the watches' first list to make progress (the
/// next page) before reading instead.
const FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a reconcile waits for the watch to show a Secret this process just wrote before
/// reading it instead (the watch is normally milliseconds behind; a busy apiserver, seconds).
const SHOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The credentials Secret: as last read if the watch of opted-in Secrets shows that version
/// still (after the watch's first list, at start-up), else read.
async fn read_credentials(
    ctx: &Context,
    key: &ResourceKey,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<CredentialsView, SecretsError> {
    let namespace = key.namespace();
    // A ServiceAccount instead: nothing to read here (its token is minted by execute).
    let Some(name) = pc.spec.credentials.secret_name() else {
        return Ok(CredentialsView::NotFound);
    };
    if let Some(view) = ctx.views.credentials(namespace, name) {
        return Ok(view);
    }
    ctx.views
        .listed(namespace, FIRST_LIST_WAIT, || {
            ctx.views.credentials(namespace, name).is_some()
        })
        .await;
    if let Some(view) = ctx.views.credentials(namespace, name) {
        return Ok(view);
    }
    let (view, resource_version) = secrets::read_credentials(api, name).await?;
    ctx.views
        .remember_credentials(namespace, name, resource_version, &view);
    Ok(view)
}

/// The state Secret: as last seen if the watch shows that version still, absent if the watch
/// has never shown it, else read.
async fn read_state(
    ctx: &Context,
    key: &ResourceKey,
    api: &Api<Secret>,
) -> Result<Slot<StateView>, SecretsError> {
    let name = state_secret_name(key.name());
    let known = match ctx.views.state_known(key, &name) {
        // At start-up the watches may not have listed yet: a new resource's state is then
        // known absent after the wait, which beats a read (a 404) per resource.
        Known::Unknown => {
            ctx.views
                .listed(key.namespace(), FIRST_LIST_WAIT, || false)
                .await;
            ctx.views.state_known(key, &name)
        }
        known => known,
    };
    match known {
        Known::Current(view) => return Ok(Slot::Owned(view)),
        Known::Absent => return Ok(Slot::Absent),
        Known::Unknown => {}
    }
    if let Some(view) = ctx.views.state_once_shown(key, &name, SHOWN_WAIT).await {
        return Ok(Slot::Owned(view));
    }
    let state = secrets::read_owned(api, &name, key.uid())
        .await?
        .map(|s| StateView {
            resource_version: s.metadata.resource_version.clone(),
            data: StateData::from_data(&secrets::secret_data(&s)),
        });
    ctx.views.remember_state(key, &name, owned(&state));
    Ok(state)
}

fn owned<T: Clone>(slot: &Slot<T>) -> Option<T> {
    match slot {
        Slot::Owned(view) => Some(view.clone()),
        Slot::Absent | Slot::Foreign => None,
    }
}

/// Stores a state held in memory (compare-and-swap on the chain it came from) and returns
/// the state Secret as it is afterwards. Also what shutdown runs for every held state.
pub async fn store_held_state(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    api: &Api<Secret>,
    unstored: ChainWrite,
) -> Result<Slot<StateView>, SecretsError> {
    let state = read_state(ctx, key, api).await?;
    let stored = match &state {
        // Never written over a Secret someone else owns; the plan reports the conflict.
        Slot::Foreign => return Ok(state),
        Slot::Absent => None,
        Slot::Owned(s) => Some(s),
    };
    let at = SecretWrite {
        name: state_secret_name(key.name()),
        resource_version: stored.and_then(|s| s.resource_version.clone()),
    };
    // The held state was settled long ago, perhaps: what is stored now may already be a newer
    // chain (another replica took over meanwhile), so the write starts as a compare-and-swap
    // against this read, not as an overwrite of whatever is there.
    let outcome = match stored.map(|s| (s, rotation::rebase(&unstored, &s.data))) {
        Some((_, Rebase::Superseded { discarded })) => StateStored::Superseded { discarded },
        Some((s, Rebase::Write(state))) if state == s.data => {
            StateStored::Written(s.resource_version.clone())
        }
        _ => secrets::write_state(api, pc, &at, &unstored).await?,
    };
    match outcome {
        StateStored::Written(resource_version) => {
            ctx.stored_state(key, &unstored);
            debug!("held state stored");
            let view = StateView {
                resource_version,
                data: unstored.state,
            };
            ctx.views
                .remember_written_state(key, &at.name, view.clone());
            Ok(Slot::Owned(view))
        }
        StateStored::Superseded { discarded } => {
            // The newer chain stays; what is stored now is what the plan must see, and a token
            // obtained from the discarded chain is never written.
            ctx.stored_state(key, &unstored);
            ctx.drop_token(key);
            let failure = super::executed::superseded(&ctx.metrics, discarded);
            super::report::warn_event(ctx, pc, failure.reason.reason(), failure.message).await;
            read_state(ctx, key, api).await
        }
    }
}

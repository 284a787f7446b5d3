//! Observe: read the Secrets around a resource. A state settled from an earlier answer but not
//! yet stored (it may hold the only valid refresh token) is stored first of all.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::context::Context;
use crate::api::{ProviderCredential, state_secret_name};
use crate::controller::caches::views::Known;
use crate::rotation::{
    self, ChainWrite, CredentialsView, Observed, Rebase, SecretWrite, Slot, StateView, TargetView,
};
use crate::secrets::{self, SecretsError, StateStored};
use crate::state::StateData;
use crate::target::ObservedTarget;

pub async fn observe<'a>(
    ctx: &'a Context,
    pc: &'a ProviderCredential,
    api: &Api<Secret>,
) -> Result<Observed<'a>, SecretsError> {
    let uid = pc.uid().unwrap_or_default();
    let state = match ctx.unstored_state(&uid) {
        Some((_, unstored)) => store_held_state(ctx, pc, api, unstored).await?,
        None => read_state(ctx, api, pc).await?,
    };
    let target = read_target(ctx, api, pc).await?;
    let credentials = read_credentials(ctx, api, pc).await?;
    Ok(Observed {
        pc,
        now: Timestamp::now(),
        target,
        state,
        credentials,
        held: ctx.unwritten_token(&uid),
        timeout_cap: ctx.gate.timeout_cap(),
        inputs_key: ctx.inputs_key.as_ref(),
    })
}

/// The target Secret: as last seen if the watch shows that version still, else read.
async fn read_target(
    ctx: &Context,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<Slot<TargetView>, SecretsError> {
    let (uid, namespace) = (
        pc.uid().unwrap_or_default(),
        pc.namespace().unwrap_or_default(),
    );
    let name = &pc.spec.target.secret_name;
    // As last seen, or as just written once the watch shows it.
    if let Some(view) = ctx
        .views
        .target_once_shown(&uid, &namespace, name, SHOWN_WAIT)
        .await
    {
        return Ok(Slot::Owned(view));
    }
    // Absent, or someone else's, as last read: not read again for an unrelated trigger.
    if let Some(slot) = ctx
        .views
        .target_unowned(&uid, &namespace, name, pc.meta().generation)
    {
        return Ok(slot);
    }
    if rotation::target_may_be_assumed_absent(pc.status.as_ref()) {
        // Known absent from the complete watch beats a read (a 404) per new resource. A
        // Secret of someone else's there makes the create fail; that is read and reported
        // (TargetConflict), and the status then has every later reconcile read first.
        ctx.views
            .listed(&namespace, FIRST_LIST_WAIT, || false)
            .await;
        if ctx.views.target_known_absent(&uid, &namespace, name) {
            return Ok(Slot::Absent);
        }
    }
    reread_target(ctx, api, pc).await
}

/// The target as the API has it now (read), remembered for the next reconciles.
pub async fn reread_target(
    ctx: &Context,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<Slot<TargetView>, SecretsError> {
    let uid = pc.uid().unwrap_or_default();
    let name = &pc.spec.target.secret_name;
    let (target, foreign_version) = secrets::read_owned_or_version(api, name, &uid).await?;
    let target = target.map(|s| TargetView {
        resource_version: s.metadata.resource_version.clone(),
        secret_type: s.type_.clone(),
        token: ObservedTarget::from_annotations(s.annotations()),
    });
    remember_target(ctx, pc, &target, foreign_version.as_deref());
    Ok(target)
}

/// Remembers the target as read: owned (its view), absent, or someone else's (its version,
/// until the TargetConflict recheck this reconcile is about to ask for).
fn remember_target(
    ctx: &Context,
    pc: &ProviderCredential,
    target: &Slot<TargetView>,
    foreign_version: Option<&str>,
) {
    let (uid, namespace) = (
        pc.uid().unwrap_or_default(),
        pc.namespace().unwrap_or_default(),
    );
    let name = &pc.spec.target.secret_name;
    match (target, foreign_version) {
        (Slot::Owned(view), _) => {
            ctx.views
                .remember_target(&uid, &namespace, name, Some(view.clone()))
        }
        (Slot::Absent, _) => ctx.views.remember_target_absent(&uid, &namespace, name),
        (Slot::Foreign, Some(version)) => ctx.views.remember_target_foreign(
            &uid,
            &namespace,
            name,
            pc.meta().generation,
            version,
            rotation::blocked_recheck(ctx.attempts(&uid)),
        ),
        (Slot::Foreign, None) => ctx.views.remember_target(&uid, &namespace, name, None),
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
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<CredentialsView, SecretsError> {
    let namespace = pc.namespace().unwrap_or_default();
    // A ServiceAccount instead: nothing to read here (its token is minted by execute).
    let Some(name) = pc.spec.credentials.secret_name() else {
        return Ok(CredentialsView::NotFound);
    };
    if let Some(view) = ctx.views.credentials(&namespace, name) {
        return Ok(view);
    }
    ctx.views
        .listed(&namespace, FIRST_LIST_WAIT, || {
            ctx.views.credentials(&namespace, name).is_some()
        })
        .await;
    if let Some(view) = ctx.views.credentials(&namespace, name) {
        return Ok(view);
    }
    let (view, resource_version) = secrets::read_credentials(api, name).await?;
    ctx.views
        .remember_credentials(&namespace, name, resource_version, &view);
    Ok(view)
}

/// The state Secret: as last seen if the watch shows that version still, absent if the watch
/// has never shown it, else read.
async fn read_state(
    ctx: &Context,
    api: &Api<Secret>,
    pc: &ProviderCredential,
) -> Result<Slot<StateView>, SecretsError> {
    let (uid, namespace) = (
        pc.uid().unwrap_or_default(),
        pc.namespace().unwrap_or_default(),
    );
    let name = state_secret_name(&pc.name_any());
    let known = match ctx.views.state_known(&uid, &namespace, &name) {
        // At start-up the watches may not have listed yet: a new resource's state is then
        // known absent after the wait, which beats a read (a 404) per resource.
        Known::Unknown => {
            ctx.views
                .listed(&namespace, FIRST_LIST_WAIT, || false)
                .await;
            ctx.views.state_known(&uid, &namespace, &name)
        }
        known => known,
    };
    match known {
        Known::Current(view) => return Ok(Slot::Owned(view)),
        Known::Absent => return Ok(Slot::Absent),
        Known::Unknown => {}
    }
    if let Some(view) = ctx
        .views
        .state_once_shown(&uid, &namespace, &name, SHOWN_WAIT)
        .await
    {
        return Ok(Slot::Owned(view));
    }
    let state = secrets::read_owned(api, &name, &uid)
        .await?
        .map(|s| StateView {
            resource_version: s.metadata.resource_version.clone(),
            data: StateData::from_data(&secrets::secret_data(&s)),
        });
    ctx.views
        .remember_state(&uid, &namespace, &name, owned(&state));
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
    pc: &ProviderCredential,
    api: &Api<Secret>,
    unstored: ChainWrite,
) -> Result<Slot<StateView>, SecretsError> {
    let uid = pc.uid().unwrap_or_default();
    let state = read_state(ctx, api, pc).await?;
    let stored = match &state {
        // Never written over a Secret someone else owns; the plan reports the conflict.
        Slot::Foreign => return Ok(state),
        Slot::Absent => None,
        Slot::Owned(s) => Some(s),
    };
    let at = SecretWrite {
        name: state_secret_name(&pc.name_any()),
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
            ctx.stored_state(&uid, &unstored);
            debug!("held state stored");
            let view = StateView {
                resource_version,
                data: unstored.state,
            };
            ctx.views.remember_written_state(
                &uid,
                &pc.namespace().unwrap_or_default(),
                &at.name,
                view.clone(),
            );
            Ok(Slot::Owned(view))
        }
        StateStored::Superseded { discarded } => {
            // The newer chain stays; what is stored now is what the plan must see, and a token
            // obtained from the discarded chain is never written.
            ctx.stored_state(&uid, &unstored);
            ctx.drop_token(&uid);
            let failure = super::executed::superseded(&ctx.metrics, discarded);
            super::report::warn_event(ctx, pc, failure.reason.reason(), failure.message).await;
            read_state(ctx, api, pc).await
        }
    }
}

//! spec.delivery: copies of the target Secret in other namespaces that consent. Decisions are
//! in rotation::delivery; this gathers what the watches show (namespaces, TokenDeliveryGrants,
//! the copies), writes and removes copies, holds the finalizer that removes them when the
//! resource goes, and hands what it did to `delivery::outcome` (or `gated`, `withdrawn`), whose
//! condition, records, Events and requeue `merge` puts in the report. Nothing here fails a
//! reconcile: a copy that cannot be written or removed is a status entry and a retry, never a
//! reason to skip the status write or the rotation.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::finalizer::{Removed, has_finalizer, release_finalizer, remove};
use crate::api::{DeliverySpec, ProviderCredential, ResourceKey};
use crate::conditions::Reason;
use crate::controller::caches::copies::stamp_of;
use crate::controller::caches::delivery_views::Delivery;
use crate::rotation::Report;
use crate::rotation::delivery::{
    self, Carried, Decisions, Existing, Gate, GrantSeen, Inputs, NamespaceSeen, Occupant, Removal,
    Source, Verdict, Withdrawal, Written,
};
use crate::rotation::merge::{FeatureOutcome, merge};
use crate::secrets::short_api_error;

/// After `after` was decided: bring every destination to what the target holds, remove the
/// copies no longer wanted, and say so in `after`. `written_target`: the target as this
/// reconcile wrote it; `blocked`: why this reconcile's rotation is blocked, if it is (then
/// nothing is written: the Secret at the target's name may not be this resource's).
pub async fn deliver(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    after: &mut Report,
    written_target: Option<&Secret>,
    blocked: Option<Reason>,
) {
    let now = Timestamp::now();
    let outcome = match (pc.spec.delivery.as_deref(), &ctx.delivery) {
        (None, _) => delivery::withdrawn(withdraw_all(ctx, key, pc).await),
        (Some(_), None) => delivery::gated(Gate::Disabled),
        (Some(_), Some(_)) if !has_finalizer(pc.meta()) => delivery::gated(Gate::FinalizerMissing),
        (Some(_), Some(d)) if !d.listed() => delivery::gated(Gate::NotListed),
        (Some(spec), Some(d)) => {
            let asked = Asked {
                spec,
                written_target,
                blocked,
                now,
            };
            to_destinations(ctx, d, key, pc, &asked, after).await
        }
    };
    merge(after, outcome, pc.meta().generation, now);
}

/// What this reconcile asks of spec.delivery.
struct Asked<'a> {
    spec: &'a DeliverySpec,
    written_target: Option<&'a Secret>,
    blocked: Option<Reason>,
    now: Timestamp,
}

/// Gathers what the watches show, decides, carries the decisions out, and says what became
/// of them.
async fn to_destinations(
    ctx: &Context,
    delivery: &Delivery,
    key: &ResourceKey,
    pc: &ProviderCredential,
    asked: &Asked<'_>,
    after: &Report,
) -> FeatureOutcome {
    let spec = asked.spec;
    let secret_name = spec
        .secret_name
        .as_deref()
        .unwrap_or(&pc.spec.target.secret_name);
    let namespace_objects = delivery.namespaces.state();
    let namespaces: Vec<NamespaceSeen<'_>> = namespace_objects
        .iter()
        // A namespace without a name (none comes from an API server) is no destination.
        .filter_map(|n| {
            Some(NamespaceSeen {
                name: n.metadata.name.as_deref()?,
                labels: n.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
            })
        })
        .collect();
    let grant_objects = delivery.grants.state();
    let grants: Vec<GrantSeen<'_>> = grant_objects
        .iter()
        .filter_map(|g| {
            let grant = g.0.as_ref().ok()?;
            Some(GrantSeen {
                namespace: grant.metadata.namespace.as_deref()?,
                name: grant.metadata.name.as_deref()?,
                spec: &grant.spec,
            })
        })
        .collect();
    let source = Source {
        namespace: key.namespace(),
        name: key.name(),
    };
    let occupants = occupants(ctx, delivery, key, spec, &namespaces, secret_name);
    let mut target = Target::new(ctx, key, pc, asked.written_target);
    let stamp = target.stamp(ctx, key, pc).await;
    let (decisions, selector) = delivery::decide(&Inputs {
        source,
        spec,
        secret_name,
        namespaces: &namespaces,
        grants: &grants,
        occupants: &occupants,
        stamp,
        blocked: asked.blocked,
    });
    let (written, removal_failed) = carry_out(ctx, key, pc, &mut target, &decisions).await;
    delivery::outcome(&Carried {
        decisions: &decisions,
        written: &written,
        removal_failed,
        selector: &selector,
        previous: &after.status.deliveries,
        secret_name,
        now: asked.now,
    })
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The target Secret as far as delivery needs it: its stamp to decide, its contents to write.
/// As this reconcile wrote it, or as the watch of managed Secrets knows it, or read (once).
enum Target<'a> {
    Written(&'a Secret),
    Read(Option<Box<Secret>>),
    Known(Option<u64>),
    Unknown,
}

impl<'a> Target<'a> {
    fn new(
        ctx: &Context,
        key: &ResourceKey,
        pc: &ProviderCredential,
        written: Option<&'a Secret>,
    ) -> Self {
        if let Some(written) = written {
            return Target::Written(written);
        }
        let view = ctx.views.target(key, &pc.spec.target.secret_name);
        match view {
            Some(view) => {
                Target::Known(view.token.fingerprint.as_deref().map(|f| {
                    delivery::stamp(f, view.token.settings.as_deref().unwrap_or_default())
                }))
            }
            None => Target::Unknown,
        }
    }

    /// What the target holds; `None`: no target with a token.
    async fn stamp(
        &mut self,
        ctx: &Context,
        key: &ResourceKey,
        pc: &ProviderCredential,
    ) -> Option<u64> {
        if let Target::Unknown = self {
            *self = Target::Read(read_target(ctx, key, pc).await.map(Box::new));
        }
        match self {
            Target::Written(secret) => Some(stamp_of(secret.annotations())),
            Target::Read(secret) => secret.as_deref().map(|s| stamp_of(s.annotations())),
            Target::Known(stamp) => *stamp,
            Target::Unknown => None,
        }
    }

    /// Its contents, read if only its stamp was known.
    async fn contents(
        &mut self,
        ctx: &Context,
        key: &ResourceKey,
        pc: &ProviderCredential,
    ) -> Option<&Secret> {
        if let Target::Known(_) | Target::Unknown = self {
            *self = Target::Read(read_target(ctx, key, pc).await.map(Box::new));
        }
        match self {
            Target::Written(secret) => Some(secret),
            Target::Read(secret) => secret.as_deref(),
            Target::Known(_) | Target::Unknown => None,
        }
    }
}

/// The target Secret if it exists, is this resource's and holds a token (a failed read is as
/// good as none: the copies wait, and the destination says so).
async fn read_target(ctx: &Context, key: &ResourceKey, pc: &ProviderCredential) -> Option<Secret> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), key.namespace());
    match api.get_opt(&pc.spec.target.secret_name).await {
        Ok(target) => target.filter(|t| {
            crate::secrets::is_owned_by(t, key.uid())
                && t.annotations()
                    .contains_key(crate::target::FINGERPRINT_ANNOTATION)
        }),
        Err(e) => {
            warn!(error = %short_api_error(&e), "cannot read the target Secret to copy it");
            None
        }
    }
}

/// Managed Secrets at every place the decision may touch: this resource's copies, and
/// whatever sits at each chosen destination.
fn occupants(
    ctx: &Context,
    delivery: &Delivery,
    key: &ResourceKey,
    spec: &DeliverySpec,
    namespaces: &[NamespaceSeen<'_>],
    secret_name: &str,
) -> BTreeMap<(String, String), Occupant> {
    let mut occupants: BTreeMap<(String, String), Occupant> = delivery
        .copies
        .of(key)
        .into_iter()
        .map(|(place, seen)| {
            (
                place,
                Occupant::OwnCopy {
                    stamp: seen.stamp,
                    copy: Existing {
                        uid: seen.uid.into(),
                        resource_version: seen.resource_version.into(),
                    },
                },
            )
        })
        .collect();
    let (chosen, _) = delivery::selected(spec, key.namespace(), namespaces);
    for ns in chosen.into_keys() {
        let place = (ns, secret_name.to_string());
        if !occupants.contains_key(&place) && ctx.views.seen(&place.0, &place.1) {
            occupants.insert(place, Occupant::Other);
        }
    }
    occupants
}

/// Removes and writes as decided: whether a removal failed, and what became of each
/// destination's write.
async fn carry_out(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    target: &mut Target<'_>,
    decisions: &Decisions,
) -> (Vec<Written>, bool) {
    let mut removal_failed = false;
    for removal in &decisions.removals {
        if let Removed::Retry(reason) = remove(ctx, removal).await {
            warn!(namespace = %removal.namespace, secret = %removal.name, error = %reason, "cannot remove a copy");
            removal_failed = true;
        }
    }
    let mut written = Vec::with_capacity(decisions.destinations.len());
    for destination in &decisions.destinations {
        written.push(match &destination.verdict {
            Verdict::Write { replace } => match target.contents(ctx, key, pc).await {
                Some(target) => write(ctx, key, pc, target, destination, replace.as_ref()).await,
                None => Written::NoToken,
            },
            Verdict::Current | Verdict::Refused { .. } => Written::NotAttempted,
        });
    }
    (written, removal_failed)
}

/// Writes one copy: created, or replaced at the version that was this resource's copy. A copy
/// whose type must change (the target's did) is removed and created again: a Secret's type
/// cannot be changed in place.
async fn write(
    ctx: &Context,
    key: &ResourceKey,
    pc: &ProviderCredential,
    target: &Secret,
    destination: &delivery::Destination,
    replace: Option<&Existing>,
) -> Written {
    let copy = match crate::target::copy_of(
        target,
        &pc.spec.target,
        &destination.namespace,
        &destination.secret_name,
        (key.namespace(), key.name(), key.uid()),
        replace.map(|r| r.resource_version.clone()),
    ) {
        Ok(copy) => copy,
        Err(e) => return Written::Unrenderable(e.to_string()),
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &destination.namespace);
    let pp = PostParams::default();
    let mut result = match replace {
        None => api.create(&pp, &copy).await,
        Some(_) => api.replace(&destination.secret_name, &pp, &copy).await,
    };
    if let (Some(existing), Err(kube::Error::Api(e))) = (replace, &result)
        && e.code == 422
    {
        let removal = Removal {
            namespace: destination.namespace.clone(),
            name: destination.secret_name.clone(),
            uid: existing.uid.clone(),
        };
        if let Removed::Done = remove(ctx, &removal).await {
            let mut fresh = copy.clone();
            fresh.metadata.resource_version = None;
            result = api.create(&pp, &fresh).await;
        }
    }
    match result {
        Ok(written) => {
            if let Some(delivery) = &ctx.delivery {
                delivery
                    .copies
                    .remember(&written, stamp_of(target.annotations()));
            }
            info!(to = %destination.namespace, secret = %destination.secret_name, "copy written");
            match replace {
                None => Written::Created,
                Some(_) => Written::Replaced,
            }
        }
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => Written::Taken,
        Err(e) => {
            let short = short_api_error(&e);
            warn!(to = %destination.namespace, secret = %destination.secret_name, error = %short, "cannot write a copy");
            let code = match &e {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            };
            Written::Failed { code, error: short }
        }
    }
}

/// spec.delivery removed: the copies go (once the watch listed them), then the finalizer.
async fn withdraw_all(ctx: &Context, key: &ResourceKey, pc: &ProviderCredential) -> Withdrawal {
    let Some(delivery) = &ctx.delivery else {
        return Withdrawal::Done;
    };
    if !has_finalizer(pc.meta()) {
        return Withdrawal::Done;
    }
    if !delivery.listed() {
        return Withdrawal::NotListed;
    }
    let mut pending = false;
    for ((ns, secret), seen) in delivery.copies.of(key) {
        let removal = Removal {
            namespace: ns,
            name: secret,
            uid: seen.uid.into(),
        };
        if let Removed::Retry(reason) = remove(ctx, &removal).await {
            warn!(namespace = %removal.namespace, secret = %removal.name, error = %reason, "cannot remove a copy");
            pending = true;
        }
    }
    if pending {
        return Withdrawal::Pending;
    }
    if let Err(e) = release_finalizer(ctx, key, pc.meta()).await {
        warn!(error = %e, "the finalizer stays for now");
        return Withdrawal::Pending;
    }
    Withdrawal::Done
}

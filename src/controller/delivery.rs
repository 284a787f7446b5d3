//! spec.delivery: copies of the target Secret in other namespaces that consent. Decisions are
//! in rotation::delivery; this gathers what the watches show (namespaces, TokenDeliveryGrants,
//! the copies), writes and removes copies, holds the finalizer that removes them when the
//! resource goes, and records the outcome in the report.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::copies::Copies;
use crate::api::{
    DELIVERED_FROM_UID_LABEL, DELIVERY_FINALIZER, DeliveryStatus, Guarded, ProviderCredential,
    TokenDeliveryGrant,
};
use crate::conditions;
use crate::rotation::delivery::{
    self, Decisions, GrantSeen, Inputs, NamespaceSeen, Occupant, Removal, Source, Verdict, reason,
};
use crate::rotation::{EventNote, Report};

/// The condition this feature reports: True when every destination holds the current token.
pub const DELIVERED: &str = "Delivered";
/// How long a reconcile waits at start-up for the watches to list everything once: deciding
/// removals from half a list would remove copies that should stay.
const LISTED_BOUND: Duration = Duration::from_secs(10);
/// How soon a failed write, or a look before the watches listed everything, is tried again.
const RETRY: Duration = Duration::from_secs(30);
/// events.k8s.io refuses a note longer than 1 KiB.
const MAX_NOTE_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot {action}: {source}")]
    Api {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl DeliveryError {
    /// A finalizer patch on a copy of the resource older than the one stored: the newer
    /// version is already queued.
    pub fn is_stale(&self) -> bool {
        matches!(self, DeliveryError::Api { source: kube::Error::Api(e), .. } if e.code == 409)
    }
}

fn api_error(action: &'static str) -> impl FnOnce(kube::Error) -> DeliveryError {
    move |source| DeliveryError::Api { action, source }
}

/// What --cross-namespace-delivery adds to the running controller: the namespaces and
/// TokenDeliveryGrants as their watches show them, and the copies as the watch of managed
/// Secrets shows them.
pub struct Delivery {
    grants: Store<TokenDeliveryGrant>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    pub copies: Copies,
}

/// The writers of [`Delivery`]'s stores, for the controller's watches.
pub struct DeliveryWriters {
    pub grants: reflector::store::Writer<TokenDeliveryGrant>,
    pub namespaces: reflector::store::Writer<PartialObjectMeta<Namespace>>,
}

impl Delivery {
    pub fn new() -> (Self, DeliveryWriters) {
        let (grants, grants_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        (
            Delivery {
                grants,
                namespaces,
                copies: Copies::default(),
            },
            DeliveryWriters {
                grants: grants_writer,
                namespaces: namespaces_writer,
            },
        )
    }

    /// Every watch listed once (bounded wait).
    async fn listed(&self, ctx: &Context, namespace: &str) -> bool {
        let stores = async {
            let _ = self.grants.wait_until_ready().await;
            let _ = self.namespaces.wait_until_ready().await;
        };
        if tokio::time::timeout(LISTED_BOUND, stores).await.is_err() {
            return false;
        }
        ctx.views.listed(namespace, LISTED_BOUND).await;
        self.copies.listed()
    }
}

/// The resources a TokenDeliveryGrant concerns: those it names.
pub fn grant_sources(grant: &TokenDeliveryGrant) -> Vec<ObjectRef<Guarded>> {
    grant
        .spec
        .from
        .iter()
        .map(|f| ObjectRef::new(&f.name).within(&f.namespace.0))
        .collect()
}

/// The resources a namespace's change concerns: those that name it or select by label.
pub fn namespace_readers(
    resources: &Store<Guarded>,
    namespace: &PartialObjectMeta<Namespace>,
) -> Vec<ObjectRef<Guarded>> {
    let name = namespace.name_any();
    resources
        .state()
        .into_iter()
        .filter(|guard| {
            guard.0.as_ref().is_ok_and(|pc| {
                pc.spec.delivery.as_deref().is_some_and(|d| {
                    d.namespace_selector.is_some() || d.namespaces.iter().any(|n| n.0 == name)
                })
            })
        })
        .map(|guard| ObjectRef::from(guard.as_ref()))
        .collect()
}

fn has_finalizer(pc: &ProviderCredential) -> bool {
    pc.finalizers().iter().any(|f| f == DELIVERY_FINALIZER)
}

fn resources(ctx: &Context, pc: &ProviderCredential) -> Api<ProviderCredential> {
    Api::namespaced(ctx.client.clone(), &pc.namespace().unwrap_or_default())
}

/// Before anything is delivered, the finalizer that will remove it. `true`: added (the watch
/// brings the new version; this reconcile stops here).
pub async fn hold_finalizer(ctx: &Context, pc: &ProviderCredential) -> Result<bool, DeliveryError> {
    if ctx.delivery.is_none() || pc.spec.delivery.is_none() || has_finalizer(pc) {
        return Ok(false);
    }
    let mut finalizers = pc.finalizers().to_vec();
    finalizers.push(DELIVERY_FINALIZER.to_string());
    // The resourceVersion is a precondition: a concurrent change of the list is not lost.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": pc.meta().resource_version, "finalizers": finalizers}
    });
    resources(ctx, pc)
        .patch(
            &pc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error("add the finalizer"))?;
    Ok(true)
}

/// The finalizer goes, and nothing else of the list: the resourceVersion is a precondition.
async fn release_finalizer(ctx: &Context, pc: &ProviderCredential) -> Result<(), DeliveryError> {
    let kept: Vec<&String> = pc
        .finalizers()
        .iter()
        .filter(|f| *f != DELIVERY_FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": pc.meta().resource_version, "finalizers": kept}
    });
    resources(ctx, pc)
        .patch(
            &pc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error("remove the finalizer"))?;
    Ok(())
}

/// A resource being deleted: every copy it made goes (found by a list of their label, so
/// nothing depends on a watch being complete), then its finalizer.
pub async fn finalize(ctx: &Context, pc: &ProviderCredential) -> Result<(), DeliveryError> {
    if !has_finalizer(pc) {
        return Ok(());
    }
    let uid = pc.uid().unwrap_or_default();
    let all: Api<PartialObjectMeta<Secret>> = Api::all(ctx.client.clone());
    let copies = all
        .list_metadata(&ListParams::default().labels(&format!("{DELIVERED_FROM_UID_LABEL}={uid}")))
        .await
        .map_err(api_error("list the copies"))?;
    for copy in copies {
        let removal = Removal {
            namespace: copy.namespace().unwrap_or_default(),
            name: copy.name_any(),
            resource_version: copy.resource_version().unwrap_or_default(),
        };
        remove(ctx, &removal)
            .await
            .map_err(api_error("remove a copy"))?;
    }
    info!("copies in other namespaces removed; releasing the finalizer");
    release_finalizer(ctx, pc).await
}

/// Removes one copy, at the version decided on (a changed one is looked at again).
async fn remove(ctx: &Context, removal: &Removal) -> Result<(), kube::Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &removal.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(removal.resource_version.clone()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&removal.name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    if let Some(delivery) = &ctx.delivery {
        delivery.copies.forget(&removal.namespace, &removal.name);
    }
    info!(namespace = %removal.namespace, secret = %removal.name, "copy removed");
    Ok(())
}

/// After `after` was decided: bring every destination to the current token, remove the copies
/// no longer wanted, and say so in `after`.
pub async fn deliver(
    ctx: &Context,
    pc: &ProviderCredential,
    after: &mut Report,
    written_target: Option<&Secret>,
) -> Result<(), DeliveryError> {
    let now = Timestamp::now();
    let generation = pc.meta().generation;
    let before = after.status.conditions.clone();
    let Some(spec) = pc.spec.delivery.as_deref() else {
        after.status.deliveries.clear();
        after.status.conditions.retain(|c| c.type_ != DELIVERED);
        return withdraw_all(ctx, pc, after).await;
    };
    let Some(delivery) = &ctx.delivery else {
        after.status.deliveries.clear();
        conditions::set(
            &mut after.status.conditions,
            DELIVERED,
            false,
            reason::DISABLED,
            "the operator runs without --cross-namespace-delivery (chart value crossNamespaceDelivery.enabled)".into(),
            generation,
            now,
        );
        warn_on_transition(&before, after, "Deliver");
        return Ok(());
    };
    let Some(token) = after.status.access_token.clone() else {
        // Nothing to deliver before the first token.
        return Ok(());
    };
    let namespace = pc.namespace().unwrap_or_default();
    if !delivery.listed(ctx, &namespace).await {
        requeue_within(after, RETRY);
        return Ok(());
    }
    let uid = pc.uid().unwrap_or_default();
    let name = pc.name_any();
    let source = Source {
        namespace: &namespace,
        name: &name,
    };
    let secret_name = spec
        .secret_name
        .as_deref()
        .unwrap_or(&pc.spec.target.secret_name);
    let stamp = delivery::stamp(
        &token.fingerprint,
        &crate::digest::target_settings(&pc.spec.target),
    );
    let namespace_objects = delivery.namespaces.state();
    let namespaces: Vec<NamespaceSeen<'_>> = namespace_objects
        .iter()
        .map(|n| NamespaceSeen {
            name: n.metadata.name.as_deref().unwrap_or_default(),
            labels: n.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
        })
        .collect();
    let grant_objects = delivery.grants.state();
    let grants: Vec<GrantSeen<'_>> = grant_objects
        .iter()
        .map(|g| GrantSeen {
            namespace: g.metadata.namespace.as_deref().unwrap_or_default(),
            name: g.metadata.name.as_deref().unwrap_or_default(),
            spec: &g.spec,
        })
        .collect();
    let occupants = occupants(
        ctx,
        delivery,
        &uid,
        spec,
        &namespace,
        &namespaces,
        secret_name,
    );
    let (decisions, selector_ok) = delivery::decide(&Inputs {
        source,
        spec,
        secret_name,
        namespaces: &namespaces,
        grants: &grants,
        occupants: &occupants,
        stamp,
    });
    let current = Current {
        fingerprint: &token.fingerprint,
        written_target,
    };
    let outcome = carry_out(ctx, pc, current, &uid, &decisions, now).await;
    let Carried {
        mut statuses,
        created,
        retry,
    } = outcome;
    // A copy still current keeps the time it was written.
    for status in &mut statuses {
        if status.delivered && status.delivered_at.is_none() {
            status.delivered_at = after
                .status
                .deliveries
                .iter()
                .find(|d| d.namespace == status.namespace && d.secret_name == status.secret_name)
                .and_then(|d| d.delivered_at.clone());
        }
    }
    let (ok, why, message) = match selector_ok {
        Err(e) => (
            false,
            reason::INVALID_SELECTOR,
            format!(
                "spec.delivery.namespaceSelector is invalid ({e}); only spec.delivery.namespaces are delivered to"
            ),
        ),
        Ok(()) => delivery::condition(&statuses),
    };
    after.status.deliveries = delivery::listed(statuses);
    conditions::set(
        &mut after.status.conditions,
        DELIVERED,
        ok,
        why,
        crate::provider::scrub::truncate_chars(&message, MAX_NOTE_CHARS),
        generation,
        now,
    );
    if !created.is_empty() {
        after.events.push(EventNote {
            warning: false,
            reason: "Delivered".into(),
            note: crate::provider::scrub::truncate_chars(
                &format!(
                    "Secret {secret_name} created in {}; it follows every rotation",
                    created.join(", ")
                ),
                MAX_NOTE_CHARS,
            ),
            action: "Deliver",
        });
    }
    warn_on_transition(&before, after, "Deliver");
    if retry {
        requeue_within(after, RETRY);
    }
    Ok(())
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Managed Secrets at every place the decision may touch: this resource's copies, and
/// whatever sits at each chosen destination.
fn occupants(
    ctx: &Context,
    delivery: &Delivery,
    uid: &str,
    spec: &crate::api::DeliverySpec,
    own_namespace: &str,
    namespaces: &[NamespaceSeen<'_>],
    secret_name: &str,
) -> BTreeMap<(String, String), Occupant> {
    let mut occupants: BTreeMap<(String, String), Occupant> = delivery
        .copies
        .of(uid)
        .into_iter()
        .map(|(place, seen)| {
            (
                place,
                Occupant::OwnCopy {
                    stamp: seen.stamp,
                    resource_version: seen.resource_version.into(),
                },
            )
        })
        .collect();
    let (chosen, _) = delivery::selected(spec, own_namespace, namespaces);
    for ns in chosen.into_keys() {
        let place = (ns, secret_name.to_string());
        if !occupants.contains_key(&place) && ctx.views.seen(&place.0, &place.1) {
            occupants.insert(place, Occupant::Other);
        }
    }
    occupants
}

struct Carried {
    statuses: Vec<DeliveryStatus>,
    /// Namespaces that received their first copy (a routine rotation's replacements make no
    /// Event: one per rotation would double the Events of a resource for nothing new).
    created: Vec<String>,
    retry: bool,
}

/// The token the status names, and the target as this reconcile wrote it (if it did).
#[derive(Clone, Copy)]
struct Current<'a> {
    fingerprint: &'a str,
    written_target: Option<&'a Secret>,
}

/// Writes and removes as decided; every destination's status.
async fn carry_out(
    ctx: &Context,
    pc: &ProviderCredential,
    current: Current<'_>,
    uid: &str,
    decisions: &Decisions,
    now: Timestamp,
) -> Carried {
    let mut carried = Carried {
        statuses: Vec::with_capacity(decisions.destinations.len()),
        created: Vec::new(),
        retry: false,
    };
    for removal in &decisions.removals {
        if let Err(e) = remove(ctx, removal).await {
            warn!(namespace = %removal.namespace, secret = %removal.name, error = %e, "cannot remove a copy");
            carried.retry = true;
        }
    }
    let needs_write = decisions
        .destinations
        .iter()
        .any(|d| matches!(d.verdict, Verdict::Write { .. }));
    // The target as it is now, once, if anything is to be written; only a target holding the
    // token the status names is copied.
    let target = if needs_write {
        read_target(ctx, pc, current).await
    } else {
        Ok(None)
    };
    for destination in &decisions.destinations {
        let status = |delivered: bool, reason: &str, message: Option<String>| DeliveryStatus {
            namespace: destination.namespace.clone(),
            secret_name: destination.secret_name.clone(),
            delivered,
            reason: reason.to_string(),
            message,
            delivered_at: None,
        };
        let entry = match &destination.verdict {
            Verdict::Current => status(true, reason::DELIVERED, None),
            Verdict::Refused { reason, message } => status(false, reason, Some(message.clone())),
            Verdict::Write { replace } => {
                let result = match &target {
                    Ok(Some(target)) => write(ctx, pc, uid, target, destination, replace).await,
                    Ok(None) => Err(NotWritten::Failed(
                        "the target Secret does not hold the current token yet; retried".into(),
                    )),
                    Err(e) => Err(NotWritten::Failed(e.clone())),
                };
                match result {
                    Ok(()) => {
                        if replace.is_none() {
                            carried.created.push(destination.namespace.clone());
                        }
                        DeliveryStatus {
                            delivered_at: Some(Time(now)),
                            ..status(true, reason::DELIVERED, None)
                        }
                    }
                    Err(NotWritten::Taken) => status(
                        false,
                        reason::SECRET_NOT_OWNED,
                        Some(delivery::not_owned(
                            &destination.namespace,
                            &destination.secret_name,
                        )),
                    ),
                    Err(NotWritten::Failed(message)) => {
                        carried.retry = true;
                        status(false, reason::WRITE_FAILED, Some(message))
                    }
                }
            }
        };
        carried.statuses.push(entry);
    }
    carried
}

/// Why a copy was not written.
enum NotWritten {
    /// A Secret that is not this resource's copy has the name (created meanwhile).
    Taken,
    /// Anything else: a message for the status, retried.
    Failed(String),
}

/// The target Secret, if it holds the token the status names: as this reconcile wrote it, or
/// read.
async fn read_target(
    ctx: &Context,
    pc: &ProviderCredential,
    current: Current<'_>,
) -> Result<Option<Secret>, String> {
    let holds_current = |target: &Secret| {
        target
            .annotations()
            .get(crate::target::FINGERPRINT_ANNOTATION)
            .is_some_and(|f| f == current.fingerprint)
    };
    if let Some(target) = current.written_target.filter(|t| holds_current(t)) {
        return Ok(Some(target.clone()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &pc.namespace().unwrap_or_default());
    match api.get_opt(&pc.spec.target.secret_name).await {
        Ok(Some(target)) if holds_current(&target) => Ok(Some(target)),
        Ok(_) => Ok(None),
        Err(e) => Err(format!(
            "the target Secret cannot be read ({}); retried",
            super::short_api_error(&e)
        )),
    }
}

/// Writes one copy: created, or replaced at the version that was this resource's copy.
async fn write(
    ctx: &Context,
    pc: &ProviderCredential,
    uid: &str,
    target: &Secret,
    destination: &delivery::Destination,
    replace: &Option<String>,
) -> Result<(), NotWritten> {
    let source = (pc.namespace().unwrap_or_default(), pc.name_any(), uid);
    let copy = crate::target::copy_of(
        target,
        &destination.namespace,
        &destination.secret_name,
        (&source.0, &source.1, source.2),
        replace.clone(),
    );
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &destination.namespace);
    let result = match replace {
        None => api.create(&PostParams::default(), &copy).await,
        Some(_) => {
            api.replace(&destination.secret_name, &PostParams::default(), &copy)
                .await
        }
    };
    match result {
        Ok(written) => {
            if let Some(delivery) = &ctx.delivery {
                delivery.copies.remember(&written);
            }
            info!(to = %destination.namespace, secret = %destination.secret_name, "copy written");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
            Err(NotWritten::Taken)
        }
        Err(e) => {
            warn!(to = %destination.namespace, secret = %destination.secret_name, error = %e, "cannot write a copy");
            let remedy = match &e {
                kube::Error::Api(s) if s.code == 403 => {
                    "; the operator may lack permission there, or an admission policy refused it"
                }
                kube::Error::Api(s) if s.code == 409 => "; it changed meanwhile and is retried",
                _ => "; retried",
            };
            Err(NotWritten::Failed(format!(
                "the write failed ({}){remedy}",
                super::short_api_error(&e)
            )))
        }
    }
}

/// spec.delivery removed: the copies go (once the watch listed them), then the finalizer.
async fn withdraw_all(
    ctx: &Context,
    pc: &ProviderCredential,
    after: &mut Report,
) -> Result<(), DeliveryError> {
    let Some(delivery) = &ctx.delivery else {
        return Ok(());
    };
    if !has_finalizer(pc) {
        return Ok(());
    }
    if !delivery
        .listed(ctx, &pc.namespace().unwrap_or_default())
        .await
    {
        requeue_within(after, RETRY);
        return Ok(());
    }
    let uid = pc.uid().unwrap_or_default();
    let occupants: BTreeMap<(String, String), Occupant> = delivery
        .copies
        .of(&uid)
        .into_iter()
        .map(|(place, seen)| {
            (
                place,
                Occupant::OwnCopy {
                    stamp: seen.stamp,
                    resource_version: seen.resource_version.into(),
                },
            )
        })
        .collect();
    for removal in delivery::remove_all(&occupants) {
        remove(ctx, &removal)
            .await
            .map_err(api_error("remove a copy"))?;
    }
    release_finalizer(ctx, pc).await
}

fn warn_on_transition(
    before: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    after: &mut Report,
    action: &'static str,
) {
    if !conditions::transitioned(before, &after.status.conditions, DELIVERED) {
        return;
    }
    if let Some(c) = conditions::get(&after.status.conditions, DELIVERED)
        && c.status == "False"
    {
        after.events.push(EventNote {
            warning: true,
            reason: c.reason.clone(),
            note: c.message.clone(),
            action,
        });
    }
}

/// Looks again within `delay` at the latest.
fn requeue_within(after: &mut Report, delay: Duration) {
    after.requeue = Some(after.requeue.map_or(delay, |r| r.min(delay)));
}

/// For the resources' mapper: which resource a copy came from.
pub fn copy_source(secret: &PartialObjectMeta<Secret>) -> Option<ObjectRef<Guarded>> {
    let from = secret
        .annotations()
        .get(crate::api::DELIVERED_FROM_ANNOTATION)?;
    secret.labels().get(DELIVERED_FROM_UID_LABEL)?;
    let (namespace, name) = from.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

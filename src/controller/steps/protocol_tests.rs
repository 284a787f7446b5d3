//! The protocols that keep refresh chains and copies safe, pinned as scenarios: the real
//! steps (a whole `reconcile`, or `finalize`) against the in-process fake API server
//! (`fake_api.rs`, behind kube's `Client`) and the provider emulator on loopback. The fake
//! records every request in order, so each test asserts what was written, in which order, and
//! what the status says; a watch of Secrets without lag feeds the caches as the real watches
//! would. No control plane, no sleeps: the whole set runs in `cargo test --lib` in seconds.

use std::sync::{Arc, Weak};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::events::Reporter;
use kube::runtime::watcher::Event;
use provider_emulator::{Emulator, Options, Provider, fixtures};
use serde_json::{Value, json};

use super::context::{Context, Features};
use super::fake_api::{Call, Change, FakeApi, Verb};
use super::reconcile::{Next, ReconcileError, reconcile};
use crate::api::{
    CREDENTIALS_LABEL, DELIVERED_FROM_ANNOTATION, DELIVERED_FROM_UID_LABEL, DELIVERY_FINALIZER,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProviderCredential, ResourceKey, TokenDeliveryGrant,
    state_secret_name,
};
use crate::controller::caches::changes::managed_digest;
use crate::controller::caches::delivery_views::{Delivery, DeliveryWriters};
use crate::provider::{HttpPolicy, TokenClient};

/// The key a reconcile is started with (the fake API server gives every object a UID).
fn key_of(meta: &ObjectMeta) -> ResourceKey {
    ResourceKey::of(meta).expect("the fake API server sets a UID, namespace and name")
}

/// One reconcile, as the controller starts it: with the resource's key.
async fn reconcile_keyed(
    pc: &ProviderCredential,
    ctx: &Arc<Context>,
) -> Result<Next, ReconcileError> {
    reconcile(pc, &key_of(&pc.metadata), ctx).await
}

const NS: &str = "team";
const NAME: &str = "pc";
const TARGET: &str = "token";
const DEST: &str = "dest";
const SECRETS: &str = "secrets";
const RESOURCES: &str = "providercredentials";

/// One resource, its credentials, the fake API server and the emulator, and the context the
/// steps run with.
struct Scenario {
    fake: FakeApi,
    emulator: Emulator,
    provider: Provider,
    ctx: Arc<Context>,
    /// Kept: the delivery stores stay ready while their writers live.
    _writers: Option<DeliveryWriters>,
}

/// What a scenario runs with besides its resource.
#[derive(Default)]
struct Setup {
    /// --cross-namespace-delivery, with namespace `DEST` granting this resource.
    delivery: bool,
    inputs_key: bool,
}

impl Scenario {
    async fn start(provider: Provider, setup: Setup) -> Scenario {
        crate::install_crypto_provider();
        let emulator = Emulator::start(Options::default())
            .await
            .expect("the emulator starts on loopback");
        let fake = FakeApi::default();
        let (delivery, writers) = match setup.delivery {
            true => {
                let (delivery, writers) = Delivery::new();
                (Some(delivery), Some(writers))
            }
            false => (None, None),
        };
        let features = Features {
            delivery,
            inputs_key: setup
                .inputs_key
                .then(|| crate::digest::InputsKey::new(&[7; 32]).expect("32 bytes are a key")),
            ..Features::default()
        };
        let ctx = Arc::new(Context::new(
            fake.client(),
            TokenClient::new(HttpPolicy {
                allow_http: true,
                allowed_hosts: None,
                allow_link_local: false,
            }),
            Reporter {
                controller: "token-rotator".into(),
                instance: None,
            },
            Arc::new(crate::telemetry::Metrics::new()),
            crate::leader::Gate::open(),
            60,
            features,
        ));
        let mut scenario = Scenario {
            fake,
            emulator,
            provider,
            ctx,
            _writers: writers,
        };
        scenario.watch_secrets();
        if let Some(writers) = scenario._writers.as_mut() {
            list_destination(writers);
        }
        scenario.seed_credentials();
        scenario
    }

    /// With --cross-namespace-delivery, namespace `DEST` granting this resource its copies.
    async fn delivering() -> Scenario {
        let setup = Setup {
            delivery: true,
            ..Setup::default()
        };
        Scenario::start(Provider::Rently, setup).await
    }

    /// The watches of managed and of opted-in Secrets, listed and without lag.
    fn watch_secrets(&self) {
        let watches = Watches {
            managed: self.ctx.views.new_watch(None),
            credentials: self.ctx.views.new_watch(None),
        };
        for event in [Event::Init, Event::InitDone] {
            self.ctx
                .views
                .watched(watches.managed, event, managed_digest);
        }
        for event in [Event::Init, Event::InitDone] {
            self.ctx
                .views
                .credentials_watched(watches.credentials, event);
        }
        if let Some(delivery) = &self.ctx.delivery {
            delivery.copies.watched(&Event::Init);
            delivery.copies.watched(&Event::InitDone);
        }
        let ctx: Weak<Context> = Arc::downgrade(&self.ctx);
        self.fake.watch(move |plural, change| {
            let Some(ctx) = ctx.upgrade() else { return };
            if plural == SECRETS {
                follow_secret(&ctx, &watches, change);
            }
        });
    }

    fn seed_credentials(&self) {
        let data: Vec<(&str, &str)> = match self.provider {
            Provider::Reltio => vec![
                ("client_id", fixtures::RELTIO_CLIENT_ID),
                ("client_secret", fixtures::RELTIO_CLIENT_SECRET),
                ("username", fixtures::RELTIO_USERNAME),
                ("password", fixtures::RELTIO_PASSWORD),
            ],
            _ => vec![
                ("client_id", fixtures::RENTLY_CLIENT_ID),
                ("client_secret", fixtures::RENTLY_CLIENT_SECRET),
            ],
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some(NS.into()),
                labels: Some([(CREDENTIALS_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.into())))
                    .collect(),
            ),
            ..Secret::default()
        };
        self.fake.seed(SECRETS, &secret);
    }

    /// The resource, stored with `spec` (merged over a minimal one) and `meta`.
    fn seed_resource(&self, spec: Value, meta: Value) -> ProviderCredential {
        let preset = match self.provider {
            Provider::Reltio => "reltio",
            _ => "rently",
        };
        let mut object = json!({
            "apiVersion": "tokenrotator.dev/v1alpha1",
            "kind": "ProviderCredential",
            "metadata": {"name": NAME, "namespace": NS, "generation": 1},
            "spec": {
                "preset": preset,
                "tokenEndpoint": {"url": self.emulator.token_url(self.provider)},
                "credentials": {"secretRef": {"name": "creds"}},
                "target": {"secretName": TARGET},
            },
        });
        merge_into(&mut object["spec"], &spec);
        merge_into(&mut object["metadata"], &meta);
        let pc: ProviderCredential = serde_json::from_value(object).expect("a valid resource");
        self.fake.seed(RESOURCES, &pc)
    }

    /// The resource, delivering to `DEST`, with its finalizer in place.
    fn seed_delivering(&self) -> ProviderCredential {
        self.seed_resource(
            json!({"delivery": {"namespaces": [DEST]}}),
            json!({"finalizers": [DELIVERY_FINALIZER]}),
        )
    }

    /// The resource's key, as a reconcile of it is started with.
    fn key(&self) -> ResourceKey {
        key_of(&self.current().metadata)
    }

    /// The resource as the API server has it now (what the watch would bring).
    fn current(&self) -> ProviderCredential {
        self.fake
            .get(RESOURCES, NS, NAME)
            .expect("the resource exists")
    }

    fn status(&self) -> Value {
        let object: Value = self.fake.get(RESOURCES, NS, NAME).expect("exists");
        object["status"].clone()
    }

    /// The reason of condition `type_` in the stored status.
    fn reason(&self, type_: &str) -> String {
        condition(&self.status(), type_)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The API server works again, the backoff after the failure is over (the status says the
    /// retry is due), and so is the endpoint's pace. The requests recorded so far are
    /// forgotten.
    async fn fault_over(&self) {
        self.fake.clear_faults();
        self.fake.forget_calls();
        self.fake.edit(RESOURCES, NS, NAME, |pc| {
            pc["status"]["nextRefreshAt"] = json!("2020-01-01T00:00:00Z");
        });
        pace_passed().await;
    }

    fn token_requests(&self) -> u64 {
        self.emulator.control().counters(self.provider).requests
    }

    /// One reconcile of the resource as stored now, to its end: a request that outlived the
    /// reconcile (it detaches after 250 ms) is waited for and reported as the reconcile it
    /// triggers would.
    async fn reconcile(&self) -> Result<Next, ReconcileError> {
        let mut asked = self.ctx.reconcile_requests();
        let result = reconcile_keyed(&self.current(), &self.ctx).await;
        self.ctx.in_flight.drained().await;
        if asked.try_recv().is_ok() {
            return reconcile_keyed(&self.current(), &self.ctx).await;
        }
        result
    }
}

/// The endpoint's pace (Reltio's 10 per second) lets the next request go: the clock moves a
/// second on, at once.
async fn pace_passed() {
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    tokio::time::resume();
}

fn merge_into(target: &mut Value, patch: &Value) {
    if let (Value::Object(target), Value::Object(patch)) = (target, patch) {
        for (k, v) in patch {
            target.insert(k.clone(), v.clone());
        }
    }
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The operator's two watches of Secrets, as `SecretViews` numbers them.
#[derive(Clone, Copy)]
struct Watches {
    managed: usize,
    credentials: usize,
}

/// What the operator's watches would show of a changed Secret: managed ones (targets, state,
/// copies) as metadata, opted-in credentials whole.
fn follow_secret(ctx: &Context, watches: &Watches, change: &Change) {
    let (Change::Applied(object) | Change::Deleted(object)) = change;
    let secret: Secret = serde_json::from_value(object.clone()).expect("a Secret");
    let labels = secret.labels();
    if labels.get(CREDENTIALS_LABEL).map(String::as_str) == Some("true") {
        let event = match change {
            Change::Applied(_) => Event::Apply(secret),
            Change::Deleted(_) => Event::Delete(secret),
        };
        ctx.views.credentials_watched(watches.credentials, event);
        return;
    }
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return;
    }
    let meta = PartialObjectMeta::<Secret> {
        metadata: secret.metadata,
        ..PartialObjectMeta::default()
    };
    let event = match change {
        Change::Applied(_) => Event::Apply(meta),
        Change::Deleted(_) => Event::Delete(meta),
    };
    if let Some(delivery) = &ctx.delivery {
        delivery.copies.watched(&event);
    }
    ctx.views.watched(watches.managed, event, managed_digest);
}

/// Namespace `DEST` exists and grants this resource its copies.
fn list_destination(writers: &mut DeliveryWriters) {
    let namespace = PartialObjectMeta::<Namespace> {
        metadata: ObjectMeta {
            name: Some(DEST.into()),
            ..ObjectMeta::default()
        },
        ..PartialObjectMeta::default()
    };
    writers.namespaces.apply_watcher_event(&Event::Init);
    writers
        .namespaces
        .apply_watcher_event(&Event::InitApply(namespace));
    writers.namespaces.apply_watcher_event(&Event::InitDone);
    let grant: TokenDeliveryGrant = serde_json::from_value(json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "TokenDeliveryGrant",
        "metadata": {"name": "from-team", "namespace": DEST},
        "spec": {"from": [{"namespace": NS, "name": NAME}]},
    }))
    .expect("a valid grant");
    writers.grants.apply_watcher_event(&Event::Init);
    writers
        .grants
        .apply_watcher_event(&Event::InitApply(DeserializeGuard(Ok(grant))));
    writers.grants.apply_watcher_event(&Event::InitDone);
}

/// A Secret at `TARGET`'s name in `namespace` that is not the operator's (no labels).
fn someone_elses_secret(namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(TARGET.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

/// A copy of this resource's token in `DEST`, as an earlier reconcile would have left it.
fn existing_copy(pc: &ProviderCredential, secret_type: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(TARGET.into()),
            namespace: Some(DEST.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (
                        DELIVERED_FROM_UID_LABEL.to_string(),
                        pc.uid().unwrap_or_default(),
                    ),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (
                        DELIVERED_FROM_ANNOTATION.to_string(),
                        format!("{NS}/{NAME}"),
                    ),
                    (
                        crate::target::FINGERPRINT_ANNOTATION.to_string(),
                        "sha256:an-older-token".to_string(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some(secret_type.into()),
        ..Secret::default()
    }
}

fn describe(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{:?} {} {}/{}{}",
                c.verb,
                c.plural,
                c.namespace.as_deref().unwrap_or("*"),
                c.name.as_deref().unwrap_or("*"),
                c.subresource
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// (a) A refresh token is stored in the state Secret before the target is written.
#[tokio::test]
async fn the_state_secret_is_written_before_the_target() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    s.seed_resource(json!({}), json!({}));
    s.reconcile().await.expect("the reconcile succeeds");
    let state = state_secret_name(NAME);
    let writes = describe(&s.fake.writes());
    let state_at = s.fake.write_index(Verb::Create, SECRETS, NS, &state);
    let target_at = s.fake.write_index(Verb::Create, SECRETS, NS, TARGET);
    assert!(
        state_at.is_some() && state_at < target_at,
        "state first: {writes:?}"
    );
    let stored = s.fake.secret(NS, &state).expect("the state Secret");
    assert!(
        stored
            .data
            .unwrap_or_default()
            .contains_key(crate::state::REFRESH_TOKEN_KEY),
        "the refresh token is in the state Secret"
    );
    assert_eq!(s.reason("Ready"), "TokenIssued");
    assert_eq!(s.token_requests(), 1);
}

/// (a) If the target write fails, the refresh chain is already stored; the token obtained
/// is held and written next time without another request.
#[tokio::test]
async fn a_failed_target_write_finds_the_refresh_chain_stored() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    let pc = s.seed_resource(json!({}), json!({}));
    s.fake
        .fail(Verb::Create, SECRETS, TARGET, 500, "InternalError");
    s.reconcile()
        .await
        .expect("a store failure is an outcome, not an error");
    let state = s
        .fake
        .secret(NS, &state_secret_name(NAME))
        .expect("the chain is stored");
    assert!(
        state
            .data
            .unwrap_or_default()
            .contains_key(crate::state::REFRESH_TOKEN_KEY)
    );
    assert!(s.fake.secret(NS, TARGET).is_none());
    assert_eq!(s.reason("Ready"), "SecretWriteFailed");
    let key = key_of(&pc.metadata);
    assert!(s.ctx.unwritten_token(&key).is_some(), "the token is held");

    s.fault_over().await;
    s.reconcile().await.expect("the next reconcile succeeds");
    assert!(s.fake.secret(NS, TARGET).is_some(), "written from memory");
    assert_eq!(s.token_requests(), 1, "no second token request");
    assert_eq!(s.reason("Ready"), "TokenIssued");
}

/// (b) A failure to store the state is reported on the status, not raised; nothing else is
/// written, and the next reconcile stores the held state first, without a new request.
#[tokio::test]
async fn a_failure_to_store_state_is_an_outcome_and_the_held_state_goes_first_next_time() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    let pc = s.seed_resource(json!({}), json!({}));
    let state = state_secret_name(NAME);
    s.fake
        .fail(Verb::Create, SECRETS, &state, 500, "InternalError");
    let next = s.reconcile().await;
    assert!(next.is_ok(), "not a reconcile error: {:?}", next.err());
    assert_eq!(s.reason("Ready"), "SecretWriteFailed");
    let message = condition(&s.status(), "Ready")["message"].to_string();
    assert!(message.contains("500"), "{message}");
    assert!(
        s.fake
            .write_index(Verb::Create, SECRETS, NS, TARGET)
            .is_none(),
        "no target before the chain is stored: {:?}",
        describe(&s.fake.writes())
    );
    let key = key_of(&pc.metadata);
    assert!(s.ctx.unstored_state(&key).is_some(), "the state is held");

    s.fault_over().await;
    s.reconcile().await.expect("the next reconcile succeeds");
    let writes = s.fake.writes();
    assert!(
        writes[0].is(Verb::Create, SECRETS, NS, &state),
        "the held state is stored before anything else: {:?}",
        describe(&writes)
    );
    assert!(s.fake.write_index(Verb::Create, SECRETS, NS, TARGET) > Some(0));
    assert!(s.ctx.unstored_state(&key).is_none());
    assert_eq!(s.token_requests(), 1, "no second token request");
    assert_eq!(s.reason("Ready"), "TokenIssued");
}

/// (c) The delivery finalizer is added (and the reconcile stops there) before any copy is
/// written in another namespace.
#[tokio::test]
async fn the_delivery_finalizer_is_in_place_before_the_first_copy() {
    let s = Scenario::delivering().await;
    s.seed_resource(json!({"delivery": {"namespaces": [DEST]}}), json!({}));
    s.reconcile().await.expect("the finalizer is added");
    let writes = s.fake.writes();
    assert_eq!(
        describe(&writes),
        [format!("Patch {RESOURCES} {NS}/{NAME}")],
        "only the finalizer"
    );
    assert!(
        s.current()
            .finalizers()
            .contains(&DELIVERY_FINALIZER.to_string())
    );
    assert_eq!(s.token_requests(), 0);

    s.reconcile().await.expect("the rotation and the copy");
    let finalizer_at = s.fake.write_index(Verb::Patch, RESOURCES, NS, NAME);
    let copy_at = s.fake.write_index(Verb::Create, SECRETS, DEST, TARGET);
    assert!(
        copy_at.is_some() && finalizer_at < copy_at,
        "{:?}",
        describe(&s.fake.writes())
    );
    assert_eq!(s.reason("Delivered"), "AllDelivered");
}

/// (c) If the finalizer cannot be added, the rotation goes on and no copy is written.
#[tokio::test]
async fn without_the_finalizer_no_copy_is_written() {
    let s = Scenario::delivering().await;
    s.seed_resource(json!({"delivery": {"namespaces": [DEST]}}), json!({}));
    s.fake
        .fail(Verb::Patch, RESOURCES, NAME, 500, "InternalError");
    s.reconcile().await.expect("the rotation goes on");
    assert!(s.fake.secret(NS, TARGET).is_some(), "the target is written");
    assert_eq!(
        s.fake.count(Verb::Create, SECRETS, DEST, TARGET),
        0,
        "{:?}",
        describe(&s.fake.writes())
    );
    assert!(s.fake.secret(DEST, TARGET).is_none());
    assert_eq!(s.reason("Delivered"), "FinalizerMissing");
}

/// (d) A copy whose Secret type must change: the update is refused (422), so the copy is
/// removed (that very object) and created again.
#[tokio::test]
async fn a_copy_whose_type_changed_is_deleted_and_created_again() {
    let s = Scenario::delivering().await;
    let pc = s.seed_resource(
        json!({
            "delivery": {"namespaces": [DEST]},
            "target": {"secretName": TARGET, "type": "kubernetes.io/basic-auth",
                "template": {"username": "u", "password": "{{ access_token }}"}},
        }),
        json!({"finalizers": [DELIVERY_FINALIZER]}),
    );
    let old = s.fake.seed(SECRETS, &existing_copy(&pc, "Opaque"));
    s.reconcile().await.expect("the reconcile succeeds");
    let writes = s.fake.writes();
    let update = s.fake.write_index(Verb::Update, SECRETS, DEST, TARGET);
    let delete = s.fake.write_index(Verb::Delete, SECRETS, DEST, TARGET);
    let create = s.fake.write_index(Verb::Create, SECRETS, DEST, TARGET);
    assert!(
        update.is_some() && update < delete && delete < create,
        "update (422), delete, create: {:?}",
        describe(&writes)
    );
    let deleted = &writes[delete.unwrap_or_default()];
    assert_eq!(
        deleted
            .body
            .as_ref()
            .map(|b| b["preconditions"]["uid"].clone()),
        Some(json!(old.uid())),
        "the delete names the copy it replaces"
    );
    let copy = s.fake.secret(DEST, TARGET).expect("the copy");
    assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_ne!(copy.uid(), old.uid());
    assert_eq!(s.reason("Delivered"), "AllDelivered");
}

/// (e) A copy whose removal is refused (403: it became someone else's) is left alone: one
/// attempt, and the finalizer still goes, keeping the other finalizers.
#[tokio::test]
async fn a_copy_that_may_not_be_removed_is_left_alone() {
    let s = Scenario::delivering().await;
    let pc = s.seed_resource(
        json!({"delivery": {"namespaces": [DEST]}}),
        json!({
            "finalizers": ["example.com/keep", DELIVERY_FINALIZER],
            "deletionTimestamp": "2026-01-01T00:00:01Z",
        }),
    );
    s.fake.seed(SECRETS, &existing_copy(&pc, "Opaque"));
    s.fake.fail(Verb::Delete, SECRETS, TARGET, 403, "Forbidden");
    s.reconcile().await.expect("the deletion completes");
    assert_eq!(s.fake.count(Verb::Delete, SECRETS, DEST, TARGET), 1);
    assert!(s.fake.secret(DEST, TARGET).is_some(), "left alone");
    let release = s.fake.write_index(Verb::Patch, RESOURCES, NS, NAME);
    assert!(
        release > s.fake.write_index(Verb::Delete, SECRETS, DEST, TARGET),
        "{:?}",
        describe(&s.fake.writes())
    );
    assert_eq!(s.current().finalizers(), ["example.com/keep"]);
    assert_eq!(s.token_requests(), 0);
}

/// The finalizer release is a patch on the version read: a list changed since is not
/// overwritten (409, a newer version is queued), and other finalizers stay.
#[tokio::test]
async fn the_finalizer_release_keeps_other_finalizers_and_its_precondition() {
    let s = Scenario::delivering().await;
    let read = s.seed_resource(
        json!({"delivery": {"namespaces": [DEST]}}),
        json!({
            "finalizers": [DELIVERY_FINALIZER],
            "deletionTimestamp": "2026-01-01T00:00:01Z",
        }),
    );
    // Someone adds a finalizer after the operator's copy was read.
    let mut changed = s.current();
    changed
        .metadata
        .finalizers
        .get_or_insert_default()
        .push("example.com/late".into());
    s.fake.seed(RESOURCES, &changed);
    let stale = super::finalizer::finalize(&s.ctx, &key_of(&read.metadata), &read.metadata).await;
    assert!(
        stale.as_ref().is_err_and(|e| e.is_stale()),
        "a stale copy is refused: {stale:?}"
    );
    assert_eq!(
        s.current().finalizers(),
        [DELIVERY_FINALIZER, "example.com/late"],
        "nothing lost"
    );
    let patch = s.fake.writes().pop().expect("the release was tried");
    assert_eq!(
        patch
            .body
            .as_ref()
            .map(|b| b["metadata"]["resourceVersion"].clone()),
        Some(json!(read.resource_version())),
    );

    super::finalizer::finalize(&s.ctx, &s.key(), &s.current().metadata)
        .await
        .expect("released from the current version");
    assert_eq!(s.current().finalizers(), ["example.com/late"]);
}

/// A Secret someone else made at the target's name: the create fails (409), the target is
/// read again, the outcome is TargetConflict, and the next reconcile sends no new request.
#[tokio::test]
async fn a_target_someone_else_made_is_a_conflict_without_a_second_request() {
    let s = Scenario::start(Provider::Rently, Setup::default()).await;
    s.seed_resource(json!({}), json!({}));
    s.fake.seed(SECRETS, &someone_elses_secret(NS));
    s.reconcile().await.expect("a conflict is an outcome");
    let calls = s.fake.calls();
    let create = calls
        .iter()
        .position(|c| c.is(Verb::Create, SECRETS, NS, TARGET));
    let read = calls
        .iter()
        .rposition(|c| c.is(Verb::Get, SECRETS, NS, TARGET));
    assert!(
        create.is_some() && create < read,
        "created, then read again: {:?}",
        describe(&calls)
    );
    assert_eq!(s.reason("Ready"), "TargetConflict");
    assert_eq!(s.token_requests(), 1);
    let foreign = s.fake.secret(NS, TARGET).expect("still there");
    assert!(foreign.data.is_none(), "untouched");

    s.fake.forget_calls();
    s.reconcile().await.expect("still a conflict");
    assert_eq!(s.token_requests(), 1, "no token request repeated");
    assert_eq!(s.fake.count(Verb::Create, SECRETS, NS, TARGET), 0);
    assert_eq!(s.fake.count(Verb::Update, SECRETS, NS, TARGET), 0);
    assert_eq!(s.reason("Ready"), "TargetConflict");
}

/// A state Secret left with nothing only it can hold (the operator's key puts the inputs
/// digest on the target) is deleted after the target write, on the version last written.
#[tokio::test]
async fn a_state_secret_with_nothing_to_hold_is_deleted_on_its_version_after_the_target() {
    let s = Scenario::start(
        Provider::Rently,
        Setup {
            inputs_key: true,
            ..Setup::default()
        },
    )
    .await;
    let pc = s.seed_resource(json!({}), json!({}));
    let state = state_secret_name(NAME);
    let owner = json!([{"apiVersion": "tokenrotator.dev/v1alpha1", "kind": "ProviderCredential",
        "name": NAME, "uid": pc.uid(), "controller": true}]);
    let old_state: Secret = serde_json::from_value(json!({
        "metadata": {"name": state, "namespace": NS, "ownerReferences": owner,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "type": "Opaque",
        "data": {"inputs_hash": "b2xkLWRpZ2VzdA=="},
    }))
    .expect("a Secret");
    // Every version of the state Secret, as a watch shows them.
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = versions.clone();
    let watched = state.clone();
    s.fake.watch(move |plural, change| {
        if let (SECRETS, Change::Applied(object)) = (plural, change)
            && object["metadata"]["name"] == watched.as_str()
        {
            let version = object["metadata"]["resourceVersion"].clone();
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(version);
        }
    });
    s.fake.seed(SECRETS, &old_state);
    s.reconcile().await.expect("the reconcile succeeds");
    let writes = s.fake.writes();
    let target_at = s.fake.write_index(Verb::Create, SECRETS, NS, TARGET);
    let delete_at = s.fake.write_index(Verb::Delete, SECRETS, NS, &state);
    assert!(
        target_at.is_some() && target_at < delete_at,
        "the target first: {:?}",
        describe(&writes)
    );
    let precondition = writes[delete_at.unwrap_or_default()]
        .body
        .as_ref()
        .map(|b| b["preconditions"]["resourceVersion"].clone());
    let last_version = versions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .cloned();
    assert!(last_version.is_some());
    assert_eq!(precondition, last_version, "on the version last written");
    assert!(s.fake.secret(NS, &state).is_none(), "deleted");
    assert_eq!(s.reason("Ready"), "TokenIssued");
}

/// The status is written on the version the reconcile worked from: a stale copy's status is
/// refused (409, benign: the newer version is queued), never written over a newer one.
#[tokio::test]
async fn a_status_from_a_stale_copy_is_refused() {
    let s = Scenario::start(Provider::Rently, Setup::default()).await;
    // Blocked (no such credentials Secret): a status to write, no token request.
    let stale = s.seed_resource(
        json!({"credentials": {"secretRef": {"name": "missing"}}}),
        json!({}),
    );
    s.fake.edit(RESOURCES, NS, NAME, |pc| {
        pc["metadata"]["labels"] = json!({"edited": "meanwhile"});
    });
    let result = reconcile_keyed(&stale, &s.ctx).await;
    assert!(
        result.as_ref().is_err_and(|e| e.is_stale()),
        "refused as stale: {result:?}"
    );
    assert_eq!(s.status(), Value::Null, "the newer version is untouched");
    let patch = s
        .fake
        .calls()
        .into_iter()
        .find(|c| c.plural == RESOURCES && c.subresource.as_deref() == Some("status"))
        .expect("a status write was tried");
    assert_eq!(
        patch.body.map(|b| b["metadata"]["resourceVersion"].clone()),
        Some(json!(stale.resource_version()))
    );
    assert_eq!(s.token_requests(), 0);
}

/// The state write is a compare-and-swap on the refresh chain: a newer chain another writer
/// stored meanwhile is kept (409, read again, rebased), and this rotation's result is set
/// aside: its token is not written to the target.
#[tokio::test]
async fn a_newer_chain_stored_meanwhile_is_kept_and_this_result_set_aside() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    s.emulator.control().set_rotating_refresh(true);
    s.seed_resource(json!({}), json!({}));
    s.reconcile().await.expect("the chain starts");
    let state = state_secret_name(NAME);
    let target_before = s.fake.secret(NS, TARGET).expect("the target");
    s.fake.edit(RESOURCES, NS, NAME, |pc| {
        pc["metadata"]["annotations"] = json!({crate::api::REFRESH_ANNOTATION: "now"});
    });
    pace_passed().await;
    let newer = k8s_openapi::ByteString(b"another-writers-refresh-token".to_vec());
    let stored_newer = serde_json::to_value(&newer).expect("bytes serialise");
    s.fake.race(Verb::Patch, SECRETS, &state, move |secret| {
        secret["data"][crate::state::REFRESH_TOKEN_KEY] = stored_newer;
    });
    s.fake.forget_calls();
    s.reconcile().await.expect("set aside is an outcome");
    assert_eq!(s.token_requests(), 2, "one refresh was sent");
    let calls = s.fake.calls();
    let refused = calls
        .iter()
        .position(|c| c.is(Verb::Patch, SECRETS, NS, &state));
    let reread = calls
        .iter()
        .rposition(|c| c.is(Verb::Get, SECRETS, NS, &state));
    assert!(
        refused.is_some() && refused < reread,
        "the write met the newer chain and read it: {:?}",
        describe(&calls)
    );
    let kept = s.fake.secret(NS, &state).expect("the state Secret");
    assert_eq!(
        kept.data.unwrap_or_default()[crate::state::REFRESH_TOKEN_KEY],
        newer,
        "the newer chain is kept"
    );
    let target = s.fake.secret(NS, TARGET).expect("the target");
    assert_eq!(
        target.resource_version(),
        target_before.resource_version(),
        "the target is not written: {:?}",
        describe(&s.fake.writes())
    );
    assert_eq!(s.status()["lastFailure"]["reason"], "ChainSuperseded");
}

/// A request the gate withholds (shutdown) sends nothing and writes nothing, not even a
/// status.
#[tokio::test]
async fn a_withheld_request_sends_and_writes_nothing() {
    let s = Scenario::start(Provider::Rently, Setup::default()).await;
    s.seed_resource(json!({}), json!({}));
    s.ctx.gate.stop();
    s.reconcile().await.expect("withheld is not an error");
    assert_eq!(s.token_requests(), 0);
    let written: Vec<_> = s.fake.calls().into_iter().filter(|c| c.writes()).collect();
    assert!(
        written.is_empty(),
        "no write, no Event: {:?}",
        describe(&written)
    );
    assert_eq!(s.status(), Value::Null);
}

/// Neither the access token nor the refresh token reaches the status or an Event (only the
/// target and state Secrets hold them).
#[tokio::test]
async fn no_token_reaches_the_status_or_an_event() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    s.seed_resource(json!({}), json!({}));
    s.reconcile().await.expect("the reconcile succeeds");
    let target = s.fake.secret(NS, TARGET).expect("the target");
    let state = s
        .fake
        .secret(NS, &state_secret_name(NAME))
        .expect("the state Secret");
    let value = |secret: &Secret, key: &str| {
        let bytes = &secret.data.as_ref().expect("data")[key].0;
        String::from_utf8_lossy(bytes).into_owned()
    };
    let values = [
        value(&target, "access_token"),
        value(&state, crate::state::REFRESH_TOKEN_KEY),
    ];
    assert!(
        values.iter().all(|v| v.len() > 8),
        "tokens: {}",
        values.len()
    );
    let reported: Vec<String> = s
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.plural != SECRETS)
        .filter_map(|c| c.body.map(|b| b.to_string()))
        .collect();
    let events = s
        .fake
        .calls()
        .iter()
        .filter(|c| c.plural == "events")
        .count();
    assert!(events > 0 && reported.len() > events, "a status and Events");
    for body in &reported {
        for value in &values {
            assert!(!body.contains(value.as_str()), "a token in {body}");
        }
    }
}

/// A request still waiting for its answer when the reconcile stops waiting (250 ms) goes on
/// without it: a reconcile meanwhile does nothing, and the end, parked, asks for the
/// reconcile that reports it, without a second request.
#[tokio::test]
async fn a_request_that_outlives_its_reconcile_is_parked_and_reported() {
    let s = Scenario::start(Provider::Rently, Setup::default()).await;
    // A second past the detach: room for the reconcile meanwhile even on a loaded machine.
    let slow = super::execute::DETACH_AFTER + std::time::Duration::from_secs(1);
    s.emulator.control().set_latency(Provider::Rently, slow);
    s.seed_resource(json!({}), json!({}));
    let mut asked = s.ctx.reconcile_requests();
    let first = reconcile_keyed(&s.current(), &s.ctx).await;
    assert!(matches!(first, Ok(None)), "{first:?}");
    assert_eq!(s.status(), Value::Null, "nothing reported yet");
    let meanwhile = reconcile_keyed(&s.current(), &s.ctx).await;
    assert!(matches!(meanwhile, Ok(None)), "{meanwhile:?}");
    futures::StreamExt::next(&mut asked)
        .await
        .expect("the end asks for a reconcile");
    assert!(
        s.fake.secret(NS, TARGET).is_some(),
        "written by the request"
    );
    assert_eq!(s.status(), Value::Null);
    reconcile_keyed(&s.current(), &s.ctx)
        .await
        .expect("the parked end is reported");
    assert_eq!(s.reason("Ready"), "TokenIssued");
    assert_eq!(s.token_requests(), 1);
}

/// spec.delivery removed: every copy goes (on its UID), then the finalizer.
#[tokio::test]
async fn without_spec_delivery_the_copies_go_then_the_finalizer() {
    let s = Scenario::delivering().await;
    let pc = s.seed_resource(
        json!({}),
        json!({"finalizers": ["example.com/keep", DELIVERY_FINALIZER]}),
    );
    let copy = s.fake.seed(SECRETS, &existing_copy(&pc, "Opaque"));
    // The release makes a new version of the resource, so this reconcile's status write may
    // be refused as stale (benign: the new version's reconcile writes it).
    let first = s.reconcile().await;
    assert!(
        first.as_ref().is_ok() || first.as_ref().is_err_and(|e| e.is_stale()),
        "{first:?}"
    );
    let removed = s.fake.write_index(Verb::Delete, SECRETS, DEST, TARGET);
    let released = s.fake.write_index(Verb::Patch, RESOURCES, NS, NAME);
    assert!(
        removed.is_some() && removed < released,
        "{:?}",
        describe(&s.fake.writes())
    );
    let delete = &s.fake.writes()[removed.unwrap_or_default()];
    assert_eq!(
        delete
            .body
            .as_ref()
            .map(|b| b["preconditions"]["uid"].clone()),
        Some(json!(copy.uid()))
    );
    assert!(s.fake.secret(DEST, TARGET).is_none());
    assert_eq!(s.current().finalizers(), ["example.com/keep"]);
    s.reconcile().await.expect("the new version is reported");
    assert_eq!(s.fake.count(Verb::Delete, SECRETS, DEST, TARGET), 1);
    assert_eq!(s.reason("Ready"), "TokenIssued");
    assert_eq!(s.token_requests(), 1);
}

/// A refresh token held for a resource is stored first, whatever became of its spec: a
/// resource that can no longer be read has its held state stored before it is reported.
#[tokio::test]
async fn a_held_state_is_stored_even_when_the_resource_can_no_longer_be_read() {
    let s = Scenario::start(Provider::Reltio, Setup::default()).await;
    s.seed_resource(json!({}), json!({}));
    let state = state_secret_name(NAME);
    s.fake
        .fail(Verb::Create, SECRETS, &state, 500, "InternalError");
    s.reconcile().await.expect("a store failure is an outcome");
    s.fault_over().await;
    s.fake.edit(RESOURCES, NS, NAME, |pc| {
        pc["spec"]["target"] = json!("not an object");
    });
    let guard: crate::api::Guarded = s.fake.get(RESOURCES, NS, NAME).expect("exists");
    assert!(guard.0.is_err(), "unreadable");
    let key = key_of(kube::Resource::meta(&guard));
    super::reconcile::reconcile_guarded(Arc::new(guard), &key, s.ctx.clone())
        .await
        .expect("reported");
    let stored = s.fake.write_index(Verb::Create, SECRETS, NS, &state);
    let reported = s
        .fake
        .writes()
        .iter()
        .position(|c| c.plural == RESOURCES && c.subresource.as_deref() == Some("status"));
    assert!(
        stored.is_some() && stored < reported,
        "the held state first: {:?}",
        describe(&s.fake.writes())
    );
    let kept = s.fake.secret(NS, &state).expect("the state Secret");
    assert!(
        kept.data
            .unwrap_or_default()
            .contains_key(crate::state::REFRESH_TOKEN_KEY)
    );
    assert_eq!(s.reason("Ready"), "InvalidSpec");
    assert_eq!(s.token_requests(), 1);
}

/// A Secret someone else made at a copy's place is never overwritten: the create fails
/// (409), the destination says whose it is, and the Secret is untouched.
#[tokio::test]
async fn someone_elses_secret_at_a_copys_place_is_never_overwritten() {
    let s = Scenario::delivering().await;
    s.seed_delivering();
    let theirs = s.fake.seed(SECRETS, &someone_elses_secret(DEST));
    s.reconcile().await.expect("a refusal is status");
    assert_eq!(s.fake.count(Verb::Create, SECRETS, DEST, TARGET), 1);
    for verb in [Verb::Update, Verb::Patch, Verb::Delete] {
        assert_eq!(s.fake.count(verb, SECRETS, DEST, TARGET), 0, "{verb:?}");
    }
    let kept = s.fake.secret(DEST, TARGET).expect("still there");
    assert_eq!(kept.resource_version(), theirs.resource_version());
    assert_eq!(s.status()["deliveries"][0]["reason"], "SecretNotOwned");
    assert_eq!(condition(&s.status(), "Delivered")["status"], "False");
}

/// A copy that cannot be written (403 in its namespace) is status, not a reconcile error:
/// the rotation and its status go on.
#[tokio::test]
async fn a_copy_that_cannot_be_written_is_status_not_an_error() {
    let s = Scenario::delivering().await;
    s.seed_delivering();
    s.fake.fail_in(DEST, Verb::Create, SECRETS, TARGET, 403);
    s.reconcile().await.expect("not a reconcile error");
    assert!(s.fake.secret(NS, TARGET).is_some(), "the target is written");
    assert!(s.fake.secret(DEST, TARGET).is_none());
    assert_eq!(s.reason("Ready"), "TokenIssued");
    assert_eq!(s.status()["deliveries"][0]["reason"], "WriteFailed");
    assert_eq!(condition(&s.status(), "Delivered")["status"], "False");
}

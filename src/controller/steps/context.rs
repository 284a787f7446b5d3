//! Shared state of the running controller.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use super::endpoints::{EndpointQueues, RequestSlot, RequestSlots};
use super::executed::Parked;
use super::in_flight::InFlight;
use crate::api::{Guarded, ProviderCredential, ResourceKey};
use crate::controller::caches::held::{Held, HeldState, HeldTable};
use crate::controller::caches::views::SecretViews;
use crate::leader::{Gate, Withheld};
use crate::provider::{ProviderConfig, TokenClient};
use crate::rotation::{ChainWrite, HeldToken};
use crate::telemetry::Metrics;

pub struct Context {
    pub client: Client,
    pub tokens: TokenClient,
    /// Warnings: kube's recorder folds repeats into one Event series, keeping each Event it
    /// sent for 6 minutes to do so.
    warnings: Recorder,
    /// Normal Events (a token issued) are sent uncached: a burst of new resources would
    /// otherwise keep one Event object per resource in memory for those 6 minutes.
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Closed by shutdown, and by an unconfirmed lease: no token request passes it then.
    pub gate: Gate,
    /// Token requests one resource may send in any rolling minute.
    requests_per_minute: u32,
    endpoints: EndpointQueues,
    /// Token requests (waiting for their turn, or sent) per namespace, bounded.
    request_slots: RequestSlots,
    /// Token requests that outlived the reconcile that started them.
    pub in_flight: InFlight<Parked>,
    /// One per controller: reconcile a resource now (its request ended after its reconcile).
    reconcile_requests: Mutex<Vec<futures::channel::mpsc::UnboundedSender<ObjectRef<Guarded>>>>,
    /// One per controller: its cache of resources, as its watch shows them now.
    resources: Mutex<Vec<kube::runtime::reflector::Store<Guarded>>>,
    /// The target and state Secrets as last seen, while the watch shows that version.
    pub views: SecretViews,
    /// Per resource UID, only while something is outstanding (memory stays flat otherwise).
    held: HeldTable,
    /// --restart-workloads: spec.rollout may restart the workloads that consent.
    pub restart_workloads: bool,
    /// --cross-namespace-delivery: what spec.delivery decides from.
    pub delivery: Option<crate::controller::caches::delivery_views::Delivery>,
    /// Reconciles per namespace: one namespace's churn cannot take every reconcile slot.
    pub reconcile_rate: super::reconcile_rate::ReconcileRate,
    /// What each namespace's cached resources, and kept credentials, may take (budget.rs).
    pub cache_bytes_per_namespace: usize,
    /// Resources whose request waits for its turn, by name, per namespace.
    pub turns: super::turns::Turns,
    /// The key of the inputs digests on targets; without one they stay in state Secrets.
    pub inputs_key: Option<crate::digest::InputsKey>,
}

/// The optional features the operator runs with.
#[derive(Default)]
pub struct Features {
    pub restart_workloads: bool,
    /// `--token-host-rate`: the admin's rates, shared by every namespace, by host.
    pub host_rates: Vec<(String, u32)>,
    /// `--requests-in-flight-per-namespace` (0: the default).
    pub requests_in_flight_per_namespace: usize,
    /// `--reconciles-per-second-per-namespace` (0: no limit).
    pub reconciles_per_second_per_namespace: u32,
    /// `--cache-mib-per-namespace`, in bytes (0: the default).
    pub cache_bytes_per_namespace: usize,
    pub delivery: Option<crate::controller::caches::delivery_views::Delivery>,
    /// The key of the inputs digests on targets (`--inputs-key-namespace`).
    pub inputs_key: Option<crate::digest::InputsKey>,
}

impl Context {
    pub fn new(
        client: Client,
        tokens: TokenClient,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        gate: Gate,
        requests_per_minute: u32,
        features: Features,
    ) -> Self {
        let cache_bytes_per_namespace = match features.cache_bytes_per_namespace {
            0 => crate::controller::caches::budget::DEFAULT_BYTES_PER_NAMESPACE,
            bytes => bytes,
        };
        Context {
            warnings: Recorder::new(client.clone(), reporter.clone()),
            client,
            tokens,
            reporter,
            metrics,
            gate,
            requests_per_minute,
            endpoints: EndpointQueues::new(&features.host_rates),
            request_slots: RequestSlots::new(features.requests_in_flight_per_namespace),
            in_flight: InFlight::default(),
            reconcile_requests: Mutex::default(),
            resources: Mutex::default(),
            // Beyond it credentials are read when used (nothing fails), so a smaller share.
            views: SecretViews::with_credentials_budget(cache_bytes_per_namespace / 4),
            held: HeldTable::default(),
            restart_workloads: features.restart_workloads,
            delivery: features.delivery,
            reconcile_rate: super::reconcile_rate::ReconcileRate::new(
                features.reconciles_per_second_per_namespace,
            ),
            cache_bytes_per_namespace,
            turns: Default::default(),
            inputs_key: features.inputs_key,
        }
    }

    /// Publishes an Event about `reference`.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        match event.type_ {
            EventType::Warning => self.warnings.publish(event, reference).await,
            EventType::Normal => {
                Recorder::new(self.client.clone(), self.reporter.clone())
                    .publish(event, reference)
                    .await
            }
        }
    }

    /// Waits for one of `namespace`'s request slots, then for this request's turn at its
    /// endpoint (the pace of `namespace` for that host and any pause a 429 asked of it, then
    /// the admin's shared rate for the host), then for the gate: the request may be sent only
    /// if it passes at that very moment. The slot is held until the answer is handled.
    pub async fn rate_limit(
        &self,
        namespace: &str,
        config: &ProviderConfig,
    ) -> Result<RequestSlot, Withheld> {
        let turn = async {
            let slot = self.request_slots.acquire(namespace).await;
            self.endpoints.wait_turn(namespace, config).await;
            slot
        };
        tokio::select! {
            slot = turn => self.permit_request(config).map(|()| slot),
            // Closed for good: whatever the gate says now, this request is not sent.
            () = self.gate.stopped() => Err(self
                .permit_request(config)
                .err()
                .unwrap_or(Withheld::ShuttingDown)),
        }
    }

    /// Whether a request to this endpoint may start now (see [`Gate::permit`]); a refusal is
    /// counted and logged.
    pub fn permit_request(&self, config: &ProviderConfig) -> Result<(), Withheld> {
        self.gate
            .permit(config.limits.overall_timeout)
            .inspect_err(|w| {
                self.metrics.request_withheld(w.reason());
                tracing::info!(
                    reason = w.reason(),
                    "token request withheld; retried shortly"
                );
            })
    }

    /// The endpoint answered 429 to a request of `namespace`: slow that namespace's queue.
    pub fn rate_limited(
        &self,
        namespace: &str,
        config: &ProviderConfig,
        retry_after: Option<Duration>,
    ) {
        self.endpoints.pause(namespace, config, retry_after);
    }

    fn with_held<T>(&self, key: &ResourceKey, f: impl FnOnce(&mut Held) -> T) -> T {
        self.held.with(key, f)
    }

    /// A held state, with the resource as it was when the state was settled (what a resource
    /// that can no longer be read, or shutdown, stores it with).
    pub fn unstored_state(
        &self,
        key: &ResourceKey,
    ) -> Option<(Arc<ProviderCredential>, ChainWrite)> {
        self.with_held(key, |h| {
            h.state
                .as_deref()
                .map(|(_, pc, write)| (pc.clone(), write.clone()))
        })
    }

    pub fn hold_state(&self, key: &ResourceKey, pc: &ProviderCredential, write: ChainWrite) {
        self.with_held(key, |h| {
            h.state = Some(Box::new((key.clone(), Arc::new(pc.clone()), write)));
        });
    }

    /// Forgets a held state once stored (or superseded by a newer chain), unless a newer one
    /// was held meanwhile.
    pub fn stored_state(&self, key: &ResourceKey, write: &ChainWrite) {
        self.with_held(key, |h| {
            if h.state.as_deref().is_some_and(|(_, _, w)| w == write) {
                h.state = None;
            }
        });
    }

    /// Every state held but not stored, with its resource: what shutdown must store.
    pub fn unstored_states(&self) -> Vec<HeldState> {
        self.held.states()
    }

    pub fn unwritten_token(&self, key: &ResourceKey) -> Option<HeldToken> {
        self.with_held(key, |h| h.token.as_deref().cloned())
    }

    pub fn hold_token(&self, key: &ResourceKey, token: HeldToken) {
        self.with_held(key, |h| h.token = Some(Box::new(token)));
    }

    pub fn drop_token(&self, key: &ResourceKey) {
        self.with_held(key, |h| h.token = None);
    }

    pub fn attempts(&self, key: &ResourceKey) -> u32 {
        self.with_held(key, |h| h.attempts)
    }

    /// Counts one more blocked or failed reconcile (`true`), or resets the count; returns it.
    pub fn count_attempt(&self, key: &ResourceKey, failed: bool) -> u32 {
        self.with_held(key, |h| {
            h.attempts = if failed {
                h.attempts.saturating_add(1)
            } else {
                0
            };
            h.attempts
        })
    }

    /// Spends one token request of this resource's budget, or says when the next may go.
    pub fn spend_request(&self, key: &ResourceKey) -> Result<(), Timestamp> {
        let per_minute = self.requests_per_minute;
        self.with_held(key, |h| h.budget.spend(Timestamp::now(), per_minute))
    }

    /// Gives back a request spent but never sent.
    pub fn refund_request(&self, key: &ResourceKey) {
        self.with_held(key, |h| h.budget.refund());
    }

    /// Records that this generation of an unreadable object is reported; false if it already was.
    pub fn first_report_of_unreadable(&self, key: &ResourceKey, generation: Option<i64>) -> bool {
        self.with_held(key, |h| {
            h.unreadable_generation.replace(generation) != Some(generation)
        })
    }

    /// Records a status write that replaced version `over` of the resource.
    pub fn wrote_status(&self, key: &ResourceKey, over: &str) {
        self.with_held(key, |h| {
            h.status_written_over = Some(Box::new((over.into(), Instant::now())));
        });
    }

    /// Whether a copy at `resource_version` predates this operator's own last status write
    /// (the watch has not brought the write yet). A newer copy ends the question.
    pub fn predates_own_status_write(
        &self,
        key: &ResourceKey,
        resource_version: Option<&str>,
    ) -> bool {
        self.with_held(key, |h| {
            h.predates_own_status_write(resource_version, Instant::now())
        })
    }

    /// How long a request of `namespace` to this endpoint would wait for its turn, if at all:
    /// until a slot frees (a request ending wakes the next in line; rechecked after
    /// [`super::turns::RECHECK_WAITING`] at the latest), or until its pace or a 429 pause
    /// allows.
    pub fn request_wait(&self, namespace: &str, config: &ProviderConfig) -> Option<Duration> {
        if !self.request_slots.has_free(namespace) {
            return Some(super::turns::RECHECK_WAITING);
        }
        let at = self.endpoints.turn_at(namespace, config)?;
        Some(
            at.saturating_duration_since(tokio::time::Instant::now())
                .clamp(Duration::from_millis(50), super::turns::RECHECK_WAITING),
        )
    }

    /// A request of `namespace` ended: the first resource waiting for a turn is reconciled.
    pub fn wake_next(&self, namespace: &str) {
        if let Some(name) = self.turns.next(namespace) {
            self.reconcile_named(namespace, &name);
        }
    }

    /// Has a controller reconcile the resource `key` soon (sent to every controller: only the
    /// one that holds it reconciles it).
    pub fn reconcile_soon(&self, key: &ResourceKey) {
        self.reconcile_named(key.namespace(), key.name());
    }

    fn reconcile_named(&self, namespace: &str, name: &str) {
        let reference = ObjectRef::<Guarded>::new(name).within(namespace);
        let mut senders = self
            .reconcile_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        senders.retain(|s| s.unbounded_send(reference.clone()).is_ok());
    }

    /// The requests [`Context::reconcile_soon`] makes, for one controller.
    pub fn reconcile_requests(
        &self,
    ) -> futures::channel::mpsc::UnboundedReceiver<ObjectRef<Guarded>> {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        self.reconcile_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        receiver
    }

    /// Registers a controller's cache of resources (see [`Context::cached_resource`]).
    pub fn watch_resources(&self, store: kube::runtime::reflector::Store<Guarded>) {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
    }

    /// A resource as the watch shows it now (`None`: no controller's cache holds it).
    pub fn cached_resource(&self, key: &ResourceKey) -> Option<Arc<Guarded>> {
        let reference = ObjectRef::<Guarded>::new(key.name()).within(key.namespace());
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find_map(|store| store.get(&reference))
    }

    /// A deleted resource: nothing it held can be used any more.
    pub fn forget(&self, key: &ResourceKey) {
        self.in_flight.forget(key);
        self.views.forget(key);
        self.held.remove(key);
    }
}

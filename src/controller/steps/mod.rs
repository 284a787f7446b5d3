pub(super) mod context;
pub(super) mod delivery;
pub(super) mod endpoints;
pub(super) mod execute;
pub(super) mod executed;
#[cfg(test)]
mod fake_api;
pub(super) mod finalizer;
pub(super) mod in_flight;
pub(super) mod observe;
#[cfg(test)]
mod protocol_tests;
pub(super) mod recheck;
pub(super) mod reconcile;
pub(super) mod reconcile_rate;
pub(super) mod report;
pub(super) mod rollout;
pub(super) mod service_account;
pub(super) mod turns;

//! The controller: watches ProviderCredentials and the Secrets around them (label-selected
//! only, so memory does not grow with unrelated Secrets) and reconciles each resource.

mod caches;
mod runtime;
mod steps;

/// What the per-namespace cache budget charges for a resource (measured in tests/crd_bounds.rs).
pub use caches::budget::{DEFAULT_CACHE_MIB_PER_NAMESPACE, cached_bytes as cache_charge};
pub use runtime::{Config, RunError, USER_AGENT, run};

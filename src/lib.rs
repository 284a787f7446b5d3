//! token-rotator: keeps short-lived API tokens fresh inside Kubernetes Secrets.

pub mod api;
pub mod by_namespace;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod digest;
pub mod inputs_key;
pub mod leader;
pub mod provider;
pub mod rotation;
pub mod secrets;
pub mod state;
pub mod target;
pub mod telemetry;
pub mod template;

/// Installs the one rustls crypto provider (ring) shared by kube and reqwest. Call it first in
/// every binary and test; later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

//! A real Kubernetes control plane for tests and the demo: etcd, kube-apiserver and
//! kube-controller-manager built by `hack/provision.sh`, started on loopback with random ports,
//! RBAC (`Node,RBAC`), the `OwnerReferencesPermissionEnforcement` admission plugin, a throwaway
//! CA, and ServiceAccount tokens. The controller manager runs the garbage collector, namespace,
//! serviceaccount, serviceaccount-token and root-CA publisher controllers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testkit::Error> {
//! let cp = testkit::shared().await?;
//! cp.apply_crds("crds").await?;
//! let ns = cp.new_namespace("rotation").await?;
//! let admin = cp.client();
//! // Acts with exactly the RBAC granted to ServiceAccount `<ns>/operator`:
//! let operator = cp.service_account_client(ns.name(), "operator").await?;
//! // The same identity as a kubeconfig file, for running the operator binary:
//! let kubeconfig = cp.service_account_kubeconfig(ns.name(), "operator").await?;
//! # let _ = (admin, operator, kubeconfig); Ok(()) }
//! ```
//!
//! # Running
//! * `hack/provision.sh` builds the binaries once (many minutes cold, under a second warm) and
//!   prints their directory last; `export TOKEN_ROTATOR_K8S_BIN=$(hack/provision.sh | tail -n1)`.
//!   Without the variable, the default cache directory of the script is used.
//! * `cargo test --features e2e` runs the end-to-end tests; `hack/test.sh` does all of it.
//! * `cargo run -p testkit --bin devcluster -- --kubeconfig /tmp/dev.kubeconfig` runs a
//!   control plane until Ctrl-C; the file appears once it is ready.
//!
//! # Acting as a ServiceAccount
//! [`ControlPlane::service_account_token`] asks the TokenRequest API
//! (`serviceaccounts/<name>/token`) for a one-hour token, creating the ServiceAccount if needed;
//! [`ControlPlane::service_account_client`] and [`ControlPlane::service_account_kubeconfig`]
//! wrap it. Grant the ServiceAccount a Role/ClusterRole through the admin client first; until
//! then its requests are denied with 403.
//!
//! # Cleanup
//! Children die with the test process (`PR_SET_PDEATHSIG`, forked from one long-lived thread).
//! Temp dirs (`$TMPDIR/token-rotator-cp/<pid>-<n>`, with the components' logs) are removed on
//! drop, at exit for the [`shared`] instance, and, for runs killed by a signal, by the next run.

pub mod audit;
mod binaries;
mod certs;
mod control_plane;
mod crds;
mod error;
mod kubeconfig;
mod namespace;
mod process;

pub use binaries::{BIN_ENV, Versions, default_bin_dir, find_bin_dir};
pub use control_plane::{ControlPlane, StartOptions};
pub use crds::{SAMPLE_CRD, parse_crds};
pub use error::{Error, Result};
pub use namespace::TestNamespace;

/// Installs ring as rustls' process-wide crypto provider; kube's rustls client needs one.
/// Safe to call any number of times, also when another provider was installed first.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One control plane per test process, started on first use and shared by parallel tests.
/// It is stopped and its temp dir removed when the process exits.
///
/// A startup failure is remembered: later callers get the same error without retrying.
pub async fn shared() -> Result<&'static ControlPlane> {
    static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> =
        tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async { ControlPlane::start().await.map_err(|e| e.to_string()) })
        .await
        .as_ref()
        .map_err(|message| Error::SharedStartFailed(message.clone()))
}

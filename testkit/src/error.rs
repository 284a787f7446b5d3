use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running a test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "control plane binaries missing from {dir}: {missing}; run hack/provision.sh and export \
         TOKEN_ROTATOR_K8S_BIN to the directory it prints last"
    )]
    BinariesNotFound { dir: PathBuf, missing: String },

    #[error(
        "cannot locate the binaries cache: set TOKEN_ROTATOR_K8S_BIN, TOKEN_ROTATOR_CACHE, \
         XDG_CACHE_HOME or HOME"
    )]
    NoCacheDir,

    #[error("hack/versions.env has no {0} entry")]
    MissingVersion(&'static str),

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot generate the {what}: {source}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("cannot find a free loopback port: {0}")]
    NoFreePort(#[source] std::io::Error),

    #[error("cannot start {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{name} exited during startup ({status}); last lines of {}:\n{tail}", log.display())]
    ProcessExited {
        name: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "control plane not ready after {waited:?} (waiting for {waiting_for}); last error: \
         {last_error}; last lines of {}:\n{tail}", log.display()
    )]
    StartTimeout {
        waited: Duration,
        waiting_for: &'static str,
        last_error: String,
        log: PathBuf,
        tail: String,
    },

    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    #[error("Kubernetes API call failed while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot parse {} as YAML: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: Box<serde_saphyr::Error>,
    },

    #[error("YAML document {index} in {} is not a CustomResourceDefinition: {reason}", path.display())]
    InvalidCrd {
        path: PathBuf,
        index: usize,
        reason: String,
    },

    #[error("CustomResourceDefinition {name} not Established after {waited:?}")]
    CrdNotEstablished { name: String, waited: Duration },

    #[error("the TokenRequest for ServiceAccount {namespace}/{name} returned no token")]
    NoToken { namespace: String, name: String },

    #[error(
        "invalid namespace prefix {0:?}: use lowercase letters, digits and '-', at most 40 characters"
    )]
    InvalidNamespacePrefix(String),

    #[error("the shared control plane failed to start: {0}")]
    SharedStartFailed(String),

    #[error("the control plane has been stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    /// Port clashes with another process are retried with fresh ports.
    pub(crate) fn is_port_clash(&self) -> bool {
        match self {
            Self::ProcessExited { tail, .. } | Self::StartTimeout { tail, .. } => {
                tail.contains("address already in use")
            }
            _ => false,
        }
    }
}

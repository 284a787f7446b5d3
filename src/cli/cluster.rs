//! Reaching the cluster from the command line: the kubeconfig (as kubectl finds it) and which
//! ProviderCredentials a command is about.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::ProviderCredential;

/// Which namespaces and resources, as kubectl says it.
#[derive(Debug, Clone, clap::Args)]
pub struct Scope {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only ProviderCredentials whose labels match this selector (e.g. `team=payments`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Kubernetes ({0}); check KUBECONFIG or ~/.kube/config")]
    Connect(#[source] kube::Error),
    #[error("cannot list ProviderCredentials {scope}: {source}")]
    List {
        scope: String,
        #[source]
        source: kube::Error,
    },
    #[error("ProviderCredential {namespace}/{name}: {source}")]
    Resource {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ProviderCredential {namespace}/{name}: {message}")]
    Waiting {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("give ProviderCredential names, -l SELECTOR or --all")]
    NothingChosen,
}

/// A client from the kubeconfig, and the namespace a command means.
pub struct Cluster {
    pub client: Client,
    /// `--namespace`, else the kubeconfig context's.
    pub namespace: String,
}

impl Cluster {
    /// One resource's namespace.
    pub fn api_for(&self, pc: &ProviderCredential) -> Api<ProviderCredential> {
        Api::namespaced(self.client.clone(), &pc.namespace().unwrap_or_default())
    }
}

impl Scope {
    pub async fn connect(&self) -> Result<Cluster, ClusterError> {
        let client = Client::try_default().await.map_err(ClusterError::Connect)?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Ok(Cluster { client, namespace })
    }

    /// Every ProviderCredential in scope (matching the selector, if any).
    pub async fn list(&self, cluster: &Cluster) -> Result<Vec<ProviderCredential>, ClusterError> {
        let api: Api<ProviderCredential> = if self.all_namespaces {
            Api::all(cluster.client.clone())
        } else {
            Api::namespaced(cluster.client.clone(), &cluster.namespace)
        };
        let mut params = ListParams::default();
        if let Some(selector) = &self.selector {
            params = params.labels(selector);
        }
        let namespace = &cluster.namespace;
        let scope = match (self.all_namespaces, &self.selector) {
            (true, None) => "in any namespace".to_string(),
            (true, Some(s)) => format!("matching {s:?} in any namespace"),
            (false, None) => format!("in namespace {namespace}"),
            (false, Some(s)) => format!("matching {s:?} in namespace {namespace}"),
        };
        let list = api
            .list(&params)
            .await
            .map_err(|source| ClusterError::List { scope, source })?;
        Ok(list.items)
    }
}

//! Arguments of `token-rotator run`.

use std::net::SocketAddr;

use crate::telemetry;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Watch only this namespace (repeatable). Default: all namespaces.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Reconcile only ProviderCredentials whose labels match this selector (`shard=a`,
    /// `team in (x,y)`), so that several instances share a cluster on disjoint sets. Give each
    /// instance its own `--leader-election-lease-name`.
    #[arg(long, value_name = "LABEL_SELECTOR")]
    pub selector: Option<String>,
    /// Permit plain http:// token endpoints (local testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Only these hosts may be token endpoints (repeatable). Default: any host.
    #[arg(long = "allowed-token-host")]
    pub allowed_token_hosts: Vec<String>,
    /// Permit token endpoints at link-local addresses (169.254.0.0/16, fe80::/10), where cloud
    /// metadata services live. Refused by default, on the URL and on what a name resolves to.
    #[arg(long)]
    pub allow_link_local_token_endpoints: bool,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: telemetry::LogFormat,
    /// How many resources are reconciled at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u16,
    /// At most this many token requests per ProviderCredential in any rolling minute, whatever
    /// asks for them; beyond it the resource pauses, twice as long each time (1 min … 1 h).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub token_requests_per_minute: u32,
    /// Let spec.rollout restart the Deployments, StatefulSets and DaemonSets that consent
    /// (annotation tokenrotator.dev/restart-on) after a rotation; needs get and patch on them.
    #[arg(long)]
    pub restart_workloads: bool,
    /// Let spec.delivery copy tokens into other namespaces that consent (a TokenDeliveryGrant
    /// there); needs list and watch on namespaces and tokendeliverygrants, delete on Secrets
    /// and patch on providercredentials (its finalizer). Cluster-wide only (no --namespaces).
    #[arg(long)]
    pub cross_namespace_delivery: bool,
    #[command(flatten)]
    pub leader: crate::leader::LeaderArgs,
}

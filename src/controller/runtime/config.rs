//! What `run` is told: plain settings, built from the command line in `cli/run.rs`. The
//! controller never sees the command line's types.

use std::net::SocketAddr;

use crate::leader::LeaderArgs;
use crate::provider::HttpPolicy;

#[derive(Debug, Clone)]
pub struct Config {
    /// Watched namespaces; empty: all.
    pub namespaces: Vec<String>,
    /// Only resources whose labels match (a shard); `None`: all.
    pub selector: Option<String>,
    /// Which token endpoints may be reached.
    pub http_policy: HttpPolicy,
    /// Where /metrics, /healthz and /readyz are served.
    pub metrics_addr: SocketAddr,
    /// Reconciles at once.
    pub concurrency: u16,
    /// Requests per second every namespace together may send a host.
    pub token_host_rates: Vec<(String, u32)>,
    pub requests_in_flight_per_namespace: usize,
    pub reconciles_per_second_per_namespace: u32,
    pub cache_bytes_per_namespace: usize,
    /// Where the inputs digests' key lives; `None`: digests stay in state Secrets.
    pub inputs_key_namespace: Option<String>,
    pub inputs_key_secret: String,
    pub token_requests_per_minute: u32,
    pub restart_workloads: bool,
    pub cross_namespace_delivery: bool,
    pub leader: LeaderArgs,
}

//! Arguments of `token-rotator run`.

use std::net::SocketAddr;

use crate::telemetry;

use crate::controller::DEFAULT_CACHE_MIB_PER_NAMESPACE;

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
    /// Pace every namespace's requests to a token host together: `HOST=N` (or `HOST:PORT=N`)
    /// requests per second, repeatable. Without it a host is paced per namespace only, by the
    /// `requestsPerSecond` of that namespace's resources: no tenant can slow another.
    #[arg(long = "token-host-rate", value_name = "HOST=N", value_parser = parse_host_rate)]
    pub token_host_rates: Vec<(String, u32)>,
    /// At most this many token requests of one namespace wait for their turn or are sent at
    /// once; more wait for a slot (outside the reconcile slots every namespace shares).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub requests_in_flight_per_namespace: u32,
    /// At most this many reconciles per second of one namespace's resources (bursts of twice
    /// as many); more are requeued for later without any API call, so one namespace's churn
    /// cannot take the controller from the others. 0: no limit.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub reconciles_per_second_per_namespace: u32,
    /// At most this many MiB of one namespace's ProviderCredentials are cached, and a quarter
    /// as many of its opted-in credentials Secrets' data: beyond it a resource says so on its
    /// status and is not served, and a credentials Secret is read when used. What one
    /// namespace's objects can take is then bounded by this and by their number (a
    /// ResourceQuota's to bound).
    #[arg(long, default_value_t = DEFAULT_CACHE_MIB_PER_NAMESPACE, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cache_mib_per_namespace: u32,
    /// Namespace of the Secret holding the key of the inputs digests written on target Secrets
    /// (created there when absent; default: $POD_NAMESPACE, as the chart sets it). Without
    /// one, every resource keeps that digest in a state Secret instead: one more object and
    /// one more API call per new resource.
    #[arg(long, env = "POD_NAMESPACE")]
    pub inputs_key_namespace: Option<String>,
    /// Name of that Secret.
    #[arg(long, default_value = crate::inputs_key::DEFAULT_SECRET_NAME)]
    pub inputs_key_secret: String,
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

impl RunArgs {
    /// The controller's settings: what the flags say, in its own terms.
    pub fn config(&self) -> crate::controller::Config {
        crate::controller::Config {
            namespaces: self.namespaces.clone(),
            selector: self.selector.clone(),
            http_policy: crate::provider::HttpPolicy {
                allow_http: self.allow_http,
                allowed_hosts: (!self.allowed_token_hosts.is_empty())
                    .then(|| self.allowed_token_hosts.clone()),
                allow_link_local: self.allow_link_local_token_endpoints,
            },
            metrics_addr: self.metrics_addr,
            concurrency: self.concurrency,
            token_host_rates: self.token_host_rates.clone(),
            requests_in_flight_per_namespace: self.requests_in_flight_per_namespace as usize,
            reconciles_per_second_per_namespace: self.reconciles_per_second_per_namespace,
            cache_bytes_per_namespace: (self.cache_mib_per_namespace as usize) << 20,
            inputs_key_namespace: self.inputs_key_namespace.clone(),
            inputs_key_secret: self.inputs_key_secret.clone(),
            token_requests_per_minute: self.token_requests_per_minute,
            restart_workloads: self.restart_workloads,
            cross_namespace_delivery: self.cross_namespace_delivery,
            leader: self.leader.clone(),
        }
    }
}

/// `--token-host-rate HOST=N`: a host and the requests per second every namespace together may
/// send it. Named: the host, and the fix.
pub fn parse_host_rate(text: &str) -> Result<(String, u32), String> {
    let (host, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("--token-host-rate {text:?}: expected HOST=REQUESTS_PER_SECOND"))?;
    let host = host.trim().to_ascii_lowercase();
    let rate: u32 = rate
        .trim()
        .parse()
        .ok()
        .filter(|r| (1..=10_000).contains(r))
        .ok_or_else(|| {
            format!("--token-host-rate {text:?}: the rate must be a whole number from 1 to 10000")
        })?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(format!(
            "--token-host-rate {text:?}: give a host name (optionally host:port), not a URL"
        ));
    }
    Ok((host, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rates_are_parsed_with_errors_that_name_the_flag() {
        assert_eq!(
            parse_host_rate("Reltio.Example.com=10"),
            Ok(("reltio.example.com".into(), 10))
        );
        assert_eq!(parse_host_rate("host:8443=1"), Ok(("host:8443".into(), 1)));
        for bad in [
            "host",
            "host=0",
            "host=-1",
            "host=x",
            "=5",
            "https://h/t=5",
            "h=10001",
        ] {
            let e = parse_host_rate(bad).unwrap_err();
            assert!(e.contains("--token-host-rate"), "{e}");
        }
    }
}

//! Scale benchmark (not a test; nothing here asserts timings). Measures, on the real control
//! plane with the provider emulator:
//! - cold start: N ProviderCredentials created → all Ready (seconds),
//! - the operator's RSS with N resources, before and after adding M unrelated 100 KiB Secrets,
//! - token requests and HTTP 429s for N Reltio credentials due at once (10 req/s limit, a
//!   strict sliding window),
//! - API calls per credential during the cold start, by verb and resource, from the
//!   apiserver's own `apiserver_request_total` (the benchmark's own polling, a LIST of
//!   ProviderCredentials, is left out; the control plane's controllers add a few),
//! - CPU seconds of etcd, the apiserver, the controller manager, the operator and the
//!   benchmark itself (with the emulator) during the cold start: which one is the bottleneck.
//!
//! Run: `cargo bench --features e2e --bench scale` (after `hack/provision.sh`).
//! Sizes: BENCH_CREDENTIALS (default 1000), BENCH_UNRELATED (default 10000), BENCH_RELTIO
//! (default 100). Each ProviderCredential has its own credentials Secret unless
//! BENCH_SHARED_CREDENTIALS=1. BENCH_COMPARE_BIN=<another token-rotator binary> first runs the
//! same cold start through that build and prints this build's figures as ratios to it, from one
//! run; `hack/bench-compare.sh <git ref>` builds a ref and does this. BENCH_OPERATOR_ARGS adds
//! flags to the operator's command line (e.g. `--concurrency 64`).
//!
//! Cross-namespace delivery (spec.delivery): BENCH_DELIVERING (default 200) credentials, each
//! delivering to BENCH_COPY_NAMESPACES (default 5) namespaces that consent; the same
//! credentials without spec.delivery are the baseline, run by the same cluster-wide operator
//! build: memory and API calls per copy at the cold start and per rotation.
//! BENCH_ONLY_DELIVERY=1 runs this part alone.
//! Tenant actions: API calls per annotation and per data change of a credentials Secret that
//! BENCH_TENANT_RESOURCES (default 300) resources name; BENCH_ONLY_TENANT=1 runs this alone.
//! A hostile namespace of maximal objects beside a victim's (scale/hostile.rs): peak RSS
//! against the chart's limit; BENCH_ONLY_HOSTILE=1 runs this alone (with BENCH_COMPARE_BIN,
//! side by side with that build).
//! Secretless: BENCH_SERVICE_ACCOUNTS (default 1000) credentials authenticating as
//! ServiceAccounts (scale/service_accounts.rs); BENCH_ONLY_SERVICE_ACCOUNTS=1 runs this alone.

#[path = "scale/hostile.rs"]
mod hostile;
#[path = "scale/service_accounts.rs"]
mod service_accounts;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Options, Provider, fixtures};
use token_rotator::api::{ProviderCredential, TokenDeliveryGrant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secret(name: &str, labels: BTreeMap<String, String>, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses, may hold spaces): fields 3.. of proc(5).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// CPU seconds of each control-plane component, the operator and this process (its polling
/// and the provider emulator), to show where a cold start spends its time.
fn cpu_snapshot(cp: &testkit::ControlPlane, operator: u32) -> Vec<(String, f64)> {
    let mut cpu: Vec<(String, f64)> = cp
        .pids()
        .into_iter()
        .map(|(name, pid)| (name.to_string(), cpu_seconds(&pid.to_string())))
        .collect();
    cpu.push(("token-rotator".into(), cpu_seconds(&operator.to_string())));
    cpu.push(("benchmark + emulator".into(), cpu_seconds("self")));
    cpu
}

async fn create_all<T, F>(count: usize, make: F) -> Result<()>
where
    F: Fn(usize) -> futures::future::BoxFuture<'static, Result<T>>,
{
    stream::iter(0..count)
        .map(make)
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// How many resources have condition `type_` True.
async fn true_count(api: &Api<ProviderCredential>, type_: &str) -> Result<usize> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|pc| {
            pc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == "True")
            })
        })
        .count())
}

/// `apiserver_request_total` summed by (verb, resource/subresource), with the status code
/// after the resource for calls that did not succeed.
async fn apiserver_requests(client: &kube::Client) -> Result<BTreeMap<(String, String), f64>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split(",")
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        // Non-resource URLs (discovery, /openapi) are not per-credential work.
        if resource.is_empty() || resource.starts_with('/') {
            continue;
        }
        // Refused calls (409 conflicts, 404s) are counted apart: they tell a wasted call from
        // a needed one.
        let code = label("code");
        if !code.starts_with('2') {
            resource = format!("{resource} ({code})");
        }
        *out.entry((label("verb"), resource)).or_default() += value.trim().parse::<f64>()?;
    }
    Ok(out)
}

async fn wait_all_ready(
    api: &Api<ProviderCredential>,
    n: usize,
    started: Instant,
) -> Result<Duration> {
    wait_all_true(api, "Ready", n, started).await
}

async fn wait_all_true(
    api: &Api<ProviderCredential>,
    type_: &str,
    n: usize,
    started: Instant,
) -> Result<Duration> {
    loop {
        if true_count(api, type_).await? >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("not all {type_} after 15 minutes");
        }
        // Each poll lists every ProviderCredential: at 10,000 that is tens of MB for the
        // apiserver to send, so large runs poll less often (the figure is then up to 2 s late).
        let poll = if n > 2000 { 2000 } else { 250 };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    }
}

/// `bin run` with `scope` (which resources it watches) and BENCH_OPERATOR_ARGS (e.g.
/// `--concurrency 64`: how a setting moves the figures), against the control plane as admin.
fn start_operator(
    cp: &testkit::ControlPlane,
    bin: &str,
    scope: &[&str],
) -> Result<tokio::process::Child> {
    tokio::process::Command::new(bin)
        .arg("run")
        .args(scope)
        .args([
            "--allow-http",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(
            std::env::var("BENCH_OPERATOR_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", cp.kubeconfig_path())
        // As the chart runs it: the key of the inputs digests on targets in its namespace.
        .env("POD_NAMESPACE", "default")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("start the operator")
}

/// What one cold start measured.
struct ColdStart {
    ready: Duration,
    rss_kib: u64,
    calls: BTreeMap<(String, String), f64>,
    /// CPU seconds by process until all were Ready.
    cpu: Vec<(String, f64)>,
}

impl ColdStart {
    fn calls_total(&self) -> f64 {
        self.calls.values().sum()
    }
}

/// A fresh namespace with `n` Rently ProviderCredentials (each with its own credentials
/// Secret unless `shared_credentials`), then `bin` started on it: seconds until all are Ready,
/// RSS, and API calls by verb and resource. The operator is left running (returned).
async fn cold_start(
    cp: &testkit::ControlPlane,
    emu: &Emulator,
    bin: &str,
    n: usize,
    shared_credentials: bool,
) -> Result<(ColdStart, String, tokio::process::Child)> {
    let client = cp.client();
    let ns = cp.new_namespace("bench").await?.keep();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    let creds_name = |i: usize| {
        if shared_credentials {
            "rently-creds".to_string()
        } else {
            format!("rently-creds-{i}")
        }
    };
    let label = BTreeMap::from([(
        "tokenrotator.dev/credentials".to_string(),
        "true".to_string(),
    )]);
    let creds = BTreeMap::from([
        (
            "client_id".to_string(),
            fixtures::RENTLY_CLIENT_ID.as_bytes().to_vec(),
        ),
        (
            "client_secret".to_string(),
            fixtures::RENTLY_CLIENT_SECRET.as_bytes().to_vec(),
        ),
    ]);
    let distinct = if shared_credentials { 1 } else { n };
    create_all(distinct, |i| {
        let secrets = secrets.clone();
        let s = secret(&creds_name(i), label.clone(), creds.clone());
        Box::pin(async move {
            secrets.create(&PostParams::default(), &s).await?;
            Ok(())
        })
    })
    .await?;
    let url = emu.token_url(Provider::Rently);
    eprintln!("creating {n} ProviderCredentials ({distinct} credentials Secrets)");
    create_all(n, |i| {
        let pcs = pcs.clone();
        let url = url.clone();
        let creds = creds_name(i);
        Box::pin(async move {
            let spec = serde_saphyr::from_str(&format!(
                "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: {creds}}}}}\ntarget: {{secretName: token-{i}}}\n"
            ))?;
            pcs.create(&PostParams::default(), &ProviderCredential::new(&format!("pc-{i}"), spec)).await?;
            Ok(())
        })
    })
    .await?;

    let calls_before = apiserver_requests(&client).await?;
    let op = start_operator(cp, bin, &["--namespace", &ns])?;
    let pid = op.id().context("operator pid")?;
    let cpu_before = cpu_snapshot(cp, pid);
    let started = Instant::now();
    let ready = wait_all_ready(&pcs, n, started).await?;
    let cpu = cpu_snapshot(cp, pid)
        .into_iter()
        .zip(cpu_before)
        .map(|((name, after), (_, before))| (name, after - before))
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls_after = apiserver_requests(&client).await?;
    let calls = calls_after
        .iter()
        .filter_map(|((verb, resource), after)| {
            let delta = after
                - calls_before
                    .get(&(verb.clone(), resource.clone()))
                    .unwrap_or(&0.0);
            // The benchmark polls with LIST; Leases are the control plane's own.
            let ours = (verb == "LIST" && resource == "providercredentials")
                || resource.starts_with("leases");
            (delta >= 1.0 && !ours).then(|| ((verb.clone(), resource.clone()), delta))
        })
        .collect();
    let figures = ColdStart {
        ready,
        rss_kib: rss_kib(pid),
        calls,
        cpu,
    };
    Ok((figures, ns, op))
}

fn print_cold_start(label: &str, n: usize, f: &ColdStart) {
    println!(
        "{label}: {n} ProviderCredentials Ready in {:.1} s; RSS {:.1} MiB; API calls per credential {:.2}:",
        f.ready.as_secs_f64(),
        f.rss_kib as f64 / 1024.0,
        f.calls_total() / n as f64
    );
    for ((verb, resource), delta) in &f.calls {
        println!(
            "  {verb:>6} {resource:<34} {delta:>8}  {:>6.2}",
            delta / n as f64
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wall = f.ready.as_secs_f64();
    println!(
        "  CPU until all Ready ({cores} cores, {:.1} CPU-seconds available):",
        wall * cores as f64
    );
    for (process, seconds) in &f.cpu {
        println!(
            "    {process:<24} {seconds:>7.1} s  {:>5.0}% of one core",
            100.0 * seconds / wall.max(0.001)
        );
    }
}

/// API calls by (verb, resource) between two readings of the apiserver's metrics, leaving out
/// the benchmark's own (its polling LIST and refresh PATCHes of ProviderCredentials, writes of
/// its fixtures) and the control plane's Leases.
fn calls_between(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    ignore: &[(&str, &str)],
) -> BTreeMap<(String, String), f64> {
    after
        .iter()
        .filter_map(|((verb, resource), after)| {
            let delta = after
                - before
                    .get(&(verb.clone(), resource.clone()))
                    .unwrap_or(&0.0);
            let ours = resource.starts_with("leases")
                || ignore.iter().any(|(v, r)| v == verb && r == resource);
            (delta >= 1.0 && !ours).then(|| ((verb.clone(), resource.clone()), delta))
        })
        .collect()
}

/// What one cluster-wide operator run over delivering (or baseline) credentials measured.
struct DeliveryRun {
    settled: Duration,
    rss_kib: u64,
    start_calls: BTreeMap<(String, String), f64>,
    rotation_calls: BTreeMap<(String, String), f64>,
    rotation_issued: u64,
}

/// `n` Rently credentials in a fresh namespace, each delivering to every namespace of
/// `destinations` (consenting through TokenDeliveryGrants of 32 sources each), or to none (the
/// baseline); the operator runs cluster-wide with --cross-namespace-delivery, as its own
/// shard. Measures the cold start until all are Ready (and Delivered), then one rotation of
/// every credential until every copy holds its new token.
async fn delivery_run(
    cp: &testkit::ControlPlane,
    emu: &Emulator,
    bin: &str,
    n: usize,
    destinations: &[String],
) -> Result<DeliveryRun> {
    let client = cp.client();
    let ns = cp.new_namespace("bench-deliver").await?.keep();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    let creds = BTreeMap::from([
        (
            "client_id".to_string(),
            fixtures::RENTLY_CLIENT_ID.as_bytes().to_vec(),
        ),
        (
            "client_secret".to_string(),
            fixtures::RENTLY_CLIENT_SECRET.as_bytes().to_vec(),
        ),
    ]);
    let label = BTreeMap::from([(
        "tokenrotator.dev/credentials".to_string(),
        "true".to_string(),
    )]);
    secrets
        .create(&PostParams::default(), &secret("creds", label, creds))
        .await?;
    for dest in destinations {
        let grants: Api<TokenDeliveryGrant> = Api::namespaced(client.clone(), dest);
        for (chunk, sources) in (0..n).collect::<Vec<_>>().chunks(32).enumerate() {
            let from: Vec<serde_json::Value> = sources
                .iter()
                .map(|i| serde_json::json!({"namespace": ns, "name": format!("pc-{i}")}))
                .collect();
            let grant: TokenDeliveryGrant = serde_json::from_value(serde_json::json!({
                "apiVersion": "tokenrotator.dev/v1alpha1",
                "kind": "TokenDeliveryGrant",
                "metadata": {"name": format!("{ns}-{chunk}")},
                "spec": {"from": from},
            }))?;
            grants.create(&PostParams::default(), &grant).await?;
        }
    }
    let url = emu.token_url(Provider::Rently);
    let delivery = if destinations.is_empty() {
        String::new()
    } else {
        format!("delivery: {{namespaces: [{}]}}\n", destinations.join(", "))
    };
    let shard = format!("bench-delivery={ns}");
    create_all(n, |i| {
        let pcs = pcs.clone();
        let url = url.clone();
        let delivery = delivery.clone();
        let ns = ns.clone();
        Box::pin(async move {
            let spec = serde_saphyr::from_str(&format!(
                "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token-{i}}}\n{delivery}"
            ))?;
            let mut pc = ProviderCredential::new(&format!("pc-{i}"), spec);
            pc.metadata.labels = Some(BTreeMap::from([("bench-delivery".to_string(), ns)]));
            pcs.create(&PostParams::default(), &pc).await?;
            Ok(())
        })
    })
    .await?;

    let calls_before = apiserver_requests(&client).await?;
    let mut op = start_operator(
        cp,
        bin,
        &["--selector", &shard, "--cross-namespace-delivery"],
    )?;
    let pid = op.id().context("operator pid")?;
    let started = Instant::now();
    let mut settled = wait_all_ready(&pcs, n, started).await?;
    if !destinations.is_empty() {
        settled = wait_all_true(&pcs, "Delivered", n, started).await?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_kib = rss_kib(pid);
    let calls_after = apiserver_requests(&client).await?;
    let start_calls = calls_between(
        &calls_before,
        &calls_after,
        &[("LIST", "providercredentials")],
    );

    // One rotation of every credential.
    let issued_before = emu.control().counters(Provider::Rently).issued;
    let calls_before = apiserver_requests(&client).await?;
    let asked = jiff::Timestamp::now();
    let rotation_started = Instant::now();
    create_all(n, |i| {
        let pcs = pcs.clone();
        let at = asked.to_string();
        Box::pin(async move {
            let patch =
                serde_json::json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": at}}});
            pcs.patch(
                &format!("pc-{i}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    loop {
        let done = pcs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|pc| {
                pc.status.as_ref().is_some_and(|s| {
                    s.access_token
                        .as_ref()
                        .is_some_and(|t| t.issued_at.0.as_second() >= asked.as_second())
                        && s.deliveries.iter().all(|d| {
                            d.delivered_at
                                .as_ref()
                                .is_some_and(|t| t.0.as_second() >= asked.as_second())
                        })
                })
            })
            .count();
        if done >= n {
            break;
        }
        if rotation_started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the rotation did not finish in 10 minutes ({done} of {n})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls_after = apiserver_requests(&client).await?;
    let rotation_calls = calls_between(
        &calls_before,
        &calls_after,
        &[
            ("LIST", "providercredentials"),
            ("PATCH", "providercredentials"),
        ],
    );
    let rotation_issued = emu.control().counters(Provider::Rently).issued - issued_before;
    op.kill().await?;
    Ok(DeliveryRun {
        settled,
        rss_kib,
        start_calls,
        rotation_calls,
        rotation_issued,
    })
}

/// The delivery part: the baseline and the delivering run, and what a copy costs.
async fn delivery_bench(cp: &testkit::ControlPlane, emu: &Emulator, bin: &str) -> Result<()> {
    let n = env_usize("BENCH_DELIVERING", 200);
    let k = env_usize("BENCH_COPY_NAMESPACES", 5);
    if n == 0 || k == 0 {
        return Ok(());
    }
    let mut destinations = Vec::with_capacity(k);
    for _ in 0..k {
        destinations.push(cp.new_namespace("bench-dest").await?.keep());
    }
    eprintln!("delivery: {n} credentials without spec.delivery (baseline)");
    let base = delivery_run(cp, emu, bin, n, &[]).await?;
    eprintln!("delivery: {n} credentials delivering to {k} namespaces each");
    let with = delivery_run(cp, emu, bin, n, &destinations).await?;
    let copies = (n * k) as f64;
    let total = |c: &BTreeMap<(String, String), f64>| c.values().sum::<f64>();
    println!(
        "delivery: {n} credentials × {k} namespaces = {} copies (cluster-wide operator, --cross-namespace-delivery)",
        n * k
    );
    println!(
        "  cold start: baseline Ready in {:.1} s, RSS {:.1} MiB; with copies Ready and Delivered in {:.1} s, RSS {:.1} MiB",
        base.settled.as_secs_f64(),
        base.rss_kib as f64 / 1024.0,
        with.settled.as_secs_f64(),
        with.rss_kib as f64 / 1024.0,
    );
    println!(
        "  memory per copy: {:.2} KiB (RSS difference / copies)",
        (with.rss_kib as f64 - base.rss_kib as f64) / copies
    );
    let per_copy = |label: &str,
                    base: &BTreeMap<(String, String), f64>,
                    with: &BTreeMap<(String, String), f64>| {
        println!(
            "  {label}: API calls {:.0} baseline, {:.0} with copies: {:.2} per copy",
            total(base),
            total(with),
            (total(with) - total(base)) / copies
        );
        let keys: std::collections::BTreeSet<&(String, String)> =
            base.keys().chain(with.keys()).collect();
        for key in keys {
            let (b, w) = (
                base.get(key).copied().unwrap_or(0.0),
                with.get(key).copied().unwrap_or(0.0),
            );
            if (w - b).abs() >= 1.0 {
                println!(
                    "    {:>6} {:<28} {:>+8.0}  {:>+6.2} per copy",
                    key.0,
                    key.1,
                    w - b,
                    (w - b) / copies
                );
            }
        }
    };
    per_copy("cold start", &base.start_calls, &with.start_calls);
    per_copy(
        "one rotation of each",
        &base.rotation_calls,
        &with.rotation_calls,
    );
    println!(
        "  token requests for the rotation: {} baseline, {} with copies (one per credential either way)",
        base.rotation_issued, with.rotation_issued
    );
    Ok(())
}

/// API calls per tenant action on a credentials Secret that BENCH_TENANT_RESOURCES (default
/// 300) resources name, half suspended with no target yet, half with a target that is someone
/// else's Secret (TargetConflict): an annotation of no concern to the operator, then a change
/// of its data. Counted by the apiserver (all clients; the control plane's own controllers
/// add a few), 10 s after each action.
async fn tenant_actions(cp: &testkit::ControlPlane, emu: &Emulator, bin: &str) -> Result<()> {
    let n = env_usize("BENCH_TENANT_RESOURCES", 300);
    let client = cp.client();
    let ns = cp.new_namespace("bench-tenant").await?.keep();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    let label = BTreeMap::from([(
        "tokenrotator.dev/credentials".to_string(),
        "true".to_string(),
    )]);
    let creds = BTreeMap::from([
        ("client_id".to_string(), b"id".to_vec()),
        ("client_secret".to_string(), b"secret".to_vec()),
    ]);
    secrets
        .create(&PostParams::default(), &secret("shared", label, creds))
        .await?;
    let url = emu.token_url(Provider::Rently);
    create_all(n, |i| {
        let (pcs, secrets, url) = (pcs.clone(), secrets.clone(), url.clone());
        Box::pin(async move {
            let suspended = i % 2 == 0;
            if !suspended {
                let theirs = secret(&format!("target-{i}"), BTreeMap::new(), BTreeMap::new());
                secrets.create(&PostParams::default(), &theirs).await?;
            }
            let spec = serde_saphyr::from_str(&format!(
                "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: shared}}}}\ntarget: {{secretName: target-{i}}}\nsuspend: {suspended}\n"
            ))?;
            pcs.create(&PostParams::default(), &ProviderCredential::new(&format!("pc-{i}"), spec))
                .await?;
            Ok(())
        })
    })
    .await?;
    let mut op = start_operator(cp, bin, &["--namespace", &ns])?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let action = |what: &'static str, patch: serde_json::Value| {
        let (client, secrets) = (client.clone(), secrets.clone());
        async move {
            let before = apiserver_requests(&client).await?;
            secrets
                .patch("shared", &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            let after = apiserver_requests(&client).await?;
            let delta = |pick: &dyn Fn(&(String, String)) -> bool| -> f64 {
                after
                    .iter()
                    .filter(|(k, _)| pick(k))
                    .map(|(k, v)| v - before.get(k).copied().unwrap_or(0.0))
                    .sum()
            };
            let all = delta(&|(_, r)| !r.starts_with("leases"));
            let gets = delta(&|(v, r)| v == "GET" && r.starts_with("secrets"));
            println!(
                "tenant action on credentials {n} resources use, {what}: {all:.0} API calls ({gets:.0} GET Secret)"
            );
            anyhow::Ok(())
        }
    };
    // The same window without any action: TargetConflict rechecks (backing off) go on.
    action(
        "nothing (a quiet window, for comparison)",
        serde_json::json!({}),
    )
    .await?;
    action(
        "an unrelated annotation",
        serde_json::json!({"metadata": {"annotations": {"example.com/audit": "1"}}}),
    )
    .await?;
    action(
        "a data change",
        serde_json::json!({"stringData": {"client_secret": "changed"}}),
    )
    .await?;
    op.kill().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    token_rotator::install_crypto_provider();
    let credentials = env_usize("BENCH_CREDENTIALS", 1000);
    let unrelated = env_usize("BENCH_UNRELATED", 10_000);
    let reltio = env_usize("BENCH_RELTIO", 100);
    let shared = std::env::var("BENCH_SHARED_CREDENTIALS").is_ok_and(|v| v == "1");
    let compare = std::env::var("BENCH_COMPARE_BIN")
        .ok()
        .filter(|v| !v.is_empty());
    let cp = testkit::shared().await?;
    cp.apply_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let client = cp.client();
    let emu = Emulator::start(Options::default()).await?;
    emu.control().set_multi_token(true);
    let bin = env!("CARGO_BIN_EXE_token-rotator");
    if std::env::var("BENCH_ONLY_DELIVERY").is_ok_and(|v| v == "1") {
        return delivery_bench(cp, &emu, bin).await;
    }
    if std::env::var("BENCH_ONLY_TENANT").is_ok_and(|v| v == "1") {
        return tenant_actions(cp, &emu, bin).await;
    }
    if std::env::var("BENCH_ONLY_SERVICE_ACCOUNTS").is_ok_and(|v| v == "1") {
        return service_accounts::run(cp, bin).await;
    }
    if std::env::var("BENCH_ONLY_HOSTILE").is_ok_and(|v| v == "1") {
        return hostile::run(cp, &emu, bin, compare.as_deref()).await;
    }

    // Side by side: the other build first, then this one, on the same control plane and
    // emulator in the same run, each on a fresh namespace; the other is stopped before.
    if let Some(other) = &compare {
        let (theirs, _, mut their_op) = cold_start(cp, &emu, other, credentials, shared).await?;
        their_op.kill().await?;
        print_cold_start(&format!("compared build ({other})"), credentials, &theirs);
        let (ours, _, mut our_op) = cold_start(cp, &emu, bin, credentials, shared).await?;
        our_op.kill().await?;
        print_cold_start("this build", credentials, &ours);
        println!(
            "this build / compared: Ready time {:.2}, RSS {:.2}, API calls {:.2}",
            ours.ready.as_secs_f64() / theirs.ready.as_secs_f64(),
            ours.rss_kib as f64 / theirs.rss_kib.max(1) as f64,
            ours.calls_total() / theirs.calls_total().max(1.0)
        );
    }

    let issued_before = emu.control().counters(Provider::Rently).issued;
    let (cold, ns, mut op) = cold_start(cp, &emu, bin, credentials, shared).await?;
    let pid = op.id().context("operator pid")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    let issued = emu.control().counters(Provider::Rently).issued - issued_before;
    let requests_after_start = emu.control().counters(Provider::Rently).requests;
    print_cold_start("cold start", credentials, &cold);
    println!("tokens issued for them: {issued}");
    // What stays once the start-up's one-minute tables (each resource's request budget) are
    // swept: BENCH_SETTLE_SECONDS later (the sweep runs every minute).
    let settle = env_usize("BENCH_SETTLE_SECONDS", 0);
    if settle > 0 {
        tokio::time::sleep(Duration::from_secs(settle as u64)).await;
        println!(
            "operator RSS {settle} s after all were Ready: {:.1} MiB",
            rss_kib(pid) as f64 / 1024.0
        );
    }
    let rss_before = cold.rss_kib;
    let label = BTreeMap::from([(
        "tokenrotator.dev/credentials".to_string(),
        "true".to_string(),
    )]);

    eprintln!("creating {unrelated} unrelated 100 KiB Secrets");
    let blob = vec![b'x'; 100 * 1024];
    create_all(unrelated, |i| {
        let secrets = secrets.clone();
        let blob = blob.clone();
        Box::pin(async move {
            let data = BTreeMap::from([("blob".to_string(), blob)]);
            secrets
                .create(
                    &PostParams::default(),
                    &secret(&format!("unrelated-{i}"), BTreeMap::new(), data),
                )
                .await?;
            Ok(())
        })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_after = rss_kib(pid);
    println!(
        "operator RSS after {unrelated} unrelated 100 KiB Secrets: {:.1} MiB (delta {:+.1} MiB)",
        rss_after as f64 / 1024.0,
        (rss_after as f64 - rss_before as f64) / 1024.0
    );
    let between = emu.control().counters(Provider::Rently).requests - requests_after_start;
    println!(
        "token requests between rotations (while adding Secrets): {}",
        between
    );

    // Reltio: many credentials due at once against a 10 req/s limit, counted strictly: every
    // request in any one-second window counts, rejected ones too.
    emu.control().set_rate_limit(Provider::Reltio, Some(10));
    emu.control().set_strict_rate_limit(Provider::Reltio, true);
    let reltio_creds = BTreeMap::from([
        (
            "client_id".to_string(),
            fixtures::RELTIO_CLIENT_ID.as_bytes().to_vec(),
        ),
        (
            "client_secret".to_string(),
            fixtures::RELTIO_CLIENT_SECRET.as_bytes().to_vec(),
        ),
        (
            "username".to_string(),
            fixtures::RELTIO_USERNAME.as_bytes().to_vec(),
        ),
        (
            "password".to_string(),
            fixtures::RELTIO_PASSWORD.as_bytes().to_vec(),
        ),
    ]);
    secrets
        .create(
            &PostParams::default(),
            &secret("reltio-creds", label, reltio_creds),
        )
        .await?;
    let url = emu.token_url(Provider::Reltio);
    let started = Instant::now();
    create_all(reltio, |i| {
        let pcs = pcs.clone();
        let url = url.clone();
        Box::pin(async move {
            let spec = serde_saphyr::from_str(&format!(
                "preset: reltio\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: reltio-creds}}}}\ntarget: {{secretName: reltio-token-{i}}}\n"
            ))?;
            pcs.create(&PostParams::default(), &ProviderCredential::new(&format!("reltio-{i}"), spec)).await?;
            Ok(())
        })
    })
    .await?;
    let took = wait_all_ready(&pcs, credentials + reltio, started).await?;
    let c = emu.control().counters(Provider::Reltio);
    println!(
        "{reltio} Reltio credentials due at once: all Ready in {:.1} s, {} requests ({:.1}/s), {} × HTTP 429",
        took.as_secs_f64(),
        c.requests,
        c.requests as f64 / took.as_secs_f64(),
        c.rate_limited
    );
    op.kill().await?;
    tenant_actions(cp, &emu, bin).await?;
    delivery_bench(cp, &emu, bin).await
}

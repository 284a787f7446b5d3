//! Noisy-neighbour benchmark (not a test; nothing here asserts timings). On the real control
//! plane with the provider emulator, a victim namespace beside a hostile one, one
//! cluster-wide operator:
//! - victim: BENCH_VICTIMS (default 20) Rently ProviderCredentials against a fast endpoint;
//! - hostile: BENCH_HOSTILE (default 300) resources, half against an endpoint that answers
//!   after BENCH_SLOW_SECONDS (default 25), half against the victim's own endpoint with
//!   `requestsPerSecond: 1` (a request-rate hint), plus churn: a hostile resource created and
//!   one deleted every 200 ms while the victim is measured. The victim is measured once the
//!   hostile namespace has its slow requests in flight and its first burst is handled.
//!
//! For each build it reports, without and then with the hostile namespace: the victim's time
//! to rotate (all its resources asked for a new token at once → all hold a new one) and the
//! time `token-rotator refresh --wait` takes for one victim resource; and the ratio with/without.
//! BENCH_COMPARE_BIN=<another token-rotator binary> runs the same through that build first, in
//! the same run (each build on fresh namespaces; the other build's operator stopped before).
//!
//! Run: `cargo bench --features e2e --bench tenancy` (after `hack/provision.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Options, Provider, fixtures};
use token_rotator::api::ProviderCredential;

const SHARD: &str = "bench-tenancy";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A namespace with an opted-in Rently credentials Secret named `creds`.
async fn tenant(cp: &testkit::ControlPlane, prefix: &str) -> Result<String> {
    let ns = cp.new_namespace(prefix).await?.keep();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            labels: Some(BTreeMap::from([(
                "tokenrotator.dev/credentials".to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            (
                "client_id".to_string(),
                fixtures::RENTLY_CLIENT_ID.to_string(),
            ),
            (
                "client_secret".to_string(),
                fixtures::RENTLY_CLIENT_SECRET.to_string(),
            ),
        ])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(cp.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(ns)
}

fn resource(name: &str, shard: &str, url: &str, extra: &str) -> Result<ProviderCredential> {
    let spec = serde_saphyr::from_str(&format!(
        "preset: rently\ntokenEndpoint: {{url: \"{url}\"{extra}}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: {name}-token}}\n"
    ))?;
    let mut pc = ProviderCredential::new(name, spec);
    pc.metadata.labels = Some(BTreeMap::from([(SHARD.to_string(), shard.to_string())]));
    Ok(pc)
}

async fn create_resources(
    api: &Api<ProviderCredential>,
    pcs: Vec<ProviderCredential>,
) -> Result<()> {
    stream::iter(pcs)
        .map(|pc| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pc).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn fingerprint(pc: &ProviderCredential) -> Option<String> {
    pc.status
        .as_ref()?
        .access_token
        .as_ref()
        .map(|t| t.fingerprint.clone())
}

/// The fingerprint of every resource that has a token.
async fn fingerprints(api: &Api<ProviderCredential>) -> Result<BTreeMap<String, String>> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|pc| Some((pc.metadata.name.clone()?, fingerprint(pc)?)))
        .collect())
}

async fn wait_tokens(api: &Api<ProviderCredential>, n: usize, bound: Duration) -> Result<()> {
    let started = Instant::now();
    while fingerprints(api).await?.len() < n {
        if started.elapsed() > bound {
            bail!("not all {n} resources hold a token after {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// How long the victim is waited for (BENCH_VICTIM_BOUND seconds, default 180): a build that
/// lets the hostile namespace starve it is reported as "not within" that, not waited out.
fn victim_bound() -> Duration {
    Duration::from_secs(env_usize("BENCH_VICTIM_BOUND", 180) as u64)
}

/// Asks every resource for a new token at once; the time until each holds a new one (`None`:
/// not within [`victim_bound`]).
async fn rotate_all(api: &Api<ProviderCredential>, round: &str) -> Result<Option<Duration>> {
    let before = fingerprints(api).await?;
    let started = Instant::now();
    stream::iter(before.keys().cloned())
        .map(|name| {
            let api = api.clone();
            let patch = serde_json::json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": round}}});
            async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    loop {
        let now = fingerprints(api).await?;
        if before
            .iter()
            .all(|(name, f)| now.get(name).is_some_and(|n| n != f))
        {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > victim_bound() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `token-rotator refresh --wait` for one resource, timed (`None`: not within
/// [`victim_bound`]).
async fn refresh_wait(
    cp: &testkit::ControlPlane,
    bin: &str,
    ns: &str,
    name: &str,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let timeout = format!("{}s", victim_bound().as_secs());
    let status = tokio::process::Command::new(bin)
        .args(["refresh", "--namespace", ns, name, "--wait", "--timeout"])
        .arg(&timeout)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    match status.code() {
        Some(0) => Ok(Some(started.elapsed())),
        // Not handled in time.
        Some(2) => Ok(None),
        _ => bail!("refresh --wait failed: {status}"),
    }
}

struct Victim {
    rotate: Option<Duration>,
    refresh_wait: Option<Duration>,
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("> {} s", victim_bound().as_secs()),
        |d| format!("{:.2} s", d.as_secs_f64()),
    )
}

async fn measure_victim(
    cp: &testkit::ControlPlane,
    bin: &str,
    victims: &Api<ProviderCredential>,
    ns: &str,
    round: &str,
) -> Result<Victim> {
    let rotate = rotate_all(victims, round).await?;
    let refresh_wait = refresh_wait(cp, bin, ns, "victim-0").await?;
    Ok(Victim {
        rotate,
        refresh_wait,
    })
}

/// One build: the victim alone, then beside the hostile namespace.
async fn run_build(
    cp: &'static testkit::ControlPlane,
    bin: &str,
    label: &str,
    fast: &Emulator,
    slow: &Emulator,
) -> Result<(Victim, Victim)> {
    let client = cp.client();
    let shard = format!("{}-{}", label.replace(' ', "-"), std::process::id());
    let victim_ns = tenant(cp, "victim").await?;
    let hostile_ns = tenant(cp, "hostile").await?;
    let victims: Api<ProviderCredential> = Api::namespaced(client.clone(), &victim_ns);
    let hostile: Api<ProviderCredential> = Api::namespaced(client.clone(), &hostile_ns);
    let n_victims = env_usize("BENCH_VICTIMS", 20);
    let n_hostile = env_usize("BENCH_HOSTILE", 300);
    let fast_url = fast.token_url(Provider::Rently);
    let slow_url = slow.token_url(Provider::Rently);
    let pcs = (0..n_victims)
        .map(|i| resource(&format!("victim-{i}"), &shard, &fast_url, ""))
        .collect::<Result<Vec<_>>>()?;
    create_resources(&victims, pcs).await?;

    let mut op = tokio::process::Command::new(bin)
        .args([
            "run",
            "--selector",
            &format!("{SHARD}={shard}"),
            "--allow-http",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("start the operator")?;
    wait_tokens(&victims, n_victims, Duration::from_secs(300)).await?;
    let alone = measure_victim(cp, bin, &victims, &victim_ns, "alone").await?;
    eprintln!(
        "{label}: victim alone: rotate {}, refresh --wait {}",
        seconds(alone.rotate),
        seconds(alone.refresh_wait)
    );

    // The hostile namespace: slow endpoints, a rate hint on the victim's host, churn.
    let pcs = (0..n_hostile)
        .map(|i| {
            if i % 2 == 0 {
                resource(&format!("slow-{i}"), &shard, &slow_url, "")
            } else {
                resource(
                    &format!("hint-{i}"),
                    &shard,
                    &fast_url,
                    ", requestsPerSecond: 1",
                )
            }
        })
        .collect::<Result<Vec<_>>>()?;
    create_resources(&hostile, pcs).await?;
    // The victim is measured beside a hostile namespace in its steady state: every slow
    // request its namespace may have in flight is sent (the default bound, 16), and its burst of
    // new resources has been handled for a few seconds; churn goes on throughout.
    let started = Instant::now();
    let in_flight = (n_hostile / 2).min(16) as u64;
    while slow.control().counters(Provider::Rently).requests < in_flight {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the hostile namespace did not reach {in_flight} requests in flight");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let churn = tokio::spawn({
        let (hostile, shard, slow_url) = (hostile.clone(), shard.clone(), slow_url.clone());
        async move {
            for i in 0.. {
                let name = format!("churn-{i}");
                if let Ok(pc) = resource(&name, &shard, &slow_url, "") {
                    let _ = hostile.create(&PostParams::default(), &pc).await;
                }
                if i >= 5 {
                    let _ = hostile
                        .delete(&format!("churn-{}", i - 5), &DeleteParams::default())
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let beside = measure_victim(cp, bin, &victims, &victim_ns, "beside").await;
    churn.abort();
    op.kill().await?;
    let beside = beside?;
    eprintln!(
        "{label}: victim beside the hostile namespace: rotate {}, refresh --wait {}",
        seconds(beside.rotate),
        seconds(beside.refresh_wait)
    );
    Ok((alone, beside))
}

fn report(label: &str, (alone, beside): &(Victim, Victim)) {
    let ratio = |with: Option<Duration>, without: Option<Duration>| match (with, without) {
        (Some(with), Some(without)) => {
            format!(
                "{:.2}",
                with.as_secs_f64() / without.as_secs_f64().max(0.001)
            )
        }
        (None, Some(without)) => format!(
            "> {:.0}",
            victim_bound().as_secs_f64() / without.as_secs_f64().max(0.001)
        ),
        _ => "n/a".into(),
    };
    println!(
        "{label}: victim rotate {} alone, {} beside the hostile namespace (ratio {}); refresh --wait {} alone, {} beside (ratio {})",
        seconds(alone.rotate),
        seconds(beside.rotate),
        ratio(beside.rotate, alone.rotate),
        seconds(alone.refresh_wait),
        seconds(beside.refresh_wait),
        ratio(beside.refresh_wait, alone.refresh_wait),
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    token_rotator::install_crypto_provider();
    let cp = testkit::shared().await?;
    cp.apply_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let slow_seconds = env_usize("BENCH_SLOW_SECONDS", 25) as u64;
    let bin = env!("CARGO_BIN_EXE_token-rotator");
    let compare = std::env::var("BENCH_COMPARE_BIN")
        .ok()
        .filter(|v| !v.is_empty());
    let mut results = Vec::new();
    for (label, build) in compare
        .iter()
        .map(|b| ("compared build", b.as_str()))
        .chain([("this build", bin)])
    {
        // Fresh emulators per build: counters and the slow endpoint's queue start empty.
        let fast = Emulator::start(Options::default()).await?;
        fast.control().set_multi_token(true);
        let slow = Emulator::start(Options::default()).await?;
        slow.control().set_multi_token(true);
        slow.control()
            .set_latency(Provider::Rently, Duration::from_secs(slow_seconds));
        results.push((label, run_build(cp, build, label, &fast, &slow).await?));
    }
    for (label, result) in &results {
        report(label, result);
    }
    Ok(())
}

//! Scale benchmark (not a test; nothing here asserts timings). Measures, on the real control
//! plane with the provider emulator:
//! - cold start: N ProviderCredentials created → all Ready (seconds),
//! - the operator's RSS with N resources, before and after adding M unrelated 100 KiB Secrets,
//! - token requests and HTTP 429s for N Reltio credentials due at once (10 req/s limit, a
//!   strict sliding window),
//! - API calls per credential during the cold start, by verb and resource, from the
//!   apiserver's own `apiserver_request_total` (the benchmark's own polling, a LIST of
//!   ProviderCredentials, is left out; the control plane's controllers add a few).
//!
//! Run: `cargo bench --features e2e --bench scale` (after `hack/provision.sh`).
//! Sizes: BENCH_CREDENTIALS (default 1000), BENCH_UNRELATED (default 10000), BENCH_RELTIO (default 100).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use provider_emulator::{Emulator, Options, Provider, fixtures};
use token_rotator::api::ProviderCredential;

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

async fn ready_count(api: &Api<ProviderCredential>) -> Result<usize> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|pc| {
            pc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count())
}

/// `apiserver_request_total` summed by (verb, resource/subresource).
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
        *out.entry((label("verb"), resource)).or_default() += value.trim().parse::<f64>()?;
    }
    Ok(out)
}

fn print_api_calls(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    credentials: usize,
) {
    println!("API calls during the cold start (apiserver_request_total), per credential:");
    let mut total = 0.0;
    for ((verb, resource), n) in after {
        let delta = n - before
            .get(&(verb.clone(), resource.clone()))
            .unwrap_or(&0.0);
        // The benchmark polls with LIST; leases and tokens are the control plane's own.
        if delta < 1.0
            || (verb == "LIST" && resource == "providercredentials")
            || resource == "leases"
        {
            continue;
        }
        total += delta;
        println!(
            "  {verb:>6} {resource:<28} {delta:>8}  {:>6.2}",
            delta / credentials as f64
        );
    }
    println!(
        "  {:>6} {:<28} {total:>8}  {:>6.2}",
        "all",
        "",
        total / credentials as f64
    );
}

async fn wait_all_ready(
    api: &Api<ProviderCredential>,
    n: usize,
    started: Instant,
) -> Result<Duration> {
    loop {
        if ready_count(api).await? >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("not all Ready after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    token_rotator::install_crypto_provider();
    let credentials = env_usize("BENCH_CREDENTIALS", 1000);
    let unrelated = env_usize("BENCH_UNRELATED", 10_000);
    let reltio = env_usize("BENCH_RELTIO", 100);
    let cp = testkit::shared().await?;
    cp.apply_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let ns = cp.new_namespace("bench").await?.keep();
    let client = cp.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    let emu = Emulator::start(Options::default()).await?;
    emu.control().set_multi_token(true);
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
    secrets
        .create(
            &PostParams::default(),
            &secret("rently-creds", label.clone(), creds),
        )
        .await?;
    let url = emu.token_url(Provider::Rently);
    eprintln!("creating {credentials} ProviderCredentials");
    create_all(credentials, |i| {
        let pcs = pcs.clone();
        let url = url.clone();
        Box::pin(async move {
            let spec = serde_saphyr::from_str(&format!(
                "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: rently-creds}}}}\ntarget: {{secretName: token-{i}}}\n"
            ))?;
            pcs.create(&PostParams::default(), &ProviderCredential::new(&format!("pc-{i}"), spec)).await?;
            Ok(())
        })
    })
    .await?;

    let calls_before = apiserver_requests(&client).await?;
    let bin = env!("CARGO_BIN_EXE_token-rotator");
    let mut op = tokio::process::Command::new(bin)
        .args([
            "run",
            "--namespace",
            &ns,
            "--allow-http",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("start the operator")?;
    let pid = op.id().context("operator pid")?;
    let started = Instant::now();
    let cold = wait_all_ready(&pcs, credentials, started).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls_after = apiserver_requests(&client).await?;
    let rss_before = rss_kib(pid);
    let issued = emu.control().counters(Provider::Rently).issued;
    println!(
        "cold start: {credentials} ProviderCredentials Ready in {:.1} s ({issued} tokens issued)",
        cold.as_secs_f64()
    );
    println!(
        "operator RSS with {credentials} resources: {:.1} MiB",
        rss_before as f64 / 1024.0
    );
    print_api_calls(&calls_before, &calls_after, credentials);

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
    let between = emu.control().counters(Provider::Rently).requests;
    println!(
        "token requests between rotations (while adding Secrets): {}",
        between - issued
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
    Ok(())
}

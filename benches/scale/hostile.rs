//! A hostile namespace of maximal objects beside a victim's: the operator's peak RSS while it
//! takes them in, and again after a restart (the first list is as large as the flood: an
//! operator pushed out of memory once would crash-loop). BENCH_ONLY_HOSTILE=1 runs this alone.
//! Sizes: BENCH_VICTIMS (default 1000) ordinary resources; BENCH_HOSTILE_RESOURCES (default
//! 100) ProviderCredentials near every bound the CRD admits; BENCH_HOSTILE_CREDENTIALS
//! (default 3000) opted-in credentials Secrets just under what is kept (16 KiB);
//! BENCH_HOSTILE_LARGE (default 40) opted-in Secrets of ~1 MiB (listed, never kept).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use provider_emulator::{Emulator, Provider, fixtures};
use token_rotator::api::ProviderCredential;

use super::{create_all, env_usize, rss_kib, secret, start_operator, wait_all_ready};

/// The chart's memory limit (charts/token-rotator/values.yaml).
const CHART_LIMIT_MIB: f64 = 160.0;

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn credentials_label() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "tokenrotator.dev/credentials".to_string(),
        "true".to_string(),
    )])
}

/// A ProviderCredential with its bulkiest fields at their bounds (about 0.6 MB of JSON):
/// suspended, so it costs memory and nothing else.
fn maximal_spec(i: usize) -> serde_json::Value {
    let key = |prefix: &str, j: usize| format!("example.com/{prefix}{i}-{j:0>40}");
    let map = |prefix: &str, entries: usize, value: usize| {
        (0..entries)
            .map(|j| (key(prefix, j), serde_json::json!("v".repeat(value))))
            .collect::<serde_json::Map<_, _>>()
    };
    serde_json::json!({
        "suspend": true,
        "tokenEndpoint": {"url": "https://127.0.0.1:9/token", "caBundle": "c".repeat(65536)},
        "credentials": {"secretRef": {"name": "absent"}},
        "grant": {"extraParameters": map("p", 32, 4096)},
        "target": {
            "secretName": format!("hostile-{i}"),
            "annotations": map("a", 64, 4096),
            "template": map("t", 32, 4096),
        },
    })
}

async fn flood(client: &kube::Client, ns: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), ns);
    let (resources, kept, large) = (
        env_usize("BENCH_HOSTILE_RESOURCES", 100),
        env_usize("BENCH_HOSTILE_CREDENTIALS", 3000),
        env_usize("BENCH_HOSTILE_LARGE", 40),
    );
    eprintln!(
        "hostile: {resources} maximal ProviderCredentials, {kept} credentials Secrets of 16 KiB, {large} of 1 MiB"
    );
    create_all(resources, |i| {
        let pcs = pcs.clone();
        Box::pin(async move {
            let spec = serde_json::from_value(maximal_spec(i))?;
            let pc = ProviderCredential::new(&format!("hostile-{i}"), spec);
            pcs.create(&PostParams::default(), &pc)
                .await
                .context("a maximal ProviderCredential")?;
            Ok(())
        })
    })
    .await?;
    for (count, bytes, prefix) in [
        (kept, 16 * 1024 - 64, "kept"),
        (large, 1000 * 1024, "large"),
    ] {
        create_all(count, |i| {
            let secrets = secrets.clone();
            let data = BTreeMap::from([("client_secret".to_string(), vec![b'x'; bytes])]);
            let s = secret(&format!("{prefix}-{i}"), credentials_label(), data);
            Box::pin(async move {
                secrets.create(&PostParams::default(), &s).await?;
                Ok(())
            })
        })
        .await?;
    }
    Ok(())
}

async fn victims(client: &kube::Client, emu: &Emulator, ns: &str, n: usize) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), ns);
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
            &secret("rently-creds", credentials_label(), creds),
        )
        .await?;
    let url = emu.token_url(Provider::Rently);
    create_all(n, |i| {
        let pcs = pcs.clone();
        let url = url.clone();
        Box::pin(async move {
            let spec = serde_saphyr::from_str(&format!(
                "preset: rently\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: rently-creds}}}}\ntarget: {{secretName: token-{i}}}\n"
            ))?;
            pcs.create(&PostParams::default(), &ProviderCredential::new(&format!("pc-{i}"), spec))
                .await?;
            Ok(())
        })
    })
    .await
}

/// Hostile resources with a Ready condition, and of those the ones not served for the budget.
async fn hostile_reported(pcs: &Api<ProviderCredential>) -> Result<(usize, usize)> {
    let list = pcs.list(&ListParams::default()).await?;
    let ready = |pc: &ProviderCredential| {
        pc.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned())
    };
    let reported: Vec<_> = list.items.iter().filter_map(ready).collect();
    if std::env::var("BENCH_DEBUG").is_ok() {
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for c in &reported {
            *reasons.entry(c.reason.clone()).or_default() += 1;
        }
        eprintln!("hostile reasons: {reasons:?}");
    }
    let over = reported
        .iter()
        .filter(|c| c.message.contains("cache budget"))
        .count();
    Ok((reported.len(), over))
}

async fn clear_statuses(pcs: &Api<ProviderCredential>) -> Result<()> {
    let names: Vec<String> = pcs
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    let cleared = serde_json::json!({"status": null});
    create_all(names.len(), |i| {
        let (pcs, name, cleared) = (pcs.clone(), names[i].clone(), cleared.clone());
        Box::pin(async move {
            pcs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&cleared))
                .await?;
            Ok(())
        })
    })
    .await
}

struct Figures {
    peak_kib: u64,
    settled_kib: u64,
    restart_peak_kib: u64,
    reported: usize,
    over_budget: usize,
}

async fn settle(pid: u32) {
    // A benchmark, not a test: the peak is read once the watches had time to list everything
    // (their pages come within seconds; RSS then no longer grows).
    let mut last = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = peak_rss_kib(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

async fn measure(
    cp: &testkit::ControlPlane,
    bin: &str,
    victim: &str,
    hostile: &str,
    n: usize,
) -> Result<Figures> {
    let client = cp.client();
    let victim_pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), victim);
    let hostile_pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), hostile);
    let scope = ["--namespace", victim, "--namespace", hostile];
    // Each build starts from resources without a status: what it reports is its own.
    clear_statuses(&victim_pcs).await?;
    clear_statuses(&hostile_pcs).await?;
    let mut op = start_operator(cp, bin, &scope)?;
    let pid = op.id().context("operator pid")?;
    wait_all_ready(&victim_pcs, n, Instant::now()).await?;
    let started = Instant::now();
    let expected = env_usize("BENCH_HOSTILE_RESOURCES", 100);
    while hostile_reported(&hostile_pcs).await?.0 < expected {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("hostile resources not all reported after 10 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    settle(pid).await;
    let (peak_kib, settled_kib) = (peak_rss_kib(pid), rss_kib(pid));
    let (reported, over_budget) = hostile_reported(&hostile_pcs).await?;
    op.kill().await?;

    let mut op = start_operator(cp, bin, &scope)?;
    let pid = op.id().context("operator pid")?;
    settle(pid).await;
    let restart_peak_kib = peak_rss_kib(pid);
    op.kill().await?;
    Ok(Figures {
        peak_kib,
        settled_kib,
        restart_peak_kib,
        reported,
        over_budget,
    })
}

fn print(label: &str, f: &Figures) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "hostile namespace, {label}: peak RSS {:.1} MiB, {:.1} MiB once settled, peak {:.1} MiB after a restart (chart limit {CHART_LIMIT_MIB} MiB); {} hostile resources reported, {} of them not served for the namespace's budget",
        mib(f.peak_kib),
        mib(f.settled_kib),
        mib(f.restart_peak_kib),
        f.reported,
        f.over_budget,
    );
}

pub async fn run(
    cp: &testkit::ControlPlane,
    emu: &Emulator,
    bin: &str,
    other: Option<&str>,
) -> Result<()> {
    let client = cp.client();
    let n = env_usize("BENCH_VICTIMS", 1000);
    let victim = cp.new_namespace("bench-victim").await?.keep();
    let hostile = cp.new_namespace("bench-hostile").await?.keep();
    victims(&client, emu, &victim, n).await?;
    flood(&client, &hostile).await?;
    if let Some(other) = other {
        let theirs = measure(cp, other, &victim, &hostile, n).await?;
        print(&format!("compared build ({other})"), &theirs);
    }
    let ours = measure(cp, bin, &victim, &hostile, n).await?;
    print("this build", &ours);
    Ok(())
}

//! Secretless at scale (spec.credentials.serviceAccount): BENCH_SERVICE_ACCOUNTS (default
//! 1000) ProviderCredentials, each authenticating as a ServiceAccount of its own (opted in),
//! its token presented as the client assertion to the emulator's OAuth2 server, which trusts
//! the control plane's issuer by its JWKS and verifies every token itself. The same cold
//! start as the Secret-based one: all Ready, RSS, API calls per credential (the ServiceAccount
//! read and the TokenRequest are the new ones). BENCH_ONLY_SERVICE_ACCOUNTS=1 runs this alone.

use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use provider_emulator::{Emulator, FederatedClient, Options};
use token_rotator::api::{ProviderCredential, ProviderCredentialSpec};

use super::{
    apiserver_requests, calls_between, cpu_snapshot, create_all, env_usize, rss_kib,
    start_operator, wait_all_ready,
};

pub async fn run(cp: &testkit::ControlPlane, bin: &str) -> Result<()> {
    let n = env_usize("BENCH_SERVICE_ACCOUNTS", 1000);
    let client = cp.client();
    let emu = Emulator::start(Options::default()).await?;
    // The issuer's keys, as an identity provider reads them from the discovery document.
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    let issuer = cp.service_account_issuer().to_string();
    emu.control().register_workload_issuer(&issuer, &jwks)?;
    let audience = emu
        .oauth2_token_url()
        .trim_end_matches("/token")
        .to_string();
    let ns = cp.new_namespace("bench-sa").await?.keep();
    for i in 0..n {
        emu.control().register_federated_client(
            &format!("client-{i}"),
            FederatedClient {
                issuer: issuer.clone(),
                subject: format!("system:serviceaccount:{ns}:sa-{i}"),
                audience: audience.clone(),
            },
        );
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let pcs: Api<ProviderCredential> = Api::namespaced(client.clone(), &ns);
    eprintln!("service accounts: creating {n} ServiceAccounts and ProviderCredentials");
    create_all(n, |i| {
        let accounts = accounts.clone();
        Box::pin(async move {
            let account: ServiceAccount = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("sa-{i}"),
                             "labels": {"tokenrotator.dev/credentials": "true"}},
            }))?;
            accounts.create(&PostParams::default(), &account).await?;
            Ok(())
        })
    })
    .await?;
    let url = emu.oauth2_token_url();
    create_all(n, |i| {
        let (pcs, url, audience) = (pcs.clone(), url.clone(), audience.clone());
        Box::pin(async move {
            let spec: ProviderCredentialSpec = serde_saphyr::from_str(&format!(
                "tokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{serviceAccount: {{name: sa-{i}, audience: \"{audience}\"}}}}\ntarget: {{secretName: token-{i}}}\n"
            ))?;
            pcs.create(
                &PostParams::default(),
                &ProviderCredential::new(&format!("pc-{i}"), spec),
            )
            .await?;
            Ok(())
        })
    })
    .await?;

    let before = apiserver_requests(&client).await?;
    let mut op = start_operator(cp, bin, &["--namespace", &ns])?;
    let pid = op.id().context("operator pid")?;
    let cpu_before = cpu_snapshot(cp, pid);
    let ready = wait_all_ready(&pcs, n, Instant::now()).await?;
    let cpu = cpu_snapshot(cp, pid);
    let rss = rss_kib(pid);
    let after = apiserver_requests(&client).await?;
    op.kill().await?;
    // The benchmark's own polling is a LIST of ProviderCredentials.
    let calls = calls_between(&before, &after, &[("LIST", "providercredentials")]);
    let total: f64 = calls.values().sum();
    println!(
        "service accounts: {n} ProviderCredentials Ready in {:.1} s; RSS {:.1} MiB; API calls per credential {:.2}; tokens issued {}:",
        ready.as_secs_f64(),
        rss as f64 / 1024.0,
        total / n as f64,
        emu.control().oauth2_counters().issued,
    );
    for ((verb, resource), count) in &calls {
        println!(
            "  {verb:>6} {resource:<35} {count:>6.0} {:>7.2}",
            count / n as f64
        );
    }
    for ((name, after), (_, before)) in cpu.iter().zip(&cpu_before) {
        println!("  CPU {name:<26} {:>6.1} s", after - before);
    }
    Ok(())
}

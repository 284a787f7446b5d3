//! "Ship it": the operator as it ships, on the real control plane. Two replicas elect a
//! leader through a Lease and hand over without breaking a rotating refresh chain; the Helm
//! chart installs, adopts and upgrades its CRD, and its ServiceAccount is all the operator
//! needs, also for one Deployment per shard; /metrics carries the documented families with secret-free labels; debug logs carry
//! no secret.

mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use provider_emulator::{Emulator, Options, Provider, fixtures};
use serde_json::{Value, json};
use token_rotator::api::ProviderCredential;

const REDIRECT_URI: &str = "https://app.example.com/oauth/callback";
const CRD_NAME: &str = "providercredentials.tokenrotator.dev";
const GRANT_CRD_NAME: &str = "tokendeliverygrants.tokenrotator.dev";
const RELEASE: &str = "token-rotator";

/// The chart test runs a cluster-wide operator, which would also reconcile the other tests'
/// ProviderCredentials (and spend their refresh tokens): it runs alone.
static CLUSTER_WIDE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn emulator() -> Result<Emulator> {
    token_rotator::install_crypto_provider();
    Ok(Emulator::start(Options::default()).await?)
}

/// A spec renewing at half the lifetime (1 s margin), so rotations are observable.
fn spec(p: Provider, emu: &Emulator, creds: &str, target: &str) -> String {
    let grant = match p {
        Provider::Retently => format!("grant: {{redirectUri: \"{REDIRECT_URI}\"}}\n"),
        _ => String::new(),
    };
    format!(
        "preset: {}\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: {creds}}}}}\ntarget: {{secretName: {target}}}\nrefresh: {{renewBeforePercentage: 50, minimumMargin: 1s}}\n{grant}",
        p.as_str(),
        emu.token_url(p)
    )
}

/// A long, unique secret value (so a leak check cannot match by accident or miss by length).
fn secret_value(tag: &str) -> String {
    format!("{tag}-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Credentials for `p`: the emulator's fixture accounts with fresh, long secrets set on both
/// sides, and for Retently a freshly minted authorization code.
fn credentials(p: Provider, emu: &Emulator) -> BTreeMap<String, Vec<u8>> {
    let c = emu.control();
    let set = |account: &str, tag: &str| {
        let value = secret_value(tag);
        c.set_password(p, account, &value);
        value
    };
    let pairs: Vec<(&str, String)> = match p {
        Provider::Rently => vec![
            ("client_id", fixtures::RENTLY_CLIENT_ID.into()),
            (
                "client_secret",
                set(fixtures::RENTLY_CLIENT_ID, "rently-secret"),
            ),
        ],
        Provider::Carrental => vec![
            ("username", fixtures::CARRENTAL_USERNAME.into()),
            (
                "password",
                set(fixtures::CARRENTAL_USERNAME, "car-password"),
            ),
        ],
        Provider::Retently => vec![
            ("client_id", fixtures::RETENTLY_CLIENT_ID.into()),
            (
                "client_secret",
                set(fixtures::RETENTLY_CLIENT_ID, "retently-secret"),
            ),
            ("code", c.mint_authorization_code(REDIRECT_URI)),
        ],
        Provider::Reltio => vec![
            ("client_id", fixtures::RELTIO_CLIENT_ID.into()),
            (
                "client_secret",
                set(fixtures::RELTIO_CLIENT_ID, "reltio-client-secret"),
            ),
            ("username", fixtures::RELTIO_USERNAME.into()),
            (
                "password",
                set(fixtures::RELTIO_USERNAME, "reltio-password"),
            ),
        ],
    };
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect()
}

/// The values of `keys` in a credentials map, as strings.
fn values_of(data: &BTreeMap<String, Vec<u8>>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| data.get(*k))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The secret parts of credentials (ids and user names are not secrets).
const SECRET_KEYS: [&str; 3] = ["client_secret", "password", "code"];

fn status_of(pc: &ProviderCredential) -> token_rotator::api::ProviderCredentialStatus {
    pc.status.clone().unwrap_or_default()
}

fn rotations(pc: &ProviderCredential) -> Option<u64> {
    pc.status
        .as_ref()?
        .refresh_token
        .as_ref()
        .map(|r| u64::from(r.rotations))
}

/// Every token value that passes through resources' Secrets, collected by polling.
#[derive(Default)]
struct Tokens {
    access: BTreeMap<String, BTreeSet<String>>,
    refresh: BTreeMap<String, BTreeSet<String>>,
}

impl Tokens {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.access.values().chain(self.refresh.values()).flatten()
    }

    fn access_of(&self, name: &str) -> usize {
        self.access.get(name).map_or(0, BTreeSet::len)
    }

    fn refresh_of(&self, name: &str) -> usize {
        self.refresh.get(name).map_or(0, BTreeSet::len)
    }
}

/// Adds the tokens now in the target and state Secrets of ProviderCredential `name`.
async fn collect_tokens(tokens: &Mutex<Tokens>, env: &Env, name: &str, target: &str) -> Result<()> {
    let access = env
        .secret_data(target)
        .await?
        .and_then(|(_, data)| data.get("access_token").cloned());
    let mut refresh = None;
    if let Some(rt) = status_of(&env.pcred(name).await?).refresh_token
        && let Some((_, data)) = env.secret_data(&rt.secret_ref.name).await?
    {
        refresh = data.get(&rt.secret_ref.key).cloned();
    }
    let mut tokens = tokens.lock().unwrap();
    let tokens = &mut *tokens;
    for (map, value) in [(&mut tokens.access, access), (&mut tokens.refresh, refresh)] {
        if let Some(v) = value {
            map.entry(name.to_string()).or_default().insert(v);
        }
    }
    Ok(())
}

/// What a background poll of one ProviderCredential saw over the whole test.
#[derive(Debug, Default)]
struct Observed {
    polls: u64,
    /// Distinct `rotations` values in the order seen, with when.
    rotations: Vec<(Instant, u64)>,
    /// `reason: message` of every Degraded=True or Ready=False seen.
    bad_conditions: BTreeSet<String>,
}

fn observe(api: Api<ProviderCredential>, name: &str) -> (Arc<Mutex<Observed>>, AbortOnDrop) {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let name = name.to_string();
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                if let Ok(pc) = api.get(&name).await {
                    let status = status_of(&pc);
                    let mut seen = seen.lock().unwrap();
                    seen.polls += 1;
                    if let Some(r) = rotations(&pc)
                        && seen.rotations.last().is_none_or(|(_, last)| *last != r)
                    {
                        seen.rotations.push((Instant::now(), r));
                    }
                    for c in &status.conditions {
                        let bad = (c.type_ == "Degraded" && c.status == "True")
                            || (c.type_ == "Ready" && c.status == "False");
                        if bad {
                            seen.bad_conditions.insert(format!(
                                "{} {}: {}: {}",
                                c.type_, c.status, c.reason, c.message
                            ));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (seen, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn lease(env: &Env, name: &str) -> Result<Option<(String, i32)>> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), env.name())
        .get_opt(name)
        .await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| {
        s.holder_identity
            .map(|h| (h, s.lease_transitions.unwrap_or(0)))
    }))
}

/// A moment between rotations where the emulator's books and the status agree: every token
/// request succeeded and each one was exactly one step of the single refresh chain (the
/// first redeemed the authorization code). Returns (rotations, requests).
async fn one_unbroken_chain(env: &Env, emu: &Emulator, name: &str) -> Result<(u64, u64)> {
    let c = emu.control();
    eventually("a quiet moment to compare books", CONVERGE, || async {
        let before = rotations(&env.pcred(name).await?);
        let counters = c.counters(Provider::Retently);
        let after = rotations(&env.pcred(name).await?);
        let Some(r) = before.filter(|_| before == after) else {
            return Ok(None);
        };
        ensure!(
            counters.requests == counters.issued,
            "a token request failed (a reused refresh token is answered 400 invalid_grant): {counters:?}"
        );
        // r + 1 is the steady state (the code exchange, then one per rotation); r + 2, a
        // rotation in flight; more, a second rotation stream.
        ensure!(
            counters.issued <= r + 2,
            "{} tokens issued for {r} rotations: more than one rotation stream",
            counters.issued
        );
        Ok((counters.issued == r + 1).then_some((r, counters.requests)))
    })
    .await
}

#[tokio::test]
async fn the_standby_takes_over_the_lease_and_the_refresh_chain() -> Result<()> {
    // Renewed every 4 s; a 2 s token request (+2 s skew) may start up to 6 s after a renewal.
    const LEASE_SECONDS: u64 = 10;
    const LIFETIME: u64 = 5;
    let _shared = CLUSTER_WIDE.read().await;
    let env = Env::new("leader").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_lifetime(Provider::Retently, LIFETIME);

    // Exactly the chart's leader-election Role, next to the chart's ClusterRole rules.
    let (lease_name, args) = env.leader_election(LEASE_SECONDS, 6).await?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let (a, b) = tokio::try_join!(
        Operator::start_with_env(&env, &args, &[("POD_NAME", "replica-a")]),
        Operator::start_with_env(&env, &args, &[("POD_NAME", "replica-b")]),
    )?;
    let (holder, transitions) =
        eventually("a leader", CONVERGE, || lease(&env, &lease_name)).await?;
    let (mut leader, mut standby, standby_id) = match holder.as_str() {
        "replica-a" => (a, b, "replica-b"),
        "replica-b" => (b, a, "replica-a"),
        other => bail!("the Lease is held by {other:?}, not by one of the replicas"),
    };

    env.create_credentials("creds", &credentials(Provider::Retently, &emu), true)
        .await?;
    // A short request timeout, so the fence lets requests start between 4 s renewals.
    env.create_pcred(
        "retently",
        &spec(Provider::Retently, &emu, "creds", "token").replacen(
            "tokenEndpoint: {",
            "tokenEndpoint: {timeoutSeconds: 2, ",
            1,
        ),
    )
    .await?;
    let (seen, poller) = observe(env.pcreds(), "retently");
    env.wait_condition("retently", "Ready", "True", Some("TokenIssued"))
        .await?;
    let ready_at = Instant::now();
    eventually("two rotations by the leader", CONVERGE, || async {
        Ok((rotations(&env.pcred("retently").await?) >= Some(2)).then_some(()))
    })
    .await?;

    // Before the kill: one rotation stream, and it is the leader's.
    let (rotations_before, requests_before) = one_unbroken_chain(&env, &emu, "retently").await?;
    let elapsed = ready_at.elapsed().as_secs_f64();
    // Renewal at half the lifetime, jitter at most 5 % of it earlier: at most one request per
    // 0.45 × lifetime after the first, plus the one in flight.
    let ceiling = 2 + (elapsed / (0.45 * LIFETIME as f64)) as u64;
    ensure!(
        requests_before <= ceiling,
        "{requests_before} token requests in {elapsed:.1} s since Ready; one operator makes at most {ceiling}"
    );
    ensure!(leader.is_running() && standby.is_running());
    let standby_metrics = standby.metrics().await?;
    ensure!(
        !standby_metrics.contains("token_rotator_token_requests_total{"),
        "the standby made token requests:\n{standby_metrics}"
    );
    ensure!(
        !standby.log_text().contains("acquired leadership"),
        "the standby claims leadership:\n{}",
        standby.log_text()
    );

    // Kill the leader without a chance to release the Lease.
    let rotations_at_kill = rotations(&env.pcred("retently").await?).unwrap_or_default();
    let killed = Instant::now();
    leader.stop().await?;
    let (new_holder, new_transitions) = eventually(
        "the standby to take the Lease",
        Duration::from_secs(LEASE_SECONDS + 10),
        || async {
            // The lease manager takes a Lease in two patches (holder, then transitions):
            // wait for both.
            Ok(lease(&env, &lease_name)
                .await?
                .filter(|(h, t)| h != &holder && *t > transitions))
        },
    )
    .await?;
    let takeover = killed.elapsed();
    ensure!(new_holder == standby_id, "the Lease went to {new_holder:?}");
    ensure!(new_transitions > transitions);
    ensure!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 3),
        "takeover took {takeover:?}, lease duration {LEASE_SECONDS} s"
    );
    eventually("two rotations by the new leader", CONVERGE, || async {
        Ok((rotations(&env.pcred("retently").await?) >= Some(rotations_at_kill + 2)).then_some(()))
    })
    .await?;
    let first_rotation_after = seen
        .lock()
        .unwrap()
        .rotations
        .iter()
        .find(|(at, r)| *at > killed && *r > rotations_at_kill)
        .map(|(at, _)| at.duration_since(killed));
    ensure!(standby.is_running(), "the new leader is running");
    ensure!(
        standby
            .metrics()
            .await?
            .contains("token_rotator_token_requests_total{host=\"127.0.0.1\",outcome=\"ok\"}"),
        "the new leader's own requests are counted"
    );

    // The chain never broke: every request succeeded, one per rotation, and the status only
    // ever moved forward with no Degraded or not-Ready moment.
    let (rotations_after, requests_after) = one_unbroken_chain(&env, &emu, "retently").await?;
    drop(poller);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let steps: Vec<u64> = seen.rotations.iter().map(|(_, r)| *r).collect();
    ensure!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "rotations went backwards: {steps:?}"
    );
    ensure!(
        seen.bad_conditions.is_empty(),
        "conditions seen: {:?}",
        seen.bad_conditions
    );
    let pc = env.pcred("retently").await?;
    ensure!(
        status_of(&pc).last_failure.is_none(),
        "{:?}",
        status_of(&pc)
    );
    let (_, data) = env.secret_data("token").await?.context("target Secret")?;
    ensure!(c.is_valid_access_token(Provider::Retently, &data["access_token"]));
    eprintln!(
        "leader election: takeover {takeover:.2?} after SIGKILL (lease {LEASE_SECONDS} s); first rotation by the new leader {first_rotation_after:.2?} after the kill; rotations {rotations_before} (requests {requests_before}) before, {rotations_at_kill} at the kill, {rotations_after} (requests {requests_after}, all successful) at the end; {} status polls",
        seen.polls
    );
    Ok(())
}

#[tokio::test]
async fn no_secret_value_reaches_the_debug_log() -> Result<()> {
    let _shared = CLUSTER_WIDE.read().await;
    let env = Env::new("logs").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(true);
    let providers = Provider::ALL;
    let mut secrets = Vec::new();
    for p in providers {
        c.set_lifetime(p, 4);
        let data = credentials(p, &emu);
        secrets.extend(values_of(&data, &SECRET_KEYS));
        let name = p.as_str();
        env.create_credentials(&format!("{name}-creds"), &data, true)
            .await?;
        env.create_pcred(
            name,
            &spec(p, &emu, &format!("{name}-creds"), &format!("{name}-token")),
        )
        .await?;
    }

    // Full cycles: the first grant and renewals (refresh grants where the provider has them),
    // every token value collected as it passes through the Secrets. First with text logs,
    // then, after a restart, with JSON logs (the chart's default).
    let tokens = Mutex::new(Tokens::default());
    let collect_all = || async {
        for p in providers {
            let name = p.as_str();
            collect_tokens(&tokens, &env, name, &format!("{name}-token")).await?;
        }
        anyhow::Ok(())
    };
    let tokens_of_each = |n: usize| {
        let (collect_all, tokens) = (&collect_all, &tokens);
        eventually("tokens of every provider", CONVERGE, move || async move {
            collect_all().await?;
            let t = tokens.lock().unwrap();
            Ok(providers
                .iter()
                .all(|p| t.access_of(p.as_str()) >= n)
                .then_some(()))
        })
    };
    let debug = [("RUST_LOG", "debug")];
    let op = Operator::start_with_env(&env, &[], &debug).await?;
    tokens_of_each(3).await?;
    let text_log = op.stop().await?;
    let kubeconfig = env
        .cp
        .service_account_kubeconfig(env.name(), OPERATOR_SA)
        .await?;
    let args = [
        "run",
        "--namespace",
        env.name(),
        "--allow-http",
        "--log-format",
        "json",
        "--token-requests-per-minute",
        "60",
    ]
    .map(String::from);
    let op = Operator::launch(&kubeconfig, env.name(), &args, &debug).await?;
    tokens_of_each(5).await?;
    ensure!(
        tokens.lock().unwrap().refresh_of("retently") >= 5,
        "Retently rotated its refresh token"
    );

    // Stop all requests, then make sure every token ever issued was collected.
    for p in providers {
        env.pcreds()
            .patch(
                p.as_str(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await?;
    }
    for p in providers {
        env.wait_condition(p.as_str(), "Degraded", "False", Some("Suspended"))
            .await?;
    }
    eventually("every issued token collected", CONVERGE, || async {
        collect_all().await?;
        let t = tokens.lock().unwrap();
        let mut done = true;
        for p in providers {
            let (seen, issued) = (t.access_of(p.as_str()) as u64, c.counters(p).issued);
            ensure!(seen <= issued, "{p}: {seen} tokens seen, {issued} issued");
            done &= seen == issued;
        }
        Ok(done.then_some(()))
    })
    .await?;
    let tokens = tokens.into_inner().unwrap();
    let json_log = op.stop().await?;
    ensure!(
        text_log.contains("DEBUG") && json_log.contains(r#""level":"DEBUG""#),
        "the logs are at debug level"
    );
    let values: Vec<&String> = secrets
        .iter()
        .chain(tokens.all())
        .filter(|v| v.len() >= 8)
        .collect();
    for (format, log) in [("text", &text_log), ("JSON", &json_log)] {
        for value in &values {
            ensure!(
                !log.contains(value.as_str()),
                "a secret value is in the operator's {format} log: {value:.6}…"
            );
        }
    }
    let issued: BTreeMap<&str, u64> = providers
        .iter()
        .map(|p| (p.as_str(), c.counters(*p).issued))
        .collect();
    eprintln!(
        "debug logs: text {} lines, JSON {} lines; none of {} secret values ({} credentials, {} access and {} refresh tokens) in them; tokens issued {issued:?}",
        text_log.lines().count(),
        json_log.lines().count(),
        values.len(),
        secrets.len(),
        tokens.access.values().map(BTreeSet::len).sum::<usize>(),
        tokens.refresh.values().map(BTreeSet::len).sum::<usize>(),
    );
    Ok(())
}

/// One sample of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `name{label="value",...} value` lines; returns the samples and the `# TYPE` of
/// every family.
fn parse_metrics(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>)> {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').context("TYPE line")?;
            types.insert(family.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => bail!("bad sample line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            loop {
                let (start, ch) = chars.next().context("unterminated labels")?;
                if ch == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                if ch == ',' {
                    continue;
                }
                let eq = inner[start..].find("=\"").context("label without value")? + start;
                let key = inner[start..eq].to_string();
                while chars.next().is_some_and(|(i, _)| i < eq + 1) {}
                let mut value = String::new();
                loop {
                    match chars.next().context("unterminated label value")?.1 {
                        '"' => break,
                        '\\' => match chars.next().context("dangling escape")?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        other => value.push(other),
                    }
                }
                labels.insert(key, value);
            }
        }
        let value = rest
            .split_whitespace()
            .next()
            .context("sample without value")?;
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value: value
                .parse()
                .with_context(|| format!("value of {line:?}"))?,
        });
    }
    Ok((samples, types))
}

/// Where two JSON values first differ (a path with the two values), if they do; numbers
/// compare by value.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .find_map(|k| first_difference(&x.get(k)?.clone(), y.get(k)?, format!("{path}.{k}")))
            .or_else(|| {
                let (kx, ky): (BTreeSet<_>, BTreeSet<_>) = (x.keys().collect(), y.keys().collect());
                (kx != ky).then(|| format!("{path}: keys {kx:?} vs {ky:?}"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{path}[{i}]"))),
        // Helm re-encodes 90.0 as 90: the same JSON number.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

fn named<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| s.name == name)
}

fn label_keys(s: &Sample) -> Vec<&str> {
    s.labels.keys().map(String::as_str).collect()
}

/// How a rendered Deployment's pod runs the operator: its ServiceAccount, its container's
/// args (less `--metrics-addr`: [`Operator::launch`] puts the metrics server on loopback) and
/// environment, with the downward-API fields of pod `pod_name` in `namespace` filled in.
struct PodCommand {
    namespace: String,
    sa: String,
    args: Vec<String>,
    vars: Vec<(String, String)>,
}

impl PodCommand {
    fn of(deployment: &Value, pod_name: &str, namespace: &str) -> Result<PodCommand> {
        let pod = &deployment["spec"]["template"]["spec"];
        let sa = pod["serviceAccountName"]
            .as_str()
            .context("serviceAccountName")?;
        let container = &pod["containers"][0];
        let mut args = Vec::new();
        let mut chart_args = container["args"]
            .as_array()
            .context("container args")?
            .iter()
            .map(|a| a.as_str().map(str::to_string).context("string arg"));
        while let Some(arg) = chart_args.next() {
            let arg = arg?;
            if arg == "--metrics-addr" {
                chart_args.next();
            } else if !arg.starts_with("--metrics-addr=") {
                args.push(arg);
            }
        }
        let mut vars = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().context("env name")?.to_string();
            let value = match (
                var["value"].as_str(),
                var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_string(),
                (None, Some("metadata.name")) => pod_name.to_string(),
                (None, Some("metadata.namespace")) => namespace.to_string(),
                other => bail!("env {name}: cannot emulate {other:?}"),
            };
            vars.push((name, value));
        }
        Ok(PodCommand {
            namespace: namespace.to_string(),
            sa: sa.to_string(),
            args,
            vars,
        })
    }

    /// The operator binary run as the pod would: as its ServiceAccount, with its args and
    /// environment.
    async fn launch(&self, cp: &testkit::ControlPlane) -> Result<Operator> {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let kubeconfig = cp
            .service_account_kubeconfig(&self.namespace, &self.sa)
            .await?;
        Operator::launch(&kubeconfig, &self.namespace, &self.args, &vars).await
    }
}

#[tokio::test]
async fn the_chart_installs_and_its_service_account_runs_the_operator() -> Result<()> {
    let _alone = CLUSTER_WIDE.write().await;
    let env = Env::new("chart-workload").await?;
    let cp = env.cp;
    let chart = repo_path("charts/token-rotator");
    let chart = path_str(&chart)?;
    helm(cp, &["lint", "--strict", chart]).await?;

    // The CRD the chart renders is the generated one, plus labels and the keep annotation.
    let rendered = helm(
        cp,
        &[
            "template",
            RELEASE,
            chart,
            "--show-only",
            "templates/crd.yaml",
        ],
    )
    .await?;
    let mut rendered = only_kind(&yaml_docs(&rendered)?, "CustomResourceDefinition")?;
    let generated = std::fs::read_to_string(repo_path("crds/providercredentials.yaml"))?;
    let generated = only_kind(&yaml_docs(&generated)?, "CustomResourceDefinition")?;
    let meta = rendered["metadata"].as_object_mut().context("metadata")?;
    let annotations = meta.remove("annotations").unwrap_or_default();
    let labels = meta.remove("labels").unwrap_or_default();
    if let Some(at) = first_difference(&rendered, &generated, String::new()) {
        bail!("the chart's CRD differs from crds/providercredentials.yaml at {at}");
    }
    ensure!(
        annotations == json!({"helm.sh/resource-policy": "keep"}),
        "{annotations}"
    );
    ensure!(labels["app.kubernetes.io/managed-by"] == "Helm", "{labels}");

    // The CRD is already there (as after `kubectl apply -f deploy/crd.yaml`): hand it to the
    // release the way Helm adopts existing objects, then install with leader election on.
    let release_ns = cp.new_namespace("chart-release").await?;
    let rns = release_ns.name();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let adopt = json!({"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": rns},
    }});
    for name in [CRD_NAME, GRANT_CRD_NAME] {
        crds.patch(name, &PatchParams::default(), &Patch::Merge(&adopt))
            .await?;
    }
    let values = [
        "--set",
        "allowHttp=true",
        "--set",
        "leaderElection.enabled=true",
    ];
    let install = [
        &["install", RELEASE, chart, "--namespace", rns][..],
        &values,
    ]
    .concat();
    helm(cp, &install).await?;
    // An upgrade reaches the installed CRD (a harmless change: schema changes are proven on
    // a renamed copy, see `helm_upgrade_changes_the_chart_crd_in_place`).
    let upgrade = [
        &["upgrade", RELEASE, chart, "--namespace", rns][..],
        &values,
        &["--set-string", "crds.annotations.e2e-upgrade=second"],
    ]
    .concat();
    helm(cp, &upgrade).await?;
    let crd = crds.get(CRD_NAME).await?;
    ensure!(crd.annotations().get("e2e-upgrade").map(String::as_str) == Some("second"));
    ensure!(crd.annotations()["helm.sh/resource-policy"] == "keep");
    ensure!(crd.labels()["app.kubernetes.io/instance"] == RELEASE);

    // No image here: run the binary as the Deployment would, with its ServiceAccount, args
    // and environment as installed (only the metrics address moves to loopback).
    let manifest = helm(cp, &["get", "manifest", RELEASE, "--namespace", rns]).await?;
    let deployment = only_kind(&yaml_docs(&manifest)?, "Deployment")?;
    let pod_name = format!("{RELEASE}-e2e-0");
    let run = PodCommand::of(&deployment, &pod_name, rns)?;
    ensure!(
        run.args.contains(&"--leader-election".to_string()),
        "chart args: {:?}",
        run.args
    );
    let op = run.launch(cp).await?;
    let PodCommand { sa, args, .. } = run;

    // A ProviderCredential in another namespace, reconciled through the chart's ClusterRole.
    let emu = emulator().await?;
    let c = emu.control();
    c.set_lifetime(Provider::Retently, 4);
    let creds = credentials(Provider::Retently, &emu);
    env.create_credentials("creds", &creds, true).await?;
    env.create_pcred(
        "retently",
        &spec(Provider::Retently, &emu, "creds", "token"),
    )
    .await?;
    env.wait_condition("retently", "Ready", "True", Some("TokenIssued"))
        .await?;
    let lease = Api::<Lease>::namespaced(env.client.clone(), rns)
        .get(RELEASE)
        .await?;
    ensure!(
        lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(pod_name.as_str()),
        "the operator leads through the chart's Lease"
    );
    eventually("a refresh-token rotation", CONVERGE, || async {
        Ok((rotations(&env.pcred("retently").await?) >= Some(1)).then_some(()))
    })
    .await?;

    // /metrics: scraped between rotations, so that it describes the status read around it.
    let tokens = Mutex::new(Tokens::default());
    let (pc, samples, types) = eventually("a scrape between rotations", CONVERGE, || async {
        collect_tokens(&tokens, &env, "retently", "token").await?;
        let before = env.pcred("retently").await?;
        let text = op.metrics().await?;
        let after = env.pcred("retently").await?;
        if before.status != after.status {
            return Ok(None);
        }
        collect_tokens(&tokens, &env, "retently", "token").await?;
        let (samples, types) = parse_metrics(&text)?;
        Ok(Some((after, samples, types)))
    })
    .await?;
    // The families README.md ("Metrics") documents. Empty families are not exposed, so the
    // error counter is checked only when it has samples.
    let families = [
        ("token_rotator_token_requests", "counter", true),
        (
            "token_rotator_token_request_duration_seconds",
            "histogram",
            true,
        ),
        ("token_rotator_reconcile_errors", "counter", false),
        (
            "token_rotator_token_expiry_timestamp_seconds",
            "gauge",
            true,
        ),
        (
            "token_rotator_token_next_refresh_timestamp_seconds",
            "gauge",
            true,
        ),
    ];
    for (family, kind, required) in families {
        let declared = types.get(family).map(String::as_str);
        ensure!(
            declared == Some(kind) || (!required && declared.is_none()),
            "{family} is a {kind}: {types:?}"
        );
    }
    for s in named(&samples, "token_rotator_reconcile_errors_total") {
        ensure!(label_keys(s) == ["reason"], "{s:?}");
    }
    let ours = |s: &&Sample| s.labels.get("host").map(String::as_str) == Some("127.0.0.1");
    let mut requests_ok = 0.0;
    let mut requests_all = 0.0;
    for s in named(&samples, "token_rotator_token_requests_total") {
        ensure!(label_keys(s) == ["host", "outcome"], "{s:?}");
        if ours(&s) {
            requests_all += s.value;
            if s.labels["outcome"] == "ok" {
                requests_ok += s.value;
            }
        }
    }
    let issued = c.counters(Provider::Retently).issued as f64;
    ensure!(
        requests_ok >= 2.0 && requests_ok == issued,
        "{requests_ok} ok requests counted, {issued} tokens issued"
    );
    let mut observations = None;
    for s in named(
        &samples,
        "token_rotator_token_request_duration_seconds_count",
    ) {
        ensure!(label_keys(s) == ["host", "outcome"], "{s:?}");
        if ours(&s) {
            *observations.get_or_insert(0.0) += s.value;
        }
    }
    ensure!(
        observations == Some(requests_all),
        "latency observations {observations:?} vs {requests_all} requests"
    );
    let buckets: Vec<&Sample> = named(
        &samples,
        "token_rotator_token_request_duration_seconds_bucket",
    )
    .filter(ours)
    .collect();
    ensure!(
        buckets
            .iter()
            .all(|s| label_keys(s) == ["host", "le", "outcome"])
    );
    let infinite: f64 = buckets
        .iter()
        .filter(|s| s.labels["le"] == "+Inf")
        .map(|s| s.value)
        .sum();
    ensure!(infinite == requests_all, "{buckets:?}");
    ensure!(
        named(&samples, "token_rotator_token_request_duration_seconds_sum")
            .any(|s| ours(&s) && s.value > 0.0)
    );
    let status = status_of(&pc);
    let at = status.access_token.clone().context("access token status")?;
    let next = status.next_refresh_at.clone().context("nextRefreshAt")?;
    for (family, want) in [
        (
            "token_rotator_token_expiry_timestamp_seconds",
            at.expires_at.0,
        ),
        ("token_rotator_token_next_refresh_timestamp_seconds", next.0),
    ] {
        let mut found = None;
        for s in named(&samples, family) {
            ensure!(label_keys(s) == ["name", "namespace"], "{s:?}");
            if s.labels["namespace"] == env.name() && s.labels["name"] == "retently" {
                found = Some(s.value);
            }
        }
        let want = want.as_millisecond() as f64 / 1000.0;
        // The status has second precision.
        ensure!(
            found.is_some_and(|v| (v - want).abs() <= 1.0),
            "{family}: {found:?}, status says {want}"
        );
    }
    let secrets: Vec<String> = values_of(&creds, &SECRET_KEYS)
        .into_iter()
        .chain(tokens.lock().unwrap().all().cloned())
        .filter(|v| v.len() >= 8)
        .collect();
    ensure!(
        secrets.len() >= 4,
        "credentials and tokens collected: {}",
        secrets.len()
    );
    for s in &samples {
        for value in s.labels.values() {
            ensure!(
                !secrets.iter().any(|secret| value.contains(secret.as_str())),
                "a metric label carries a secret: {}",
                s.name
            );
        }
    }
    let requests = c.counters(Provider::Retently);
    ensure!(requests.requests == requests.issued, "{requests:?}");
    let log = op.stop().await?;
    ensure!(
        log.contains(r#""level":"INFO""#),
        "the chart's JSON log: {log}"
    );
    ensure!(
        !secrets.iter().any(|secret| log.contains(secret.as_str())),
        "a secret value is in the operator's log"
    );

    // Uninstall removes the release's objects but keeps the CRD (and so every resource).
    helm(cp, &["uninstall", RELEASE, "--namespace", rns]).await?;
    ensure!(crds.get_opt(CRD_NAME).await?.is_some(), "the CRD is kept");
    ensure!(env.pcreds().get_opt("retently").await?.is_some());
    let role_name = deployment["metadata"]["name"].as_str().unwrap_or(RELEASE);
    ensure!(
        Api::<ClusterRole>::all(env.client.clone())
            .get_opt(role_name)
            .await?
            .is_none(),
        "the ClusterRole is uninstalled"
    );
    eprintln!(
        "chart: helm lint, install (CRD adopted), upgrade and uninstall ok; operator ran as {rns}/{sa} with {args:?}; {requests_ok} ok token requests and {observations:?} latency observations on /metrics, {} samples, {} label values checked against {} secret values",
        samples.len(),
        samples.iter().map(|s| s.labels.len()).sum::<usize>(),
        secrets.len()
    );
    Ok(())
}

/// A temporary copy of the chart under target/, removed on drop.
struct ChartCopy(std::path::PathBuf);

impl Drop for ChartCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn helm_upgrade_changes_the_chart_crd_in_place() -> Result<()> {
    token_rotator::install_crypto_provider();
    let cp = testkit::shared().await?;
    let ns = cp.new_namespace("chart-crd").await?;
    let client = cp.client();
    // The chart's own CRD template and helpers, with files/crd.yaml replaced by the generated
    // CRD moved to a group of its own: the shared CRD stays untouched.
    let group = format!("{}.e2e.tokenrotator.dev", ns.name());
    let crd_name = format!("providercredentials.{group}");
    let chart = repo_path("charts/token-rotator");
    let copy = ChartCopy(repo_path(&format!("target/e2e-charts/{}", ns.name())));
    for file in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/_helpers.tpl",
        "templates/crd.yaml",
    ] {
        let to = copy.0.join(file);
        std::fs::create_dir_all(to.parent().context("parent")?)?;
        std::fs::copy(chart.join(file), &to)?;
    }
    std::fs::create_dir_all(copy.0.join("files"))?;
    let generated = std::fs::read_to_string(repo_path("crds/providercredentials.yaml"))?;
    let mut crd = only_kind(&yaml_docs(&generated)?, "CustomResourceDefinition")?;
    crd["metadata"]["name"] = json!(crd_name);
    crd["spec"]["group"] = json!(group);
    let write_crd = |crd: &Value| -> Result<()> {
        // JSON is YAML: the template reads it with fromYaml like the real file.
        std::fs::write(
            copy.0.join("files/crd.yaml"),
            serde_json::to_string_pretty(crd)?,
        )?;
        Ok(())
    };
    write_crd(&crd)?;
    let copy_path = path_str(&copy.0)?;
    let release = "crd-upgrade";
    let cmd = |verb: &'static str| {
        [
            verb,
            release,
            copy_path,
            "--namespace",
            ns.name(),
            "--set",
            "crds.keep=false",
        ]
    };
    helm(cp, &cmd("install")).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = |name: String| {
        let crds = crds.clone();
        async move {
            let crd = crds.get(&name).await?;
            let ok = crd
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(ok.then_some(crd))
        }
    };
    let installed = eventually("the copy CRD established", CONVERGE, || {
        established(crd_name.clone())
    })
    .await?;
    ensure!(installed.labels()["app.kubernetes.io/managed-by"] == "Helm");
    ensure!(
        !installed
            .annotations()
            .contains_key("helm.sh/resource-policy")
    );

    // A resource under the first version; an unknown field is pruned.
    let gvk = GroupVersionKind::gvk(&group, "v1alpha1", "ProviderCredential");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "providercredentials");
    let objects: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
    let spec = json!({
        "preset": "rently",
        "tokenEndpoint": {"url": "https://auth.example.com/auth/token"},
        "credentials": {"secretRef": {"name": "creds"}},
        "target": {"secretName": "token"},
        "e2eMarker": "v1",
    });
    let object = json!({
        "apiVersion": format!("{group}/v1alpha1"),
        "kind": "ProviderCredential",
        "metadata": {"name": "survivor"},
        "spec": spec,
    });
    let created = objects
        .create(&Default::default(), &serde_json::from_value(object)?)
        .await?;
    ensure!(
        created.data["spec"].get("e2eMarker").is_none(),
        "v1 has no e2eMarker: {}",
        created.data["spec"]
    );

    // The second version of the CRD: a new field and a new printer column.
    let version = &mut crd["spec"]["versions"][0];
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["e2eMarker"] =
        json!({"type": "string", "description": "Added by the upgrade test."});
    version["additionalPrinterColumns"]
        .as_array_mut()
        .context("printer columns")?
        .push(json!({"name": "Marker", "type": "string", "jsonPath": ".spec.e2eMarker"}));
    write_crd(&crd)?;
    helm(cp, &cmd("upgrade")).await?;
    let upgraded = crds.get(&crd_name).await?;
    ensure!(
        upgraded.uid() == installed.uid(),
        "the CRD was updated in place"
    );
    let columns: Vec<String> = upgraded.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    ensure!(columns.contains(&"Marker".to_string()), "{columns:?}");
    // The resource survived, and the new field is now kept.
    let patch = json!({"spec": {"e2eMarker": "v2"}});
    let kept = eventually("the new field kept", CONVERGE, || async {
        let o = objects
            .patch("survivor", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok((o.data["spec"]["e2eMarker"] == "v2").then_some(o))
    })
    .await?;
    ensure!(
        kept.uid() == created.uid(),
        "the resource survived the upgrade"
    );

    // With crds.keep=false, uninstall removes the CRD (the real chart keeps it by default).
    helm(cp, &["uninstall", release, "--namespace", ns.name()]).await?;
    eventually("the copy CRD gone", CONVERGE, || async {
        Ok(crds.get_opt(&crd_name).await?.is_none().then_some(()))
    })
    .await?;
    eprintln!(
        "chart CRD: installed {crd_name}, upgraded in place with a new field and column, resource kept, uninstalled"
    );
    Ok(())
}

/// Asks the apiserver whether `user` may `verb` `resource` in `namespace` (`None`: in every
/// namespace at once).
async fn may(
    client: &kube::Client,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let (group, resource) = resource.split_once('/').unwrap_or(("", resource));
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// `watchNamespaces` installs a Role per listed namespace and nothing cluster-wide: the
/// operator's ServiceAccount, asked on the real apiserver, may read Secrets in the watched
/// namespaces only — not across the cluster, not in its own namespace, not elsewhere.
#[tokio::test]
async fn a_namespaced_install_grants_no_cluster_wide_access() -> Result<()> {
    token_rotator::install_crypto_provider();
    let cp = testkit::shared().await?;
    let client = cp.client();
    let release_ns = cp.new_namespace("ns-release").await?;
    let (team_a, team_b, elsewhere) = (
        cp.new_namespace("team-a").await?,
        cp.new_namespace("team-b").await?,
        cp.new_namespace("elsewhere").await?,
    );
    let release = "scoped-token-rotator";
    let chart = repo_path("charts/token-rotator");
    let watched = format!("watchNamespaces={{{},{}}}", team_a.name(), team_b.name());
    helm(
        cp,
        &[
            "install",
            release,
            path_str(&chart)?,
            "--namespace",
            release_ns.name(),
            "--set",
            &watched,
            "--set",
            "crds.install=false",
            "--set",
            "leaderElection.enabled=true",
        ],
    )
    .await?;
    let manifest = helm(
        cp,
        &["get", "manifest", release, "--namespace", release_ns.name()],
    )
    .await?;
    let docs = yaml_docs(&manifest)?;
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    ensure!(
        !kinds.contains("ClusterRole") && !kinds.contains("ClusterRoleBinding"),
        "a namespaced install renders {kinds:?}"
    );
    let role_namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Role")
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    ensure!(
        role_namespaces == BTreeSet::from([team_a.name(), team_b.name(), release_ns.name()]),
        "Roles in {role_namespaces:?} (the release namespace's is the Lease's)"
    );
    let deployment = only_kind(&docs, "Deployment")?;
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for ns in [team_a.name(), team_b.name()] {
        ensure!(
            args.contains(&format!("\"--namespace={ns}\"")),
            "the operator is told to watch {ns}: {args}"
        );
    }

    let user = format!("system:serviceaccount:{}:{release}", release_ns.name());
    for ns in [team_a.name(), team_b.name()] {
        for verb in ["get", "list", "watch", "create", "update"] {
            ensure!(
                may(&client, &user, verb, "secrets", Some(ns)).await?,
                "{verb} secrets in watched {ns} is refused"
            );
        }
        ensure!(
            may(
                &client,
                &user,
                "list",
                "tokenrotator.dev/providercredentials",
                Some(ns)
            )
            .await?
        );
    }
    for (verb, resource, ns) in [
        ("list", "secrets", None),
        ("watch", "secrets", None),
        ("get", "secrets", None),
        ("list", "secrets", Some(release_ns.name())),
        ("get", "secrets", Some(elsewhere.name())),
        ("create", "secrets", Some(elsewhere.name())),
        ("list", "tokenrotator.dev/providercredentials", None),
        (
            "list",
            "tokenrotator.dev/providercredentials",
            Some(elsewhere.name()),
        ),
        ("create", "events.k8s.io/events", Some(elsewhere.name())),
    ] {
        ensure!(
            !may(&client, &user, verb, resource, ns).await?,
            "{verb} {resource} in {} is granted to a namespaced install",
            ns.unwrap_or("every namespace")
        );
    }
    helm(
        cp,
        &["uninstall", release, "--namespace", release_ns.name()],
    )
    .await?;
    eprintln!(
        "namespaced install: Roles in {role_namespaces:?}, no ClusterRole; Secrets readable only in the two watched namespaces"
    );
    Ok(())
}

/// Whether `selector` (a Deployment's matchLabels or a Service's selector) selects a pod
/// labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

fn pod_labels(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["metadata"]["labels"]
}

/// The values `args` give `flag` (as `flag=value`).
fn flag_values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    let prefix = format!("{flag}=");
    args.iter()
        .filter_map(|a| a.strip_prefix(prefix.as_str()))
        .collect()
}

/// The rendered Deployments of a manifest, by name.
fn deployments(docs: &[Value]) -> Result<BTreeMap<&str, &Value>> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| Ok((d["metadata"]["name"].as_str().context("name")?, d)))
        .collect()
}

/// The Lease names the (one) leader-election Role grants.
fn granted_leases(docs: &[Value]) -> Result<BTreeSet<&str>> {
    let role = docs
        .iter()
        .find(|d| {
            d["kind"] == "Role"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-leader-election"))
        })
        .context("no leader-election Role rendered")?;
    Ok(role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["resourceNames"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect())
}

/// `--set` values for shards named `names`, each selecting `shard=<name>`.
fn shard_values(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            [
                "--set".to_string(),
                format!("shards[{i}].name={s},shards[{i}].selector=shard={s}"),
            ]
        })
        .collect()
}

/// `shards` in one release: one Deployment per shard, each with its own selector, Lease and
/// pod selector, all under the release's one ServiceAccount and RBAC. Each shard's operator,
/// run as that ServiceAccount with its Deployment's args, reconciles only the
/// ProviderCredentials its selector matches (not the other shard's, not one no shard
/// selects) and leads through its own Lease.
#[tokio::test]
async fn a_sharded_install_runs_one_operator_per_shard() -> Result<()> {
    // The chart test's unsharded, cluster-wide operator would reconcile these resources too.
    let _alone = CLUSTER_WIDE.write().await;
    let env = Env::new("chart-shards").await?;
    let cp = env.cp;
    let chart = repo_path("charts/token-rotator");
    let release_ns = cp.new_namespace("shards-release").await?;
    let rns = release_ns.name();
    let release = "sharded-token-rotator";
    let shards = ["a", "b"];
    let values = shard_values(&shards);
    let install = [
        "install",
        release,
        path_str(&chart)?,
        "--namespace",
        rns,
        "--set",
        "crds.install=false",
        "--set",
        "allowHttp=true",
        "--set",
        "leaderElection.enabled=true",
    ]
    .into_iter()
    .chain(values.iter().map(String::as_str))
    .collect::<Vec<_>>();
    helm(cp, &install).await?;

    // Rendered: a Deployment per shard with its selector and Lease, pod selectors that never
    // select the other shard's pods, one ServiceAccount, and a Lease Role naming both Leases.
    let manifest = helm(cp, &["get", "manifest", release, "--namespace", rns]).await?;
    let docs = yaml_docs(&manifest)?;
    let deployments = deployments(&docs)?;
    let names: Vec<String> = shards.iter().map(|s| format!("{release}-{s}")).collect();
    ensure!(
        deployments
            .keys()
            .copied()
            .eq(names.iter().map(String::as_str)),
        "Deployments {:?}, want {names:?}",
        deployments.keys()
    );
    let sa = only_kind(&docs, "ServiceAccount")?;
    let service = only_kind(&docs, "Service")?;
    let mut runs = Vec::new();
    for (shard, name) in shards.iter().zip(&names) {
        let deployment = deployments[name.as_str()];
        let pod_name = format!("{name}-e2e-0");
        let run = PodCommand::of(deployment, &pod_name, rns)?;
        ensure!(
            flag_values(&run.args, "--selector") == [format!("shard={shard}")],
            "{name}: {:?}",
            run.args
        );
        ensure!(
            flag_values(&run.args, "--leader-election-lease-name") == [name.as_str()],
            "{name}: {:?}",
            run.args
        );
        ensure!(
            run.sa == sa["metadata"]["name"],
            "{name} runs as {}",
            run.sa
        );
        for (other, d) in &deployments {
            ensure!(
                selects(
                    &deployment["spec"]["selector"]["matchLabels"],
                    pod_labels(d)
                ) == (other == name),
                "{name}'s pod selector and {other}'s pods"
            );
        }
        ensure!(
            selects(&service["spec"]["selector"], pod_labels(deployment)),
            "the metrics Service misses {name}'s pods"
        );
        runs.push((shard, name, pod_name, run));
    }
    let leases = granted_leases(&docs)?;
    ensure!(
        leases.iter().copied().eq(names.iter().map(String::as_str)),
        "the Lease Role names {leases:?}"
    );

    // A ProviderCredential per shard (each with a provider of its own) and one no shard selects.
    let emu = emulator().await?;
    for (shard, provider) in [
        ("a", Some(Provider::Rently)),
        ("b", Some(Provider::Carrental)),
        ("c", None),
    ] {
        let creds = format!("creds-{shard}");
        if let Some(p) = provider {
            env.create_credentials(&creds, &credentials(p, &emu), true)
                .await?;
        }
        let target = format!("token-{shard}");
        let spec = spec(provider.unwrap_or(Provider::Rently), &emu, &creds, &target);
        let mut pc = ProviderCredential::new(
            &format!("pc-{shard}"),
            serde_saphyr::from_str(&spec).context("spec")?,
        );
        pc.metadata.labels = Some(BTreeMap::from([("shard".into(), shard.into())]));
        env.pcreds().create(&Default::default(), &pc).await?;
    }
    let all: Api<ProviderCredential> = Api::all(env.client.clone());
    for shard in shards {
        let selected = all
            .list(&kube::api::ListParams::default().labels(&format!("shard={shard}")))
            .await?;
        ensure!(
            selected.items.len() == 1,
            "shard={shard} selects {} ProviderCredentials in the cluster, not just this test's",
            selected.items.len()
        );
    }

    let mut ops = Vec::new();
    for (.., run) in &runs {
        ops.push(run.launch(cp).await?);
    }
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), rns);
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), env.name());
    for ((shard, name, pod_name, _), op) in runs.iter().zip(&ops) {
        let pc = format!("pc-{shard}");
        env.wait_condition(&pc, "Ready", "True", Some("TokenIssued"))
            .await?;
        eventually(
            &format!("{name} managing 1 ProviderCredential"),
            CONVERGE,
            || async {
                Ok((op.metric("token_rotator_managed_credentials").await? == 1.0).then_some(()))
            },
        )
        .await?;
        let reporters: BTreeSet<String> = events
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pc.as_str()))
            .map(|e| e.reporting_instance.unwrap_or_default())
            .collect();
        ensure!(
            reporters == BTreeSet::from([pod_name.clone()]),
            "Events on {pc} reported by {reporters:?}, want {pod_name}"
        );
        let holder = leases.get(name).await?.spec.and_then(|s| s.holder_identity);
        ensure!(
            holder.as_deref() == Some(pod_name.as_str()),
            "Lease {name} held by {holder:?}"
        );
    }
    let unsharded = env.pcred("pc-c").await?;
    ensure!(
        unsharded.status.is_none(),
        "a ProviderCredential no shard selects was reconciled: {:?}",
        unsharded.status
    );
    for op in ops {
        op.stop().await?;
    }
    helm(cp, &["uninstall", release, "--namespace", rns]).await?;
    eprintln!(
        "shards: {names:?} rendered with selectors shard=a/shard=b, their own Leases and disjoint pod selectors under one ServiceAccount; each operator made its own ProviderCredential Ready, manages 1 on /metrics, reported its Events and holds its Lease; pc-c (shard=c) untouched"
    );
    Ok(())
}

/// The chart checks `shards` before anything is applied: a top-level `selector` beside them,
/// a duplicated name, a name that is not a DNS label, an empty or repeated selector each fail
/// with a message naming the value and the fix. A shard's own replicaCount decides its leader
/// election and PodDisruptionBudget, and the Lease Role names only the Leases in use.
#[tokio::test]
async fn the_chart_refuses_bad_shards_and_renders_each_on_its_own() -> Result<()> {
    let cp = testkit::shared().await?;
    let chart = repo_path("charts/token-rotator");
    let chart = path_str(&chart)?;
    let render = |values: Vec<String>| async move {
        let args: Vec<&str> = ["template", "r", chart]
            .into_iter()
            .chain(values.iter().map(String::as_str))
            .collect();
        helm(cp, &args).await
    };
    let set = |values: &[&str]| -> Vec<String> {
        values
            .iter()
            .flat_map(|v| ["--set".to_string(), v.to_string()])
            .collect()
    };
    let a = "shards[0].name=a,shards[0].selector=shard=a";
    for (values, message) in [
        (
            set(&["selector=shard=a", a]),
            r#"selector ("shard=a") and shards cannot be used together: every shard has its own selector. Set selector to """#,
        ),
        (
            set(&[a, "shards[1].name=a,shards[1].selector=shard=b"]),
            r#"shards[1].name "a" is also the name of shards[0]: give every shard a unique name"#,
        ),
        (
            set(&["shards[0].name=Shard_A,shards[0].selector=shard=a"]),
            r#"shards[0].name "Shard_A" is not a DNS label: use 1 to 63 lower-case letters"#,
        ),
        (
            set(&["shards[0].name=a"]),
            r#"shards[0].selector is empty (shard "a"): set a label selector such as shard=a"#,
        ),
        (
            set(&[a, "shards[1].name=b,shards[1].selector=shard=a"]),
            r#"shards[1].selector "shard=a" is also the selector of shards[0]: shards must select disjoint sets"#,
        ),
    ] {
        let refused = render(values.clone())
            .await
            .err()
            .with_context(|| format!("{values:?} rendered"))?;
        ensure!(
            refused.to_string().contains(message),
            "{values:?}: {refused:#}"
        );
    }

    // Election off: only shard b (two replicas) elects a leader and gets a PDB.
    let mut values = shard_values(&["a", "b"]);
    values.extend(set(&["shards[1].replicaCount=2"]));
    let docs = yaml_docs(&render(values).await?)?;
    let deployments = deployments(&docs)?;
    let args_of = |name: &str| -> Result<Vec<String>> {
        let deployment = deployments.get(name).context("no such Deployment")?;
        Ok(PodCommand::of(deployment, "pod", "ns")?.args)
    };
    ensure!(!args_of("r-token-rotator-a")?.contains(&"--leader-election".to_string()));
    ensure!(deployments["r-token-rotator-a"]["spec"]["strategy"]["type"] == "Recreate");
    ensure!(
        flag_values(
            &args_of("r-token-rotator-b")?,
            "--leader-election-lease-name"
        ) == ["r-token-rotator-b"]
    );
    ensure!(deployments["r-token-rotator-b"]["spec"]["replicas"] == 2);
    let leases = granted_leases(&docs)?;
    ensure!(
        leases == BTreeSet::from(["r-token-rotator-b"]),
        "{leases:?}"
    );
    let pdb = only_kind(&docs, "PodDisruptionBudget")?;
    ensure!(pdb["metadata"]["name"] == "r-token-rotator-b");
    for (name, d) in &deployments {
        ensure!(
            selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels(d))
                == (*name == "r-token-rotator-b"),
            "the PodDisruptionBudget and {name}'s pods"
        );
    }
    eprintln!(
        "shard values: 5 mistakes refused with their messages; per-shard replicaCount renders election, Lease Role and PodDisruptionBudget for shard b only"
    );
    Ok(())
}

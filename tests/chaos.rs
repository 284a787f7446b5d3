#![cfg(feature = "e2e")]
//! A bounded chaos test of rotating refresh-token chains: two operator replicas with leader
//! election on a control plane of the test's own keep two Retently and two Reltio resources
//! (both rotating their refresh tokens) fresh, while the test forces refreshes every few
//! seconds and, every few seconds, does one of: SIGKILL or SIGTERM the leader, restart the
//! API server, slow the token endpoint down, make it answer 503 or hang.
//!
//! Knobs (environment): `CHAOS_SECONDS` (default 45), `CHAOS_GRACE_SECONDS` (how long the
//! emulator still accepts a replaced refresh token; default 30, 0 = strict rotation) and
//! `CHAOS_SEED` (default random; printed); `CHAOS_RUST_LOG` overrides the operators'
//! `RUST_LOG` (logs in target/e2e-logs). `hack/chaos.sh` runs it for longer.
//!
//! Invariants: no two replicas refresh one chain at once; no target Secret holds an expired
//! token while the endpoint answers; every resource ends Ready with a valid token; a chain
//! breaks (or a replaced refresh token is presented) only when a SIGKILL landed between the
//! provider's answer and the state write, at most once per chain and kill (a kill while the
//! API server is down can catch every chain there), and never while the provider grants a
//! grace period; a SIGTERMed replica drains and exits 0.

mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use provider_emulator::{Control, Counters, Emulator, Fault, Options, Provider, fixtures};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;
use token_rotator::api::{ProviderCredential, REFRESH_ANNOTATION};
use tokio::sync::{mpsc, watch};

const REDIRECT_URI: &str = "https://app.example.com/oauth/callback";
/// Lease renewed every 4 s; a 2 s token request (+2 s skew) may start up to 6 s after one.
const LEASE_SECONDS: u64 = 10;
const RENEW_MARGIN_SECONDS: u64 = 6;
const LIFETIME_SECONDS: u64 = 60;
/// How long a SIGTERMed replica may take to drain and exit (the chart allows 65 s).
const SIGTERM_BOUND: Duration = Duration::from_secs(70);
/// How long the resources get to settle once the chaos ends.
const SETTLE: Duration = Duration::from_secs(90);
/// At most one API server restart this often.
const RESTART_SPACING: Duration = Duration::from_secs(20);
/// Each API call of the background tasks, so an outage cannot stall their cadence.
const CALL_BOUND: Duration = Duration::from_secs(3);
const PROVIDERS: [Provider; 2] = [Provider::Retently, Provider::Reltio];

/// The resources: name and provider. Each has `<name>-creds` and target `<name>-token`.
const RESOURCES: [(&str, Provider); 4] = [
    ("retently-1", Provider::Retently),
    ("retently-2", Provider::Retently),
    ("reltio-1", Provider::Reltio),
    ("reltio-2", Provider::Reltio),
];

fn creds_of(name: &str) -> String {
    format!("{name}-creds")
}

fn target_of(name: &str) -> String {
    format!("{name}-token")
}

/// Seconds since the test began, for progress lines.
fn ts() -> String {
    static T0: OnceLock<Instant> = OnceLock::new();
    format!(
        "[chaos {:>6.1}s]",
        T0.get_or_init(Instant::now).elapsed().as_secs_f64()
    )
}

fn env_u64(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("{name}={v:?} is not a whole number")
            })?))
        }
        Err(_) => Ok(None),
    }
}

fn index(p: Provider) -> usize {
    PROVIDERS.iter().position(|q| *q == p).unwrap_or(0)
}

fn spec(p: Provider, emu: &Emulator, name: &str) -> String {
    let grant = match p {
        Provider::Retently => format!("grant: {{redirectUri: \"{REDIRECT_URI}\"}}\n"),
        _ => String::new(),
    };
    format!(
        "preset: {}\ntokenEndpoint: {{url: \"{}\", timeoutSeconds: 2}}\ncredentials: {{secretRef: {{name: {}}}}}\ntarget: {{secretName: {}}}\nrefresh: {{renewBeforePercentage: 50, minimumMargin: 1s}}\n{grant}",
        p.as_str(),
        emu.token_url(p),
        creds_of(name),
        target_of(name)
    )
}

/// Retently: the fixture client with a fresh authorization code. Reltio: the fixture client
/// and a user of this resource's own (so each resource has a chain of its own).
fn credentials(p: Provider, c: &Control, name: &str) -> BTreeMap<String, Vec<u8>> {
    let pairs: Vec<(&str, String)> = match p {
        Provider::Retently => vec![
            ("client_id", fixtures::RETENTLY_CLIENT_ID.into()),
            ("client_secret", fixtures::RETENTLY_CLIENT_SECRET.into()),
            ("code", c.mint_authorization_code(REDIRECT_URI)),
        ],
        _ => {
            let user = format!("chaos-{name}");
            let password = hex::encode(rand::random::<[u8; 12]>());
            c.set_password(Provider::Reltio, &user, &password);
            vec![
                ("client_id", fixtures::RELTIO_CLIENT_ID.into()),
                ("client_secret", fixtures::RELTIO_CLIENT_SECRET.into()),
                ("username", user),
                ("password", password),
            ]
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect()
}

fn condition<'a>(
    pc: &'a ProviderCredential,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn needs_reauthorization(pc: &ProviderCredential) -> bool {
    condition(pc, "Degraded")
        .is_some_and(|c| c.status == "True" && c.reason == "ReauthorizationRequired")
}

fn is_ready(pc: &ProviderCredential) -> bool {
    condition(pc, "Ready").is_some_and(|c| c.status == "True")
}

async fn bounded<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .context("no answer in time")?
}

async fn lease_holder(env: &Env, lease: &str) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), env.name())
        .get_opt(lease)
        .await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

async fn force_refresh(env: &Env, name: &str, value: &str) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: value}}});
    env.pcreds()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn send_signal(op: &Operator, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(op.pid().context("the operator was reaped already")?)?;
    // SAFETY: kill(2) on our own child, which has not been reaped (so the pid is still ours).
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

// --- Replicas, run as the kubelet runs a pod's container: restarted at once when they end.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    Sigkill,
    Sigterm,
}

/// What happened to the replicas.
#[derive(Default)]
struct Book {
    /// SIGKILLs that ended a running process.
    sigkills: u32,
    /// Per SIGTERM: the replica, its exit status (None: not within the bound), how long.
    sigterms: Vec<(String, Option<ExitStatus>, Duration)>,
    /// Replicas that ended on their own (a lost lease ends the process).
    self_exits: Vec<String>,
    launch_failures: Vec<String>,
    /// Every incarnation's log.
    logs: Vec<String>,
}

struct Replica {
    name: &'static str,
    kills: mpsc::UnboundedSender<Kill>,
    /// The log of the incarnation running now; `None` while it stops or starts.
    running: watch::Receiver<Option<PathBuf>>,
    _task: AbortOnDrop<()>,
}

impl Replica {
    fn start(env: Arc<Env>, name: &'static str, args: Vec<String>, book: Arc<Mutex<Book>>) -> Self {
        let (kills, rx) = mpsc::unbounded_channel();
        let (running_tx, running) = watch::channel(None);
        let task = tokio::spawn(supervise(env, name, args, rx, running_tx, book));
        Replica {
            name,
            kills,
            running,
            _task: AbortOnDrop(task),
        }
    }

    fn is_running(&self) -> bool {
        self.running.borrow().is_some()
    }

    /// Ends the supervisor, and with it the process (SIGKILL on drop).
    async fn stop(mut self) {
        let task = &mut self._task.0;
        task.abort();
        let _ = task.await;
    }

    /// Running, and this incarnation has acquired the lease (a replica restarted under the
    /// holder's name may not have yet).
    fn leads(&self) -> bool {
        let log = self.running.borrow().clone();
        log.and_then(|l| std::fs::read_to_string(l).ok())
            .is_some_and(|text| text.contains("acquired leadership"))
    }
}

async fn supervise(
    env: Arc<Env>,
    name: &'static str,
    args: Vec<String>,
    mut kills: mpsc::UnboundedReceiver<Kill>,
    running: watch::Sender<Option<PathBuf>>,
    book: Arc<Mutex<Book>>,
) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_filter = std::env::var("CHAOS_RUST_LOG").ok();
    let mut vars = vec![("POD_NAME", name)];
    if let Some(filter) = &log_filter {
        vars.push(("RUST_LOG", filter));
    }
    for incarnation in 1.. {
        let mut op = loop {
            match Operator::start_with_env(&env, &args, &vars).await {
                Ok(op) => break op,
                Err(e) => {
                    eprintln!("{} {name}: start failed, retrying in 1 s: {e:#}", ts());
                    book.lock()
                        .unwrap()
                        .launch_failures
                        .push(format!("{name}: {e:#}"));
                    // The kubelet's restart backoff, shortened.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        // A kill meant for the previous incarnation does not apply to this one.
        while kills.try_recv().is_ok() {}
        let label = format!("{name}#{incarnation}");
        eprintln!(
            "{} {label} up (pid {:?}), log {}",
            ts(),
            op.pid(),
            op.log.display()
        );
        book.lock()
            .unwrap()
            .logs
            .push(format!("{label}: {}", op.log.display()));
        running.send_replace(Some(op.log.clone()));
        let event = tokio::select! {
            status = op.wait() => Err(status),
            kill = kills.recv() => Ok(kill),
        };
        running.send_replace(None);
        match event {
            Err(status) => {
                let status = status.map_or_else(|e| format!("{e:#}"), |s| s.to_string());
                eprintln!("{} {label} exited on its own: {status}", ts());
                book.lock()
                    .unwrap()
                    .self_exits
                    .push(format!("{label}: {status}"));
            }
            Ok(None) => return,
            Ok(Some(Kill::Sigkill)) => {
                let _ = op.start_kill();
                let status = op.wait().await;
                let killed = status
                    .as_ref()
                    .is_ok_and(|s| s.signal() == Some(libc::SIGKILL));
                eprintln!("{} {label} SIGKILLed: {status:?}", ts());
                let mut book = book.lock().unwrap();
                if killed {
                    book.sigkills += 1;
                } else {
                    book.self_exits.push(format!("{label}: {status:?}"));
                }
            }
            Ok(Some(Kill::Sigterm)) => {
                let sent = Instant::now();
                if let Err(e) = send_signal(&op, libc::SIGTERM) {
                    eprintln!("{} {label}: SIGTERM not sent: {e:#}", ts());
                }
                let status = match tokio::time::timeout(SIGTERM_BOUND, op.wait()).await {
                    Ok(Ok(status)) => Some(status),
                    Ok(Err(_)) | Err(_) => {
                        let _ = op.start_kill();
                        let _ = op.wait().await;
                        None
                    }
                };
                let took = sent.elapsed();
                eprintln!(
                    "{} {label} SIGTERMed: exited {status:?} after {took:.1?}",
                    ts()
                );
                book.lock()
                    .unwrap()
                    .sigterms
                    .push((label.clone(), status, took));
            }
        }
    }
}

// --- What the target Secrets held, sampled every second.

#[derive(Default)]
struct Samples {
    checked: u64,
    /// The Secret could not be read (API server down).
    unreadable: u64,
    /// The endpoint of the provider had an injected fault queued.
    faulted: u64,
    /// The resource waits for a new authorization code: nothing the operator can do.
    reauthorization: u64,
    invalid: Vec<String>,
}

async fn sample(
    env: Arc<Env>,
    c: Control,
    faulted_until: Arc<[AtomicU64; 2]>,
    samples: Arc<Mutex<Samples>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (name, p) in RESOURCES {
            let data = bounded(env.secret_data(&target_of(name))).await;
            let faulted = c.counters(p).requests < faulted_until[index(p)].load(Ordering::SeqCst);
            let Ok(data) = data else {
                samples.lock().unwrap().unreadable += 1;
                continue;
            };
            let token = data.and_then(|(_, d)| d.get("access_token").cloned());
            let valid = token
                .as_deref()
                .is_some_and(|t| c.is_valid_access_token(p, t));
            if valid {
                samples.lock().unwrap().checked += 1;
                continue;
            }
            if faulted {
                samples.lock().unwrap().faulted += 1;
                continue;
            }
            let pc = bounded(env.pcred(name)).await;
            let mut samples = samples.lock().unwrap();
            match pc {
                Ok(pc) if needs_reauthorization(&pc) => samples.reauthorization += 1,
                Ok(pc) => {
                    samples.checked += 1;
                    let line = format!(
                        "{} {name}: the target Secret holds {} (status: {})",
                        ts(),
                        if token.is_some() {
                            "an invalid token"
                        } else {
                            "no token"
                        },
                        serde_json::to_string(&pc.status).unwrap_or_default()
                    );
                    eprintln!("{line}");
                    samples.invalid.push(line);
                }
                Err(_) => samples.unreadable += 1,
            }
        }
    }
}

/// Forces a refresh on every resource every 2–4 s. Returns nothing; counts into `forced`.
async fn force_refreshes(env: Arc<Env>, seed: u64, forced: Arc<[AtomicU64; 2]>) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0u64.. {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..=4000))).await;
        for (name, _) in RESOURCES {
            let ok = bounded(force_refresh(&env, name, &format!("chaos-{n}")))
                .await
                .is_ok();
            forced[usize::from(!ok)].fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Sigkill,
    Sigterm,
    RestartApiserver,
    Latency,
    Fault503,
    FaultHang,
}

const ACTIONS: [Action; 6] = [
    Action::Sigkill,
    Action::Sigterm,
    Action::RestartApiserver,
    Action::Latency,
    Action::Fault503,
    Action::FaultHang,
];

fn counters_text(c: &Counters) -> String {
    format!(
        "requests={} issued={} stale_presented={} (most in one chain {}) stale_refused={} overlapping={} chains_started={}",
        c.requests,
        c.issued,
        c.stale_refresh_presented,
        c.most_stale_in_one_chain,
        c.stale_refresh_refused,
        c.overlapping_refreshes,
        c.chains_started
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_chains_survive_chaos() -> Result<()> {
    let began = Instant::now();
    ts();
    let chaos_for = Duration::from_secs(env_u64("CHAOS_SECONDS")?.unwrap_or(45));
    let grace = Duration::from_secs(env_u64("CHAOS_GRACE_SECONDS")?.unwrap_or(30));
    let seed = env_u64("CHAOS_SEED")?.unwrap_or_else(rand::random);
    eprintln!(
        "{} seed {seed} (CHAOS_SEED={seed} replays the schedule), chaos {chaos_for:?}, refresh-token grace {grace:?}",
        ts()
    );

    // A control plane of our own: its API server is restarted.
    token_rotator::install_crypto_provider();
    let cp: &'static testkit::ControlPlane = Box::leak(Box::new(
        testkit::ControlPlane::start()
            .await
            .context("start a control plane")?,
    ));
    let env = Arc::new(Env::on(cp, "chaos").await?);
    let (lease_name, args) = env
        .leader_election(LEASE_SECONDS, RENEW_MARGIN_SECONDS)
        .await?;

    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options::default()).await?;
    let c = emu.control();
    c.set_rotating_refresh(true);
    // Every Reltio grant mints a new access token (otherwise a refresh hands the user's
    // current token back with its remaining lifetime, and it expires on its first schedule).
    c.set_multi_token(true);
    for p in PROVIDERS {
        c.set_lifetime(p, LIFETIME_SECONDS);
        c.set_refresh_grace(p, grace);
    }
    for (name, p) in RESOURCES {
        env.create_credentials(&creds_of(name), &credentials(p, &c, name), true)
            .await?;
        env.create_pcred(name, &spec(p, &emu, name)).await?;
    }

    let book = Arc::new(Mutex::new(Book::default()));
    let replicas = [
        Replica::start(env.clone(), "replica-a", args.clone(), book.clone()),
        Replica::start(env.clone(), "replica-b", args, book.clone()),
    ];
    for (name, _) in RESOURCES {
        env.wait_condition(name, "Ready", "True", None).await?;
    }
    let setup = began.elapsed();
    let at_start = PROVIDERS.map(|p| c.counters(p));
    eprintln!(
        "{} set up in {setup:.1?}: every resource Ready; retently {}; reltio {}",
        ts(),
        counters_text(&at_start[0]),
        counters_text(&at_start[1])
    );

    // Background: forced refreshes and samples of the target Secrets.
    let faulted_until: Arc<[AtomicU64; 2]> = Arc::default();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampler = AbortOnDrop(tokio::spawn(sample(
        env.clone(),
        c.clone(),
        faulted_until.clone(),
        samples.clone(),
    )));
    let forced: Arc<[AtomicU64; 2]> = Arc::default();
    let forcer = AbortOnDrop(tokio::spawn(force_refreshes(
        env.clone(),
        seed.wrapping_add(1),
        forced.clone(),
    )));

    // The chaos schedule.
    let mut rng = StdRng::seed_from_u64(seed);
    // Drawn from a shuffled deck of every kind, refilled when empty: random order, and even a
    // short run does each kind of action (when it can).
    let mut deck: Vec<Action> = Vec::new();
    let mut actions: BTreeMap<Action, u32> = BTreeMap::new();
    let mut last_restart: Option<Instant> = None;
    let mut restart: Option<tokio::task::JoinHandle<Result<(), testkit::Error>>> = None;
    let mut latency_reset: Option<AbortOnDrop<()>> = None;
    let chaos_began = Instant::now();
    let chaos_ends = chaos_began + chaos_for;
    loop {
        let pause = Duration::from_millis(rng.random_range(3000..=8000));
        let left = chaos_ends.saturating_duration_since(Instant::now());
        if pause >= left {
            tokio::time::sleep(left).await;
            break;
        }
        tokio::time::sleep(pause).await;
        if deck.is_empty() {
            deck = ACTIONS.to_vec();
            deck.shuffle(&mut rng);
        }
        let fallback = [Action::Latency, Action::Fault503, Action::FaultHang]
            .choose(&mut rng)
            .copied()
            .unwrap_or(Action::Fault503);
        let holder = bounded(lease_holder(&env, &lease_name))
            .await
            .ok()
            .flatten();
        let leader = replicas
            .iter()
            .find(|r| Some(r.name) == holder.as_deref() && r.leads());
        let restarting = restart.as_ref().is_some_and(|t| !t.is_finished());
        let may_restart =
            !restarting && last_restart.is_none_or(|t| t.elapsed() >= RESTART_SPACING);
        // The first card that can be played now; else (no leader right now, a restart too
        // recent) a fault, and the cards wait for a later turn.
        let playable = |a: &Action| match a {
            Action::Sigkill | Action::Sigterm => leader.is_some(),
            Action::RestartApiserver => may_restart,
            _ => true,
        };
        let action = match deck.iter().position(playable) {
            Some(i) => deck.remove(i),
            None => fallback,
        };
        *actions.entry(action).or_default() += 1;
        match action {
            Action::Sigkill | Action::Sigterm => {
                let leader = leader.context("a leader was found")?;
                let kill = if action == Action::Sigkill {
                    Kill::Sigkill
                } else {
                    Kill::Sigterm
                };
                eprintln!("{} {kill:?} the leader {}", ts(), leader.name);
                let _ = leader.kills.send(kill);
            }
            Action::RestartApiserver => {
                let down = Duration::from_millis(rng.random_range(2000..=5000));
                eprintln!("{} restart the API server, down {down:.1?}", ts());
                if let Some(previous) = restart.take() {
                    previous.await?.context("restart the API server")?;
                }
                last_restart = Some(Instant::now());
                restart = Some(tokio::spawn(async move {
                    let began = Instant::now();
                    let result = cp.restart_apiserver(down).await;
                    eprintln!(
                        "{} the API server is back after {:.1?}: {result:?}",
                        ts(),
                        began.elapsed()
                    );
                    result
                }));
            }
            Action::Latency => {
                let latency = Duration::from_millis(rng.random_range(1000..=1500));
                let lasting = Duration::from_millis(rng.random_range(4000..=12000));
                eprintln!("{} latency {latency:.1?} for {lasting:.1?}", ts());
                for p in PROVIDERS {
                    c.set_latency(p, latency);
                }
                let c = c.clone();
                latency_reset = Some(AbortOnDrop(tokio::spawn(async move {
                    tokio::time::sleep(lasting).await;
                    for p in PROVIDERS {
                        c.set_latency(p, Duration::ZERO);
                    }
                    eprintln!("{} latency off", ts());
                })));
            }
            Action::Fault503 | Action::FaultHang => {
                let p = PROVIDERS[rng.random_range(0..PROVIDERS.len())];
                let (fault, times) = match action {
                    Action::Fault503 => (
                        Fault::Status {
                            code: 503,
                            body: "{\"error\":\"temporarily_unavailable\"}".into(),
                        },
                        2,
                    ),
                    _ => (Fault::Hang, 1),
                };
                eprintln!("{} {p:?}: {fault:?} x{times}", ts());
                let until = &faulted_until[index(p)];
                let from = until.load(Ordering::SeqCst).max(c.counters(p).requests);
                until.store(from + u64::from(times), Ordering::SeqCst);
                c.inject(p, fault, times);
            }
        }
    }
    drop(forcer);
    let chaos_took = chaos_began.elapsed();
    eprintln!("{} chaos over; settling", ts());

    // Settle: the endpoint healthy, the API server up, both replicas running.
    if let Some(restart) = restart.take() {
        restart.await?.context("restart the API server")?;
    }
    drop(latency_reset);
    for p in PROVIDERS {
        c.clear_faults(p);
        c.set_latency(p, Duration::ZERO);
        faulted_until[index(p)].store(0, Ordering::SeqCst);
    }
    let mut failures: Vec<String> = Vec::new();
    let up = eventually("both replicas running", SETTLE, || async {
        Ok(replicas.iter().all(Replica::is_running).then_some(()))
    })
    .await;
    if let Err(e) = up {
        failures.push(format!("{e:#}"));
    }

    // One last refresh of every resource; a Retently resource whose chain broke gets a new
    // authorization code (the provider's consent page, redone).
    let settle_began = Instant::now();
    let reauthorized: Mutex<BTreeSet<&str>> = Mutex::default();
    let pending_at_last: Mutex<Vec<String>> = Mutex::default();
    let last = format!("final-{seed}");
    let settled = eventually(
        "every resource Ready with a valid token",
        SETTLE,
        || async {
            let mut pending = Vec::new();
            for (name, p) in RESOURCES {
                let Ok(pc) = bounded(env.pcred(name)).await else {
                    pending.push(format!("{name}: unreadable"));
                    continue;
                };
                if p == Provider::Retently
                    && needs_reauthorization(&pc)
                    && reauthorized.lock().unwrap().insert(name)
                {
                    eprintln!(
                        "{} {name} needs reauthorization: a new code goes into {}",
                        ts(),
                        creds_of(name)
                    );
                    let code = c.mint_authorization_code(REDIRECT_URI);
                    env.set_credential(&creds_of(name), "code", &code).await?;
                }
                let status = pc.status.clone().unwrap_or_default();
                if status.last_refresh_request.as_deref() != Some(last.as_str()) {
                    // Forced again each pass until answered: cheap, and immune to a lost patch.
                    let _ = bounded(force_refresh(&env, name, &last)).await;
                    pending.push(format!("{name}: last refresh not handled yet"));
                    continue;
                }
                let token = bounded(env.secret_data(&target_of(name)))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|(_, d)| d.get("access_token").cloned());
                let valid = token.is_some_and(|t| c.is_valid_access_token(p, &t));
                if !is_ready(&pc) || !valid {
                    pending.push(format!(
                        "{name}: ready {}, valid token {valid}",
                        is_ready(&pc)
                    ));
                }
            }
            let done = pending.is_empty();
            *pending_at_last.lock().unwrap() = pending;
            Ok(done.then_some(()))
        },
    )
    .await;
    if let Err(e) = settled {
        let pending = pending_at_last.lock().unwrap().join("; ");
        eprintln!("{} still pending: {pending}", ts());
        for (name, _) in RESOURCES {
            let pc = env.pcred(name).await.ok();
            eprintln!(
                "{name} at the end: {}",
                serde_json::to_string(&pc.and_then(|p| p.status)).unwrap_or_default()
            );
        }
        failures.push(format!("{e:#}"));
    }
    let settle_took = settle_began.elapsed();
    drop(sampler);

    // The books.
    let counters = PROVIDERS.map(|p| c.counters(p));
    let mut rotations = Vec::new();
    for (name, _) in RESOURCES {
        let r = env
            .pcred(name)
            .await
            .ok()
            .and_then(|pc| pc.status?.refresh_token.map(|r| r.rotations));
        rotations.push(format!(
            "{name}={}",
            r.map_or("-".into(), |r| r.to_string())
        ));
    }
    let reauthorized = reauthorized.into_inner().unwrap();
    let book = std::mem::take(&mut *book.lock().unwrap());
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let [rt, rl] = counters;
    // A chain broke: a replaced refresh token was refused, and then Retently needs a new code
    // and Reltio falls back to its password grant (a new chain).
    let reltio_fallbacks = rl.chains_started.saturating_sub(2);
    let broken_retently = rt.stale_refresh_refused.max(reauthorized.len() as u64);
    let broken_reltio = rl.stale_refresh_refused.max(reltio_fallbacks);
    let broken = broken_retently + broken_reltio;
    let stale_presented = rt.stale_refresh_presented + rl.stale_refresh_presented;
    let sigkills = u64::from(book.sigkills);
    let sigterm_ok = book
        .sigterms
        .iter()
        .filter(|(_, s, _)| s.is_some_and(|s| s.success()))
        .count();
    let actions_text: Vec<String> = actions.iter().map(|(a, n)| format!("{a:?}={n}")).collect();
    eprintln!(
        "CHAOS SUMMARY seed={seed} grace={}s chaos={:.1}s settle={:.1}s total={:.1}s actions[{}] delivered[sigkill={} sigterm={}] forced={} (failed {}) rotations[{}] retently[{}] reltio[{}] broken_chains={broken} (retently: refused {}, reauthorization {}; reltio: refused {}, fallbacks {}) sigterm_exit0={}/{} self_exits={} launch_failures={} samples[valid {}, invalid {}, faulted {}, reauthorization {}, unreadable {}]",
        grace.as_secs(),
        chaos_took.as_secs_f64(),
        settle_took.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        actions_text.join(" "),
        book.sigkills,
        book.sigterms.len(),
        forced[0].load(Ordering::SeqCst),
        forced[1].load(Ordering::SeqCst),
        rotations.join(" "),
        counters_text(&rt),
        counters_text(&rl),
        rt.stale_refresh_refused,
        reauthorized.len(),
        rl.stale_refresh_refused,
        reltio_fallbacks,
        sigterm_ok,
        book.sigterms.len(),
        book.self_exits.len(),
        book.launch_failures.len(),
        samples.checked - samples.invalid.len() as u64,
        samples.invalid.len(),
        samples.faulted,
        samples.reauthorization,
        samples.unreadable,
    );
    for line in book.self_exits.iter().chain(&book.launch_failures) {
        eprintln!("  {line}");
    }
    for log in &book.logs {
        eprintln!("  log {log}");
    }

    // The invariants.
    for (p, counters) in PROVIDERS.iter().zip(&counters) {
        if counters.overlapping_refreshes != 0 {
            failures.push(format!(
                "{p:?}: {} refresh grants overlapped another of the same chain (two replicas rotating at once)",
                counters.overlapping_refreshes
            ));
        }
    }
    if !samples.invalid.is_empty() {
        failures.push(format!(
            "{} samples found a target Secret without a valid token while the endpoint answered:\n{}",
            samples.invalid.len(),
            samples.invalid.join("\n")
        ));
    }
    if samples.checked == 0 {
        failures.push("no target Secret was ever sampled".into());
    }
    if grace.is_zero() {
        eprintln!(
            "strict rotation: {broken} broken chains, {stale_presented} replaced refresh tokens presented, {sigkills} SIGKILLs"
        );
        // A kill loses the unstored answer of every chain it caught between the provider's
        // answer and the state write, so each kill may break each chain once.
        let chains = RESOURCES.len() as u64;
        if broken > sigkills * chains {
            failures.push(format!(
                "{broken} broken chains but only {sigkills} SIGKILLs of a replica keeping {chains} chains (only a kill between the answer and the state write may break one)"
            ));
        }
    } else if broken != 0 || !reauthorized.is_empty() {
        failures.push(format!(
            "{broken} broken chains ({} resources needed reauthorization) despite a {grace:?} grace period",
            reauthorized.len()
        ));
    }
    // Likewise per chain: a kill may cost each chain one replaced token presented (the one
    // whose successor was never stored), so no chain may have more than there were kills.
    for (p, counters) in PROVIDERS.iter().zip(&counters) {
        if counters.most_stale_in_one_chain > sigkills {
            failures.push(format!(
                "{p:?}: {} replaced refresh tokens presented in one chain but only {sigkills} SIGKILLs (a replica resent a refresh token it had replaced)",
                counters.most_stale_in_one_chain
            ));
        }
    }
    for (label, status, took) in &book.sigterms {
        if !status.is_some_and(|s| s.success()) {
            failures.push(format!(
                "{label} did not exit 0 within {SIGTERM_BOUND:?} of SIGTERM: {status:?} after {took:.1?}"
            ));
        }
    }

    for replica in replicas {
        replica.stop().await;
    }
    tokio::task::block_in_place(|| cp.stop());
    if !failures.is_empty() {
        bail!(
            "{} invariants failed (seed {seed}):\n- {}",
            failures.len(),
            failures.join("\n- ")
        );
    }
    Ok(())
}

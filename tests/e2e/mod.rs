//! Shared pieces of the controller end-to-end tests: a namespace with the chart's RBAC, the
//! operator as a subprocess running under that identity, and polling helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use token_rotator::api::ProviderCredential;

pub mod delivery;

pub const CONVERGE: Duration = Duration::from_secs(60);
pub const OPERATOR_SA: &str = "token-rotator";

pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ClusterRole the chart grants the operator, read from the rendered `deploy/`.
pub fn chart_cluster_role() -> Result<ClusterRole> {
    let text = std::fs::read_to_string(repo_path("deploy/token-rotator.yaml"))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)?;
    let role = docs
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .context("deploy/token-rotator.yaml has no ClusterRole")?;
    Ok(serde_json::from_value(role)?)
}

/// Applies the chart's ClusterRole rendered with `--set <value>` under `name`, after checking
/// that it grants `resource` (the feature the value turns on).
pub async fn apply_chart_cluster_role(
    env: &Env,
    value: &str,
    name: &str,
    resource: &str,
) -> Result<()> {
    let rendered = helm(
        env.cp,
        &[
            "template",
            "token-rotator",
            path_str(&repo_path("charts/token-rotator"))?,
            "--set",
            value,
            "--show-only",
            "templates/rbac.yaml",
        ],
    )
    .await?;
    let mut role: ClusterRole =
        serde_json::from_value(only_kind(&yaml_docs(&rendered)?, "ClusterRole")?)?;
    role.metadata = ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    };
    ensure!(
        role.rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|x| x == resource)),
        "the chart grants {resource} with {value}"
    );
    Api::<ClusterRole>::all(env.client.clone())
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&role),
        )
        .await?;
    Ok(())
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A test namespace, with the CRD installed and the operator's ServiceAccount bound to the
/// chart's ClusterRole (through a RoleBinding, as the chart's watchNamespaces mode does).
pub struct Env {
    pub cp: &'static testkit::ControlPlane,
    pub ns: testkit::TestNamespace,
    pub client: Client,
}

impl Env {
    pub async fn new(prefix: &str) -> Result<Env> {
        token_rotator::install_crypto_provider();
        let cp = testkit::shared().await?;
        cp.apply_crds(repo_path("crds")).await?;
        let ns = cp.new_namespace(prefix).await?;
        let client = cp.client();
        let env = Env { cp, ns, client };
        env.bind_operator_rbac(None).await?;
        Ok(env)
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Creates the operator's ServiceAccount and binds the chart's rules, minus `without`
    /// (a resource name) for negative tests.
    pub async fn bind_operator_rbac(&self, without: Option<&str>) -> Result<()> {
        let ns = self.name();
        let mut role = chart_cluster_role()?;
        let role_name = format!("token-rotator-{ns}");
        role.metadata = ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        };
        if let Some(drop) = without {
            let rules = role.rules.get_or_insert_with(Vec::new);
            for rule in rules.iter_mut() {
                if let Some(resources) = rule.resources.as_mut() {
                    resources.retain(|r| r != drop);
                }
            }
            rules.retain(|r| r.resources.as_ref().is_none_or(|rs| !rs.is_empty()));
        }
        let pp = PatchParams::apply("e2e").force();
        Api::<ClusterRole>::all(self.client.clone())
            .patch(&role_name, &pp, &Patch::Apply(&role))
            .await?;
        Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .patch(
                OPERATOR_SA,
                &pp,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}})),
            )
            .await?;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "token-rotator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}],
        });
        Api::<RoleBinding>::namespaced(self.client.clone(), ns)
            .patch("token-rotator", &pp, &Patch::Apply(&binding))
            .await?;
        Ok(())
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.name())
    }

    pub fn pcreds(&self) -> Api<ProviderCredential> {
        Api::namespaced(self.client.clone(), self.name())
    }

    pub async fn start_operator(&self) -> Result<Operator> {
        Operator::start(self).await
    }

    pub async fn create_credentials(
        &self,
        name: &str,
        data: &BTreeMap<String, Vec<u8>>,
        labelled: bool,
    ) -> Result<()> {
        let mut labels = BTreeMap::new();
        if labelled {
            labels.insert(
                "tokenrotator.dev/credentials".to_string(),
                "true".to_string(),
            );
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Secret::default()
        };
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(())
    }

    pub async fn set_credential(&self, secret: &str, key: &str, value: &str) -> Result<()> {
        let patch = json!({"stringData": {key: value}});
        self.secrets()
            .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    pub async fn create_pcred(&self, name: &str, spec_yaml: &str) -> Result<ProviderCredential> {
        let spec = serde_saphyr::from_str(spec_yaml).context("test spec parses")?;
        let pc = ProviderCredential::new(name, spec);
        Ok(self.pcreds().create(&PostParams::default(), &pc).await?)
    }

    pub async fn pcred(&self, name: &str) -> Result<ProviderCredential> {
        Ok(self.pcreds().get(name).await?)
    }

    /// Waits until condition `type_` has `status` (and `reason`, if given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<ProviderCredential> {
        let what = format!("{name}: {type_}={status} {reason:?}");
        let result = eventually(&what, CONVERGE, || async {
            let pc = self.pcred(name).await?;
            let ok = pc.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == type_ && c.status == status && reason.is_none_or(|r| c.reason == r)
                })
            });
            Ok(ok.then_some(pc))
        })
        .await;
        if result.is_err() {
            let pc = self.pcred(name).await.ok();
            eprintln!(
                "last status of {name}: {}",
                serde_json::to_string_pretty(&pc.and_then(|p| p.status)).unwrap_or_default()
            );
        }
        result
    }

    pub async fn secret_data(
        &self,
        name: &str,
    ) -> Result<Option<(Secret, BTreeMap<String, String>)>> {
        Ok(self.secrets().get_opt(name).await?.map(|s| {
            let data = s
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            (s, data)
        }))
    }

    /// Everything a user could see about this namespace's resources, for leak checks: the
    /// status of every ProviderCredential and every Event's text.
    pub async fn visible_text(&self) -> Result<String> {
        let mut out = String::new();
        for pc in self.pcreds().list(&Default::default()).await? {
            out.push_str(&serde_json::to_string(&pc.status)?);
            out.push_str(&serde_json::to_string(&pc.metadata.annotations)?);
        }
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), self.name());
        for e in events.list(&Default::default()).await? {
            out.push_str(&format!("{:?} {:?} {:?}\n", e.reason, e.note, e.type_));
        }
        Ok(out)
    }

    pub async fn events_with_reason(&self, reason: &str) -> Result<usize> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), self.name());
        Ok(events
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .count())
    }
}

/// The operator binary, running as the namespace's operator ServiceAccount.
pub struct Operator {
    child: tokio::process::Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// The operator's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.child.id().context("the operator has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<pid>/status")
    }

    pub async fn start(env: &Env) -> Result<Operator> {
        Self::start_with(env, &[]).await
    }

    pub async fn start_with(env: &Env, extra: &[&str]) -> Result<Operator> {
        let kubeconfig = env
            .cp
            .service_account_kubeconfig(env.name(), OPERATOR_SA)
            .await?;
        let port = free_port()?;
        let logs = repo_path("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}-{port}.log", env.name()));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-rotator"))
            .args([
                "run",
                "--namespace",
                env.name(),
                "--allow-http",
                "--log-format",
                "text",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            // Tests rotate 6-second tokens every 3 seconds, far faster than real providers
            // (the default budget of 6 per minute is tested on its own).
            .args(["--token-requests-per-minute", "60"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            // As the chart runs it: the key of the inputs digests lives in its namespace.
            .env("POD_NAMESPACE", env.name())
            .env("RUST_LOG", "info,token_rotator=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("start the operator")?;
        let op = Operator {
            child,
            metrics_port: port,
            log,
        };
        eventually("the operator's /readyz", CONVERGE, || async {
            Ok(op
                .get("/readyz")
                .await
                .ok()
                .filter(|b| b == "ok")
                .map(|_| ()))
        })
        .await?;
        Ok(op)
    }

    pub async fn get(&self, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let resp = reqwest::get(url).await?;
        Ok(resp.text().await?)
    }

    pub async fn metrics(&self) -> Result<String> {
        self.get("/metrics").await
    }

    /// The value of an unlabelled metric (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    pub async fn stop(mut self) -> Result<String> {
        self.child.kill().await?;
        Ok(std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (as the kubelet does) and waits up to `within` for the exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("the operator has already exited")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("the operator did not exit within {within:?} of SIGTERM"))?
            .context("wait for the operator")
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

pub fn fingerprint(pc: &ProviderCredential) -> Option<String> {
    pc.status
        .as_ref()?
        .access_token
        .as_ref()
        .map(|a| a.fingerprint.clone())
}

// Helpers of the "Ship it" tests (tests/e2e_ship.rs): helm, the chart's rendered objects, the
// leader-election Role, and the operator with chosen arguments and environment.

use std::path::Path;

use k8s_openapi::api::rbac::v1::Role;

/// Runs the pinned helm (from the control plane's bin dir) as cluster admin and returns its
/// stdout. Helm's cache, config and data live under target/, not in the user's home.
pub async fn helm(cp: &testkit::ControlPlane, args: &[&str]) -> Result<String> {
    let home = repo_path("target/e2e-helm");
    let out = tokio::process::Command::new(cp.bin_dir().join("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .await
        .context("run helm")?;
    if !out.status.success() {
        bail!(
            "helm {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The documents of a multi-document YAML stream (empty documents dropped).
pub fn yaml_docs(text: &str) -> Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The one document of `kind` in `docs`.
pub fn only_kind(docs: &[serde_json::Value], kind: &str) -> Result<serde_json::Value> {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found
        .next()
        .with_context(|| format!("no {kind} rendered"))?;
    anyhow::ensure!(found.next().is_none(), "more than one {kind} rendered");
    Ok(doc.clone())
}

/// The leader-election Role exactly as the chart renders it (`leaderElection.enabled=true`,
/// release `token-rotator`): `deploy/` is rendered with election off and has no such Role.
pub async fn chart_leader_election_role(cp: &testkit::ControlPlane) -> Result<Role> {
    let chart = repo_path("charts/token-rotator");
    let rendered = helm(
        cp,
        &[
            "template",
            "token-rotator",
            path_str(&chart)?,
            "--set",
            "leaderElection.enabled=true",
            "--show-only",
            "templates/rbac.yaml",
        ],
    )
    .await?;
    Ok(serde_json::from_value(only_kind(
        &yaml_docs(&rendered)?,
        "Role",
    )?)?)
}

pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

impl Env {
    /// Binds exactly the chart's leader-election Role and returns its Lease's name and the
    /// flags replicas elect a leader with.
    pub async fn leader_election(
        &self,
        lease_seconds: u64,
        renew_margin_seconds: u64,
    ) -> Result<(String, Vec<String>)> {
        let role = chart_leader_election_role(self.cp).await?;
        let lease_name = role
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resource_names.iter().flatten())
            .next()
            .cloned()
            .context("the chart's Role names its Lease")?;
        self.bind_operator_role(role).await?;
        let args = [
            "--leader-election",
            "--leader-election-namespace",
            self.name(),
            "--leader-election-lease-name",
            &lease_name,
            "--lease-duration-seconds",
            &lease_seconds.to_string(),
            "--lease-renew-margin-seconds",
            &renew_margin_seconds.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Ok((lease_name, args))
    }

    /// Creates `role` in this namespace and binds it to the operator's ServiceAccount.
    pub async fn bind_operator_role(&self, mut role: Role) -> Result<()> {
        let ns = self.name();
        let name = role.metadata.name.clone().context("the Role has a name")?;
        role.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        };
        let pp = PatchParams::apply("e2e").force();
        Api::<Role>::namespaced(self.client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&role))
            .await?;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}],
        });
        Api::<RoleBinding>::namespaced(self.client.clone(), ns)
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await?;
        Ok(())
    }
}

impl Operator {
    /// Like [`Operator::start_with`], with extra environment variables (applied last, so
    /// `RUST_LOG` can be overridden).
    pub async fn start_with_env(
        env: &Env,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<Operator> {
        let kubeconfig = env
            .cp
            .service_account_kubeconfig(env.name(), OPERATOR_SA)
            .await?;
        let mut args = Operator::run_args(env.name());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut all_vars = vec![
            ("RUST_LOG", "info,token_rotator=debug"),
            ("POD_NAMESPACE", env.name()),
        ];
        all_vars.extend_from_slice(vars);
        Operator::launch(&kubeconfig, env.name(), &args, &all_vars).await
    }

    /// `token-rotator run` for one namespace as every e2e test runs it.
    pub fn run_args(namespace: &str) -> Vec<String> {
        [
            "run",
            "--namespace",
            namespace,
            "--allow-http",
            "--log-format",
            "text",
            "--token-requests-per-minute",
            "60",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The operator binary as `token-rotator <args> --metrics-addr 127.0.0.1:<free port>`
    /// under `kubeconfig` (nothing else is added), logging to
    /// `target/e2e-logs/<label>-<port>.log`; returns once /readyz answers ok.
    pub async fn launch(
        kubeconfig: &Path,
        label: &str,
        args: &[String],
        vars: &[(&str, &str)],
    ) -> Result<Operator> {
        let binary = Path::new(env!("CARGO_BIN_EXE_token-rotator"));
        Self::launch_binary(binary, kubeconfig, label, args, vars).await
    }

    /// [`Operator::launch`] with another build of the operator (an earlier release).
    pub async fn launch_binary(
        binary: &Path,
        kubeconfig: &Path,
        label: &str,
        args: &[String],
        vars: &[(&str, &str)],
    ) -> Result<Operator> {
        let port = free_port()?;
        let logs = repo_path("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{label}-{port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary)
            .args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("start the operator")?;
        let mut op = Operator {
            child,
            metrics_port: port,
            log,
        };
        let ready = eventually("the operator's /readyz", CONVERGE, || async {
            Ok(op
                .get("/readyz")
                .await
                .ok()
                .filter(|b| b == "ok")
                .map(|_| ()))
        })
        .await;
        if let Err(e) = ready {
            let running = op.is_running();
            bail!(
                "{e} (operator running: {running}); its log:\n{}",
                op.log_text()
            );
        }
        Ok(op)
    }
}

// Helpers of the chaos test (tests/chaos.rs): a namespace on a control plane of the test's
// own (one it restarts), and replicas it signals and restarts as the kubelet would.

impl Env {
    /// Like [`Env::new`], on `cp` instead of the shared control plane.
    pub async fn on(cp: &'static testkit::ControlPlane, prefix: &str) -> Result<Env> {
        token_rotator::install_crypto_provider();
        cp.apply_crds(repo_path("crds")).await?;
        let ns = cp.new_namespace(prefix).await?;
        let client = cp.client();
        let env = Env { cp, ns, client };
        env.bind_operator_rbac(None).await?;
        Ok(env)
    }
}

impl Operator {
    /// The process id, until the exit has been collected.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGKILL without waiting for the exit.
    pub fn start_kill(&mut self) -> Result<()> {
        Ok(self.child.start_kill()?)
    }

    /// Waits for the process to exit, however it ends.
    pub async fn wait(&mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait().await?)
    }
}

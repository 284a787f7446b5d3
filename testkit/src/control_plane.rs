//! Starting, waiting for and stopping etcd, kube-apiserver and kube-controller-manager.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::binaries::{check_bin_dir, find_bin_dir};
use crate::certs::Pki;
use crate::error::{Error, Result};
use crate::kubeconfig::{self, Credentials};
use crate::process::{Process, TempDir, log_tail};

/// How often startup conditions are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long each component gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const APISERVER: &str = "kube-apiserver";
/// Attempts when a freshly picked port was taken by someone else before our child bound it.
const PORT_ATTEMPTS: usize = 3;
/// Matches the first address that the `kubernetes` Service takes (see certs.rs).
const SERVICE_CIDR: &str = "10.0.0.0/24";
/// Also accepted as an issuer (the first, the control plane's own loopback URL, signs):
/// what in-cluster tokens are usually issued by.
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Controllers this project relies on: garbage collection and namespace deletion, and the
/// ServiceAccount machinery (`default` SA per namespace, the controllers' own tokens, the
/// `kube-root-ca.crt` ConfigMap that projected token volumes mount), and the Deployment and
/// ReplicaSet controllers (a restart by spec.rollout shows as a new ReplicaSet).
const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
deployment-controller,replicaset-controller";

/// Settings for [`ControlPlane::start_with`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Directory with the binaries; default: `$TOKEN_ROTATOR_K8S_BIN`, else the provision cache.
    pub bin_dir: Option<PathBuf>,
    /// How long startup may take before it is reported as failed.
    pub timeout: Duration,
    /// Where the apiserver writes its audit log (see [`crate::audit`]); default:
    /// `$TESTKIT_AUDIT_DIR`, else no audit log.
    pub audit_dir: Option<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            bin_dir: None,
            // Generous: two cores may be busy compiling while the tests start.
            timeout: Duration::from_secs(180),
            audit_dir: crate::audit::dir_from_env(),
        }
    }
}

/// A running etcd + kube-apiserver + kube-controller-manager on loopback, with RBAC on.
///
/// Dropping it stops the components (SIGTERM, then SIGKILL) and removes its temp dir.
pub struct ControlPlane {
    // Stopped in reverse order: controller manager, apiserver, etcd.
    processes: Mutex<Vec<Process>>,
    /// Set by `stop`, so a restart under way does not bring the apiserver back.
    stopped: AtomicBool,
    /// One apiserver restart at a time.
    restart_lock: tokio::sync::Mutex<()>,
    /// From [`StartOptions::timeout`]; also bounds the wait for a restarted apiserver.
    timeout: Duration,
    bin_dir: PathBuf,
    server_url: String,
    ca_pem: String,
    admin_kubeconfig: PathBuf,
    admin_config: kube::Config,
    pub(crate) crd_lock: tokio::sync::Mutex<()>,
    files: AtomicU64,
    // Declared last so it is removed after the processes are gone.
    dir: TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir.path)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts a control plane with the binaries from `$TOKEN_ROTATOR_K8S_BIN` or the cache
    /// `hack/provision.sh` fills, and waits until it serves requests and ServiceAccounts work.
    pub async fn start() -> Result<Self> {
        Self::start_with(StartOptions::default()).await
    }

    pub async fn start_with(options: StartOptions) -> Result<Self> {
        crate::install_crypto();
        let bin_dir = match options.bin_dir {
            Some(dir) => {
                check_bin_dir(&dir)?;
                dir
            }
            None => find_bin_dir()?,
        };
        let mut attempt = 1;
        loop {
            match Self::start_once(&bin_dir, options.timeout, options.audit_dir.as_deref()).await {
                Err(e) if e.is_port_clash() && attempt < PORT_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    async fn start_once(
        bin_dir: &Path,
        timeout: Duration,
        audit_dir: Option<&Path>,
    ) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let dir = TempDir::create()?;
        let pki = Pki::generate()?;
        let ca_file = dir.write_private("ca.crt", &pki.ca_pem)?;
        let serving_cert = dir.write_private("apiserver.crt", &pki.serving.cert_pem)?;
        let serving_key = dir.write_private("apiserver.key", &pki.serving.key_pem)?;
        let sa_key = dir.write_private("sa.key", &pki.sa_key_pem)?;
        let sa_pub = dir.write_private("sa.pub", &pki.sa_public_pem)?;

        let [etcd_port, peer_port, api_port] = free_ports()?;
        let server_url = format!("https://127.0.0.1:{api_port}");
        let cert_kubeconfig = |user, namespace, pair| {
            kubeconfig::render(
                &server_url,
                &pki.ca_pem,
                user,
                namespace,
                &Credentials::ClientCert(pair),
            )
        };
        let admin_text = cert_kubeconfig("admin", "default", &pki.admin);
        let admin_kubeconfig = dir.write_private("admin.kubeconfig", &admin_text)?;
        let kcm_kubeconfig = dir.write_private(
            "controller-manager.kubeconfig",
            &cert_kubeconfig(
                "kube-controller-manager",
                "kube-system",
                &pki.controller_manager,
            ),
        )?;
        let admin_config = kubeconfig::to_config(&admin_text).await?;

        // From here on, an early return drops `cp`, which stops whatever was started.
        let cp = Self {
            processes: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            restart_lock: tokio::sync::Mutex::new(()),
            timeout,
            bin_dir: bin_dir.to_owned(),
            server_url,
            ca_pem: pki.ca_pem,
            admin_kubeconfig,
            admin_config,
            crd_lock: tokio::sync::Mutex::new(()),
            files: AtomicU64::new(0),
            dir,
        };
        let path = |p: &Path| p.display().to_string();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            "etcd",
            &[
                "--name=testkit".into(),
                format!("--data-dir={}", path(&cp.dir.path.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testkit={peer_url}"),
                // Throwaway data: durability only costs time.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait_for("etcd to listen", "etcd", deadline, || async move {
            TcpStream::connect((Ipv4Addr::LOCALHOST, etcd_port))
                .map(|_| true)
                .map_err(|e| e.to_string())
        })
        .await?;

        let mut audit_args = Vec::new();
        if let Some(audit_dir) = audit_dir {
            std::fs::create_dir_all(audit_dir)
                .map_err(Error::io("create the audit log directory", audit_dir))?;
            let policy = cp
                .dir
                .write_private("audit-policy.yaml", crate::audit::POLICY)?;
            let name = cp
                .dir
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            audit_args = vec![
                format!("--audit-policy-file={}", path(&policy)),
                format!(
                    "--audit-log-path={}",
                    path(&audit_dir.join(format!("{name}.jsonl")))
                ),
                "--audit-log-format=json".into(),
                // Written before each answer: nothing is lost when the apiserver is killed.
                "--audit-log-mode=blocking".into(),
            ];
        }
        cp.spawn(
            APISERVER,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The endpoint reconciler refuses loopback addresses; nothing here needs the
                // `kubernetes` Service's endpoints.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", path(&cp.dir.path.join("apiserver-certs"))),
                format!("--tls-cert-file={}", path(&serving_cert)),
                format!("--tls-private-key-file={}", path(&serving_key)),
                format!("--client-ca-file={}", path(&ca_file)),
                "--authorization-mode=Node,RBAC".into(),
                // Only owners' deleters may set blockOwnerDeletion, as on real clusters.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
                // An OIDC issuer on loopback: its discovery document and JWKS are served at
                // this URL, so a token endpoint can verify ServiceAccount tokens as Keycloak,
                // Entra ID and Google do (anonymously: see allow_anonymous_discovery).
                format!("--service-account-issuer={}", cp.server_url),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!(
                    "--service-account-jwks-uri={}/openid/v1/jwks",
                    cp.server_url
                ),
                format!("--service-account-key-file={}", path(&sa_pub)),
                format!("--service-account-signing-key-file={}", path(&sa_key)),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--profiling=false".into(),
                // Ends open watches (the controller manager's, an operator's) on SIGTERM, so it
                // exits in about a second instead of waiting for them until it is killed.
                "--shutdown-watch-termination-grace-period=1s".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(audit_args)
            .collect::<Vec<_>>(),
        )?;
        cp.wait_for_apiserver("kube-apiserver /readyz", deadline)
            .await?;
        let admin = cp.try_client()?;

        cp.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", path(&kcm_kubeconfig)),
                format!("--controllers={CONTROLLERS}"),
                // Each controller acts as its own ServiceAccount with the bootstrap RBAC role.
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", path(&sa_key)),
                format!("--root-ca-file={}", path(&ca_file)),
                "--leader-elect=false".into(),
                // No metrics/healthz endpoint: it would need another port and is not used.
                "--secure-port=0".into(),
                "--v=1".into(),
            ],
        )?;
        let default_sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        cp.wait_for(
            "the default ServiceAccount",
            "kube-controller-manager",
            deadline,
            || {
                let api = default_sas.clone();
                async move {
                    match api.get_opt("default").await {
                        Ok(sa) => Ok(sa.is_some()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        // Proves the token signing key is wired up, which the SA helpers depend on.
        cp.service_account_token("default", "default")
            .await
            .map(drop)?;
        cp.allow_anonymous_discovery(&admin).await?;
        Ok(cp)
    }

    /// Lets anyone read the issuer's discovery document and JWKS, as a cloud identity
    /// provider reads a cluster's (`system:service-account-issuer-discovery`, which the
    /// bootstrap policy grants only to ServiceAccounts).
    async fn allow_anonymous_discovery(&self, admin: &kube::Client) -> Result<()> {
        use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("testkit:anonymous-issuer-discovery".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "system:service-account-issuer-discovery".into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: "system:unauthenticated".into(),
                namespace: None,
            }]),
        };
        let api: Api<ClusterRoleBinding> = Api::all(admin.clone());
        match api.create(&PostParams::default(), &binding).await {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            result => result
                .map(drop)
                .map_err(Error::kube("granting anonymous issuer discovery")),
        }
    }

    /// The service-account issuer: the `iss` of every ServiceAccount token this control
    /// plane signs, and where its discovery document and JWKS are served (anonymously).
    pub fn service_account_issuer(&self) -> &str {
        &self.server_url
    }

    fn spawn(&self, name: &'static str, args: &[String]) -> Result<()> {
        let log = self.dir.path.join(format!("{name}.log"));
        let process = Process::spawn(name, &self.bin_dir.join(name), args, log, &self.dir)?;
        self.processes().push(process);
        Ok(())
    }

    /// Waits until the apiserver's `/readyz` answers `ok` to the admin client.
    async fn wait_for_apiserver(&self, waiting_for: &'static str, deadline: Instant) -> Result<()> {
        let admin = self.try_client()?;
        self.wait_for(waiting_for, APISERVER, deadline, || {
            let admin = admin.clone();
            async move {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                match admin.request_text(request).await {
                    Ok(body) => Ok(body.trim() == "ok"),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after a grace period, as [`stop`](Self::stop)
    /// does), keeps it down for `down_for`, starts it again with the same command line (port,
    /// certificates, etcd), and waits until `/readyz` answers again. Clients and kubeconfigs
    /// from before keep working once it is back. etcd and kube-controller-manager keep running;
    /// the apiserver's log ([`log_path`](Self::log_path)) is appended to, after a marker line.
    ///
    /// The API is unreachable for longer than `down_for`: the shutdown (about a second, more
    /// if it has to be killed) comes before it and the startup (a few seconds) after it.
    ///
    /// Meant for a control plane of your own (not [`shared`](crate::shared)): other tests see
    /// the outage too. Restarts are serialised. Waiting for readiness is bounded by
    /// [`StartOptions::timeout`]; the error carries the log tail. If the returned future is
    /// dropped before it completes, the apiserver may stay down.
    pub async fn restart_apiserver(&self, down_for: Duration) -> Result<()> {
        let _one_at_a_time = self.restart_lock.lock().await;
        // Taken out of the list while it is down, so `check_running` does not report it.
        let (index, mut old) = {
            let mut processes = self.processes();
            let index = processes
                .iter()
                .position(|p| p.name == APISERVER)
                .ok_or(Error::Stopped)?;
            (index, processes.remove(index))
        };
        old.stop_async(STOP_GRACE).await;
        tokio::time::sleep(down_for).await;

        note_in_log(
            &old.log,
            &format!("--- testkit: restarting {APISERVER} after {down_for:?} down ---"),
        );
        let new = old.respawn()?;
        {
            let mut processes = self.processes();
            if self.stopped.load(Ordering::SeqCst) {
                // `stop` ran meanwhile; dropping the new process kills it.
                return Err(Error::Stopped);
            }
            let index = index.min(processes.len());
            processes.insert(index, new);
        }
        let deadline = Instant::now() + self.timeout;
        self.wait_for_apiserver("kube-apiserver /readyz after a restart", deadline)
            .await
    }

    fn processes(&self) -> MutexGuard<'_, Vec<Process>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Polls `probe` until it returns `Ok(true)`, failing fast if a component exits.
    async fn wait_for<F, Fut>(
        &self,
        waiting_for: &'static str,
        component: &'static str,
        deadline: Instant,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, String>>,
    {
        let started = Instant::now();
        loop {
            self.check_running()?;
            let last_error = match probe().await {
                Ok(true) => return Ok(()),
                Ok(false) => "not yet".to_owned(),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let log = self.log_path(component);
                return Err(Error::StartTimeout {
                    waited: started.elapsed(),
                    waiting_for,
                    last_error,
                    tail: log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails with the log tail of the first component that has exited.
    pub fn check_running(&self) -> Result<()> {
        self.processes()
            .iter_mut()
            .try_for_each(|process| process.check_running())
    }

    /// Stops all components (controller manager, apiserver, etcd) and waits for them to exit.
    /// Dropping the control plane does this too; it is idempotent.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut processes = self.processes();
        while let Some(mut process) = processes.pop() {
            process.stop(STOP_GRACE);
        }
    }

    /// An admin client (user `admin`, group `system:masters`).
    ///
    /// A new client each call: a client is tied to the tokio runtime it was made in, and tests
    /// sharing one control plane each run their own runtime.
    ///
    /// # Panics
    /// If no client can be built from the admin kubeconfig, which worked during startup.
    pub fn client(&self) -> kube::Client {
        self.try_client()
            .expect("the admin kubeconfig worked during startup")
    }

    pub fn try_client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.admin_config.clone()).map_err(Error::Client)
    }

    /// The admin client configuration, to build clients with other settings.
    pub fn admin_config(&self) -> kube::Config {
        self.admin_config.clone()
    }

    /// The admin kubeconfig file, for subprocesses (`kubectl`, the operator binary).
    /// Each running component (etcd, kube-apiserver, kube-controller-manager) and its pid.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes().iter().map(|p| (p.name, p.pid())).collect()
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Copies the admin kubeconfig to `path` (mode 0600, atomically: readers never see a
    /// partial file), e.g. for a demo script that waits for the file to appear.
    pub fn export_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(&self.admin_kubeconfig)
            .map_err(Error::io("read", &self.admin_kubeconfig))?;
        crate::process::write_private(path, &text).map(drop)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// PEM of the throwaway CA that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Directory of the binaries in use (also holds `kubectl` and `helm` when provisioned).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// This instance's temp dir (logs, certificates, kubeconfigs); removed on stop.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Log file of a component: `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.path.join(format!("{component}.log"))
    }

    /// Writes a private file into the temp dir under a unique name.
    pub(crate) fn write_unique(
        &self,
        stem: &str,
        extension: &str,
        contents: &str,
    ) -> Result<PathBuf> {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.dir
            .write_private(&format!("{stem}-{n}.{extension}"), contents)
    }

    /// Requests a token for a ServiceAccount through the TokenRequest API
    /// (`serviceaccounts/<name>/token`), creating the ServiceAccount if it does not exist.
    /// The token is valid for an hour.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.try_client()?, namespace);
        let action = || format!("requesting a token for ServiceAccount {namespace}/{name}");
        if api
            .get_opt(name)
            .await
            .map_err(Error::kube(action()))?
            .is_none()
        {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                // Someone (a parallel test, the controller manager) was faster.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                result => drop(result.map_err(Error::kube(action()))?),
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(Error::kube(action()))?;
        response
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::NoToken {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
    }

    fn service_account_kubeconfig_text(&self, namespace: &str, name: &str, token: &str) -> String {
        kubeconfig::render(
            &self.server_url,
            &self.ca_pem,
            &format!("serviceaccount-{namespace}-{name}"),
            namespace,
            &Credentials::Token(token),
        )
    }

    /// A kubeconfig file that acts as ServiceAccount `namespace/name` (see
    /// [`service_account_token`](Self::service_account_token)); its default namespace is
    /// `namespace`. For running the operator binary with exactly the RBAC it is granted.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self.service_account_token(namespace, name).await?;
        let text = self.service_account_kubeconfig_text(namespace, name, &token);
        self.write_unique(&format!("sa-{namespace}-{name}"), "kubeconfig", &text)
    }

    /// Client configuration acting as ServiceAccount `namespace/name`.
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Config> {
        let token = self.service_account_token(namespace, name).await?;
        kubeconfig::to_config(&self.service_account_kubeconfig_text(namespace, name, &token)).await
    }

    /// A client acting as ServiceAccount `namespace/name`.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        let config = self.service_account_config(namespace, name).await?;
        kube::Client::try_from(config).map_err(Error::Client)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends a line to a component's log, to tell its runs apart. Best effort: the log only
/// serves diagnostics.
fn note_in_log(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(file, "{line}");
    }
}

/// Distinct free loopback ports. Another process may take one before our child binds it;
/// startup then fails with "address already in use" and is retried.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::NoFreePort)?;
        *port = listener.local_addr().map_err(Error::NoFreePort)?.port();
        // Held until all are picked so the ports differ.
        listeners.push(listener);
    }
    Ok(ports)
}

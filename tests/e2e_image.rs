//! The container image as the chart runs it: built from the Dockerfile by hack/image.sh (the
//! binary under test, on the mmdebstrap base), started with podman as user 65532 with a
//! read-only root filesystem, no capabilities and no privilege escalation, on the host network,
//! with the ServiceAccount token mounted where a pod has it (in-cluster configuration, as in a
//! cluster). The provider is the emulator over HTTPS: its CA reaches the operator only as a
//! ProviderCredential's `spec.tokenEndpoint.caBundle`, so the image's TLS stack and its CA
//! handling are what is exercised.
//!
//! Needs buildah, podman, runc and mmdebstrap (hack/test.sh installs them). runc, not crun:
//! crun refuses a cgroup v1/v2 hybrid host, which CI machines may be.

mod e2e;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use e2e::*;
use provider_emulator::{Emulator, Options, Provider, fixtures};

const TAG: &str = "localhost/token-rotator:e2e";
/// Where a pod finds its ServiceAccount token and the cluster's CA.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// podman with storage of this test's own (vfs: no overlay or fuse needed), cgroupfs and file
/// events (no systemd), runc.
struct Podman {
    root: PathBuf,
}

impl Podman {
    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(["--storage-driver", "vfs", "--root"])
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--runtime",
                "runc",
            ]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = self
            .command()
            .args(args)
            .output()
            .context("podman is not installed (apt-get install podman runc)")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out, err) = self.run(args)?;
        ensure!(ok, "podman {}: {err}", args.join(" "));
        Ok(out)
    }
}

/// The running container; removed (and its storage with it) when the test ends either way.
struct Container<'p> {
    podman: &'p Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .run(&["rm", "--force", "--time", "5", &self.name]);
        let _ = self.podman.run(&["rmi", "--force", TAG]);
    }
}

impl Container<'_> {
    fn logs(&self) -> String {
        self.podman
            .run(&["logs", &self.name])
            .map(|(_, out, err)| format!("{out}{err}"))
            .unwrap_or_default()
    }
}

/// Builds the image around the binary under test; the OCI archive's path.
fn build_image(dir: &Path) -> Result<PathBuf> {
    let output = dir.join("token-rotator.oci.tar");
    let out = Command::new("bash")
        .arg(repo_path("hack/image.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_token-rotator"))
        .arg("--output")
        .arg(&output)
        .args(["--tag", TAG])
        .output()
        .context("run hack/image.sh")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "hack/image.sh failed:\n{err}");
    // Its own report of the sizes, for the test log.
    if let Some(line) = err.lines().rev().find(|l| l.contains("wrote")) {
        eprintln!("{line}");
    }
    Ok(output)
}

/// What the base must hold, read from the image: the CA bundle the TLS stack loads (when a
/// ProviderCredential has no caBundle, the real providers' case), and no shell.
fn check_filesystem(podman: &Podman, work: &Path) -> Result<()> {
    let name = format!("token-rotator-e2e-files-{}", std::process::id());
    podman.ok(&["create", "--name", &name, TAG])?;
    let bundle = work.join("ca-certificates.crt");
    let copied = podman.run(&[
        "cp",
        &format!("{name}:/etc/ssl/certs/ca-certificates.crt"),
        &bundle.display().to_string(),
    ]);
    let shells: Vec<bool> = ["/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/dash"]
        .iter()
        .map(|sh| {
            podman
                .run(&[
                    "cp",
                    &format!("{name}:{sh}"),
                    &work.join("sh").display().to_string(),
                ])
                .map(|(ok, _, _)| ok)
                .unwrap_or(true)
        })
        .collect();
    let _ = podman.run(&["rm", "--force", &name]);
    let (ok, _, err) = copied?;
    ensure!(
        ok,
        "the image has no /etc/ssl/certs/ca-certificates.crt: {err}"
    );
    let roots = std::fs::read_to_string(&bundle)?
        .matches("-----BEGIN CERTIFICATE-----")
        .count();
    ensure!(roots > 100, "the CA bundle holds {roots} certificates");
    ensure!(!shells.contains(&true), "the image has a shell: {shells:?}");
    Ok(())
}

/// The limits podman asks for by default (1M open files) cannot be raised without
/// CAP_SYS_RESOURCE, which sandboxed CI runners lack: ask for what this process has.
fn ulimits() -> [String; 2] {
    let get = |resource| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        unsafe { libc::getrlimit(resource, &mut l) };
        (l.rlim_cur, l.rlim_max)
    };
    let (soft, hard) = get(libc::RLIMIT_NOFILE);
    let (nproc, _) = get(libc::RLIMIT_NPROC);
    [
        format!("nofile={soft}:{hard}"),
        format!("nproc={0}:{0}", nproc.min(4096)),
    ]
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A pod's ServiceAccount volume: token, ca.crt, namespace, readable by user 65532.
async fn service_account_volume(env: &Env, dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa)?;
    let token = env
        .cp
        .service_account_token(env.name(), OPERATOR_SA)
        .await?;
    for (file, text) in [
        ("token", token.as_str()),
        ("ca.crt", env.cp.ca_pem()),
        ("namespace", env.name()),
    ] {
        std::fs::write(sa.join(file), text)?;
        std::fs::set_permissions(sa.join(file), std::fs::Permissions::from_mode(0o644))?;
    }
    for d in [dir, sa.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(sa)
}

fn rently_spec(url: &str, ca_bundle: Option<&str>) -> Result<String> {
    let mut endpoint = serde_json::json!({"url": url});
    if let Some(pem) = ca_bundle {
        endpoint["caBundle"] = pem.into();
    }
    let spec = serde_json::json!({
        "preset": "rently",
        "tokenEndpoint": endpoint,
        "credentials": {"secretRef": {"name": "rently-creds"}},
        "target": {"secretName": format!("token-{}", if ca_bundle.is_some() { "a" } else { "b" })},
        "refresh": {"renewBeforePercentage": 50, "minimumMargin": "1s"},
    });
    // JSON is YAML: the spec goes through the same parser as the other tests' specs.
    Ok(serde_json::to_string(&spec)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_the_chart_runs_it() -> Result<()> {
    let work = repo_path("target/e2e-image");
    std::fs::create_dir_all(&work)?;
    let archive = build_image(&work)?;
    let podman = Podman {
        root: work.join("podman"),
    };
    podman.ok(&[
        "pull",
        "--quiet",
        &format!("oci-archive:{}", archive.display()),
    ])?;

    // What the Dockerfile says, as the image carries it.
    let config = podman.ok(&[
        "image",
        "inspect",
        TAG,
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}",
    ])?;
    ensure!(
        config.trim() == r#"65532:65532 ["/token-rotator"] ["run"]"#,
        "image config: {config}"
    );

    check_filesystem(&podman, &work)?;

    let env = Env::new("image").await?;
    let emu = Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await?;
    let ca = emu.ca_pem().context("a TLS emulator has a CA")?;
    let c = emu.control();
    c.set_lifetime(Provider::Rently, 6);
    let secret = format!("image-{}", hex::encode(rand::random::<[u8; 12]>()));
    c.set_password(Provider::Rently, fixtures::RENTLY_CLIENT_ID, &secret);
    let creds: BTreeMap<String, Vec<u8>> = [
        ("client_id", fixtures::RENTLY_CLIENT_ID.as_bytes().to_vec()),
        ("client_secret", secret.as_bytes().to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.create_credentials("rently-creds", &creds, true).await?;
    let url = emu.token_url(Provider::Rently);
    ensure!(url.starts_with("https://"), "{url}");
    env.create_pcred("with-ca", &rently_spec(&url, Some(&ca))?)
        .await?;
    // The same endpoint without the CA: the image's own roots must not trust it.
    env.create_pcred("without-ca", &rently_spec(&url, None)?)
        .await?;

    let sa = service_account_volume(&env, &work.join(env.name())).await?;
    let api = url::Url::parse(env.cp.server_url())?;
    let port = free_port()?;
    let name = format!("token-rotator-e2e-{}", std::process::id());
    let [nofile, nproc] = ulimits();
    let mount = format!("{}:{SA_DIR}:ro", sa.display());
    let host = format!(
        "KUBERNETES_SERVICE_HOST={}",
        api.host_str().context("host")?
    );
    let api_port = format!(
        "KUBERNETES_SERVICE_PORT={}",
        api.port_or_known_default().context("port")?
    );
    let metrics_addr = format!("--metrics-addr=127.0.0.1:{port}");
    let namespace = format!("--namespace={}", env.name());
    podman.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--user",
        "65532:65532",
        "--read-only",
        "--read-only-tmpfs=false",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--ulimit",
        &nofile,
        "--ulimit",
        &nproc,
        "--volume",
        &mount,
        "--env",
        &host,
        "--env",
        &api_port,
        "--env",
        "RUST_LOG=info,token_rotator=debug",
        TAG,
        // The chart's arguments, but loopback for /metrics (tests listen on loopback only).
        "run",
        &namespace,
        &metrics_addr,
        "--log-format=json",
        "--token-requests-per-minute=60",
    ])?;
    let container = Container {
        podman: &podman,
        name,
    };

    let result = check_running(&env, &container, port, &secret).await;
    if result.is_err() {
        eprintln!("container log:\n{}", container.logs());
    }
    drop(container);
    let _ = std::fs::remove_dir_all(work.join("podman"));
    let _ = std::fs::remove_dir_all(work.join(env.name()));
    result
}

async fn check_running(
    env: &Env,
    container: &Container<'_>,
    port: u16,
    secret: &str,
) -> Result<()> {
    let get = |path: &'static str| async move {
        let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await?;
        Ok::<_, anyhow::Error>((resp.status().as_u16(), resp.text().await?))
    };
    eventually("/readyz from the container", CONVERGE, || async {
        Ok(get("/readyz")
            .await
            .ok()
            .filter(|(s, b)| *s == 200 && b == "ok"))
    })
    .await?;

    // The process as the kernel sees it: user 65532, no capabilities at all.
    let pid = container
        .podman
        .ok(&["inspect", "--format", "{{.State.Pid}}", &container.name])?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    ensure!(field("Uid:") == ["65532"; 4], "uids: {:?}", field("Uid:"));
    ensure!(field("Gid:") == ["65532"; 4], "gids: {:?}", field("Gid:"));
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        ensure!(
            field(caps) == ["0000000000000000"],
            "{caps} {:?}",
            field(caps)
        );
    }
    ensure!(field("NoNewPrivs:") == ["1"], "no_new_privs not set");

    // Ready over HTTPS with the caBundle, and rotating: a second token replaces the first.
    let pc = env.wait_condition("with-ca", "Ready", "True", None).await?;
    let first = fingerprint(&pc).context("a fingerprint once Ready")?;
    eventually("a rotation in the container", CONVERGE, || async {
        let pc = env.pcred("with-ca").await?;
        Ok(fingerprint(&pc).filter(|f| *f != first))
    })
    .await?;
    let (_, data) = env
        .secret_data("token-a")
        .await?
        .context("the target Secret exists")?;
    ensure!(!data.is_empty(), "the target Secret holds the token");

    // Without the CA the emulator's certificate is refused: verification is on, against the
    // image's own CA bundle, which does not hold the emulator's throwaway CA.
    let refused = env
        .wait_condition("without-ca", "Ready", "False", None)
        .await?;
    let message = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default();
    eprintln!("without the caBundle: {message}");
    ensure!(
        message.contains("UnknownIssuer"),
        "not refused for its certificate: {message}"
    );

    let (status, metrics) = get("/metrics").await?;
    ensure!(status == 200, "/metrics answered {status}");
    for family in [
        "token_rotator_managed_credentials",
        "token_rotator_token_requests",
        "token_rotator_token_expiry_timestamp_seconds",
    ] {
        ensure!(metrics.contains(family), "/metrics lacks {family}");
    }
    let logs = container.logs();
    ensure!(!logs.is_empty(), "the container logged nothing");
    if logs.contains(secret) || metrics.contains(secret) {
        bail!("the client secret appears in the container's logs or metrics");
    }
    Ok(())
}

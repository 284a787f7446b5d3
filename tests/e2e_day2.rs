//! Day-2 commands against the real control plane and a running operator: `status`,
//! `refresh --wait`, and the same binary answering `kubectl token-rotator …` as a plugin.

mod e2e;
mod support;

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use kube::ResourceExt;
use provider_emulator::{Emulator, Options, Provider};

/// Runs the binary as a user would (the admin kubeconfig); exit code, stdout, stderr.
async fn cli(env: &Env, program: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .output()
        .await
        .with_context(|| format!("run {} {args:?}", program.display()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_token-rotator"))
}

fn spec(emu: &Emulator, creds: &str, target: &str) -> String {
    format!(
        "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: {creds}}}}}\ntarget: {{secretName: {target}}}\n",
        emu.token_url(Provider::Rently)
    )
}

#[tokio::test]
async fn status_and_refresh_from_the_command_line() -> Result<()> {
    let env = Env::new("day2").await?;
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options::default()).await?;
    let c = emu.control();
    let good = support::secret_data(Provider::Rently, &emu);
    let mut bad = good.clone();
    bad.insert("client_secret".into(), b"not-the-secret".to_vec());
    env.create_credentials("good-creds", &good, true).await?;
    env.create_credentials("bad-creds", &bad, true).await?;
    env.create_pcred("good", &spec(&emu, "good-creds", "good-token"))
        .await?;
    env.create_pcred("bad", &spec(&emu, "bad-creds", "bad-token"))
        .await?;
    let _op = env.start_operator().await?;
    env.wait_condition("good", "Ready", "True", None).await?;
    env.wait_condition("bad", "Ready", "False", None).await?;
    let ns = env.name();

    // What needs attention first: the rejected one, then the healthy one.
    let (code, out, err) = cli(&env, binary(), &["status", "-n", ns]).await?;
    ensure!(code == 0, "status exited {code}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.len() == 3, "{out}");
    ensure!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("EXPIRES IN"),
        "{out}"
    );
    ensure!(
        lines[1].contains("bad")
            && lines[1].contains("False")
            && lines[1].contains("CredentialsRejected"),
        "{out}"
    );
    ensure!(
        lines[2].contains("good") && lines[2].contains("True"),
        "{out}"
    );
    let (code, json, err) = cli(&env, binary(), &["status", "-n", ns, "-o", "json"]).await?;
    ensure!(code == 0, "status -o json exited {code}: {err}");
    let rows: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(
        rows[0]["name"] == "bad" && rows[0]["ready"] == false,
        "{json}"
    );
    ensure!(
        rows[1]["name"] == "good"
            && rows[1]["ready"] == true
            && rows[1]["expiresInSeconds"].as_i64().is_some_and(|s| s > 0),
        "{json}"
    );

    // A refresh on demand: exactly one token request, and the new expiry printed.
    let issued = c.counters(Provider::Rently).issued;
    let (code, out, err) = cli(
        &env,
        binary(),
        &["refresh", "good", "-n", ns, "--wait", "--timeout", "60s"],
    )
    .await?;
    ensure!(code == 0, "refresh --wait exited {code}: {out}{err}");
    // A new token, or the one the provider had issued before (which the command then says).
    ensure!(
        out.starts_with(&format!("{ns}/good: refreshed; ")) && out.contains(" expires in "),
        "{out}"
    );
    ensure!(
        c.counters(Provider::Rently).issued == issued + 1,
        "one token request per refresh"
    );

    // A refresh that cannot succeed says why, with exit code 1.
    let (code, out, err) = cli(
        &env,
        binary(),
        &["refresh", "bad", "-n", ns, "--wait", "--timeout", "60s"],
    )
    .await?;
    ensure!(
        code == 1,
        "refresh of the rejected one exited {code}: {out}{err}"
    );
    ensure!(
        out.starts_with(&format!("{ns}/bad: refresh failed: CredentialsRejected")),
        "{out}"
    );
    ensure!(
        !out.contains("not-the-secret"),
        "a secret in the output: {out}"
    );

    // Nothing chosen is a usage error, not a refresh of everything.
    let (code, _, err) = cli(&env, binary(), &["refresh", "-n", ns]).await?;
    ensure!(code == 2 && err.contains("--all"), "{code}: {err}");

    // The same binary as a kubectl plugin.
    let plugins = tempfile_dir()?;
    std::os::unix::fs::symlink(binary(), plugins.join("kubectl-token_rotator"))?;
    let kubectl = env.cp.bin_dir().join("kubectl");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(&kubectl)
        .args(["token-rotator", "status", "-n", ns])
        .env("KUBECONFIG", env.cp.kubeconfig_path())
        .env("PATH", &path)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.lines().count() == 3 && text.contains("good"),
        "kubectl token-rotator status: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let help = tokio::process::Command::new(&kubectl)
        .args(["token-rotator", "--help"])
        .env("PATH", &path)
        .output()
        .await?;
    let help = String::from_utf8_lossy(&help.stdout);
    ensure!(help.contains("kubectl token-rotator"), "{help}");
    std::fs::remove_dir_all(&plugins)?;

    // Suspended: said at once (before: the whole timeout, then "not handled in time (Ready
    // reason: TokenIssued)"), and nothing requested.
    let merge = |value: serde_json::Value| kube::api::Patch::Merge(value);
    let pp = kube::api::PatchParams::default();
    env.pcreds()
        .patch(
            "good",
            &pp,
            &merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await?;
    env.wait_condition("good", "Degraded", "False", Some("Suspended"))
        .await?;
    let issued = c.counters(Provider::Rently).issued;
    let started = std::time::Instant::now();
    let (code, out, err) = cli(
        &env,
        binary(),
        &["refresh", "good", "-n", ns, "--wait", "--timeout", "60s"],
    )
    .await?;
    ensure!(
        code == 1,
        "refresh of a suspended one exited {code}: {out}{err}"
    );
    ensure!(
        out.starts_with(&format!("{ns}/good: suspended (spec.suspend is true)")),
        "{out}"
    );
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not said at once: {:?}",
        started.elapsed()
    );
    // A refresh asked for by hand while suspended is recorded as seen, and spends nothing.
    env.pcreds()
        .patch(
            "good",
            &pp,
            &merge(serde_json::json!({"metadata": {"annotations": {
                token_rotator::api::REFRESH_ANNOTATION: "while-suspended"}}})),
        )
        .await?;
    eventually(
        "the refresh request seen while suspended",
        CONVERGE,
        || async {
            let pc = env.pcred("good").await?;
            let seen = pc.status.and_then(|s| s.last_refresh_request);
            Ok((seen.as_deref() == Some("while-suspended")).then_some(()))
        },
    )
    .await?;
    ensure!(
        c.counters(Provider::Rently).issued == issued,
        "a suspended resource requested a token"
    );
    eprintln!(
        "day 2: status sorted {} lines, refresh --wait refreshed one (1 token request) and reported the rejected one; kubectl token-rotator answered; a suspended one was said at once",
        lines.len() - 1
    );
    Ok(())
}

#[tokio::test]
async fn authorize_hands_the_operator_a_refresh_token_through_the_credentials_secret() -> Result<()>
{
    use tokio::io::AsyncBufReadExt;

    let env = Env::new("authorize").await?;
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options::default()).await?;
    let c = emu.control();
    let p = Provider::Retently;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let spec = format!(
        "preset: retently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {{redirectUri: \"{redirect}\", authorizationUrl: \"{}\"}}\n",
        emu.token_url(p),
        emu.authorize_url(p).context("retently authorizes")?,
    );
    // Only the client: no code, no refresh token, and not yet opted in.
    let mut data = support::secret_data(p, &emu);
    data.remove("code");
    env.create_credentials("creds", &data, false).await?;
    env.create_pcred("retently", &spec).await?;
    let _op = env.start_operator().await?;
    env.wait_condition("retently", "Ready", "False", None)
        .await?;
    ensure!(c.counters(p).requests == 0);
    let ns = env.name();
    let opted_in = |s: &k8s_openapi::api::core::v1::Secret| {
        s.labels()
            .get("tokenrotator.dev/credentials")
            .map(String::as_str)
            == Some("true")
    };
    let authorize = || {
        tokio::process::Command::new(binary())
            .args(["authorize", "retently", "-n", ns, "--allow-http"])
            .env("KUBECONFIG", env.cp.kubeconfig_path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
    };

    // A Secret that did not opt in is not used, and the command does not opt it in.
    let refused = authorize()?.wait_with_output().await?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "{said}");
    ensure!(
        said.contains("CredentialsNotLabelled")
            && said.contains("kubectl label secret creds tokenrotator.dev/credentials=true"),
        "{said}"
    );
    ensure!(!said.contains("://"), "no consent was offered: {said}");
    let (secret, _) = env.secret_data("creds").await?.context("creds")?;
    ensure!(!opted_in(&secret), "authorize labelled the Secret");
    ensure!(
        !secret
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("token-rotator-authorize")),
        "authorize wrote the Secret"
    );
    ensure!(c.counters(p).requests == 0);

    // Its owner opts in.
    env.secrets()
        .patch(
            "creds",
            &kube::api::PatchParams::apply("the-owner"),
            &kube::api::Patch::Apply(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "creds",
                    "labels": {"tokenrotator.dev/credentials": "true"},
                },
            })),
        )
        .await?;

    let mut child = authorize()?;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut seen = String::new();
    let url = loop {
        let line = stderr
            .next_line()
            .await?
            .with_context(|| format!("no URL printed: {seen}"))?;
        seen.push_str(&line);
        seen.push('\n');
        if line.trim().starts_with("http") {
            break line.trim().to_string();
        }
    };
    // The browser: consent at the emulator, which redirects to the command's listener.
    let page = reqwest::Client::new().get(&url).send().await?;
    ensure!(page.status() == reqwest::StatusCode::OK, "{page:?}");
    while let Some(line) = stderr.next_line().await? {
        seen.push_str(&line);
        seen.push('\n');
    }
    let out = child.wait_with_output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "authorize failed: {seen}");
    ensure!(
        seen.contains(&format!(
            "Stored the refresh token in Secret {ns}/creds (key refresh_token)."
        )),
        "{seen}"
    );

    // The Secret gained the seed, and nothing else: the client keys and the owner's label
    // are untouched, and the label stays the owner's field.
    let (secret, stored) = env.secret_data("creds").await?.context("creds")?;
    let seed = stored
        .get("refresh_token")
        .context("a refresh token")?
        .clone();
    ensure!(stored["client_id"] == data_text(&data, "client_id"));
    ensure!(opted_in(&secret));
    let written: Vec<String> = secret
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() == Some("token-rotator-authorize"))
        .map(|m| serde_json::to_string(&m.fields_v1).unwrap_or_default())
        .collect();
    ensure!(
        written.len() == 1 && written[0].contains("f:refresh_token"),
        "written by its own field manager: {written:?}"
    );
    ensure!(!written[0].contains("f:labels"), "{written:?}");
    ensure!(c.counters(p).chains_started == 1, "one code spent");

    // The operator takes the seed from there: it spends it and becomes Ready.
    env.wait_condition("retently", "Ready", "True", None)
        .await?;
    let form = c.last_request(p).context("the operator's request")?.form();
    ensure!(
        form.contains(&("grant_type".into(), "refresh_token".into()))
            && form.contains(&("refresh_token".into(), seed.clone())),
        "{form:?}"
    );
    let (_, token) = env.secret_data("token").await?.context("target")?;
    ensure!(
        c.is_valid_access_token(p, token.get("access_token").context("access_token")?),
        "the target holds a valid token"
    );
    let visible = env.visible_text().await?;
    for (name, text) in [
        ("stdout", &stdout),
        ("stderr", &seen),
        ("status and Events", &visible),
    ] {
        ensure!(!text.contains(&seed), "the refresh token in {name}");
    }
    eprintln!("authorize: consent on loopback, seed applied to {ns}/creds, operator Ready from it");
    Ok(())
}

fn data_text(data: &std::collections::BTreeMap<String, Vec<u8>>, key: &str) -> String {
    String::from_utf8_lossy(&data[key]).into_owned()
}

/// A fresh directory for the plugin link (removed at the end).
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("token-rotator-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

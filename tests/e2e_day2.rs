//! Day-2 commands against the real control plane and a running operator: `status`,
//! `refresh --wait`, and the same binary answering `kubectl token-rotator …` as a plugin.

mod e2e;
mod support;

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
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
    eprintln!(
        "day 2: status sorted {} lines, refresh --wait refreshed one (1 token request) and reported the rejected one; kubectl token-rotator answered",
        lines.len() - 1
    );
    Ok(())
}

/// A fresh directory for the plugin link (removed at the end).
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("token-rotator-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

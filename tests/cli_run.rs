//! `token-rotator run` refuses flags that can never work before it connects to anything.

use std::process::Output;

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_token-rotator"))
        .arg("run")
        .args(args)
        // Nowhere to connect to: a refusal must come before any attempt.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .expect("token-rotator runs")
}

/// A 5 s lease renewed 2 s before it lapses covers not even a 1 s token request: every
/// rotation would wait forever. Refused at once, naming both flags.
#[tokio::test]
async fn a_lease_that_covers_no_token_request_is_refused() {
    let out = run(&[
        "--leader-election",
        "--leader-election-namespace",
        "ns",
        "--lease-duration-seconds",
        "5",
        "--lease-renew-margin-seconds",
        "2",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--lease-duration-seconds 5")
            && stderr.contains("--lease-renew-margin-seconds 2")
            && stderr.contains("cannot cover even a 1 s token request"),
        "{stderr}"
    );
}

/// A short lease that covers a short request starts (and then fails only for want of a
/// cluster): its requests are capped, not refused.
#[tokio::test]
async fn a_lease_that_covers_a_short_request_is_not_refused() {
    let out = run(&[
        "--leader-election",
        "--leader-election-namespace",
        "ns",
        "--lease-duration-seconds",
        "6",
        "--lease-renew-margin-seconds",
        "2",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("cannot cover"), "{stderr}");
}

//! The `provider-emulator` binary as the demo runs it.

use std::process::Stdio;

use provider_emulator::fixtures::{RENTLY_CLIENT_ID, RENTLY_CLIENT_SECRET};
use reqwest::Certificate;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;

#[tokio::test]
async fn binary_prints_urls_and_serves_tls() {
    let dir = std::env::temp_dir().join(format!("provider-emulator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provider-emulator"))
        .args(["--tls", "--lifetime", "rently=5", "--ca-out"])
        .arg(&ca_path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token_url = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("rently") {
            token_url = Some(url.trim().to_owned());
        }
        if line.starts_with("admin") {
            break;
        }
    }
    let token_url = token_url.expect("a rently line");
    assert!(
        token_url.starts_with("https://localhost:") && token_url.ends_with("/rently/auth/token")
    );

    let ca = Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let c = builder().tls_certs_only([ca]).build().unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", RENTLY_CLIENT_ID),
        ("client_secret", RENTLY_CLIENT_SECRET),
    ];
    let body = json(post_form(&c, &token_url, &form).await).await;
    assert_eq!(body["expires_in"], 5);

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

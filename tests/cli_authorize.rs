//! `token-rotator authorize` as a person runs it, from files (no cluster): the binary, the
//! emulator's authorization and token endpoints on loopback, and this test as the browser.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::Secret;
use provider_emulator::{Emulator, Provider, fixtures};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

const P: Provider = Provider::Retently;

/// A Retently resource whose consent comes back to `redirect_uri`, with PKCE on.
fn write_files(dir: &TempDir, emu: &Emulator, redirect_uri: &str) -> (PathBuf, PathBuf) {
    let spec = format!(
        "preset: retently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {{redirectUri: \"{redirect_uri}\", authorizationUrl: \"{}\", pkce: true}}\n",
        emu.token_url(P),
        emu.authorize_url(P).expect("retently has one"),
    );
    let pc = dir.write("pc.yaml", &provider_credential_manifest("retently", &spec));
    let mut data = secret_data(P, emu);
    data.remove("code");
    let creds = dir.write(
        "creds.yaml",
        &secret_manifest("creds", &data, DataStyle::Base64),
    );
    (pc, creds)
}

struct Authorize {
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
    seen: String,
}

impl Authorize {
    fn start(pc: &Path, creds: &Path, state: &Path, extra: &[&str]) -> Authorize {
        let mut child = Command::new(env!("CARGO_BIN_EXE_token-rotator"))
            .arg("authorize")
            .arg("-f")
            .arg(pc)
            .arg("--credentials")
            .arg(creds)
            .arg("--state-out")
            .arg(state)
            .arg("--allow-http")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("token-rotator runs");
        let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
        Authorize {
            child,
            stderr,
            seen: String::new(),
        }
    }

    /// The stderr lines up to the first one containing `needle`.
    async fn until(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .next_line()
                .await
                .expect("stderr readable")
                .unwrap_or_else(|| panic!("stderr ended before {needle:?}: {}", self.seen));
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The authorization URL it printed.
    async fn url(&mut self) -> String {
        self.until("://").await.trim().to_string()
    }

    async fn paste(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Exit status, stdout, and the whole stderr.
    async fn finish(mut self) -> (bool, String, String) {
        drop(self.child.stdin.take());
        while let Some(line) = self.stderr.next_line().await.unwrap() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let out = self.child.wait_with_output().await.expect("exits");
        let stdout = String::from_utf8(out.stdout).unwrap();
        (out.status.success(), stdout, self.seen)
    }
}

/// The browser, without following the redirect: where the provider sent it.
async fn consent(url: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(url)
        .send()
        .await
        .expect("authorization endpoint");
    assert_eq!(resp.status(), reqwest::StatusCode::FOUND);
    resp.headers()["location"].to_str().unwrap().to_string()
}

fn data_of(path: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("state file");
    let secret: Secret = serde_saphyr::from_str(&text).expect("a Secret");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_pasted_redirect_is_checked_spent_with_its_verifier_and_kept_in_the_state_file() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-paste");
    let (pc, creds) = write_files(&dir, &emu, REDIRECT_URI);
    let state = dir.path().join("state.yaml");
    let mut run = Authorize::start(&pc, &creds, &state, &[]);
    let url = run.url().await;
    let query: Vec<(String, String)> = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let has = |k: &str| query.iter().any(|(key, _)| key == k);
    assert!(has("state") && has("code_challenge"), "{url}");
    let location = consent(&url).await;

    // Someone else's answer (another state) is refused, and it asks again.
    let code = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    run.paste(&format!("{REDIRECT_URI}?code={code}&state=forged"))
        .await;
    run.until("does not match this request").await;
    assert_eq!(emu.control().counters(P).requests, 0, "nothing spent yet");

    run.paste(&location).await;
    let (ok, stdout, stderr) = run.finish().await;
    assert!(ok, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(summary["hasRefreshToken"], true);
    assert_eq!(
        summary["storedIn"],
        format!("file {} (key refresh_token)", state.display())
    );
    let sent = emu
        .control()
        .last_request(P)
        .expect("a token request")
        .form();
    assert!(sent.contains(&("grant_type".into(), "authorization_code".into())));
    assert!(sent.iter().any(|(k, _)| k == "code_verifier"), "{sent:?}");
    assert_eq!(emu.control().counters(P).chains_started, 1);

    let data = data_of(&state);
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["client_id", "client_secret", "refresh_token"]
    );
    let refresh = &data["refresh_token"];
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains(refresh.as_str()), "refresh token in {name}");
        assert!(!text.contains(&code), "code in {name}");
        assert!(
            !text.contains(fixtures::RETENTLY_CLIENT_SECRET),
            "secret in {name}"
        );
    }
}

#[tokio::test]
async fn a_loopback_redirect_uri_is_listened_on_once() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-loopback");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (pc, creds) = write_files(&dir, &emu, &redirect);
    let state = dir.path().join("state.yaml");
    let mut run = Authorize::start(&pc, &creds, &state, &[]);
    let url = run.url().await;
    run.until("Waiting for the browser").await;

    // A request on that port with another state is answered 400 and does not end the wait.
    let client = reqwest::Client::new();
    let forged = client
        .get(format!("{redirect}?code=made-up&state=forged"))
        .send()
        .await
        .expect("the listener answers");
    assert_eq!(forged.status(), reqwest::StatusCode::BAD_REQUEST);
    run.until("ignored a request to the redirect address").await;

    // The browser follows the provider's redirect back to the listener.
    let page = client.get(&url).send().await.expect("consent round trip");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.url().as_str().starts_with(&redirect), "{}", page.url());
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("You can close this window")
    );

    let (ok, stdout, stderr) = run.finish().await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"hasRefreshToken\":true"), "{stdout}");
    assert!(data_of(&state).contains_key("refresh_token"));
    // The listener is gone with the process.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn a_refusal_an_unsuitable_resource_and_no_answer_end_with_one_clear_error() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-fail");
    let (pc, creds) = write_files(&dir, &emu, REDIRECT_URI);
    let state = dir.path().join("state.yaml");

    let mut run = Authorize::start(&pc, &creds, &state, &[]);
    run.url().await;
    run.paste(&format!(
        "{REDIRECT_URI}?error=access_denied&error_description=The+user+said+no"
    ))
    .await;
    let (ok, stdout, stderr) = run.finish().await;
    assert!(!ok && stdout.is_empty());
    assert!(
        stderr.contains(
            "error: the provider refused the authorization: access_denied (The user said no)"
        ),
        "{stderr}"
    );

    let mut run = Authorize::start(&pc, &creds, &state, &["--timeout", "1s"]);
    run.url().await;
    let stdin_open = run.child.stdin.take();
    let (ok, _, stderr) = run.finish().await;
    drop(stdin_open);
    assert!(!ok);
    assert!(stderr.contains("error: no answer within 1s"), "{stderr}");

    let rently = dir.write(
        "rently.yaml",
        &provider_credential_manifest(
            "rently",
            &spec_yaml(Provider::Rently, &emu.token_url(Provider::Rently)),
        ),
    );
    let run = Authorize::start(&rently, &creds, &state, &[]);
    let (ok, _, stderr) = run.finish().await;
    assert!(!ok);
    assert!(
        stderr.contains("only the authorizationCode grant needs a person's consent"),
        "{stderr}"
    );
    assert_eq!(emu.control().counters(P).requests, 0, "no code was spent");
    assert!(!state.exists());
}

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
    let pc = write_resource(dir, &emu.token_url(P), emu, redirect_uri);
    (pc, write_credentials(dir, emu, "creds.yaml", Opt::In))
}

fn write_resource(dir: &TempDir, token_url: &str, emu: &Emulator, redirect_uri: &str) -> PathBuf {
    let spec = format!(
        "preset: retently\ntokenEndpoint: {{url: \"{token_url}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {{redirectUri: \"{redirect_uri}\", authorizationUrl: \"{}\", pkce: true}}\n",
        emu.authorize_url(P).expect("retently has one"),
    );
    dir.write("pc.yaml", &provider_credential_manifest("retently", &spec))
}

/// How the credentials Secret's owner consented.
enum Opt<'a> {
    In,
    /// No `tokenrotator.dev/credentials=true` label.
    Out,
    /// The label, and `tokenrotator.dev/allowed-token-hosts` with these hosts.
    InFor(&'a str),
}

/// The client's credentials (no code), with the opt-in `opt` says.
fn write_credentials(dir: &TempDir, emu: &Emulator, file: &str, opt: Opt<'_>) -> PathBuf {
    let mut data = secret_data(P, emu);
    data.remove("code");
    let text = secret_manifest("creds", &data, DataStyle::Base64);
    let label = "  labels:\n    tokenrotator.dev/credentials: \"true\"\n";
    assert!(text.contains(label), "{text}");
    let text = match opt {
        Opt::In => text,
        Opt::Out => text.replace(label, ""),
        Opt::InFor(hosts) => text.replace(
            label,
            &format!(
                "  annotations:\n    tokenrotator.dev/allowed-token-hosts: \"{hosts}\"\n{label}"
            ),
        ),
    };
    dir.write(file, &text)
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
    // Where the consent and the credentials go is shown before anything is sent.
    let token_url = reqwest::Url::parse(&emu.token_url(P)).unwrap();
    let authority = format!(
        "{}:{}",
        token_url.host_str().unwrap(),
        token_url.port().unwrap()
    );
    for shown in [
        format!("Authorization server: {authority} (plain http)"),
        format!("Token endpoint: {authority} (plain http)"),
    ] {
        assert!(run.seen.contains(&shown), "{shown} in {}", run.seen);
    }
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
    let url = run.url().await;
    // A refusal without this request's state is someone else's: it asks again.
    run.paste(&format!(
        "{REDIRECT_URI}?error=access_denied&error_description=The+user+said+no"
    ))
    .await;
    run.until("does not match this request").await;
    let attempt = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("a state")
        .1
        .into_owned();
    run.paste(&format!(
        "{REDIRECT_URI}?error=access_denied&error_description=The+user+said+no&state={attempt}"
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

/// A loopback port free on both 127.0.0.1 and ::1.
fn free_port_on_both_families() -> u16 {
    loop {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether anyone connected to `listener` (non-blocking) since it was bound.
fn was_connected(listener: &std::net::TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

#[tokio::test]
async fn an_unlabelled_or_pinned_credentials_secret_is_refused_before_anything_is_sent() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-opt-in");
    // The token endpoint is this test's own loopback port: it must see no connection at all.
    let token_endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    token_endpoint.set_nonblocking(true).unwrap();
    let token_url = format!("http://{}/token", token_endpoint.local_addr().unwrap());
    let pc = write_resource(&dir, &token_url, &emu, REDIRECT_URI);
    let state = dir.path().join("state.yaml");

    let unlabelled = write_credentials(&dir, &emu, "unlabelled.yaml", Opt::Out);
    let before = std::fs::read_to_string(&unlabelled).unwrap();
    let (ok, stdout, stderr) = Authorize::start(&pc, &unlabelled, &state, &[])
        .finish()
        .await;
    assert!(!ok && stdout.is_empty(), "{stderr}");
    for needed in [
        "CredentialsNotLabelled",
        "lacks the label tokenrotator.dev/credentials=true",
        "kubectl label secret creds tokenrotator.dev/credentials=true",
    ] {
        assert!(stderr.contains(needed), "{needed} in {stderr}");
    }
    assert!(!stderr.contains("://"), "no consent was offered: {stderr}");
    assert_eq!(std::fs::read_to_string(&unlabelled).unwrap(), before);

    let pinned = write_credentials(
        &dir,
        &emu,
        "pinned.yaml",
        Opt::InFor("tokens.example.com, other.example.com"),
    );
    let (ok, stdout, stderr) = Authorize::start(&pc, &pinned, &state, &[]).finish().await;
    assert!(!ok && stdout.is_empty(), "{stderr}");
    for needed in [
        "TokenHostNotAllowed",
        "tokens.example.com, other.example.com",
        "tokenrotator.dev/allowed-token-hosts",
        "points at 127.0.0.1",
    ] {
        assert!(stderr.contains(needed), "{needed} in {stderr}");
    }
    assert!(!stderr.contains("://"), "no consent was offered: {stderr}");

    assert!(
        !was_connected(&token_endpoint),
        "the token endpoint was contacted"
    );
    assert!(!state.exists());
}

#[tokio::test]
async fn an_error_answer_needs_this_requests_state_and_is_shown_without_control_characters() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-error-state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let pc = write_resource(&dir, &emu.token_url(P), &emu, &redirect);
    // Pinned to the host it uses: the pin lets it through.
    let creds = write_credentials(&dir, &emu, "creds.yaml", Opt::InFor("127.0.0.1"));
    let state_file = dir.path().join("state.yaml");
    let mut run = Authorize::start(&pc, &creds, &state_file, &[]);
    let url = run.url().await;
    run.until("Waiting for the browser").await;
    let state = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("a state")
        .1
        .into_owned();

    // Anything on the machine can send a refusal to this port: without this request's state
    // it is ignored, and the consent goes on.
    let client = reqwest::Client::new();
    for forged in [
        "error=access_denied".to_string(),
        "error=access_denied&state=forged".to_string(),
        format!("error=access_denied&state={state}x"),
    ] {
        let page = client
            .get(format!("{redirect}?{forged}"))
            .send()
            .await
            .expect("the listener answers");
        assert_eq!(page.status(), reqwest::StatusCode::BAD_REQUEST, "{forged}");
        run.until("ignored a request to the redirect address").await;
    }

    // The provider's own refusal, written for a terminal: shown stripped and bounded.
    let hostile = format!(
        "\u{1b}]0;pwned\u{7}\u{1b}[2Jno\r\nway\u{9b}1m\u{202e}gpj.exe\u{7f}{}",
        "x".repeat(5000)
    );
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("error", "access_denied\u{1b}[8m")
        .append_pair("error_description", &hostile)
        .append_pair("state", &state)
        .finish();
    let page = client
        .get(format!("{redirect}?{query}"))
        .send()
        .await
        .expect("the listener answers");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let (ok, stdout, stderr) = run.finish().await;
    assert!(!ok && stdout.is_empty(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(
        line.starts_with(
            "error: the provider refused the authorization: access_denied[8m (]0;pwned[2Jno way1mgpj.exexxx"
        ),
        "{line:?}"
    );
    assert!(line.chars().count() < 600, "bounded: {}", line.len());
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    assert!(!stderr.chars().any(unsafe_char), "{stderr:?}");
    assert_eq!(emu.control().counters(P).requests, 0, "no code was spent");
    assert!(!state_file.exists());
}

#[tokio::test]
async fn localhost_is_listened_on_on_both_loopback_families() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-localhost");
    let port = free_port_on_both_families();
    let redirect = format!("http://localhost:{port}/callback");
    let (pc, creds) = write_files(&dir, &emu, &redirect);
    let state = dir.path().join("state.yaml");
    let mut run = Authorize::start(&pc, &creds, &state, &[]);
    let url = run.url().await;
    run.until("Waiting for the browser").await;

    // Whichever address the browser resolves localhost to, this process answers there.
    let client = reqwest::Client::new();
    for host in ["127.0.0.1", "[::1]"] {
        let page = client
            .get(format!(
                "http://{host}:{port}/callback?code=made-up&state=forged"
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("nothing listens on {host}:{port}: {e}"));
        assert_eq!(page.status(), reqwest::StatusCode::BAD_REQUEST, "{host}");
        run.until("ignored a request to the redirect address").await;
    }
    let page = client.get(&url).send().await.expect("consent round trip");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let (ok, _, stderr) = run.finish().await;
    assert!(ok, "{stderr}");
    assert!(data_of(&state).contains_key("refresh_token"));
}

#[tokio::test]
async fn a_squatter_on_either_loopback_family_stops_the_consent_before_it_starts() {
    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-squatter");
    let port = free_port_on_both_families();
    // Another process holds [::1]:PORT: a browser resolving localhost to ::1 would hand it the
    // code.
    let squatter = std::net::TcpListener::bind(("::1", port)).unwrap();
    squatter.set_nonblocking(true).unwrap();
    let (pc, creds) = write_files(&dir, &emu, &format!("http://localhost:{port}/callback"));
    let state = dir.path().join("state.yaml");
    let (ok, stdout, stderr) = Authorize::start(&pc, &creds, &state, &["--timeout", "5s"])
        .finish()
        .await;
    assert!(!ok && stdout.is_empty(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on [::1]:{port}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("/authorize?"),
        "no consent was offered: {stderr}"
    );
    assert!(!was_connected(&squatter));
}

/// One consent, pasted, ending in `state`.
async fn authorize_into(emu: &Emulator, dir: &TempDir, state: &Path) -> String {
    let (pc, creds) = write_files(dir, emu, REDIRECT_URI);
    let mut run = Authorize::start(&pc, &creds, state, &[]);
    let url = run.url().await;
    let location = consent(&url).await;
    run.paste(&location).await;
    let (ok, _, stderr) = run.finish().await;
    assert!(ok, "{stderr}");
    stderr
}

#[tokio::test]
async fn the_state_file_is_a_new_private_file_never_written_through_a_link() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let emu = emulator(false).await;
    let dir = TempDir::new("authorize-state-file");
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;

    // An existing world-readable file, with a second name elsewhere.
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, "old\n").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let other_name = dir.path().join("other-name.yaml");
    std::fs::hard_link(&state, &other_name).unwrap();
    let old_inode = std::fs::metadata(&state).unwrap().ino();
    authorize_into(&emu, &dir, &state).await;
    assert_eq!(mode(&state), 0o600, "the refresh token is private");
    assert_ne!(
        std::fs::metadata(&state).unwrap().ino(),
        old_inode,
        "a new file"
    );
    assert!(data_of(&state).contains_key("refresh_token"));
    assert_eq!(std::fs::read_to_string(&other_name).unwrap(), "old\n");
    assert_eq!(mode(&other_name), 0o644);

    // A symbolic link at the destination: replaced, the file it points at untouched.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "victim\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let linked = dir.path().join("linked.yaml");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    authorize_into(&emu, &dir, &linked).await;
    assert!(
        std::fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(mode(&linked), 0o600);
    assert!(data_of(&linked).contains_key("refresh_token"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(mode(&victim), 0o644);

    // Nothing else was left in the directory (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".txt") || n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "creds.yaml",
            "linked.yaml",
            "other-name.yaml",
            "pc.yaml",
            "state.yaml",
            "victim.txt"
        ]
    );
}

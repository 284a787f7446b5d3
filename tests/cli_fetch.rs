//! `token-rotator fetch` as a user runs it: the binary, manifests on disk, an emulator on
//! loopback. Also keeps `examples/` honest: every example parses, resolves, and the local ones
//! fetch a token.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use provider_emulator::{Emulator, Fault, Provider, fixtures};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use support::*;
use token_rotator::api::{self, ProviderCredential};
use token_rotator::provider::{GrantRequest, HttpPolicy, TokenClient, fingerprint};

const SUMMARY_KEYS: [&str; 6] = [
    "tokenType",
    "expiresAt",
    "lifetimeSeconds",
    "lifetimeSource",
    "hasRefreshToken",
    "fingerprint",
];

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON object of a successful run.
    fn summary(&self) -> Map<String, Value> {
        assert!(
            self.status.success(),
            "fetch failed: {} / {}",
            self.status,
            self.stderr
        );
        assert_eq!(
            self.stderr, "",
            "a successful fetch prints nothing on stderr"
        );
        assert_eq!(self.stdout.lines().count(), 1, "one line: {}", self.stdout);
        match serde_json::from_str(&self.stdout) {
            Ok(Value::Object(map)) => map,
            other => panic!(
                "stdout is not one JSON object: {other:?} from {}",
                self.stdout
            ),
        }
    }

    /// The one stderr line of a failed run, without its `error: ` prefix checked by the caller.
    fn error_line(&self) -> &str {
        assert!(!self.status.success(), "must fail: {}", self.stdout);
        assert_eq!(self.stdout, "", "nothing on stdout when failing");
        let line = self
            .stderr
            .strip_suffix('\n')
            .expect("stderr ends with a newline");
        assert!(
            !line.contains('\n'),
            "exactly one stderr line: {}",
            self.stderr
        );
        line
    }
}

async fn fetch(args: &[&OsStr]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-rotator"))
        .arg("fetch")
        .args(args)
        .output()
        .await
        .expect("token-rotator runs");
    Run {
        status: out.status,
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// `fetch -f pc --credentials creds --allow-http [extra…]`.
async fn fetch_files(pc: &Path, creds: &Path, extra: &[&OsStr]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        "-f".as_ref(),
        pc.as_os_str(),
        "--credentials".as_ref(),
        creds.as_os_str(),
        "--allow-http".as_ref(),
    ];
    args.extend_from_slice(extra);
    fetch(&args).await
}

/// Writes the minimal manifests for `p` against the emulator into `dir`.
fn write_manifests(
    dir: &TempDir,
    p: Provider,
    emu: &Emulator,
    data: &BTreeMap<String, Vec<u8>>,
    style: DataStyle,
) -> (PathBuf, PathBuf) {
    let pc = dir.write(
        "pc.yaml",
        &provider_credential_manifest(preset_name(p), &spec_yaml(p, &emu.token_url(p))),
    );
    let creds = dir.write("creds.yaml", &secret_manifest("creds", data, style));
    (pc, creds)
}

fn lifetime_of(p: Provider) -> u64 {
    match p {
        Provider::Rently => fixtures::RENTLY_LIFETIME_SECS,
        Provider::Carrental => fixtures::CARRENTAL_LIFETIME_SECS,
        Provider::Retently => fixtures::RETENTLY_LIFETIME_SECS,
        Provider::Reltio => fixtures::RELTIO_LIFETIME_SECS,
    }
}

/// Checks every key of a summary; `lifetime` is what the provider announced in seconds.
fn check_summary(label: &str, s: &Map<String, Value>, lifetime: u64, has_refresh: bool) {
    let keys: BTreeSet<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(SUMMARY_KEYS), "{label}");
    assert!(
        s["tokenType"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
        "{label}: {s:?}"
    );
    let seconds = s["lifetimeSeconds"].as_u64().expect("lifetimeSeconds");
    assert!(
        seconds.abs_diff(lifetime) <= 1,
        "{label}: {seconds} vs {lifetime}"
    );
    assert_eq!(s["lifetimeSource"], "expiresIn", "{label}");
    let expires: Timestamp = s["expiresAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{label}: expiresAt is RFC 3339: {s:?}"));
    let from_now = expires.duration_since(Timestamp::now()).as_secs();
    assert!(
        from_now.abs_diff(lifetime as i64) <= 60,
        "{label}: expires in {from_now}s"
    );
    assert_eq!(s["hasRefreshToken"], has_refresh, "{label}");
    assert_fingerprint_format(label, &s["fingerprint"]);
}

fn assert_fingerprint_format(label: &str, value: &Value) {
    let hex = value
        .as_str()
        .and_then(|f| f.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("{label}: fingerprint {value}"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{label}: fingerprint {value}"
    );
}

fn http_client() -> TokenClient {
    TokenClient::new(HttpPolicy {
        allow_http: true,
        allowed_hosts: None,
        allow_link_local: false,
    })
}

#[tokio::test]
async fn every_preset_prints_one_json_summary_from_data_and_string_data() {
    let emu = emulator(false).await;
    for p in ALL {
        for style in [DataStyle::Base64, DataStyle::StringData] {
            let label = format!("{p:?} {style:?}");
            let dir = TempDir::new("preset");
            let (pc, creds) = write_manifests(&dir, p, &emu, &secret_data(p, &emu), style);
            let state = dir.path().join("state.yaml");
            // Retently spends a one-time code, which needs somewhere to keep the chain.
            let extra: Vec<&OsStr> = if p == Provider::Retently {
                vec!["--state-out".as_ref(), state.as_os_str()]
            } else {
                vec![]
            };
            let run = fetch_files(&pc, &creds, &extra).await;
            let summary = run.summary();
            let has_refresh = matches!(p, Provider::Retently | Provider::Reltio);
            check_summary(&label, &summary, lifetime_of(p), has_refresh);

            if p == Provider::Reltio {
                // Without Multi Token Support Reltio hands the same user the same token again,
                // so the in-process client sees the token the binary was given.
                let token = http_client()
                    .fetch(
                        &config_for(p, &emu),
                        &credentials_for(p, &emu),
                        &GrantRequest::Primary,
                    )
                    .await
                    .expect("same token again");
                let value = token.access_token.expose_secret();
                assert!(emu.control().is_valid_access_token(p, value));
                assert_eq!(summary["fingerprint"], fingerprint(value), "{label}");
            }
        }
    }
}

/// Runs `fetch` on the minimal manifests for `p` plus `extra_spec` and returns its one error
/// line, after checking that no credential value of `data` shows in it.
async fn error_line(
    emu: &Emulator,
    p: Provider,
    extra_spec: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> String {
    let dir = TempDir::new("fail");
    let spec = format!("{}{extra_spec}", spec_yaml(p, &emu.token_url(p)));
    let pc = dir.write("pc.yaml", &provider_credential_manifest("x", &spec));
    let creds = dir.write(
        "creds.yaml",
        &secret_manifest("creds", data, DataStyle::StringData),
    );
    let run = fetch_files(&pc, &creds, &[]).await;
    let line = run.error_line().to_string();
    for value in data.values().map(|v| String::from_utf8_lossy(v)) {
        // Short fixture values ("secret") are ordinary words; the long ones must never show.
        if value.len() >= 8 {
            assert!(!line.contains(&*value), "{value} leaked: {line}");
        }
    }
    line
}

fn with(mut data: BTreeMap<String, Vec<u8>>, key: &str, value: &str) -> BTreeMap<String, Vec<u8>> {
    data.insert(key.to_string(), value.as_bytes().to_vec());
    data
}

fn assert_line(line: &str, prefix: &str, needles: &[&str]) {
    assert!(line.starts_with(prefix), "want `{prefix}`: {line}");
    for needle in needles {
        assert!(line.contains(needle), "want `{needle}`: {line}");
    }
}

struct FailureCase {
    p: Provider,
    fault: Option<Fault>,
    extra_spec: &'static str,
    data: BTreeMap<String, Vec<u8>>,
    prefix: &'static str,
    needles: &'static [&'static str],
    /// Whether the request reaches the provider at all.
    sent: bool,
}

#[tokio::test]
async fn failures_print_one_line_with_the_class_and_the_providers_words() {
    let emu = emulator(false).await;
    let c = emu.control();
    let reltio = secret_data(Provider::Reltio, &emu);
    let carrental = secret_data(Provider::Carrental, &emu);
    let rently = secret_data(Provider::Rently, &emu);
    let mut no_password = reltio.clone();
    no_password.remove("password");
    let case = |p, fault, data: &BTreeMap<String, Vec<u8>>, prefix, needles| FailureCase {
        p,
        fault,
        extra_spec: "",
        data: data.clone(),
        prefix,
        needles,
        sent: true,
    };
    let cases = [
        FailureCase {
            data: with(reltio.clone(), "password", "Wr0ng-Passw0rd-9x"),
            ..case(
                Provider::Reltio,
                None,
                &reltio,
                "error: CredentialsRejected:",
                &["invalid_grant", "Bad credentials"],
            )
        },
        // A provider that echoes the password back: the line carries its words, scrubbed.
        case(
            Provider::Reltio,
            Some(Fault::Status {
                code: 400,
                body: format!(
                    r#"{{"error":"invalid_grant","error_description":"password {} is locked"}}"#,
                    fixtures::RELTIO_PASSWORD
                ),
            }),
            &reltio,
            "error: CredentialsRejected:",
            &["password [REDACTED] is locked"],
        ),
        FailureCase {
            data: with(carrental.clone(), "username", "nobody-registered"),
            ..case(
                Provider::Carrental,
                None,
                &carrental,
                "error: CredentialsRejected:",
                &["HTTP 404", "No user found with username"],
            )
        },
        FailureCase {
            extra_spec: "request: {encoding: form}\n",
            ..case(
                Provider::Carrental,
                None,
                &carrental,
                "error: RequestRejected:",
                &["HTTP 400", "Invalid grant type"],
            )
        },
        case(
            Provider::Reltio,
            Some(Fault::RateLimited {
                retry_after_secs: 7,
            }),
            &reltio,
            "error: RateLimited:",
            &["HTTP 429", "retry after 7s"],
        ),
        case(
            Provider::Rently,
            Some(Fault::Status {
                code: 503,
                body: "down for maintenance".into(),
            }),
            &rently,
            "error: ProviderUnavailable:",
            &["HTTP 503", "down for maintenance"],
        ),
        case(
            Provider::Rently,
            Some(Fault::Html),
            &rently,
            "error: InvalidResponse:",
            &[
                "not a JSON object",
                "content-type text/html",
                "never quoted",
            ],
        ),
        FailureCase {
            sent: false,
            ..case(
                Provider::Reltio,
                None,
                &no_password,
                "error: InvalidConfiguration:",
                &["password grant", "`password`"],
            )
        },
        FailureCase {
            extra_spec: "response: {accessToken: access_token}\n",
            sent: false,
            ..case(
                Provider::Reltio,
                None,
                &reltio,
                "error: InvalidSpec:",
                &["spec.response.accessToken"],
            )
        },
    ];
    for case in cases {
        if let Some(fault) = case.fault {
            c.inject(case.p, fault, 1);
        }
        let before = c.counters(case.p).requests;
        let line = error_line(&emu, case.p, case.extra_spec, &case.data).await;
        assert_line(&line, case.prefix, case.needles);
        let sent = c.counters(case.p).requests - before;
        assert_eq!(sent, u64::from(case.sent), "{line}");
    }
}

#[tokio::test]
async fn a_code_or_refresh_token_is_not_spent_without_state_out() {
    let emu = emulator(false).await;
    let dir = TempDir::new("refuse");
    let p = Provider::Retently;
    let (pc, creds) = write_manifests(&dir, p, &emu, &secret_data(p, &emu), DataStyle::Base64);
    let line = fetch_files(&pc, &creds, &[]).await.error_line().to_string();
    assert_line(
        &line,
        "error: Refused:",
        &["one-time authorization code", "--state-out"],
    );
    assert_eq!(emu.control().counters(p).requests, 0, "nothing was sent");
    // The code is intact: with somewhere to keep the chain, it is exchanged.
    let state = dir.path().join("state.yaml");
    fetch_files(&pc, &creds, &["--state-out".as_ref(), state.as_os_str()])
        .await
        .summary();
    assert_eq!(emu.control().counters(p).issued, 1);

    let p = Provider::Reltio;
    let data = with(
        secret_data(p, &emu),
        "refresh_token",
        "seed-refresh-token-1",
    );
    let (pc, creds) = write_manifests(&dir, p, &emu, &data, DataStyle::StringData);
    let line = fetch_files(&pc, &creds, &[]).await.error_line().to_string();
    assert_line(&line, "error: Refused:", &["refresh token", "--state-out"]);
    assert!(!line.contains("seed-refresh-token-1"), "{line}");
    assert_eq!(emu.control().counters(p).requests, 0, "nothing was sent");
}

fn read_secret(path: &Path) -> Secret {
    let text = std::fs::read_to_string(path).expect("state file written");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// Whether a Secret carries `tokenrotator.dev/credentials: "true"`.
fn opted_in(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(api::CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true")
}

fn data_of(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8 value")))
        .collect()
}

#[tokio::test]
async fn state_out_keeps_the_refresh_chain() {
    use std::os::unix::fs::PermissionsExt;

    let emu = emulator(false).await;
    let c = emu.control();
    let p = Provider::Retently;
    let dir = TempDir::new("chain");
    let (pc, creds) = write_manifests(&dir, p, &emu, &secret_data(p, &emu), DataStyle::Base64);
    let (s1, s2, s3) = (
        dir.path().join("s1.yaml"),
        dir.path().join("s2.yaml"),
        dir.path().join("s3.yaml"),
    );
    let first = fetch_files(&pc, &creds, &["--state-out".as_ref(), s1.as_os_str()]).await;
    assert_eq!(first.summary()["hasRefreshToken"], true);

    let state = read_secret(&s1);
    assert_eq!(state.metadata.name.as_deref(), Some("creds"));
    assert!(opted_in(&state), "the state Secret keeps the opt-in label");
    let d1 = data_of(&state);
    assert_eq!(
        d1.keys().map(String::as_str).collect::<Vec<_>>(),
        ["client_id", "client_secret", "refresh_token"],
        "the spent code is gone, the refresh token is in"
    );
    assert_eq!(d1["client_id"], fixtures::RETENTLY_CLIENT_ID);
    assert!(!first.stdout.contains(&d1["refresh_token"]));
    let mode = std::fs::metadata(&s1).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "state file is private: {mode:o}");

    // The state file is a credentials Secret: fed back, it refreshes.
    let before = c.counters(p);
    let second = fetch_files(&pc, &s1, &["--state-out".as_ref(), s2.as_os_str()]).await;
    assert_eq!(second.summary()["hasRefreshToken"], true);
    let after = c.counters(p);
    assert_eq!(
        (after.requests, after.issued),
        (before.requests + 1, before.issued + 1)
    );
    let form = c.last_request(p).expect("recorded").form();
    assert!(form.contains(&("grant_type".into(), "refresh_token".into())));
    assert!(form.contains(&("refresh_token".into(), d1["refresh_token"].clone())));
    assert!(!form.iter().any(|(k, _)| k == "code"), "{form:?}");
    let d2 = data_of(&read_secret(&s2));
    assert_ne!(d2["refresh_token"], d1["refresh_token"], "Retently rotates");
    assert_ne!(
        std::fs::read_to_string(&s1).unwrap(),
        std::fs::read_to_string(&s2).unwrap()
    );

    // The replaced refresh token is dead; the failure says so without showing it.
    let replay = fetch_files(&pc, &s1, &["--state-out".as_ref(), s3.as_os_str()]).await;
    let line = replay.error_line();
    assert_line(line, "error: CredentialsRejected:", &["invalid_grant"]);
    assert!(!line.contains(&d1["refresh_token"]), "{line}");
    assert!(!s3.exists(), "no state is written after a failure");
}

#[tokio::test]
async fn plain_http_needs_allow_http() {
    let emu = emulator(false).await;
    let p = Provider::Rently;
    let dir = TempDir::new("http");
    let (pc, creds) = write_manifests(&dir, p, &emu, &secret_data(p, &emu), DataStyle::Base64);
    let run = fetch(&[
        "-f".as_ref(),
        pc.as_os_str(),
        "--credentials".as_ref(),
        creds.as_os_str(),
    ])
    .await;
    assert_line(
        run.error_line(),
        "error: InvalidConfiguration:",
        &["plain http", "--allow-http"],
    );
    assert_eq!(emu.control().counters(p).requests, 0, "nothing was sent");
}

#[tokio::test]
async fn bad_manifests_get_one_line_naming_the_file() {
    let emu = emulator(false).await;
    let p = Provider::Carrental;
    let dir = TempDir::new("manifests");
    let (pc, creds) = write_manifests(&dir, p, &emu, &secret_data(p, &emu), DataStyle::Base64);
    let broken = dir.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Secret\nstringData:\n  password: \"hunter2-unterminated\n",
    );
    let no_target = dir.write(
        "no-target.yaml",
        "apiVersion: tokenrotator.dev/v1alpha1\nkind: ProviderCredential\nmetadata: {name: x}\nspec:\n  tokenEndpoint: {url: \"https://auth.example.com/token\"}\n  credentials: {secretRef: {name: c}}\n",
    );
    let old_version = dir.write(
        "old-version.yaml",
        &read(&pc).replace("tokenrotator.dev/v1alpha1", "tokenrotator.dev/v1"),
    );
    let secret_v2 = dir.write(
        "secret-v2.yaml",
        &read(&creds).replace("apiVersion: v1", "apiVersion: v2"),
    );
    let missing = dir.path().join("missing.yaml");
    let show = |p: &Path| p.display().to_string();
    let cases: [(&Path, &Path, String); 8] = [
        (
            &creds,
            &creds,
            format!(
                "{} has kind `Secret`, expected ProviderCredential",
                show(&creds)
            ),
        ),
        (
            &pc,
            &pc,
            format!(
                "{} has kind `ProviderCredential`, expected Secret",
                show(&pc)
            ),
        ),
        (
            &broken,
            &creds,
            format!(
                "{} is not a valid ProviderCredential manifest",
                show(&broken)
            ),
        ),
        (
            &pc,
            &broken,
            format!("{} is not a valid Secret manifest", show(&broken)),
        ),
        (
            &no_target,
            &creds,
            format!(
                "{} is not a valid ProviderCredential manifest: missing field `target`",
                show(&no_target)
            ),
        ),
        (&pc, &missing, format!("cannot read {}", show(&missing))),
        (
            &old_version,
            &creds,
            format!(
                "{} has apiVersion `tokenrotator.dev/v1`, expected tokenrotator.dev/v1alpha1",
                show(&old_version)
            ),
        ),
        (
            &pc,
            &secret_v2,
            format!("{} has apiVersion `v2`, expected v1", show(&secret_v2)),
        ),
    ];
    for (pc, creds, want) in cases {
        let run = fetch_files(pc, creds, &[]).await;
        let line = run.error_line();
        assert_line(line, "error: ", &[&want]);
        assert!(!line.contains("hunter2"), "{line}");
        assert!(!line.contains("error: error"), "{line}");
    }
    assert_eq!(emu.control().counters(p).requests, 0);
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every directory below `examples/` that holds YAML, relative to `examples/`.
fn example_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("examples are readable")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        if entries
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        {
            out.push(dir.to_path_buf());
        }
        for sub in entries.iter().filter(|p| p.is_dir()) {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&examples_dir(), &mut out);
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Leaf paths of a JSON value, like `tokenEndpoint.url`.
fn leaf_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn every_example_parses_resolves_and_has_its_credentials() {
    let dirs = example_dirs();
    let names: BTreeSet<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(examples_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for p in ALL {
        let name = preset_name(p);
        assert!(names.contains(name), "examples/{name} exists: {names:?}");
        assert!(
            names.contains(&format!("local/{name}")),
            "examples/local/{name} exists: {names:?}"
        );
    }
    // The minimal fields every preset promises are enough.
    let minimal = BTreeSet::from([
        "preset",
        "tokenEndpoint.url",
        "credentials.secretRef.name",
        "target.secretName",
        "grant.redirectUri",
    ]);
    for dir in &dirs {
        let label = dir.display().to_string();
        let files: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let path = e.unwrap().path();
                path.is_file()
                    .then(|| path.file_name().unwrap().to_string_lossy().into_owned())
            })
            .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
            .collect();
        // An example may add the workload that consumes the token (deployment.yaml) and, for
        // spec.delivery, the destinations' consent (grants.yaml) and the namespaces involved
        // (namespaces.yaml).
        let consumer = files.contains("deployment.yaml");
        let mut expected =
            BTreeSet::from(["credentials.yaml".into(), "providercredential.yaml".into()]);
        for optional in ["deployment.yaml", "grants.yaml", "namespaces.yaml"] {
            if files.contains(optional) {
                expected.insert(optional.to_string());
            }
        }
        assert_eq!(files, expected, "{label}");

        let pc_text = read(&dir.join("providercredential.yaml"));
        let probe: Value = serde_saphyr::from_str(&pc_text).expect("YAML");
        assert_eq!(probe["apiVersion"], "tokenrotator.dev/v1alpha1", "{label}");
        assert_eq!(probe["kind"], "ProviderCredential", "{label}");
        let pc: ProviderCredential = serde_saphyr::from_str(&pc_text)
            .unwrap_or_else(|e| panic!("{label}/providercredential.yaml: {e}"));
        let config = api::provider_config(&pc.spec)
            .unwrap_or_else(|e| panic!("{label}/providercredential.yaml: {e}"));
        api::resolve::renewal_policy(pc.spec.refresh.as_deref())
            .unwrap_or_else(|e| panic!("{label}/providercredential.yaml: {e}"));
        token_rotator::target::validate(&pc.spec.target)
            .unwrap_or_else(|e| panic!("{label}/providercredential.yaml: {e}"));

        let secret: Secret = serde_saphyr::from_str(&read(&dir.join("credentials.yaml")))
            .unwrap_or_else(|e| panic!("{label}/credentials.yaml: {e}"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            pc.spec.credentials.secret_name(),
            "{label}: the ProviderCredential names its credentials Secret"
        );
        assert_ne!(
            Some(pc.spec.target.secret_name.as_str()),
            pc.spec.credentials.secret_name()
        );
        assert!(opted_in(&secret), "{label}: the credentials Secret opts in");
        // The Secret holds every key the primary grant needs.
        let data = token_rotator::cli::manifest::secret_data(&secret);
        let credentials = api::credentials_from_data(&pc.spec, &data);
        token_rotator::provider::build_request(&config, &credentials, &GrantRequest::Primary)
            .unwrap_or_else(|e| panic!("{label}: {e}"));

        let local = label.contains("/examples/local/");
        if local {
            assert!(
                config
                    .token_url
                    .as_str()
                    .starts_with("http://127.0.0.1:8089/"),
                "{label}: {}",
                config.token_url
            );
        } else {
            assert_eq!(config.token_url.scheme(), "https", "{label}");
            for (key, value) in &data {
                let value = String::from_utf8_lossy(value);
                assert!(
                    value.starts_with("REPLACE-WITH-"),
                    "{label}: `{key}` must be an obvious placeholder, not {value}"
                );
            }
        }
        // The namespace the ProviderCredential and its credentials are in (None: the one
        // applied to), and where copies go with spec.delivery.
        assert_eq!(
            secret.metadata.namespace, pc.metadata.namespace,
            "{label}: the credentials Secret is in the ProviderCredential's namespace"
        );
        let destinations = delivery_example(&label, dir, &files, &pc);
        if consumer {
            let deployment: k8s_openapi::api::apps::v1::Deployment =
                serde_saphyr::from_str(&read(&dir.join("deployment.yaml")))
                    .unwrap_or_else(|e| panic!("{label}/deployment.yaml: {e}"));
            let name = deployment.metadata.name.clone().unwrap_or_default();
            let restarted = pc
                .spec
                .rollout
                .as_ref()
                .is_some_and(|r| r.workloads.iter().any(|w| w.name == name));
            if restarted {
                // It reads the token once: spec.rollout restarts it, with its consent.
                assert_eq!(
                    deployment.metadata.namespace, pc.metadata.namespace,
                    "{label}: spec.rollout restarts workloads of its own namespace"
                );
                let consent = deployment
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("tokenrotator.dev/restart-on"))
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    consent
                        .split(',')
                        .any(|n| n.trim() == pc.metadata.name.as_deref().unwrap_or_default()),
                    "{label}: {name} consents to restarts by the ProviderCredential"
                );
            } else {
                // Not restarted: it must read a Secret mounted as a volume, which the kubelet
                // updates: the target in its own namespace, or a copy in a destination.
                let namespace = deployment.metadata.namespace.clone();
                let wanted = match &destinations {
                    Some((copy_name, granted)) if namespace != pc.metadata.namespace => {
                        assert!(
                            namespace.as_ref().is_some_and(|n| granted.contains(n)),
                            "{label}: {name} is in a namespace that receives a copy"
                        );
                        copy_name.clone()
                    }
                    _ => {
                        assert_eq!(namespace, pc.metadata.namespace, "{label}: {name}");
                        pc.spec.target.secret_name.clone()
                    }
                };
                consumer_reads_a_mounted_secret(&label, &deployment, &wanted);
            }
        }
        if pc.spec.preset.is_some() {
            let mut used = BTreeSet::new();
            leaf_paths(&serde_json::to_value(&pc.spec).unwrap(), "", &mut used);
            // spec.rollout and spec.delivery are about the consumers, not the provider.
            let extra: Vec<&String> = used
                .iter()
                .filter(|f| {
                    !minimal.contains(f.as_str())
                        && !f.starts_with("rollout.")
                        && !f.starts_with("delivery.")
                })
                .collect();
            assert!(extra.is_empty(), "{label}: a preset needs no {extra:?}");
        }
    }
}

/// An example of spec.delivery (grants.yaml exactly when spec.delivery is set): every
/// namespace it chooses exists (namespaces.yaml, when given) and consents with a
/// TokenDeliveryGrant naming this ProviderCredential and allowing the copies' name, and every
/// grant is for a chosen namespace. Returns the copies' name and the namespaces that receive
/// one.
fn delivery_example(
    label: &str,
    dir: &Path,
    files: &BTreeSet<String>,
    pc: &ProviderCredential,
) -> Option<(String, BTreeSet<String>)> {
    use token_rotator::rotation::delivery::{NamespaceSeen, selected, selector};
    let Some(delivery) = pc.spec.delivery.as_deref() else {
        for file in ["grants.yaml", "namespaces.yaml"] {
            assert!(
                !files.contains(file),
                "{label}: {file} without spec.delivery"
            );
        }
        return None;
    };
    assert!(
        files.contains("grants.yaml"),
        "{label}: spec.delivery needs the destinations' TokenDeliveryGrants in grants.yaml"
    );
    // As the CRD's rule demands.
    assert!(
        !delivery.namespaces.is_empty() || delivery.namespace_selector.is_some(),
        "{label}: spec.delivery needs namespaces or a namespaceSelector"
    );
    if let Some(s) = &delivery.namespace_selector {
        selector(s).unwrap_or_else(|e| panic!("{label}: namespaceSelector: {e}"));
    }
    let source =
        pc.metadata.namespace.clone().unwrap_or_else(|| {
            panic!("{label}: a delivering ProviderCredential names its namespace")
        });
    let name = pc.metadata.name.clone().unwrap_or_default();
    let copy_name = delivery
        .secret_name
        .clone()
        .unwrap_or_else(|| pc.spec.target.secret_name.clone());

    // The namespaces: those defined here, else the named ones (a selector then chooses none).
    let defined: Vec<(String, BTreeMap<String, String>)> = if files.contains("namespaces.yaml") {
        serde_saphyr::from_multiple::<k8s_openapi::api::core::v1::Namespace>(&read(
            &dir.join("namespaces.yaml"),
        ))
        .unwrap_or_else(|e| panic!("{label}/namespaces.yaml: {e}"))
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.unwrap_or_default(),
                n.metadata.labels.unwrap_or_default(),
            )
        })
        .collect()
    } else {
        delivery
            .namespaces
            .iter()
            .map(|n| (n.0.clone(), BTreeMap::new()))
            .collect()
    };
    let known: BTreeSet<&str> = defined.iter().map(|(n, _)| n.as_str()).collect();
    if files.contains("namespaces.yaml") {
        assert!(
            known.contains(source.as_str()),
            "{label}: namespaces.yaml defines {source}"
        );
    }
    let seen: Vec<NamespaceSeen<'_>> = defined
        .iter()
        .map(|(name, labels)| NamespaceSeen { name, labels })
        .collect();
    let (chosen, _) = selected(delivery, &source, &seen);
    let chosen: BTreeSet<String> = chosen.into_keys().collect();
    assert!(!chosen.contains(&source), "{label}: not its own namespace");
    for namespace in &chosen {
        assert!(
            known.contains(namespace.as_str()),
            "{label}: namespace {namespace} is defined"
        );
    }

    let text = read(&dir.join("grants.yaml"));
    let probes: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{label}/grants.yaml: {e}"));
    let mut granted = BTreeSet::new();
    for probe in probes {
        assert_eq!(probe["apiVersion"], "tokenrotator.dev/v1alpha1", "{label}");
        assert_eq!(probe["kind"], "TokenDeliveryGrant", "{label}");
        let grant: api::TokenDeliveryGrant =
            serde_json::from_value(probe).unwrap_or_else(|e| panic!("{label}/grants.yaml: {e}"));
        let namespace = grant
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| panic!("{label}: a TokenDeliveryGrant names its namespace"));
        assert!(
            chosen.contains(&namespace),
            "{label}: the grant in {namespace} is for a namespace spec.delivery chooses"
        );
        assert!(
            grant
                .spec
                .from
                .iter()
                .any(|f| f.namespace.0 == source && f.name == name),
            "{label}: the grant in {namespace} names {source}/{name}"
        );
        assert!(
            grant.spec.secret_names.is_empty()
                || grant.spec.secret_names.iter().any(|n| n.0 == copy_name),
            "{label}: the grant in {namespace} allows Secret {copy_name}"
        );
        assert!(
            granted.insert(namespace.clone()),
            "{label}: one grant per namespace ({namespace})"
        );
    }
    assert_eq!(
        granted, chosen,
        "{label}: every chosen namespace consents, so the example delivers everywhere"
    );
    Some((copy_name, granted))
}

/// A consumer that is not restarted reads the token from `secret` mounted as a volume: no
/// `subPath` (never updated) and no environment variable from it (read once).
fn consumer_reads_a_mounted_secret(
    label: &str,
    deployment: &k8s_openapi::api::apps::v1::Deployment,
    secret: &str,
) {
    let pod = deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("{label}: the Deployment has a pod template"));
    let volumes: BTreeSet<&str> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
        })
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        !volumes.is_empty(),
        "{label}: the consumer mounts Secret {secret} as a volume"
    );
    let mut mounted = false;
    for container in &pod.containers {
        for mount in container.volume_mounts.iter().flatten() {
            if volumes.contains(mount.name.as_str()) {
                assert!(
                    mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
                    "{label}: a subPath mount of {secret} is never updated"
                );
                mounted = true;
            }
        }
        for env in container.env.iter().flatten() {
            let from = env
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref());
            assert!(
                from.is_none_or(|r| r.name != secret),
                "{label}: an environment variable from {secret} is never updated"
            );
        }
        for from in container.env_from.iter().flatten() {
            assert!(
                from.secret_ref.as_ref().is_none_or(|r| r.name != secret),
                "{label}: environment variables from {secret} are never updated"
            );
        }
    }
    assert!(mounted, "{label}: a container mounts Secret {secret}");
}

const EMULATOR_CODE_PLACEHOLDER: &str = "REPLACE-WITH-A-CODE-FROM-THE-EMULATOR";

#[tokio::test]
async fn local_examples_fetch_from_the_emulator() {
    let emu = emulator(false).await;
    let port = emu.local_addr().port();
    for p in ALL {
        let src = examples_dir().join("local").join(preset_name(p));
        let label = src.display().to_string();
        let dir = TempDir::new("local-example");
        let pc_text = read(&src.join("providercredential.yaml"));
        assert!(pc_text.contains("http://127.0.0.1:8089/"), "{label}");
        let pc_text = pc_text.replace("127.0.0.1:8089", &format!("127.0.0.1:{port}"));
        let pc_path = dir.write("providercredential.yaml", &pc_text);
        let mut creds_text = read(&src.join("credentials.yaml"));
        let state = dir.path().join("state.yaml");
        let mut extra: Vec<&OsStr> = vec![];
        if p == Provider::Retently {
            assert!(creds_text.contains(EMULATOR_CODE_PLACEHOLDER), "{label}");
            let pc: ProviderCredential = serde_saphyr::from_str(&pc_text).unwrap();
            let redirect = pc
                .spec
                .grant
                .and_then(|g| g.redirect_uri)
                .expect("redirectUri");
            let code = emu.control().mint_authorization_code(&redirect);
            creds_text = creds_text.replace(EMULATOR_CODE_PLACEHOLDER, &code);
            extra = vec!["--state-out".as_ref(), state.as_os_str()];
        }
        let creds_path = dir.write("credentials.yaml", &creds_text);
        let summary = fetch_files(&pc_path, &creds_path, &extra).await.summary();
        let has_refresh = matches!(p, Provider::Retently | Provider::Reltio);
        check_summary(&label, &summary, lifetime_of(p), has_refresh);
        assert_eq!(emu.control().counters(p).issued, 1, "{label}");
    }
}

#[tokio::test]
async fn the_custom_provider_example_works_without_code_changes() {
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(1800))
        .unwrap();
    let answer = serde_json::json!({
        "data": {"accessToken": "acme-token-7f3c", "expiresAt": expires.to_string()},
        "meta": {"requestId": "r-1"},
    });
    let stub = StubEndpoint::start("200 OK", answer.to_string()).await;
    let src = examples_dir().join("custom-json");
    let dir = TempDir::new("custom-example");
    let pc_text = read(&src.join("providercredential.yaml"));
    let host = "https://auth.acme-telemetry.example";
    assert!(pc_text.contains(host));
    let pc = dir.write("pc.yaml", &pc_text.replace(host, &stub.base_url()));
    let creds_text = read(&src.join("credentials.yaml"))
        .replace("REPLACE-WITH-ACME-API-KEY", "key-1")
        .replace("REPLACE-WITH-ACME-API-SECRET", "s3cr3t-value");
    let creds = dir.write("creds.yaml", &creds_text);

    let s = fetch_files(&pc, &creds, &[]).await.summary();
    // `printf %s acme-token-7f3c | sha256sum`
    assert_eq!(
        s["fingerprint"],
        "sha256:88ac7b9d4cf8f8c9b88d31156f3f2360e1eb3964a69f7d2b963aca0493c52bd1"
    );
    assert_eq!(s["tokenType"], "Bearer", "absent token type means Bearer");
    assert_eq!(s["lifetimeSource"], "expiresAt");
    assert!(s["lifetimeSeconds"].as_u64().unwrap().abs_diff(1800) <= 60);
    assert_eq!(s["hasRefreshToken"], false);

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    let (head, body) = requests[0].split_once("\r\n\r\n").expect("HTTP request");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /v2/sessions http/1.1"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(!head.contains("authorization:"), "{head}");
    let body: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({"apiKey": "key-1", "apiSecret": "s3cr3t-value", "audience": "telemetry"})
    );
}

/// Every YAML snippet in docs/providers.md is valid, and the full manifests shown there are the
/// ones in `examples/` (outside `examples/local/`), so the page cannot drift from them.
#[test]
fn the_yaml_in_the_provider_docs_is_valid_and_matches_the_examples() {
    let doc = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/providers.md"));
    let mut examples: BTreeMap<(String, String), Value> = BTreeMap::new();
    for dir in example_dirs()
        .iter()
        .filter(|d| d.parent() == Some(&examples_dir()))
    {
        for file in ["providercredential.yaml", "credentials.yaml"] {
            let value: Value = serde_saphyr::from_str(&read(&dir.join(file))).unwrap();
            let key = (
                value["kind"].as_str().unwrap().to_string(),
                value["metadata"]["name"].as_str().unwrap().to_string(),
            );
            examples.insert(key, value);
        }
    }
    let (mut snippets, mut matched) = (0, 0);
    for block in doc.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        for part in block.split("\n---\n") {
            snippets += 1;
            let value: Value = serde_saphyr::from_str(part)
                .unwrap_or_else(|e| panic!("docs YAML does not parse: {e}\n{part}"));
            let spec = match value["kind"].as_str() {
                Some("ProviderCredential") => {
                    let pc: ProviderCredential = serde_json::from_value(value.clone()).unwrap();
                    Some(pc.spec)
                }
                Some("Secret") => {
                    let secret: Secret = serde_json::from_value(value.clone()).unwrap();
                    assert!(opted_in(&secret), "{part}");
                    None
                }
                None => {
                    // A spec, or a few spec fields shown on their own.
                    let mut spec = serde_json::json!({
                        "tokenEndpoint": {"url": "https://auth.example.com/token"},
                        "credentials": {"secretRef": {"name": "c"}},
                        "target": {"secretName": "t"},
                    });
                    let fields = value.get("spec").unwrap_or(&value);
                    for (k, v) in fields.as_object().expect("a mapping") {
                        spec[k] = v.clone();
                    }
                    Some(
                        serde_json::from_value(spec)
                            .unwrap_or_else(|e| panic!("docs spec: {e}\n{part}")),
                    )
                }
                Some(other) => panic!("unexpected kind {other} in the docs"),
            };
            if let Some(spec) = spec {
                api::provider_config(&spec).unwrap_or_else(|e| panic!("docs spec: {e}\n{part}"));
            }
            if let (Some(kind), Some(name)) =
                (value["kind"].as_str(), value["metadata"]["name"].as_str())
            {
                let example = examples
                    .get(&(kind.to_string(), name.to_string()))
                    .unwrap_or_else(|| {
                        panic!("docs show {kind} {name}, which is not in examples/")
                    });
                assert_eq!(
                    &value, example,
                    "docs and examples/ differ for {kind} {name}"
                );
                matched += 1;
            }
        }
    }
    assert!(snippets >= 8, "{snippets} snippets");
    assert!(matched >= 4, "{matched} full manifests matched");
}

/// `fetch -f pc --allow-http [extra…]`, without a credentials Secret.
async fn fetch_with(pc: &Path, extra: &[&OsStr]) -> Run {
    let mut args: Vec<&OsStr> = vec!["-f".as_ref(), pc.as_os_str(), "--allow-http".as_ref()];
    args.extend_from_slice(extra);
    fetch(&args).await
}

/// A ServiceAccount-authenticated manifest, tried from a laptop: the token comes from
/// `--service-account-token-file` (as `kubectl create token` writes it) and the emulator
/// verifies it against the issuer's JWKS. A token for another audience, or none, is refused
/// before anything is sent, and the token is never printed.
#[tokio::test]
async fn a_service_account_token_file_stands_in_for_the_minted_token() {
    use base64::Engine;
    use provider_emulator::FederatedClient;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = key.public_key().as_ref().to_vec();
    let issuer = "https://cluster-issuer.example.test";
    let subject = "system:serviceaccount:team:billing";
    let audience = "https://idp.example.test/realms/team";
    let emu = Emulator::start(Default::default()).await.unwrap();
    let c = emu.control();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
        "x": b64(&point[1..33]), "y": b64(&point[33..])}]});
    c.register_workload_issuer(issuer, &jwks.to_string())
        .unwrap();
    c.register_federated_client(
        "billing-client",
        FederatedClient {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: audience.into(),
        },
    );
    let token = |aud: &str, jti: &str| {
        let now = Timestamp::now().as_second();
        let claims = serde_json::json!({"iss": issuer, "sub": subject, "aud": [aud],
            "iat": now, "exp": now + 600, "jti": jti});
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","kid":"k1"}"#),
            b64(claims.to_string().as_bytes())
        );
        let signature = key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(signature.as_ref()))
    };

    let dir = TempDir::new("sa-token-file");
    let pc = dir.write(
        "pc.yaml",
        &format!(
            "apiVersion: tokenrotator.dev/v1alpha1\nkind: ProviderCredential\nmetadata: {{name: billing}}\nspec:\n  tokenEndpoint: {{url: \"{}\"}}\n  credentials: {{serviceAccount: {{name: billing, audience: \"{audience}\"}}}}\n  target: {{secretName: billing-token}}\n",
            emu.oauth2_token_url()
        ),
    );
    let good = token(audience, "j1");
    let file = dir.write("token", &format!("{good}\n"));
    let ok = fetch_with(
        &pc,
        &["--service-account-token-file".as_ref(), file.as_os_str()],
    )
    .await;
    let summary = ok.summary();
    assert_eq!(summary["tokenType"], "Bearer");
    assert!(!format!("{}{}", ok.stdout, ok.stderr).contains(&good));
    assert_eq!(c.oauth2_counters().issued, 1, "the emulator verified it");

    let requests = c.oauth2_counters().requests;
    let other = dir.write("other", &token("https://elsewhere.example.test", "j2"));
    let refused = fetch_with(
        &pc,
        &["--service-account-token-file".as_ref(), other.as_os_str()],
    )
    .await;
    assert!(
        refused.error_line().starts_with("error: AudienceRefused:"),
        "{}",
        refused.stderr
    );
    let missing = fetch_with(&pc, &[]).await;
    assert!(
        missing
            .error_line()
            .contains("--service-account-token-file"),
        "{}",
        missing.stderr
    );
    assert_eq!(c.oauth2_counters().requests, requests, "nothing sent");
}

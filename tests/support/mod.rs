//! Helpers shared by the provider-level test binaries (no Kubernetes).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use provider_emulator::{Emulator, Options, Provider, fixtures};
use token_rotator::api::{self, ProviderCredentialSpec};
use token_rotator::provider::{Credentials, ProviderConfig};

pub async fn emulator(tls: bool) -> Emulator {
    token_rotator::install_crypto_provider();
    Emulator::start(Options {
        tls,
        ..Options::default()
    })
    .await
    .expect("emulator starts")
}

pub fn preset_name(p: Provider) -> &'static str {
    match p {
        Provider::Rently => "rently",
        Provider::Carrental => "carrental",
        Provider::Retently => "retently",
        Provider::Reltio => "reltio",
    }
}

pub const REDIRECT_URI: &str = "https://app.example.com/oauth/callback";

/// A minimal spec for a preset, as YAML: exactly the fields the README promises are enough.
pub fn spec_yaml(p: Provider, url: &str) -> String {
    let grant = if p == Provider::Retently {
        format!("grant: {{redirectUri: \"{REDIRECT_URI}\"}}\n")
    } else {
        String::new()
    };
    format!(
        "preset: {}\ntokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n{grant}",
        preset_name(p)
    )
}

pub fn spec_for(p: Provider, url: &str) -> ProviderCredentialSpec {
    serde_saphyr::from_str(&spec_yaml(p, url)).expect("spec parses")
}

pub fn config_for(p: Provider, emu: &Emulator) -> ProviderConfig {
    let mut spec = spec_for(p, &emu.token_url(p));
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    api::provider_config(&spec).expect("preset resolves")
}

/// The emulator's default account for a provider, as a credentials Secret would hold it.
pub fn secret_data(p: Provider, emu: &Emulator) -> BTreeMap<String, Vec<u8>> {
    let pairs: Vec<(&str, String)> = match p {
        Provider::Rently => vec![
            ("client_id", fixtures::RENTLY_CLIENT_ID.into()),
            ("client_secret", fixtures::RENTLY_CLIENT_SECRET.into()),
        ],
        Provider::Carrental => vec![
            ("username", fixtures::CARRENTAL_USERNAME.into()),
            ("password", fixtures::CARRENTAL_PASSWORD.into()),
        ],
        Provider::Retently => vec![
            ("client_id", fixtures::RETENTLY_CLIENT_ID.into()),
            ("client_secret", fixtures::RETENTLY_CLIENT_SECRET.into()),
            ("code", emu.control().mint_authorization_code(REDIRECT_URI)),
        ],
        Provider::Reltio => vec![
            ("client_id", fixtures::RELTIO_CLIENT_ID.into()),
            ("client_secret", fixtures::RELTIO_CLIENT_SECRET.into()),
            ("username", fixtures::RELTIO_USERNAME.into()),
            ("password", fixtures::RELTIO_PASSWORD.into()),
        ],
    };
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect()
}

pub fn credentials_for(p: Provider, emu: &Emulator) -> Credentials {
    let spec = spec_for(p, &emu.token_url(p));
    api::credentials_from_data(&spec, &secret_data(p, emu))
}

pub const ALL: [Provider; 4] = [
    Provider::Rently,
    Provider::Carrental,
    Provider::Retently,
    Provider::Reltio,
];

/// A ProviderCredential manifest around a spec given as YAML.
pub fn provider_credential_manifest(name: &str, spec_yaml: &str) -> String {
    let spec: String = spec_yaml.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: tokenrotator.dev/v1alpha1\nkind: ProviderCredential\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// How a Secret manifest carries its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataStyle {
    /// `data:` with base64 values, as `kubectl create secret generic --dry-run=client -o yaml`.
    Base64,
    /// `stringData:` with plain values.
    StringData,
}

/// A credentials Secret manifest (with the opt-in label) holding `data`.
pub fn secret_manifest(name: &str, data: &BTreeMap<String, Vec<u8>>, style: DataStyle) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Secret\n");
    out.push_str(&format!(
        "metadata:\n  creationTimestamp: null\n  name: {name}\n  labels:\n    tokenrotator.dev/credentials: \"true\"\n"
    ));
    let (section, render): (&str, fn(&[u8]) -> String) = match style {
        DataStyle::Base64 => ("data", |v| {
            base64::engine::general_purpose::STANDARD.encode(v)
        }),
        // A JSON string is a valid YAML double-quoted scalar.
        DataStyle::StringData => ("stringData", |v| {
            serde_json::to_string(&String::from_utf8_lossy(v)).expect("string serialises")
        }),
    };
    out.push_str(&format!("{section}:\n"));
    for (k, v) in data {
        out.push_str(&format!("  {k}: {}\n", render(v)));
    }
    out
}

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "token-rotator-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A one-route HTTP/1.1 endpoint that records each request (head and body, as text) and
/// answers every one with the same status and JSON body: a provider the emulator does not know.
pub struct StubEndpoint {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl StubEndpoint {
    pub async fn start(status_line: &'static str, body: String) -> StubEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("stub address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let request = read_request(&mut stream).await;
                recorded.lock().expect("stub lock").push(request);
                let answer = format!(
                    "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        StubEndpoint {
            addr,
            requests,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("stub lock").clone()
    }
}

impl Drop for StubEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

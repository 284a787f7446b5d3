//! Reading YAML manifests given on the command line.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {kind} manifest: {reason}")]
    Parse {
        path: String,
        kind: &'static str,
        reason: String,
    },
    #[error("{path} has kind `{found}`, expected {expected}")]
    WrongKind {
        path: String,
        found: String,
        expected: &'static str,
    },
}

/// Parses the first document of `path` as `T`, checking `kind` first for a clear error.
pub fn read<T: DeserializeOwned>(path: &Path, kind: &'static str) -> Result<T, ManifestError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: shown.clone(),
        source,
    })?;
    let probe: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| ManifestError::Parse {
            path: shown.clone(),
            kind,
            reason: first_line(&e.to_string())
                .trim_start_matches("error: ")
                .to_string(),
        })?;
    let found = probe
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("<none>");
    if found != kind {
        return Err(ManifestError::WrongKind {
            path: shown,
            found: found.to_string(),
            expected: kind,
        });
    }
    // Parse errors name the field; they must not quote values, which may be secrets.
    serde_json::from_value(probe).map_err(|e| ManifestError::Parse {
        path: shown,
        kind,
        reason: strip_values(&e.to_string()),
    })
}

/// The decoded data of a Secret manifest: `data` (base64) overlaid by `stringData`, as the API
/// server does.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    data
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// serde messages like "invalid value: string \"hunter2\"" would echo input; keep the shape only.
fn strip_values(text: &str) -> String {
    let line = first_line(text);
    match line.find('"') {
        Some(i) => format!("{}…", &line[..i]),
        None => line,
    }
}

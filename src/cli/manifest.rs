//! Reading YAML manifests given on the command line.

use std::path::Path;

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
        kind: String,
        reason: String,
    },
    #[error("{path} has kind `{found}`, expected {expected}")]
    WrongKind {
        path: String,
        found: String,
        expected: String,
    },
    #[error("{path} has apiVersion `{found}`, expected {expected}")]
    WrongApiVersion {
        path: String,
        found: String,
        expected: String,
    },
}

/// Parses `path`, a single YAML document, as `T`, checking `kind` and `apiVersion` first for
/// a clear error.
pub fn read<T>(path: &Path) -> Result<T, ManifestError>
where
    T: DeserializeOwned + kube::Resource<DynamicType = ()>,
{
    let kind = T::kind(&()).to_string();
    let api_version = T::api_version(&()).to_string();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: shown.clone(),
        source,
    })?;
    let probe: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| ManifestError::Parse {
            path: shown.clone(),
            kind: kind.clone(),
            reason: first_line(&e.to_string())
                .trim_start_matches("error: ")
                .to_string(),
        })?;
    let field = |name| probe.get(name).and_then(|v| v.as_str()).unwrap_or("<none>");
    // Shown on one short line, whatever the file holds.
    let shown_value =
        |v: &str| crate::provider::scrub::truncate_chars(&v.escape_debug().to_string(), 80);
    if field("kind") != kind {
        return Err(ManifestError::WrongKind {
            path: shown,
            found: shown_value(field("kind")),
            expected: kind,
        });
    }
    if field("apiVersion") != api_version {
        return Err(ManifestError::WrongApiVersion {
            path: shown,
            found: shown_value(field("apiVersion")),
            expected: api_version,
        });
    }
    // Parse errors name the field; they must not quote values, which may be secrets.
    serde_json::from_value(probe).map_err(|e| ManifestError::Parse {
        path: shown,
        kind,
        reason: strip_values(&e.to_string()),
    })
}

/// The decoded data of a Secret manifest (the helper the controller uses too).
pub use crate::secrets::secret_data;

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

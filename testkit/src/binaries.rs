//! Locating the binaries that `hack/provision.sh` builds.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The pins the provisioning script uses; compiled in so both agree on the cache key.
const VERSIONS_ENV: &str = include_str!("../../hack/versions.env");

/// Environment variable naming the directory holding the binaries.
pub const BIN_ENV: &str = "TOKEN_ROTATOR_K8S_BIN";

/// Binaries the control plane needs (kubectl and helm are optional extras).
pub(crate) const REQUIRED: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// Pinned versions from `hack/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub helm: String,
}

impl Versions {
    /// The versions pinned in `hack/versions.env`.
    pub fn pinned() -> Result<Self> {
        Self::parse(VERSIONS_ENV)
    }

    fn parse(text: &str) -> Result<Self> {
        let get = |key: &'static str| {
            text.lines()
                .filter_map(|line| line.trim().split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .ok_or(Error::MissingVersion(key))
        };
        Ok(Self {
            kubernetes: get("K8S_VERSION")?,
            etcd: get("ETCD_VERSION")?,
            helm: get("HELM_VERSION")?,
        })
    }

    /// Directory name under the cache root, as `hack/provision.sh` spells it.
    pub fn cache_key(&self) -> String {
        format!(
            "k8s-{}-etcd-{}-helm-{}",
            self.kubernetes, self.etcd, self.helm
        )
    }
}

/// The directory `hack/provision.sh` fills by default, from the same environment variables.
pub fn default_bin_dir() -> Result<PathBuf> {
    let env = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let root = env("TOKEN_ROTATOR_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("token-rotator")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("token-rotator")))
        .ok_or(Error::NoCacheDir)?;
    Ok(root.join(Versions::pinned()?.cache_key()).join("bin"))
}

/// `$TOKEN_ROTATOR_K8S_BIN` if set, else the default cache directory; checked for the binaries.
pub fn find_bin_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => default_bin_dir()?,
    };
    check_bin_dir(&dir)?;
    Ok(dir)
}

pub(crate) fn check_bin_dir(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::BinariesNotFound {
            dir: dir.to_owned(),
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pinned_versions() {
        let v = Versions::pinned().unwrap();
        assert!(v.kubernetes.starts_with("v1.37."), "{v:?}");
        assert!(v.etcd.starts_with('v'), "{v:?}");
        assert!(v.helm.starts_with('v'), "{v:?}");
        assert_eq!(
            v.cache_key(),
            format!("k8s-{}-etcd-{}-helm-{}", v.kubernetes, v.etcd, v.helm)
        );
    }

    #[test]
    fn ignores_comments_and_quotes() {
        let v = Versions::parse(
            "# K8S_VERSION=v0\nK8S_VERSION=\"v1.2.3\"\nETCD_VERSION=v3\nHELM_VERSION=v4\n",
        )
        .unwrap();
        assert_eq!(v.kubernetes, "v1.2.3");
        assert!(matches!(
            Versions::parse("K8S_VERSION=v1"),
            Err(Error::MissingVersion("ETCD_VERSION"))
        ));
    }

    #[test]
    fn reports_missing_binaries() {
        let err = check_bin_dir(Path::new("/nonexistent-token-rotator-bin")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("kube-apiserver") && msg.contains("hack/provision.sh"),
            "{msg}"
        );
    }
}

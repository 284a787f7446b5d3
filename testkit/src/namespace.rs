//! Fresh namespaces per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::control_plane::ControlPlane;
use crate::error::{Error, Result};

/// Longest accepted prefix; leaves room for the suffix within the 63-character limit.
const MAX_PREFIX: usize = 40;

/// A namespace created for one test. Deleted (best effort, in the background on the server)
/// when dropped, unless [`keep`](Self::keep) was called.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: kube::Config,
    delete_on_drop: bool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place after the test, e.g. to inspect it from the devcluster.
    pub fn keep(mut self) -> String {
        self.delete_on_drop = false;
        std::mem::take(&mut self.name)
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for TestNamespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.delete_on_drop {
            return;
        }
        let name = std::mem::take(&mut self.name);
        let config = self.config.clone();
        // Drop may run inside a runtime (where blocking on another one is refused) or outside
        // any; a short-lived thread with its own runtime works in both.
        let deleter = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                let api: Api<Namespace> = Api::all(client);
                let params = DeleteParams::background();
                let delete = api.delete(&name, &params);
                let _ = tokio::time::timeout(Duration::from_secs(10), delete).await;
            });
        });
        let _ = deleter.join();
    }
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-')
}

fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Bounded so names stay short; the random part and the 409 retry keep them unique.
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("{prefix}-{n}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl ControlPlane {
    /// Creates a namespace named `<prefix>-<n>-<random>`.
    pub async fn new_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        if !valid_prefix(prefix) {
            return Err(Error::InvalidNamespacePrefix(prefix.to_owned()));
        }
        let api: Api<Namespace> = Api::all(self.try_client()?);
        loop {
            let name = unique_name(prefix);
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        [("token-rotator.test/testkit".to_owned(), "true".to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => {
                    return Ok(TestNamespace {
                        name,
                        config: self.admin_config(),
                        delete_on_drop: true,
                    });
                }
                // Random suffix collided with an existing namespace: pick another.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(Error::kube(format!("creating namespace {name}"))(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("rotate-1"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("-x"));
        assert!(!valid_prefix("Upper"));
        assert!(!valid_prefix("under_score"));
        assert!(!valid_prefix(&"x".repeat(MAX_PREFIX + 1)));
    }

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_name(&"x".repeat(MAX_PREFIX));
        let b = unique_name(&"x".repeat(MAX_PREFIX));
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
    }
}

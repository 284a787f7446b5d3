//! Installing the project's CustomResourceDefinitions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::control_plane::ControlPlane;
use crate::error::{Error, Result};

const FIELD_MANAGER: &str = "testkit";
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// A minimal namespaced CRD (`probes.testkit.token-rotator.test`, kind `Probe`), for tests
/// that need one while the project's own CRDs are absent.
pub const SAMPLE_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: probes.testkit.token-rotator.test
spec:
  group: testkit.token-rotator.test
  names: {kind: Probe, plural: probes, singular: probe, listKind: ProbeList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                message: {type: string}
"#;

/// Parses multi-document YAML into CRDs; `path` only names the source in errors.
pub fn parse_crds(yaml: &str, path: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|source| Error::Yaml {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    let invalid = |index, reason: String| Error::InvalidCrd {
        path: path.to_owned(),
        index,
        reason,
    };
    docs.into_iter()
        .enumerate()
        // Empty documents (a trailing `---`) are not resources.
        .filter(|(_, doc)| !doc.is_null())
        .map(|(index, doc)| {
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            if kind != "CustomResourceDefinition" {
                return Err(invalid(index, format!("kind is {kind:?}")));
            }
            serde_json::from_value(doc).map_err(|e| invalid(index, e.to_string()))
        })
        .collect()
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io("read directory", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

impl ControlPlane {
    /// Server-side applies every CRD in the `*.yaml`/`*.yml` files of `dir` and waits until
    /// each is Established. Returns the CRD names. Idempotent; parallel callers are serialised.
    pub async fn apply_crds(&self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let mut crds = Vec::new();
        for file in yaml_files(dir.as_ref())? {
            let text = std::fs::read_to_string(&file).map_err(Error::io("read", &file))?;
            crds.extend(parse_crds(&text, &file)?);
        }
        self.apply_crd_objects(crds).await
    }

    /// Like [`apply_crds`](Self::apply_crds), for CRDs given as (multi-document) YAML text.
    pub async fn apply_crds_yaml(&self, yaml: &str) -> Result<Vec<String>> {
        let crds = parse_crds(yaml, Path::new("<inline YAML>"))?;
        self.apply_crd_objects(crds).await
    }

    async fn apply_crd_objects(&self, crds: Vec<CustomResourceDefinition>) -> Result<Vec<String>> {
        // Parallel tests applying the same CRDs would only race each other's waits.
        let _guard = self.crd_lock.lock().await;
        let api: Api<CustomResourceDefinition> = Api::all(self.try_client()?);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut names = Vec::with_capacity(crds.len());
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .map_err(Error::kube(format!(
                    "applying CustomResourceDefinition {name}"
                )))?;
            names.push(name);
        }
        let deadline = Instant::now() + ESTABLISH_TIMEOUT;
        for name in &names {
            loop {
                let crd = api.get(name).await.map_err(Error::kube(format!(
                    "reading CustomResourceDefinition {name}"
                )))?;
                if is_established(&crd) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::CrdNotEstablished {
                        name: name.clone(),
                        waited: ESTABLISH_TIMEOUT,
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml() {
        let other = SAMPLE_CRD.replace("probes.", "gadgets.");
        // Separators before, between and after documents, as generators write them.
        let text = format!("---\n{SAMPLE_CRD}---\n{other}---\n");
        let crds = parse_crds(&text, Path::new("x.yaml")).unwrap();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "probes.testkit.token-rotator.test",
                "gadgets.testkit.token-rotator.test"
            ]
        );
        assert_eq!(crds[0].spec.versions[0].name, "v1");
    }

    #[test]
    fn rejects_other_kinds() {
        let err =
            parse_crds("apiVersion: v1\nkind: ConfigMap\n", Path::new("cm.yaml")).unwrap_err();
        assert!(err.to_string().contains("ConfigMap"), "{err}");
    }
}

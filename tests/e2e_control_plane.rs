//! End-to-end checks of the real control plane the other e2e tests run against: CRDs,
//! server-side apply, RBAC with ServiceAccount tokens, and garbage collection by
//! kube-controller-manager. Needs `hack/provision.sh`; runs with `--features e2e`.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// Deadline for conditions that controllers bring about asynchronously.
const CONVERGE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns true or `timeout` passes.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Binds a Role with `rules` to ServiceAccount `namespace/sa` (server-side apply).
async fn grant(
    cp: &testkit::ControlPlane,
    namespace: &str,
    sa: &str,
    rules: serde_json::Value,
) -> Result<()> {
    let name = format!("{sa}-grant");
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
    });
    let params = PatchParams::apply("e2e-test");
    Api::<Role>::namespaced(cp.client(), namespace)
        .patch(&name, &params, &Patch::Apply(role))
        .await?;
    Api::<RoleBinding>::namespaced(cp.client(), namespace)
        .patch(&name, &params, &Patch::Apply(binding))
        .await?;
    Ok(())
}

/// A ConfigMap named `owner`, to hang dependents on.
async fn create_owner(cp: &testkit::ControlPlane, namespace: &str) -> Result<ConfigMap> {
    let owner = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owner".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    Ok(Api::<ConfigMap>::namespaced(cp.client(), namespace)
        .create(&PostParams::default(), &owner)
        .await?)
}

/// A Secret owned by `owner`.
fn owned_secret(name: &str, owner: &ConfigMap, block_owner_deletion: bool) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.metadata.name.clone().unwrap_or_default(),
                uid: owner.metadata.uid.clone().unwrap_or_default(),
                block_owner_deletion: Some(block_owner_deletion),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        string_data: Some([("token".to_owned(), "x".to_owned())].into()),
        ..Secret::default()
    }
}

#[tokio::test]
async fn server_reports_kubernetes_1_37() -> Result<()> {
    let cp = testkit::shared().await?;
    let version = cp.client().apiserver_version().await?;
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "37");
    assert!(version.git_version.starts_with("v1.37."), "{version:?}");
    assert!(cp.server_url().starts_with("https://127.0.0.1:"));
    Ok(())
}

#[tokio::test]
async fn crds_are_applied_and_served() -> Result<()> {
    let cp = testkit::shared().await?;
    let crds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut names = cp.apply_crds(&crds_dir).await?;
    if names.is_empty() {
        // Not written yet: exercise the same path with the harness's sample CRD.
        names = cp.apply_crds_yaml(testkit::SAMPLE_CRD).await?;
    }
    // A second apply changes nothing and finds them Established at once.
    if crds_dir.exists() {
        cp.apply_crds(&crds_dir).await?;
    }
    ensure!(!names.is_empty());

    // Create an instance of the first CRD's storage version.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(cp.client());
    let crd = crds.get(&names[0]).await?;
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .context("CRD has no storage version")?;
    let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
    let list: Api<DynamicObject> = if crd.spec.scope == "Namespaced" {
        let ns = cp.new_namespace("crd").await?;
        Api::namespaced_with(cp.client(), ns.name(), &resource)
    } else {
        Api::all_with(cp.client(), &resource)
    };
    list.list(&ListParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn secrets_round_trip_with_server_side_apply() -> Result<()> {
    let cp = testkit::shared().await?;
    let ns = cp.new_namespace("ssa").await?;
    let secrets: Api<Secret> = Api::namespaced(cp.client(), ns.name());
    let params = PatchParams::apply("e2e-test");
    let apply = |value: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "api-token", "labels": {"app": "e2e"}},
            "type": "Opaque",
            "stringData": {"token": value},
        })
    };

    secrets
        .patch("api-token", &params, &Patch::Apply(apply("first")))
        .await?;
    let read = secrets.get("api-token").await?;
    let data = read.data.context("secret has no data")?;
    assert_eq!(data["token"].0, b"first");

    secrets
        .patch("api-token", &params, &Patch::Apply(apply("second")))
        .await?;
    let read = secrets.get("api-token").await?;
    assert_eq!(
        read.data.context("secret has no data")?["token"].0,
        b"second"
    );
    let managers: Vec<_> = read
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == "e2e-test"), "{managers:?}");
    Ok(())
}

#[tokio::test]
async fn service_accounts_get_exactly_the_rbac_granted() -> Result<()> {
    let cp = testkit::shared().await?;
    let ns = cp.new_namespace("rbac").await?;
    let as_sa: Api<Secret> = Api::namespaced(
        cp.service_account_client(ns.name(), "reader").await?,
        ns.name(),
    );

    match as_sa.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("expected 403 Forbidden listing secrets without RBAC, got {other:?}"),
    }

    grant(
        cp,
        ns.name(),
        "reader",
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
        ]),
    )
    .await?;

    // The RBAC authorizer sees new bindings through a watch, so allow it a moment.
    eventually("the RoleBinding to take effect", CONVERGE, || async {
        Ok(as_sa.list(&ListParams::default()).await.is_ok())
    })
    .await?;
    // Only what was granted: reading one secret (`get`) is still denied.
    match as_sa.get("anything").await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("expected 403 for get, which the Role does not grant, got {other:?}"),
    }

    // The same identity works as a kubeconfig file for subprocesses.
    let path = cp.service_account_kubeconfig(ns.name(), "reader").await?;
    let text = std::fs::read_to_string(&path)?;
    assert!(text.contains("token: ") && text.contains(cp.server_url()));
    Ok(())
}

#[tokio::test]
async fn dependents_of_deleted_owners_are_garbage_collected() -> Result<()> {
    let cp = testkit::shared().await?;
    let ns = cp.new_namespace("gc").await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(cp.client(), ns.name());
    let secrets: Api<Secret> = Api::namespaced(cp.client(), ns.name());

    let owner = create_owner(cp, ns.name()).await?;
    // blockOwnerDeletion needs `update` on the owner's finalizers under
    // OwnerReferencesPermissionEnforcement; the admin has it.
    let dependent = owned_secret("dependent", &owner, true);
    secrets.create(&PostParams::default(), &dependent).await?;

    configmaps
        .delete("owner", &DeleteParams::background())
        .await?;
    eventually(
        "the garbage collector to delete the dependent Secret",
        CONVERGE,
        || async { Ok(secrets.get_opt("dependent").await?.is_none()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn blocking_owner_deletion_needs_rights_on_the_owner() -> Result<()> {
    let cp = testkit::shared().await?;
    let ns = cp.new_namespace("ownerref").await?;
    let owner = create_owner(cp, ns.name()).await?;
    // A ServiceAccount that may create secrets but not touch configmaps' finalizers.
    grant(
        cp,
        ns.name(),
        "writer",
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get"]},
        ]),
    )
    .await?;
    let as_sa: Api<Secret> = Api::namespaced(
        cp.service_account_client(ns.name(), "writer").await?,
        ns.name(),
    );
    let secret = |name, block| owned_secret(name, &owner, block);
    // A plain owner reference is fine once the Role is in effect ...
    eventually("the RoleBinding to take effect", CONVERGE, || async {
        Ok(as_sa
            .create(&PostParams::default(), &secret("plain", false))
            .await
            .is_ok())
    })
    .await?;
    // ... but blockOwnerDeletion is refused by OwnerReferencesPermissionEnforcement.
    match as_sa
        .create(&PostParams::default(), &secret("blocking", true))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => {
            bail!("expected 403 for blockOwnerDeletion without rights on the owner, got {other:?}")
        }
    }
    Ok(())
}

/// A private control plane stops completely on drop: no processes, no temp dir.
#[tokio::test]
async fn standalone_control_plane_cleans_up_on_drop() -> Result<()> {
    let cp = testkit::ControlPlane::start().await?;
    let dir = cp.dir().to_owned();
    assert!(cp.kubeconfig_path().is_file());
    cp.client().apiserver_version().await?;
    let pids = child_pids_using(&dir);
    ensure!(
        pids.len() == 3,
        "expected etcd, kube-apiserver and kube-controller-manager, got {pids:?}"
    );

    tokio::task::spawn_blocking(move || drop(cp)).await?;
    ensure!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still running"
        );
    }
    Ok(())
}

/// Our children whose command line mentions `dir` (all components get paths inside it).
fn child_pids_using(dir: &Path) -> Vec<u32> {
    let me = std::process::id().to_string();
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 (after the parenthesised command) is the parent pid.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

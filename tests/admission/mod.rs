//! The chart's admission policies (templates/admission-policy.yaml) on the real API server,
//! rendered for one test namespace: they match only that namespace's operator identity
//! (`system:serviceaccount:<namespace>:token-rotator`), so tests running side by side never
//! meet each other's policies.
#![allow(dead_code)]

use anyhow::{Result, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, Patch, PatchParams};

use crate::e2e::*;

/// The installed policies and bindings (same names), to remove at the end of a test.
pub struct Policies {
    client: kube::Client,
    pub names: Vec<String>,
}

/// Renders the chart's admission policies for `env`'s operator identity and applies every
/// ValidatingAdmissionPolicy and its binding. Not yet in force when this returns: see
/// [`refused_once_in_force`].
pub async fn install(env: &Env) -> Result<Policies> {
    let rendered = helm(
        env.cp,
        &[
            "template",
            "token-rotator",
            path_str(&repo_path("charts/token-rotator"))?,
            "--namespace",
            env.name(),
            "--set",
            "admissionPolicy.enabled=true",
            "--show-only",
            "templates/admission-policy.yaml",
        ],
    )
    .await?;
    let apply = PatchParams::apply("e2e").force();
    let policies = Api::<ValidatingAdmissionPolicy>::all(env.client.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone());
    let mut names = Vec::new();
    for mut doc in yaml_docs(&rendered)? {
        // Cluster-wide objects: named after the namespace too, so that tests side by side do
        // not replace or remove each other's.
        let name = format!(
            "{}-{}",
            doc["metadata"]["name"].as_str().unwrap_or_default(),
            env.name()
        );
        doc["metadata"]["name"] = name.clone().into();
        if let Some(policy) = doc["spec"]["policyName"].as_str() {
            doc["spec"]["policyName"] = format!("{policy}-{}", env.name()).into();
        }
        let name = name.as_str();
        match doc["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                policies.patch(name, &apply, &Patch::Apply(&doc)).await?;
                names.push(name.to_string());
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                bindings.patch(name, &apply, &Patch::Apply(&doc)).await?;
            }
            other => anyhow::bail!("admission-policy.yaml rendered a {other:?}"),
        }
    }
    ensure!(!names.is_empty(), "the chart rendered no admission policy");
    Ok(Policies {
        client: env.client.clone(),
        names,
    })
}

impl Policies {
    pub async fn remove(self) -> Result<()> {
        let policies = Api::<ValidatingAdmissionPolicy>::all(self.client.clone());
        let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone());
        for name in &self.names {
            bindings.delete(name, &Default::default()).await?;
            policies.delete(name, &Default::default()).await?;
        }
        Ok(())
    }
}

/// Waits until `attempt` (a write as the operator that a policy refuses; a dry run, so an
/// early success changes nothing) is refused, and returns the refusal. A policy is in force
/// once the API server's informers have seen it and its binding, a moment after
/// [`install`]; each policy is loaded on its own, so each needs its own probe.
pub async fn refused_once_in_force<F, Fut, T>(what: &str, mut attempt: F) -> Result<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    eventually(what, CONVERGE, || {
        let attempt = attempt();
        async move {
            Ok(match attempt.await {
                // How the API server words a policy's refusal; any other error is a failure.
                Err(kube::Error::Api(e)) if e.message.contains("denied request") => Some(e.message),
                Err(e) => return Err(e.into()),
                Ok(_) => None,
            })
        }
    })
    .await
}

/// The policy's refusal of `attempt` (a write as the operator), or an error saying what
/// happened instead.
pub async fn refusal<T>(
    what: &str,
    attempt: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<String> {
    match attempt.await {
        Err(kube::Error::Api(e)) if e.message.contains("denied request") => Ok(e.message),
        Err(e) => anyhow::bail!("{what}: refused, but not by a policy: {e}"),
        Ok(_) => anyhow::bail!("{what}: admitted"),
    }
}

/// The operator's identity, for probes.
async fn as_operator(env: &Env) -> Result<kube::Client> {
    Ok(env
        .cp
        .service_account_client(env.name(), OPERATOR_SA)
        .await?)
}

/// Waits until the Secret policy is in force: the operator's identity may not create a
/// Secret it does not manage (a dry run).
pub async fn secret_policy_in_force(env: &Env) -> Result<()> {
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_operator(env).await?, env.name());
    let refusal = refused_once_in_force("the Secret policy", || {
        let secrets = secrets.clone();
        async move {
            let unmanaged = k8s_openapi::api::core::v1::Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("not-managed".into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let dry = kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            };
            secrets.create(&dry, &unmanaged).await
        }
    })
    .await?;
    ensure!(
        refusal.contains("may write or delete only Secrets it manages"),
        "{refusal}"
    );
    Ok(())
}

/// Waits until the ProviderCredential policy is in force: the operator's identity may not
/// change the spec of `name` (a dry run).
pub async fn providercredential_policy_in_force(env: &Env, name: &str) -> Result<()> {
    let pcreds = Api::<token_rotator::api::ProviderCredential>::namespaced(
        as_operator(env).await?,
        env.name(),
    );
    let refusal = refused_once_in_force("the ProviderCredential policy", || {
        let pcreds = pcreds.clone();
        let patch = Patch::Merge(serde_json::json!({"spec": {"suspend": true}}));
        async move {
            pcreds
                .patch(name, &PatchParams::default().dry_run(), &patch)
                .await
        }
    })
    .await?;
    ensure!(
        refusal.contains("may change nothing in a ProviderCredential but metadata.finalizers"),
        "{refusal}"
    );
    Ok(())
}

//! Secretless (issue 26) on the real control plane: a ProviderCredential authenticates as a
//! ServiceAccount of its namespace. The control plane is the OIDC issuer on loopback; the
//! emulator's /oauth2 server fetches nothing from the operator, only the issuer's JWKS
//! (anonymously, as a cloud identity provider would) and verifies each ServiceAccount token
//! itself: signature, iss, aud, sub, exp, and a jti seen once. Refusals (not opted in,
//! `default`, the API audience, a missing Role, a deleted ServiceAccount) send nothing, and
//! the ServiceAccount token is never in the status, the Events, the log or the target.

mod admission;
mod e2e;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provider_emulator::{Control, Emulator, FederatedClient, Options};
use serde_json::json;
use token_rotator::api::{ProviderCredential, ProviderCredentialSpec};

const CLIENT: &str = "billing-client";

/// The emulator over HTTPS, trusting the control plane's issuer with the JWKS read as an
/// anonymous client from the issuer's discovery document.
async fn emulator_trusting(env: &Env) -> Result<Emulator> {
    let emu = Emulator::start(Options {
        tls: true,
        ..Options::default()
    })
    .await?;
    let issuer = env.cp.service_account_issuer();
    let ca = reqwest::Certificate::from_pem_bundle(env.cp.ca_pem().as_bytes())?;
    let http = reqwest::Client::builder().tls_certs_only(ca).build()?;
    let discovery: serde_json::Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()
        .context("anonymous discovery")?
        .json()
        .await?;
    ensure!(discovery["issuer"] == issuer, "{discovery}");
    let jwks_uri = discovery["jwks_uri"].as_str().context("jwks_uri")?;
    let jwks = http
        .get(jwks_uri)
        .send()
        .await?
        .error_for_status()
        .context("anonymous JWKS")?
        .text()
        .await?;
    emu.control().register_workload_issuer(issuer, &jwks)?;
    Ok(emu)
}

/// The audience the emulator's federated client expects (Keycloak: the realm's issuer URL).
fn audience(emu: &Emulator) -> String {
    emu.oauth2_token_url()
        .trim_end_matches("/token")
        .to_string()
}

fn subject(env: &Env, sa: &str) -> String {
    format!("system:serviceaccount:{}:{sa}", env.name())
}

async fn create_service_account(env: &Env, name: &str, opted_in: bool) -> Result<()> {
    let labels = if opted_in {
        json!({"tokenrotator.dev/credentials": "true"})
    } else {
        json!({})
    };
    Api::<ServiceAccount>::namespaced(env.client.clone(), env.name())
        .patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "labels": labels}})),
        )
        .await?;
    Ok(())
}

fn spec(
    emu: &Emulator,
    service_account: &str,
    audience: &str,
    target: &str,
) -> Result<ProviderCredentialSpec> {
    let yaml = format!(
        "tokenEndpoint: {{url: \"{}\"}}\ncredentials: {{serviceAccount: {{name: {service_account}, audience: \"{audience}\"}}}}\ntarget: {{secretName: {target}}}\n",
        emu.oauth2_token_url()
    );
    let mut spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).context("spec")?;
    spec.token_endpoint.ca_bundle = emu.ca_pem();
    Ok(spec)
}

async fn create(env: &Env, name: &str, spec: ProviderCredentialSpec) -> Result<()> {
    env.pcreds()
        .create(&PostParams::default(), &ProviderCredential::new(name, spec))
        .await?;
    Ok(())
}

/// The CRD's refusal of a spec, as the API server words it.
async fn refused(env: &Env, yaml: String) -> Result<String> {
    let spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml)?;
    match create(env, "refused", spec).await {
        Ok(()) => anyhow::bail!("admitted: {yaml}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

async fn request_refresh(env: &Env, name: &str, nonce: &str) -> Result<()> {
    env.pcreds()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": nonce}}}),
            ),
        )
        .await?;
    Ok(())
}

/// The ServiceAccount token the operator sent last, as the emulator received it.
fn last_assertion(c: &Control) -> Result<String> {
    let request = c
        .oauth2_last_request()
        .context("a request reached the emulator")?;
    request
        .form()
        .into_iter()
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v)
        .context("a client_assertion")
}

fn claims(jwt: &str) -> Result<serde_json::Value> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).context("a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[tokio::test]
async fn a_service_account_token_as_client_assertion_rotates_and_refusals_send_nothing()
-> Result<()> {
    let env = Env::new("sa").await?;
    let emu = emulator_trusting(&env).await?;
    let c = emu.control();
    let aud = audience(&emu);
    c.register_federated_client(
        CLIENT,
        FederatedClient {
            issuer: env.cp.service_account_issuer().to_string(),
            subject: subject(&env, "billing"),
            audience: aud.clone(),
        },
    );
    create_service_account(&env, "billing", true).await?;

    // The CRD refuses `default`, both a Secret and a ServiceAccount, and neither.
    let url = emu.oauth2_token_url();
    let msg = refused(&env, format!("tokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{serviceAccount: {{name: default, audience: a}}}}\ntarget: {{secretName: t}}\n")).await?;
    ensure!(msg.contains("cannot be default"), "{msg}");
    let msg = refused(&env, format!("tokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{secretRef: {{name: c}}, serviceAccount: {{name: billing, audience: a}}}}\ntarget: {{secretName: t}}\n")).await?;
    ensure!(msg.contains("exactly one"), "{msg}");
    let msg = refused(&env, format!("tokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{clientId: x}}\ntarget: {{secretName: t}}\n")).await?;
    ensure!(msg.contains("exactly one"), "{msg}");

    let msg = refused(
        &env,
        format!("tokenEndpoint: {{url: \"{url}\"}}\ncredentials: {{serviceAccount: {{name: billing}}}}\ntarget: {{secretName: t}}\n"),
    )
    .await?;
    ensure!(msg.contains("audience is required"), "{msg}");

    create(&env, "pc", spec(&emu, "billing", &aud, "token")?).await?;
    let op = env.start_operator().await?;
    let pc = env.wait_condition("pc", "Ready", "True", None).await?;
    let (_, target) = env.secret_data("token").await?.context("target")?;
    let token = target.get("access_token").context("access_token")?;
    let info = c
        .oauth2_access_token(token)
        .context("issued by the emulator")?;
    ensure!(info.client_id == CLIENT, "{info:?}");
    ensure!(
        info.sub.as_deref() == Some(subject(&env, "billing").as_str()),
        "{info:?}"
    );
    let first = last_assertion(&c)?;
    let first_claims = claims(&first)?;
    ensure!(
        first_claims["aud"] == json!([aud]),
        "one audience: {first_claims}"
    );
    let lifetime =
        first_claims["exp"].as_i64().unwrap_or(0) - first_claims["iat"].as_i64().unwrap_or(0);
    ensure!(lifetime == 600, "the default lifetime: {lifetime}");

    // A rotation mints a new ServiceAccount token (a new jti: the emulator refuses one seen
    // before).
    let before = fingerprint(&pc);
    request_refresh(&env, "pc", "1").await?;
    eventually("a new token", CONVERGE, || async {
        let pc = env.pcred("pc").await?;
        Ok((fingerprint(&pc) != before
            && pc
                .status
                .as_ref()
                .and_then(|s| s.last_refresh_request.as_deref())
                == Some("1"))
        .then_some(()))
    })
    .await?;
    let second = last_assertion(&c)?;
    ensure!(claims(&second)?["jti"] != first_claims["jti"], "a new jti");
    let counters = c.oauth2_counters();
    ensure!(
        counters.issued == 2 && counters.rejected == 0,
        "{counters:?}"
    );

    // Refused before any request: not opted in, the API audience, a deleted ServiceAccount.
    create_service_account(&env, "unlabelled", false).await?;
    c.register_federated_client(
        "unlabelled-client",
        FederatedClient {
            issuer: env.cp.service_account_issuer().to_string(),
            subject: subject(&env, "unlabelled"),
            audience: aud.clone(),
        },
    );
    create(
        &env,
        "unlabelled",
        spec(&emu, "unlabelled", &aud, "unlabelled-token")?,
    )
    .await?;
    create(
        &env,
        "api-audience",
        spec(
            &emu,
            "billing",
            env.cp.service_account_issuer(),
            "api-token",
        )?,
    )
    .await?;
    env.wait_condition(
        "unlabelled",
        "Degraded",
        "True",
        Some("ServiceAccountNotLabelled"),
    )
    .await?;
    let api = env
        .wait_condition("api-audience", "Degraded", "True", Some("AudienceRefused"))
        .await?;
    ensure!(api.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.message.contains("cluster's own API audience"))
    }));

    Api::<ServiceAccount>::namespaced(env.client.clone(), env.name())
        .delete("billing", &DeleteParams::default())
        .await?;
    request_refresh(&env, "pc", "2").await?;
    env.wait_condition("pc", "Degraded", "True", Some("ServiceAccountNotFound"))
        .await?;
    let after = c.oauth2_counters();
    ensure!(
        after.requests == counters.requests,
        "refusals sent nothing: {after:?} after {counters:?}"
    );

    // The ServiceAccount tokens sent were never shown or stored.
    let (_, target) = env.secret_data("token").await?.context("target")?;
    let visible = format!("{}{}{target:?}", env.visible_text().await?, op.log_text());
    for sent in [&first, &second] {
        let signature = sent.rsplit('.').next().unwrap_or(sent);
        ensure!(
            !visible.contains(signature),
            "a ServiceAccount token is visible"
        );
    }
    ensure!(
        !visible.contains("eyJhbGciOiJSUzI1Ni"),
        "a JWT of the cluster is visible"
    );
    Ok(())
}

#[tokio::test]
async fn without_the_token_request_grant_the_status_says_which_role_to_create() -> Result<()> {
    let env = Env::new("sa-forbidden").await?;
    env.bind_operator_rbac(Some("serviceaccounts/token"))
        .await?;
    let emu = emulator_trusting(&env).await?;
    create_service_account(&env, "billing", true).await?;
    create(&env, "pc", spec(&emu, "billing", &audience(&emu), "token")?).await?;
    let _op = env.start_operator().await?;
    let pc = env
        .wait_condition("pc", "Degraded", "True", Some("TokenRequestForbidden"))
        .await?;
    let message = pc
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains(&format!("kubectl -n {} create role", env.name()))
            && message.contains("--resource=serviceaccounts/token --resource-name=billing"),
        "{message}"
    );
    ensure!(
        emu.control().oauth2_counters().requests == 0,
        "nothing sent"
    );

    // The chart's per-namespace mode grants nothing of it: each namespace does, for named
    // accounts, as the message says (cert-manager style); then the resource recovers.
    let rendered = helm(
        env.cp,
        &[
            "template",
            "token-rotator",
            path_str(&repo_path("charts/token-rotator"))?,
            "--set",
            "serviceAccountTokens.clusterWide=false",
            "--show-only",
            "templates/rbac.yaml",
        ],
    )
    .await?;
    ensure!(
        !rendered.contains("serviceaccounts/token"),
        "clusterWide=false grants no token requests"
    );
    let apply = PatchParams::apply("e2e").force();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(env.client.clone(), env.name())
        .patch(
            "token-rotator-billing",
            &apply,
            &Patch::Apply(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "token-rotator-billing"},
                "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                    "resourceNames": ["billing"], "verbs": ["create"]}]}),
            ),
        )
        .await?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(env.client.clone(), env.name())
        .patch(
            "token-rotator-billing",
            &apply,
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "token-rotator-billing"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "token-rotator-billing"},
                "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": env.name()}]})),
        )
        .await?;
    emu.control().register_federated_client(
        CLIENT,
        FederatedClient {
            issuer: env.cp.service_account_issuer().to_string(),
            subject: subject(&env, "billing"),
            audience: audience(&emu),
        },
    );
    env.wait_condition("pc", "Ready", "True", None).await?;
    Ok(())
}

/// The other uses, each Ready through the operator and verified by the emulator: the
/// Entra-shaped client assertion (client_id and a `.default` scope), the Google-shaped RFC
/// 8693 exchange (audience and requested_token_type as data) and the RFC 7523 grant; and a
/// provider refusing the assertion (`invalid_client`), in its own words.
#[tokio::test]
async fn entra_google_and_jwt_bearer_shapes_rotate_through_the_operator() -> Result<()> {
    let env = Env::new("sa-shapes").await?;
    let emu = emulator_trusting(&env).await?;
    let c = emu.control();
    let pool =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k";
    let cases = [
        (
            "entra",
            "api://AzureADTokenExchange",
            "credentials: {serviceAccount: {name: entra, audience: \"api://AzureADTokenExchange\"}, clientId: entra-app}\ngrant: {scope: \"https://graph.example.test/.default\"}\n",
            "client_credentials",
        ),
        (
            "google",
            pool,
            "credentials: {serviceAccount: {name: google, audience: \"POOL\", lifetimeSeconds: 3600}}\ngrant: {type: tokenExchange, scope: \"https://www.googleapis.com/auth/cloud-platform\", extraParameters: {audience: \"POOL\", requested_token_type: \"urn:ietf:params:oauth:token-type:access_token\"}}\n",
            provider_emulator::GRANT_TYPE_TOKEN_EXCHANGE,
        ),
        (
            "bearer",
            "https://bearer.example.test",
            "credentials: {serviceAccount: {name: bearer, audience: \"https://bearer.example.test\"}}\ngrant: {type: jwtBearer}\n",
            provider_emulator::GRANT_TYPE_JWT_BEARER,
        ),
    ];
    for (name, audience, credentials, _) in &cases {
        create_service_account(&env, name, true).await?;
        let client_id = if *name == "entra" { "entra-app" } else { name };
        c.register_federated_client(
            client_id,
            FederatedClient {
                issuer: env.cp.service_account_issuer().to_string(),
                subject: subject(&env, name),
                audience: audience.to_string(),
            },
        );
        let yaml = format!(
            "tokenEndpoint: {{url: \"{}\"}}\n{}target: {{secretName: {name}-token}}\n",
            emu.oauth2_token_url(),
            credentials.replace("POOL", pool)
        );
        let mut spec: ProviderCredentialSpec = serde_saphyr::from_str(&yaml).context("spec")?;
        spec.token_endpoint.ca_bundle = emu.ca_pem();
        create(&env, name, spec).await?;
    }
    let _op = env.start_operator().await?;
    for (name, _, _, grant) in &cases {
        env.wait_condition(name, "Ready", "True", None).await?;
        let (_, target) = env
            .secret_data(&format!("{name}-token"))
            .await?
            .context("target")?;
        let token = target.get("access_token").context("access_token")?;
        let info = c
            .oauth2_access_token(token)
            .context("issued by the emulator")?;
        ensure!(info.grant_type == *grant, "{name}: {info:?}");
        if *name == "entra" {
            ensure!(
                info.client_id == "entra-app"
                    && info.scope.as_deref() == Some("https://graph.example.test/.default"),
                "{info:?}"
            );
        }
        ensure!(
            info.sub.as_deref() == Some(subject(&env, name).as_str()),
            "{name}: {info:?}"
        );
    }
    let counters = c.oauth2_counters();
    ensure!(
        counters.issued == 3 && counters.rejected == 0,
        "{counters:?}"
    );

    // A provider that refuses the assertion: its own words in the status, not the token.
    create_service_account(&env, "refused", true).await?;
    c.register_federated_client(
        "refused-client",
        FederatedClient {
            issuer: env.cp.service_account_issuer().to_string(),
            subject: subject(&env, "refused"),
            audience: "https://expected.example.test".into(),
        },
    );
    let spec = spec(
        &emu,
        "refused",
        "https://other.example.test",
        "refused-token",
    )?;
    create(&env, "refused", spec).await?;
    let pc = env
        .wait_condition("refused", "Degraded", "True", Some("CredentialsRejected"))
        .await?;
    let message = pc
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("invalid_client")
            && message.contains("aud must be https://expected.example.test"),
        "{message}"
    );
    let sent = last_assertion(&c)?;
    let signature = sent.rsplit('.').next().unwrap_or(&sent);
    ensure!(
        !env.visible_text().await?.contains(signature),
        "the token is not shown"
    );
    // Fixed on the provider's side, where no watch looks: retried with backoff (a
    // ServiceAccount token locks no account), Ready without a change to the resource.
    c.register_federated_client(
        "refused-client",
        FederatedClient {
            issuer: env.cp.service_account_issuer().to_string(),
            subject: subject(&env, "refused"),
            audience: "https://other.example.test".into(),
        },
    );
    env.wait_condition("refused", "Ready", "True", None).await?;
    Ok(())
}

/// The chart's admission policy holds the operator's TokenRequests to one audience, not the
/// API's, 600–3600 s and never `default`, and it matches the `serviceaccounts/token`
/// subresource: each refusal comes from it, and the operator's own request passes.
#[tokio::test]
async fn the_admission_policy_limits_the_operators_token_requests() -> Result<()> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let env = Env::new("sa-vap").await?;
    let policies = admission::install(&env).await?;
    create_service_account(&env, "billing", true).await?;
    let as_operator = Api::<ServiceAccount>::namespaced(
        env.cp
            .service_account_client(env.name(), OPERATOR_SA)
            .await?,
        env.name(),
    );
    let request = |name: &str, audiences: Vec<&str>, seconds: i64| {
        let api = as_operator.clone();
        let name = name.to_string();
        let body = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.into_iter().map(String::from).collect()),
                expiration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            api.create_token_request(&name, &PostParams::default(), &body)
                .await
        }
    };
    let none = admission::refused_once_in_force("the token-requests policy", || {
        request("billing", vec![], 600)
    })
    .await?;
    ensure!(none.contains("exactly one audience"), "{none}");
    let two = admission::refusal("two audiences", request("billing", vec!["a", "b"], 600)).await?;
    ensure!(two.contains("exactly one audience"), "{two}");
    let api = admission::refusal(
        "the API audience",
        request(
            "billing",
            vec!["https://kubernetes.default.svc.cluster.local"],
            600,
        ),
    )
    .await?;
    ensure!(api.contains("Kubernetes API's audience"), "{api}");
    // (Under 600 s the API server refuses by itself.)
    for seconds in [3601, 86400] {
        let long =
            admission::refusal("the lifetime", request("billing", vec!["a"], seconds)).await?;
        ensure!(long.contains("600 to 3600 seconds"), "{long}");
    }
    let default = admission::refusal("default", request("default", vec!["a"], 600)).await?;
    ensure!(default.contains("default ServiceAccount"), "{default}");
    // What the operator asks for passes.
    let minted = request("billing", vec!["https://idp.example.test"], 600).await?;
    ensure!(
        minted
            .status
            .and_then(|s| s.token)
            .is_some_and(|t| !t.is_empty()),
        "a token"
    );
    policies.remove().await?;
    Ok(())
}

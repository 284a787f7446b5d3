//! The chart's alerts in a real Prometheus (built by hack/provision.sh from the same module as
//! promtool) scraping the real operator on the test control plane. The rules are the chart's,
//! rendered by helm with short durations set through the chart's values, not edited copies.
//! Each failure is driven for real against the emulator; each alert must fire with its
//! documented labels and annotations, and go once the cause is mended. Every metric the
//! Grafana dashboard queries must be among the scraped series.

mod e2e;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use kube::api::{Patch, PatchParams};
use provider_emulator::{Emulator, Fault, Options, Provider, fixtures};
use serde_json::{Value, json};

/// Alerts settle within seconds with these values; the default `for:` and windows are minutes.
const VALUES: [&str; 5] = [
    "prometheusRule.enabled=true",
    "prometheusRule.tokenExpiringSoon.for=2s",
    "prometheusRule.credentialDegraded.after=2s",
    "prometheusRule.tokenRequestErrors.window=20s",
    "prometheusRule.tokenRequestErrors.for=2s",
];
const REDIRECT_URI: &str = "https://app.example.com/oauth/callback";
const SETTLE: Duration = Duration::from_secs(90);

struct Prometheus {
    _child: tokio::process::Child,
    port: u16,
}

impl Prometheus {
    async fn start(env: &Env, operator_port: u16) -> Result<Prometheus> {
        let dir = repo_path("target/e2e-prometheus").join(env.name());
        std::fs::create_dir_all(&dir)?;
        let mut args = vec![
            "template".to_string(),
            "token-rotator".to_string(),
            path_str(&repo_path("charts/token-rotator"))?.to_string(),
            "--show-only".to_string(),
            "templates/prometheusrule.yaml".to_string(),
        ];
        for v in VALUES {
            args.extend(["--set".to_string(), v.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = helm(env.cp, &args).await?;
        let rule = only_kind(&yaml_docs(&rendered)?, "PrometheusRule")?;
        // A PrometheusRule's spec is a Prometheus rule file ({groups: [...]}); JSON is YAML.
        std::fs::write(dir.join("rules.json"), serde_json::to_vec(&rule["spec"])?)?;
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [dir.join("rules.json")],
            "scrape_configs": [{
                "job_name": "token-rotator",
                "static_configs": [{"targets": [format!("127.0.0.1:{operator_port}")]}],
            }],
        });
        std::fs::write(dir.join("prometheus.json"), serde_json::to_vec(&config)?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = tokio::process::Command::new(env.cp.bin_dir().join("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.json").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start prometheus (hack/provision.sh builds it)")?;
        let p = Prometheus {
            _child: child,
            port,
        };
        eventually("prometheus ready", CONVERGE, || async {
            Ok(p.get("/-/ready").await.ok().map(|_| ()))
        })
        .await?;
        Ok(p)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let resp = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port)).await?;
        ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        let text = resp.text().await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The alerts in `state` of namespace `ns`, and host alerts (which carry no namespace).
    async fn alerts(&self, ns: &str, state: &str) -> Result<Vec<Value>> {
        let body = self.get("/api/v1/alerts").await?;
        Ok(body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == state)
            .filter(|a| a["labels"]["namespace"].as_str().is_none_or(|n| n == ns))
            .cloned()
            .collect())
    }

    /// Waits until every rule group has been evaluated after `after` (Unix seconds).
    async fn evaluated_after(&self, after: f64) -> Result<()> {
        eventually("a rule evaluation", CONVERGE, || async {
            let rules = self.get("/api/v1/rules").await?;
            let done = rules["data"]["groups"].as_array().is_some_and(|groups| {
                !groups.is_empty()
                    && groups.iter().all(|g| {
                        g["lastEvaluation"]
                            .as_str()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .is_some_and(|t| t.as_millisecond() as f64 / 1000.0 > after)
                    })
            });
            Ok(done.then_some(()))
        })
        .await
    }
}

fn now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

async fn request_refresh(env: &Env, name: &str) -> Result<()> {
    let value = jiff::Timestamp::now().to_string();
    env.pcreds()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": value}}}),
            ),
        )
        .await?;
    Ok(())
}

/// The alert `alertname` about ProviderCredential `name` (None: a host alert).
fn find<'a>(alerts: &'a [Value], alertname: &str, name: Option<&str>) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"]["name"].as_str() == name)
}

fn text(alert: &Value, field: &str, key: &str) -> String {
    alert[field][key].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_on_real_failures_and_resolve() -> Result<()> {
    let env = Env::new("alerts").await?;
    let emu = Emulator::start(Options::default()).await?;
    let c = emu.control();
    // Long enough that no rotation falls due during the test: every token request is one the
    // test asks for.
    c.set_lifetime(Provider::Rently, 240);
    let secret = format!("alerts-{}", hex::encode(rand::random::<[u8; 12]>()));
    c.set_password(Provider::Rently, fixtures::RENTLY_CLIENT_ID, &secret);
    let creds: BTreeMap<String, Vec<u8>> = [
        ("client_id", fixtures::RENTLY_CLIENT_ID.as_bytes().to_vec()),
        ("client_secret", secret.as_bytes().to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.create_credentials("rently-creds", &creds, true).await?;
    env.create_pcred(
        "rently",
        &format!(
            "preset: rently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: rently-creds}}}}\ntarget: {{secretName: rently-token}}\n",
            emu.token_url(Provider::Rently)
        ),
    )
    .await?;
    // An authorization-code chain (Retently) whose refresh chain the provider will end.
    c.set_lifetime(Provider::Retently, 240);
    let retently_secret = format!("alerts-{}", hex::encode(rand::random::<[u8; 12]>()));
    c.set_password(
        Provider::Retently,
        fixtures::RETENTLY_CLIENT_ID,
        &retently_secret,
    );
    let creds: BTreeMap<String, Vec<u8>> = [
        ("client_id", fixtures::RETENTLY_CLIENT_ID.to_string()),
        ("client_secret", retently_secret),
        ("code", c.mint_authorization_code(REDIRECT_URI)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    env.create_credentials("retently-creds", &creds, true)
        .await?;
    env.create_pcred(
        "retently",
        &format!(
            "preset: retently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: retently-creds}}}}\ntarget: {{secretName: retently-token}}\ngrant: {{redirectUri: \"{REDIRECT_URI}\"}}\n",
            emu.token_url(Provider::Retently)
        ),
    )
    .await?;
    let operator = Operator::start(&env).await?;
    let prometheus = Prometheus::start(&env, operator.metrics_port).await?;
    env.wait_condition("rently", "Ready", "True", None).await?;
    env.wait_condition("retently", "Ready", "True", None)
        .await?;

    // Healthy: rules evaluated over scraped data, nothing fires or is pending.
    let healthy_at = now() + 3.0;
    prometheus.evaluated_after(healthy_at).await?;
    for state in ["firing", "pending"] {
        let quiet = prometheus.alerts(env.name(), state).await?;
        ensure!(quiet.is_empty(), "{state} while healthy: {quiet:?}");
    }

    // The endpoint goes down: every request answers 503.
    c.inject(
        Provider::Rently,
        Fault::Status {
            code: 503,
            body: "down".into(),
        },
        u32::MAX,
    );
    request_refresh(&env, "rently").await?;
    // The provider ends the refresh chain: the next refresh is refused with invalid_grant.
    c.revoke_refresh_tokens(Provider::Retently);
    request_refresh(&env, "retently").await?;
    env.wait_condition("rently", "Degraded", "True", None)
        .await?;
    env.wait_condition(
        "retently",
        "Degraded",
        "True",
        Some("ReauthorizationRequired"),
    )
    .await?;
    let wanted = [
        ("TokenRotatorCredentialDegraded", Some("rently")),
        ("TokenRotatorTokenExpiringSoon", Some("rently")),
        ("TokenRotatorTokenExpiringSoon", Some("retently")),
        ("TokenRotatorReauthorizationRequired", Some("retently")),
        ("TokenRotatorTokenRequestErrors", None),
    ];
    let firing = eventually("the alerts firing", SETTLE, || async {
        let firing = prometheus.alerts(env.name(), "firing").await?;
        Ok(wanted
            .iter()
            .all(|(alert, name)| find(&firing, alert, *name).is_some())
            .then_some(firing))
    })
    .await?;
    let ns = env.name();
    // ReauthorizationRequired has an alert of its own, not the Degraded one.
    ensure!(
        find(&firing, "TokenRotatorCredentialDegraded", Some("retently")).is_none(),
        "Degraded fired for a ReauthorizationRequired resource"
    );
    let reauth = find(
        &firing,
        "TokenRotatorReauthorizationRequired",
        Some("retently"),
    )
    .context("reauth")?;
    ensure!(
        text(reauth, "labels", "severity") == "critical"
            && text(reauth, "labels", "reason") == "ReauthorizationRequired",
        "labels: {reauth}"
    );
    ensure!(
        text(reauth, "annotations", "summary")
            == format!("ProviderCredential {ns}/retently needs to be authorized again")
            && text(reauth, "annotations", "description")
                .contains(&format!("kubectl token-rotator authorize retently -n {ns}")),
        "annotations: {reauth}"
    );
    let degraded =
        find(&firing, "TokenRotatorCredentialDegraded", Some("rently")).context("degraded")?;
    ensure!(
        text(degraded, "labels", "severity") == "warning"
            && text(degraded, "labels", "name") == "rently"
            && !text(degraded, "labels", "reason").is_empty(),
        "labels: {degraded}"
    );
    let reason = text(degraded, "labels", "reason");
    ensure!(
        text(degraded, "annotations", "summary").starts_with(&format!(
            "ProviderCredential {ns}/rently has been Degraded ({reason}) for"
        )),
        "summary: {degraded}"
    );
    let expiring =
        find(&firing, "TokenRotatorTokenExpiringSoon", Some("rently")).context("expiring")?;
    ensure!(
        text(expiring, "labels", "severity") == "critical"
            && text(expiring, "labels", "name") == "rently",
        "labels: {expiring}"
    );
    ensure!(
        text(expiring, "annotations", "summary").starts_with(&format!(
            "The token of ProviderCredential {ns}/rently expires in"
        )),
        "summary: {expiring}"
    );
    ensure!(
        text(expiring, "annotations", "description")
            .contains(&format!("kubectl token-rotator status -n {ns}")),
        "description: {expiring}"
    );
    let errors = find(&firing, "TokenRotatorTokenRequestErrors", None).context("errors")?;
    let host = text(errors, "labels", "host");
    let token_url = url::Url::parse(&emu.token_url(Provider::Rently))?;
    let emulator_host = token_url.host_str().context("the emulator's host")?;
    ensure!(
        text(errors, "labels", "severity") == "warning" && host == emulator_host,
        "labels: {errors}"
    );
    ensure!(
        text(errors, "annotations", "summary")
            .ends_with(&format!("of the token requests to {host} fail")),
        "summary: {errors}"
    );

    // Mended: the endpoint answers again and a refresh succeeds; every alert goes.
    c.clear_faults(Provider::Rently);
    request_refresh(&env, "rently").await?;
    // A new code in the credentials Secret, as the README's troubleshooting says.
    env.set_credential(
        "retently-creds",
        "code",
        &c.mint_authorization_code(REDIRECT_URI),
    )
    .await?;
    env.wait_condition("rently", "Degraded", "False", None)
        .await?;
    env.wait_condition("retently", "Degraded", "False", None)
        .await?;
    eventually("the alerts resolved", SETTLE, || async {
        let firing = prometheus.alerts(env.name(), "firing").await?;
        Ok(firing.is_empty().then_some(()))
    })
    .await?;

    // Every metric the dashboard queries is a series Prometheus scraped.
    let names = prometheus.get("/api/v1/label/__name__/values").await?;
    let scraped: Vec<&str> = names["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let dashboard =
        std::fs::read_to_string(repo_path("charts/token-rotator/files/dashboard.json"))?;
    let mut missing = Vec::new();
    for name in metric_names(&dashboard) {
        let histogram = format!("{name}_bucket");
        if !scraped.contains(&name.as_str()) && !scraped.contains(&histogram.as_str()) {
            missing.push(name);
        }
    }
    ensure!(
        missing.is_empty(),
        "the dashboard queries unscraped metrics: {missing:?}"
    );
    drop(operator);
    Ok(())
}

/// The `token_rotator_*` names in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("token_rotator_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

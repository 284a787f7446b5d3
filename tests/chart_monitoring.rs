//! The chart's alerts and dashboard (`prometheusRule.enabled`, `grafanaDashboard.enabled`):
//! off by default; the rendered PrometheusRule passes `promtool check rules` and the unit tests
//! in tests/promtool/alerts_test.yaml (`promtool test rules`), each alert with a firing and a
//! silent case; the dashboard ConfigMap carries the Grafana sidecar label and valid dashboard
//! JSON whose queries parse as PromQL; and every `token_rotator_*` name a rule or a panel uses
//! is a series the operator exports (`token_rotator::telemetry::Metrics`). The dashboard also
//! passes Grafana's dashboard schema (`hack/dashboard-check`, built on the Grafana Foundation
//! SDK), which rejects a dashboard broken in any of several ways; its queries filter by the job
//! variable and use `$__rate_interval` (rules of Grafana's dashboard linter); its panels fit the
//! grid without overlapping.
//!
//! Needs helm, promtool and dashboard-check from `hack/provision.sh` (`TOKEN_ROTATOR_K8S_BIN`);
//! no cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use token_rotator::api::ProviderCredential;
use token_rotator::provider::FetchError;
use token_rotator::telemetry::{Degraded, Metrics};

const RELEASE: &str = "token-rotator";
const NAMESPACE: &str = "monitoring";
const CHART: &str = "charts/token-rotator";
const ALERTS: [&str; 4] = [
    "TokenRotatorTokenExpiringSoon",
    "TokenRotatorCredentialDegraded",
    "TokenRotatorReauthorizationRequired",
    "TokenRotatorTokenRequestErrors",
];
/// Both monitoring values on, as the checks below render the chart.
const ENABLED: [&str; 6] = [
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
];

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The directory with helm, promtool and dashboard-check (`hack/provision.sh` builds them).
fn bin_dir() -> Result<PathBuf> {
    let dir = testkit::find_bin_dir()?;
    for tool in ["helm", "promtool", "dashboard-check"] {
        ensure!(
            dir.join(tool).is_file(),
            "{tool} is not in {}: run hack/provision.sh (it builds the pinned {tool} there)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Runs `cmd`, returning its stdout; on failure an error with its stdout and stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

fn helm(bin: &Path, args: &[&str]) -> Result<String> {
    let home = repo_path("target/e2e-helm");
    run(Command::new(bin.join("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data")))
}

/// The documents `helm template` renders with `values` (`--set ...`).
fn render(bin: &Path, values: &[&str]) -> Result<Vec<Value>> {
    let chart = repo_path(CHART);
    let chart = chart.to_str().context("chart path")?;
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    args.extend_from_slice(values);
    let text = helm(bin, &args)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("helm template output is not YAML:\n{text}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn only_kind(docs: &[Value], kind: &str) -> Result<Value> {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    ensure!(found.len() == 1, "{} {kind} rendered, not 1", found.len());
    Ok(found[0].clone())
}

/// A scratch directory, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!(
            "token-rotator-chart-monitoring-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PrometheusRule's spec.groups as a plain Prometheus rules file (JSON is YAML).
fn rules_file(rule: &Value) -> Result<String> {
    let groups = rule["spec"]["groups"].clone();
    ensure!(
        groups.is_array(),
        "the PrometheusRule has no spec.groups: {rule}"
    );
    Ok(serde_json::to_string_pretty(&json!({ "groups": groups }))?)
}

/// The alerting rules of a PrometheusRule, by alert name.
fn alerts(rule: &Value) -> Result<BTreeMap<String, Value>> {
    let mut alerts = BTreeMap::new();
    for group in rule["spec"]["groups"].as_array().context("groups")? {
        for r in group["rules"].as_array().context("rules")? {
            let name = r["alert"]
                .as_str()
                .context("a rule without an alert name")?;
            alerts.insert(name.to_string(), r.clone());
        }
    }
    Ok(alerts)
}

fn promtool_check_rules(bin: &Path, path: &Path) -> Result<String> {
    run(Command::new(bin.join("promtool"))
        .args(["check", "rules"])
        .arg(path))
}

/// Every `token_rotator_*` name in `text` (names start at a word boundary).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    for (at, _) in text.match_indices("token_rotator_") {
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |n| at + n);
        names.insert(text[at..end].to_string());
    }
    names
}

/// What the operator exports: the sample names Prometheus stores (`name` for a gauge,
/// `name_total` for a counter, `name_bucket`/`_sum`/`_count` for a histogram) and the family
/// names of the `# TYPE` lines (acceptable in prose, never in a query of a counter or
/// histogram). Every family is given at least one sample through the public methods, and
/// the test fails if one stays empty (a new family needs a line here).
struct Exported {
    series: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

fn exported() -> Result<Exported> {
    let metrics = Metrics::new();
    let pc: ProviderCredential = serde_json::from_value(json!({
        "apiVersion": "tokenrotator.dev/v1alpha1",
        "kind": "ProviderCredential",
        "metadata": {"name": "a", "namespace": "ns", "uid": "u"},
        "spec": {
            "tokenEndpoint": {"url": "https://auth.example.com/token"},
            "credentials": {"secretRef": {"name": "c"}},
            "target": {"secretName": "t"}
        }
    }))?;
    let config = token_rotator::api::provider_config(&pc.spec)?;
    metrics.token_request(
        &config,
        &Err(FetchError::Configuration("a test".into())),
        Duration::from_millis(20),
    );
    metrics.reconciled();
    metrics.reconcile_failure("ProviderUnavailable");
    let at = |s: i64| Some(jiff::Timestamp::from_second(s).expect("a valid time"));
    let key = token_rotator::api::ResourceKey::of(&pc.metadata)?;
    metrics.token_scheduled(
        &key,
        &pc,
        at(2_000_000_000),
        at(1_999_000_000),
        Some(Degraded {
            since: 1_998_000_000.0,
            reason: "RateLimited".into(),
        }),
    );
    metrics.refresh_token_discarded();
    metrics.request_withheld("LeaseUnconfirmed");
    metrics.managed_changed(1);
    let text = metrics.render();

    let mut families = BTreeMap::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("a # TYPE line")?;
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            series.insert(line[..end].to_string());
        }
    }
    ensure!(!families.is_empty(), "no # TYPE lines in:\n{text}");
    let empty: Vec<&String> = families
        .keys()
        .filter(|f| !series.iter().any(|s| s.starts_with(f.as_str())))
        .collect();
    ensure!(
        empty.is_empty(),
        "metric families without a sample: {empty:?}; record one in exported() so the names \
         the rules and the dashboard use can be checked against them:\n{text}"
    );
    Ok(Exported { series, families })
}

impl Exported {
    /// The names in `queries` (strict: stored series only) and `prose` (family names too)
    /// that the operator does not export, with where they were found.
    fn unknown(&self, queries: &[(String, String)], prose: &[(String, String)]) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut reported = BTreeSet::new();
        for (strict, texts) in [(true, queries), (false, prose)] {
            for (place, text) in texts {
                for name in metric_names(text) {
                    let known = self.series.contains(&name)
                        || (!strict && self.families.contains_key(&name));
                    // A name a query uses is reported there, not again in the whole text.
                    if !known && (strict || !reported.contains(&name)) {
                        unknown.push(format!("{name} (in {place})"));
                        reported.insert(name);
                    }
                }
            }
        }
        unknown
    }

    fn describe(&self) -> String {
        let series: Vec<&str> = self.series.iter().map(String::as_str).collect();
        series.join(", ")
    }
}

/// Every string in `value` under a key named one of `keys`, with its JSON path.
fn strings_under(value: &Value, keys: &[&str], path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{path}.{k}");
                match v {
                    Value::String(s) if keys.contains(&k.as_str()) => {
                        out.push((here, s.clone()));
                    }
                    _ => strings_under(v, keys, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                strings_under(v, keys, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn dashboard_file() -> Result<Value> {
    let path = repo_path("charts/token-rotator/files/dashboard.json");
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The panels of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn alerts_and_dashboard_are_off_by_default() -> Result<()> {
    let bin = bin_dir()?;
    let docs = render(&bin, &[])?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    ensure!(
        !kinds.contains(&"PrometheusRule") && !kinds.contains(&"ConfigMap"),
        "the default values render {kinds:?}"
    );
    Ok(())
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let bin = bin_dir()?;
    let docs = render(&bin, &ENABLED)?;
    let rule = only_kind(&docs, "PrometheusRule")?;
    ensure!(rule["apiVersion"] == "monitoring.coreos.com/v1", "{rule}");
    ensure!(rule["metadata"]["namespace"] == NAMESPACE, "{rule}");
    ensure!(
        rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE,
        "{rule}"
    );
    let alerts = alerts(&rule)?;
    ensure!(
        alerts.keys().map(String::as_str).collect::<BTreeSet<_>>()
            == ALERTS.into_iter().collect::<BTreeSet<_>>(),
        "alerts rendered: {:?}",
        alerts.keys()
    );
    for (name, alert) in &alerts {
        ensure!(
            alert["labels"]["severity"].is_string(),
            "{name} has no severity"
        );
        for key in ["summary", "description"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            ensure!(
                text.contains("{{ $labels.")
                    && (name == "TokenRotatorTokenRequestErrors"
                        || text.contains("{{ $labels.namespace }}/{{ $labels.name }}")),
                "{name}'s {key} does not name what it is about: {text:?}"
            );
        }
    }
    ensure!(
        alerts["TokenRotatorReauthorizationRequired"]["annotations"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains(
                "kubectl token-rotator authorize {{ $labels.name }} -n {{ $labels.namespace }}"
            ),
        "the ReauthorizationRequired alert does not say what to run"
    );

    let dir = WorkDir::new("rules")?;
    let rules = dir.write("rules.yaml", &rules_file(&rule)?)?;
    let checked = promtool_check_rules(&bin, &rules)?;
    ensure!(checked.contains("SUCCESS: 4 rules found"), "{checked}");

    // Each alert has a firing and a silent case in the unit tests.
    let tests_text = std::fs::read_to_string(repo_path("tests/promtool/alerts_test.yaml"))?;
    let tests: Value = serde_saphyr::from_str(&tests_text)?;
    ensure!(tests["rule_files"] == json!(["rules.yaml"]), "rule_files");
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for group in tests["tests"].as_array().context("tests")? {
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().context("alertname")?;
            let counts = cases.entry(name.to_string()).or_default();
            match case["exp_alerts"].as_array().map_or(0, Vec::len) {
                0 => counts.1 += 1,
                _ => counts.0 += 1,
            }
        }
    }
    for name in ALERTS {
        let (firing, silent) = cases.get(name).copied().unwrap_or_default();
        ensure!(
            firing > 0 && silent > 0,
            "tests/promtool/alerts_test.yaml needs a firing and a silent case of {name} \
             ({firing} firing, {silent} silent)"
        );
    }
    let unit_tests = dir.write("alerts_test.yaml", &tests_text)?;
    let junit = dir.0.join("junit.xml");
    let out = run(Command::new(bin.join("promtool"))
        .current_dir(&dir.0)
        .args(["test", "rules", "--junit"])
        .arg(&junit)
        .arg(&unit_tests))?;
    let report = std::fs::read_to_string(&junit)?;
    let attr = |name: &str| -> Result<usize> {
        let at = report
            .find(&format!(" {name}=\""))
            .with_context(|| format!("no {name} in {report}"))?;
        let rest = &report[at + name.len() + 3..];
        Ok(rest[..rest.find('"').context("attribute")?].parse()?)
    };
    let (groups, failures) = (attr("tests")?, attr("failures")?);
    let evaluations: usize = cases.values().map(|(f, s)| f + s).sum();
    ensure!(
        groups == tests["tests"].as_array().map_or(0, Vec::len) && failures == 0,
        "{out}\n{report}"
    );
    eprintln!(
        "promtool check rules: {} rules; promtool test rules: {groups} test groups passed \
         ({evaluations} alert evaluations: {cases:?} as (firing, silent) per alert)",
        alerts.len()
    );
    Ok(())
}

#[test]
fn the_selector_thresholds_and_labels_reach_the_rules() -> Result<()> {
    let bin = bin_dir()?;
    let docs = render(
        &bin,
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set-string",
            r#"prometheusRule.selector=job="token-rotator-metrics""#,
            "--set",
            "prometheusRule.tokenExpiringSoon.within=10m",
            "--set",
            "prometheusRule.credentialDegraded.after=1h30m",
            "--set",
            "prometheusRule.tokenRequestErrors.ratio=0.25",
            "--set",
            "prometheusRule.tokenRequestErrors.window=30m",
            "--set",
            "prometheusRule.tokenRequestErrors.severity=critical",
            "--set",
            "prometheusRule.reauthorizationRequired.enabled=false",
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "--set",
            "prometheusRule.alertLabels.team=platform",
        ],
    )?;
    let rule = only_kind(&docs, "PrometheusRule")?;
    ensure!(
        rule["metadata"]["labels"]["release"] == "kube-prometheus-stack",
        "{rule}"
    );
    let alerts = alerts(&rule)?;
    ensure!(
        !alerts.contains_key("TokenRotatorReauthorizationRequired") && alerts.len() == 3,
        "{:?}",
        alerts.keys()
    );
    let expr = |name: &str| {
        alerts[name]["expr"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    ensure!(
        expr("TokenRotatorTokenExpiringSoon").contains("< 600"),
        "{}",
        expr("TokenRotatorTokenExpiringSoon")
    );
    ensure!(
        expr("TokenRotatorCredentialDegraded").contains("> 5400"),
        "{}",
        expr("TokenRotatorCredentialDegraded")
    );
    let errors = expr("TokenRotatorTokenRequestErrors");
    ensure!(
        errors.contains("[30m]") && errors.contains("> 0.25"),
        "{errors}"
    );
    for (name, alert) in &alerts {
        let expr = alert["expr"].as_str().unwrap_or_default();
        // Every selector of a token_rotator_* series carries the matcher.
        for (at, _) in expr.match_indices("token_rotator_") {
            let rest = &expr[at..];
            let selector = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(|end| &rest[end..])
                .filter(|s| s.starts_with('{'))
                .and_then(|s| s.find('}').map(|close| &s[..=close]));
            ensure!(
                selector.is_some_and(|s| s.contains(r#"job="token-rotator-metrics""#)),
                "{name}: a selector without the configured matcher at {rest:?}"
            );
        }
        ensure!(alert["labels"]["team"] == "platform", "{name}: {alert}");
    }
    ensure!(alerts["TokenRotatorTokenRequestErrors"]["labels"]["severity"] == "critical");
    let dir = WorkDir::new("selector")?;
    promtool_check_rules(&bin, &dir.write("rules.yaml", &rules_file(&rule)?)?)?;
    Ok(())
}

#[test]
fn the_dashboard_configmap_has_the_sidecar_label_and_a_valid_dashboard() -> Result<()> {
    let bin = bin_dir()?;
    let docs = render(&bin, &ENABLED)?;
    let cm = only_kind(&docs, "ConfigMap")?;
    ensure!(
        cm["metadata"]["labels"]["grafana_dashboard"] == "1",
        "the ConfigMap lacks the label grafana_dashboard: \"1\": {}",
        cm["metadata"]
    );
    ensure!(cm["metadata"]["namespace"] == NAMESPACE);
    let data = cm["data"].as_object().context("data")?;
    ensure!(data.len() == 1, "{:?}", data.keys());
    let json_text = data["token-rotator.json"].as_str().context("dashboard")?;
    let dashboard: Value = serde_json::from_str(json_text)
        .with_context(|| format!("the ConfigMap's dashboard is not JSON:\n{json_text}"))?;
    ensure!(
        dashboard == dashboard_file()?,
        "the ConfigMap's dashboard differs from files/dashboard.json"
    );

    // A dashboard Grafana imports as is: a uid, a schema version, a Prometheus data source
    // variable every panel and query uses, and a namespace variable.
    ensure!(dashboard["uid"] == "token-rotator", "uid");
    ensure!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let vars = dashboard["templating"]["list"]
        .as_array()
        .context("templating")?;
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    ensure!(
        var("datasource").is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    ensure!(
        var("namespace").is_some_and(|v| v["type"] == "query"),
        "no namespace variable"
    );
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"].as_u64().context("a panel without an id")?;
        ensure!(ids.insert(id), "panel id {id} used twice");
        ensure!(panel["gridPos"].is_object(), "{title}: no gridPos");
        if panel["type"] == "row" {
            continue;
        }
        ensure!(panel["datasource"] == datasource, "{title}: datasource");
        let targets = panel["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            ensure!(t["datasource"] == datasource, "{title}: query datasource");
            let expr = t["expr"].as_str().context("expr")?;
            queries.push((format!("{title} {}", t["refId"]), expr.to_string()));
        }
    }
    ensure!(
        ["stat", "table", "timeseries"]
            .iter()
            .all(|kind| panels(&dashboard).iter().any(|p| p["type"] == *kind)),
        "panel types"
    );

    // The queries parse as PromQL: as recording rules, with the variables filled in.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", ".*")
                .replace("$namespace", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let dir = WorkDir::new("dashboard")?;
    let file = dir.write(
        "dashboard-queries.yaml",
        &serde_json::to_string_pretty(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))?,
    )?;
    promtool_check_rules(&bin, &file).context("a dashboard query is not valid PromQL")?;

    // Namespace, extra labels and annotations, another sidecar label.
    let docs = render(
        &bin,
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.namespace=grafana",
            "--set",
            "grafanaDashboard.sidecarLabel=dashboards",
            "--set-string",
            "grafanaDashboard.sidecarLabelValue=token-rotator",
            "--set",
            "grafanaDashboard.annotations.grafana_folder=Operators",
        ],
    )?;
    let meta = only_kind(&docs, "ConfigMap")?["metadata"].clone();
    ensure!(meta["namespace"] == "grafana", "{meta}");
    ensure!(meta["labels"]["dashboards"] == "token-rotator", "{meta}");
    ensure!(meta["labels"].get("grafana_dashboard").is_none(), "{meta}");
    ensure!(
        meta["annotations"]["grafana_folder"] == "Operators",
        "{meta}"
    );
    Ok(())
}

/// Checks `path` against Grafana's dashboard schema (`hack/dashboard-check`).
fn dashboard_check(bin: &Path, path: &Path) -> Result<String> {
    run(Command::new(bin.join("dashboard-check")).arg(path))
}

/// The index in `panels` of the first top-level panel of type `kind`.
fn first_panel(dashboard: &Value, kind: &str) -> Result<usize> {
    dashboard["panels"]
        .as_array()
        .and_then(|ps| ps.iter().position(|p| p["type"] == kind))
        .with_context(|| format!("no {kind} panel"))
}

#[test]
fn the_dashboard_passes_grafanas_dashboard_schema() -> Result<()> {
    let bin = bin_dir()?;
    dashboard_check(
        &bin,
        &repo_path("charts/token-rotator/files/dashboard.json"),
    )
    .context("files/dashboard.json does not pass Grafana's dashboard schema")?;

    // The check can fail: the shipped dashboard broken in one place each time is refused, and
    // the finding names the place.
    let shipped = dashboard_file()?;
    let stat = first_panel(&shipped, "stat")?;
    let series = first_panel(&shipped, "timeseries")?;
    type Break = Box<dyn Fn(&mut Value)>;
    let breaks: Vec<(&str, Break, &str)> = vec![
        (
            "a misspelt dashboard field",
            Box::new(|d| d["refrsh"] = json!("1m")),
            "unexpected field 'refrsh'",
        ),
        (
            "a misspelt panel field",
            Box::new(move |d| d["panels"][series]["fieldconfig"] = json!({})),
            "unexpected field 'fieldconfig'",
        ),
        (
            "a width that is not a number",
            Box::new(move |d| d["panels"][stat]["gridPos"]["w"] = json!("6")),
            "gridPos.w",
        ),
        (
            "an option the stat panel does not have",
            Box::new(move |d| d["panels"][stat]["options"]["sparkline"] = json!(true)),
            "unexpected field 'sparkline'",
        ),
        (
            "a time series style field Grafana does not know",
            Box::new(move |d| {
                d["panels"][series]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = json!(1)
            }),
            "unexpected field 'lineWidht'",
        ),
        (
            "a Prometheus query field Grafana does not know",
            Box::new(move |d| d["panels"][series]["targets"][0]["exprr"] = json!("up")),
            "unexpected field 'exprr'",
        ),
        (
            "a required stat option left out",
            Box::new(move |d| {
                if let Some(o) = d["panels"][stat]["options"].as_object_mut() {
                    o.remove("reduceOptions");
                }
            }),
            "reduceOptions: required field is missing",
        ),
    ];
    let dir = WorkDir::new("schema")?;
    for (what, break_it, finding) in &breaks {
        let mut broken = shipped.clone();
        break_it(&mut broken);
        ensure!(broken != shipped, "{what}: the dashboard did not change");
        let path = dir.write("broken.json", &serde_json::to_string_pretty(&broken)?)?;
        match dashboard_check(&bin, &path) {
            Ok(_) => bail!("dashboard-check accepted {what}"),
            Err(e) => ensure!(
                format!("{e:#}").contains(finding),
                "{what}: the finding does not name {finding:?}: {e:#}"
            ),
        }
    }
    Ok(())
}

/// Where a panel's grid rectangle breaks the layout: outside the 24 columns, empty, or
/// overlapping an earlier one (Grafana would move it, so the dashboard would not look as
/// written). Each rectangle is (title, x, y, w, h).
fn grid_findings(rects: &[(String, u64, u64, u64, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (title, x, y, w, h)) in rects.iter().enumerate() {
        if *w == 0 || *h == 0 || x + w > 24 {
            out.push(format!(
                "{title}: x {x} w {w} h {h} is outside the 24 columns or empty"
            ));
        }
        for (other, ox, oy, ow, oh) in &rects[..i] {
            if x < &(ox + ow) && ox < &(x + w) && y < &(oy + oh) && oy < &(y + h) {
                out.push(format!("{title} overlaps {other}"));
            }
        }
    }
    out
}

#[test]
fn the_dashboard_panels_fit_the_grid_without_overlapping() -> Result<()> {
    let rect = |t: &str, x, y, w, h| (t.to_string(), x, y, w, h);
    ensure!(grid_findings(&[rect("a", 0, 0, 12, 8), rect("b", 12, 0, 12, 8)]).is_empty());
    for bad in [
        vec![rect("a", 0, 0, 12, 8), rect("b", 11, 7, 6, 8)],
        vec![rect("a", 0, 0, 12, 8), rect("b", 0, 0, 12, 8)],
        vec![rect("a", 18, 0, 12, 8)],
        vec![rect("a", 0, 0, 0, 8)],
    ] {
        ensure!(!grid_findings(&bad).is_empty(), "no finding for {bad:?}");
    }

    let dashboard = dashboard_file()?;
    let mut rects = Vec::new();
    // Top-level panels only: a collapsed row's panels keep the places they had when expanded.
    for panel in dashboard["panels"].as_array().context("panels")? {
        let g = &panel["gridPos"];
        let n = |k: &str| {
            g[k].as_u64()
                .with_context(|| format!("{}: gridPos.{k}", panel["title"]))
        };
        rects.push((
            panel["title"].to_string(),
            n("x")?,
            n("y")?,
            n("w")?,
            n("h")?,
        ));
    }
    ensure!(rects.len() > 1, "{} panels", rects.len());
    let findings = grid_findings(&rects);
    ensure!(
        findings.is_empty(),
        "dashboard layout:\n{}",
        findings.join("\n")
    );
    Ok(())
}

/// What Grafana's dashboard linter's target rules would say of a query: each `token_rotator_*`
/// selector must filter by the job variable, each range must be `$__rate_interval` (the
/// interval Grafana sizes to the scrape interval and the panel's resolution).
fn query_findings(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    for (at, _) in expr.match_indices("token_rotator_") {
        if at > 0 && word(bytes[at - 1]) {
            continue;
        }
        let rest = &expr[at..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let matchers = rest[name_end..]
            .strip_prefix('{')
            .and_then(|m| m.split_once('}'))
            .map(|(m, _)| m);
        if !matchers.is_some_and(|m| m.split(',').any(|m| m.trim() == r#"job=~"$job""#)) {
            out.push(format!("{name} without job=~\"$job\""));
        }
    }
    for (at, _) in expr.match_indices('[') {
        let range = expr[at..].split_once(']').map_or(&expr[at..], |(r, _)| r);
        if range != "[$__rate_interval" {
            out.push(format!("range {range}] is not [$__rate_interval]"));
        }
    }
    out
}

#[test]
fn the_dashboard_queries_filter_by_job_and_use_the_rate_interval() -> Result<()> {
    // The check itself, on queries that break each rule.
    let good = r#"sum(rate(token_rotator_a_total{job=~"$job", namespace=~"$namespace"}[$__rate_interval]))"#;
    ensure!(
        query_findings(good).is_empty(),
        "{:?}",
        query_findings(good)
    );
    for bad in [
        r#"sum(rate(token_rotator_a_total{job=~"$job"}[5m]))"#,
        r#"sum(rate(token_rotator_a_total[$__rate_interval]))"#,
        r#"token_rotator_a{namespace=~"$namespace"}"#,
        r#"token_rotator_a{job=~"$job"} / token_rotator_b"#,
        r#"token_rotator_a{job="token-rotator"}"#,
        r#"max_over_time(token_rotator_a{job=~"$job"}[1h:])"#,
    ] {
        ensure!(!query_findings(bad).is_empty(), "no finding for {bad}");
    }

    let dashboard = dashboard_file()?;
    let mut findings = Vec::new();
    for panel in panels(&dashboard) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().context("expr")?;
            for f in query_findings(expr) {
                findings.push(format!("{} {}: {f}", panel["title"], t["refId"]));
            }
        }
    }
    ensure!(
        findings.is_empty(),
        "dashboard queries:\n{}",
        findings.join("\n")
    );
    Ok(())
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() -> Result<()> {
    let bin = bin_dir()?;
    let exported = exported()?;
    let docs = render(&bin, &ENABLED)?;
    let rule = only_kind(&docs, "PrometheusRule")?;
    let dashboard = dashboard_file()?;

    let mut queries = Vec::new();
    strings_under(
        &rule["spec"],
        &["expr"],
        "PrometheusRule spec",
        &mut queries,
    );
    strings_under(
        &dashboard,
        &["expr", "query", "definition"],
        "files/dashboard.json",
        &mut queries,
    );
    let prose = vec![
        ("the PrometheusRule".to_string(), rule["spec"].to_string()),
        ("files/dashboard.json".to_string(), dashboard.to_string()),
    ];
    ensure!(
        queries
            .iter()
            .filter(|(p, _)| p.starts_with("PrometheusRule"))
            .count()
            == ALERTS.len()
            && queries.len() > ALERTS.len(),
        "found too few queries: {queries:?}"
    );
    let used: BTreeSet<String> = queries.iter().flat_map(|(_, q)| metric_names(q)).collect();
    let unknown = exported.unknown(&queries, &prose);
    if !unknown.is_empty() {
        bail!(
            "names the operator does not export (token_rotator::telemetry::Metrics):\n  {}\n\
             it exports: {}\n(a family without samples is not rendered: if the name is a new \
             family, record a sample of it in exported())",
            unknown.join("\n  "),
            exported.describe()
        );
    }
    eprintln!(
        "{} token_rotator_* names in the rules and the dashboard, all exported: {used:?}",
        used.len()
    );
    Ok(())
}

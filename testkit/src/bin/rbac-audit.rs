//! Holds what a client did, as the apiserver's audit logs recorded it, against the RBAC rules
//! it is granted: fails on any grant never used and on any refused request the rules do not
//! cover. `hack/test.sh` runs it over the audit logs of the whole e2e suite.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use k8s_openapi::api::rbac::v1::PolicyRule;
use testkit::audit::{self, Access, Audited};

#[derive(Parser)]
#[command(about = "Compare the RBAC a client uses (from audit logs) with the RBAC it is granted")]
struct Args {
    /// Directory of audit logs (`*.jsonl`, as control planes write them with TESTKIT_AUDIT_DIR).
    #[arg(long, value_name = "DIR")]
    audit_dir: PathBuf,
    /// YAML with the Roles and ClusterRoles granted (for example `helm template` output).
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// The client's ServiceAccount name (in any namespace).
    #[arg(long, default_value = "token-rotator")]
    service_account: String,
    /// Only requests whose User-Agent starts with this (tests acting as the same
    /// ServiceAccount on purpose send another one).
    #[arg(long, default_value = "token-rotator/")]
    user_agent_prefix: String,
    /// A grant the apiserver checks on the client's behalf, so no request of its own shows it
    /// in the audit log (`VERB GROUP/RESOURCE`, `VERB RESOURCE` for the core group), e.g.
    /// `update tokenrotator.dev/providercredentials/finalizers`, which
    /// OwnerReferencesPermissionEnforcement checks when an owned object is created. Counted as
    /// used; prove with a test that it is needed.
    #[arg(long, value_name = "ACCESS")]
    checked_by_admission: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rbac-audit: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let grant = audit::granted(&rules_in(&args.rules)?);
    if grant.is_empty() {
        return Err(format!("no rules in {}", args.rules.display()).into());
    }
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&args.audit_dir)
        .map_err(|e| format!("read {}: {e}", args.audit_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    logs.sort();
    let mut requests = Vec::new();
    for log in &logs {
        let text = std::fs::read_to_string(log)?;
        requests.extend(text.lines().filter_map(audit::parse_event));
    }
    let user_suffix = format!(":{}", args.service_account);
    let is_client = |r: &Audited| {
        r.user.starts_with("system:serviceaccount:")
            && r.user.ends_with(&user_suffix)
            && r.user_agent.starts_with(&args.user_agent_prefix)
    };
    let clients = requests
        .iter()
        .filter(|r| is_client(r))
        .map(|r| r.user.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let total = requests.len();
    let mut cmp = audit::compare(&grant, requests, is_client);
    for text in &args.checked_by_admission {
        let access = audit::parse_access(text).ok_or_else(|| {
            format!("--checked-by-admission {text:?}: expected VERB [GROUP/]RESOURCE")
        })?;
        if !grant.contains(&access) {
            return Err(format!("--checked-by-admission {access}: not in the rules").into());
        }
        println!("checked by admission on the client's behalf: {access}");
        cmp.unused.remove(&access);
    }

    println!(
        "{} audit logs, {total} requests by ServiceAccounts, {} by {} identities of the client",
        logs.len(),
        cmp.used.values().sum::<u64>(),
        clients
    );
    println!("used (allowed requests):");
    for (access, n) in &cmp.used {
        let mark = if grant.contains(access) {
            ""
        } else {
            "  (not in the rules?)"
        };
        println!("  {n:>8}  {access}{mark}");
    }
    print_refused(
        "refused where a test narrowed the grant on purpose",
        &cmp.refused_by_narrowed_grants,
    );
    print_refused("refused and NOT in the rules (grant it)", &cmp.missing);
    if !cmp.unused.is_empty() {
        println!("granted but never used (remove it from the rules):");
        for access in &cmp.unused {
            println!("  {access}");
        }
    }
    if cmp.used.is_empty() {
        return Err("no request of the client in the audit logs".into());
    }
    if cmp.is_exact() {
        println!("the rules grant exactly what the client used");
    }
    Ok(cmp.is_exact())
}

fn print_refused(title: &str, refused: &std::collections::BTreeMap<Access, u64>) {
    if refused.is_empty() {
        return;
    }
    println!("{title}:");
    for (access, n) in refused {
        println!("  {n:>8}  {access}");
    }
}

/// Every rule of every Role and ClusterRole in the file.
fn rules_in(path: &PathBuf) -> Result<Vec<PolicyRule>, Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)?;
    let mut rules = Vec::new();
    for doc in docs {
        if matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            let doc_rules: Vec<PolicyRule> =
                serde_json::from_value(doc["rules"].clone()).map_err(|e| {
                    format!("the rules of a {} in {}: {e}", doc["kind"], path.display())
                })?;
            rules.extend(doc_rules);
        }
    }
    Ok(rules)
}

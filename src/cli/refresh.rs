//! `token-rotator refresh`: asks the operator for a new token now (a new value of the
//! `tokenrotator.dev/refresh` annotation) and, with `--wait`, reports what came of it.

use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;

use super::cluster::{Cluster, ClusterError, Scope};
use super::status::duration;
use crate::api::{ProviderCredential, REFRESH_ANNOTATION};
use crate::conditions::{self, ConditionType};

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// ProviderCredentials to refresh, in the namespace (or use -l SELECTOR, or --all).
    pub names: Vec<String>,
    /// Every ProviderCredential in scope (the namespace, or every one with -A).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    #[command(flatten)]
    pub scope: Scope,
    /// Wait until the operator handled each request, and print the new expiry or the reason
    /// it failed. Exit code: 0 all refreshed, 1 one failed (or is suspended: said at once,
    /// with or without --wait), 2 not handled in time.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// `--timeout` of the commands that wait (refresh, authorize).
pub(super) fn parse_timeout(value: &str) -> Result<Duration, String> {
    crate::api::resolve::parse_duration("--timeout", value).map_err(|e| e.to_string())
}

/// What became of one refresh request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Sent; not waited for.
    Requested,
    /// A token was obtained (or the provider answered with the one it had issued before,
    /// `same_token`); it expires then.
    Refreshed {
        expires_at: Option<Timestamp>,
        same_token: bool,
    },
    /// Handled without a new token: the failure, or why nothing was requested.
    Failed { reason: String, message: String },
    /// spec.suspend is true: no token is requested, whatever is asked.
    Suspended,
    /// The operator did not record the request in time.
    TimedOut { ready_reason: Option<String> },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Requested | Outcome::Refreshed { .. } => 0,
            Outcome::Failed { .. } | Outcome::Suspended => 1,
            Outcome::TimedOut { .. } => 2,
        }
    }

    pub fn describe(&self, now: Timestamp) -> String {
        match self {
            Outcome::Requested => "refresh requested".into(),
            Outcome::Refreshed {
                expires_at,
                same_token,
            } => {
                let token = if *same_token {
                    "the provider answered with the token it had issued before, which"
                } else {
                    "the new token"
                };
                match expires_at {
                    Some(t) => format!(
                        "refreshed; {token} expires in {} ({t})",
                        duration(Some(t.as_second().saturating_sub(now.as_second())))
                    ),
                    None => "refreshed".into(),
                }
            }
            Outcome::Failed { reason, message } => format!("refresh failed: {reason}: {message}"),
            Outcome::Suspended => {
                "suspended (spec.suspend is true): no token is requested until it is resumed".into()
            }
            Outcome::TimedOut {
                ready_reason: Some(r),
            } => format!("not handled in time (Ready reason: {r})"),
            Outcome::TimedOut { ready_reason: None } => {
                "not handled in time (no status yet: is the operator running and watching this namespace?)".into()
            }
        }
    }
}

/// What the status said before the request: a new failure after it is this request's
/// outcome, and a token with the same fingerprint is the one the provider had issued before
/// (issue times have whole seconds: a new token may carry the old one's).
#[derive(Debug, Clone, Default)]
pub struct Before {
    fingerprint: Option<String>,
    failed_at: Option<Timestamp>,
}

impl Before {
    pub fn of(pc: &ProviderCredential) -> Self {
        let status = pc.status.as_ref();
        Before {
            fingerprint: status
                .and_then(|s| s.access_token.as_ref())
                .map(|t| t.fingerprint.clone()),
            failed_at: status
                .and_then(|s| s.last_failure.as_ref())
                .map(|f| f.time.0),
        }
    }
}

/// The outcome known before anything is requested: a suspended resource requests no token,
/// so nothing is asked of it and nothing waited for.
pub fn at_once(pc: &ProviderCredential) -> Option<Outcome> {
    (pc.spec.suspend == Some(true)).then_some(Outcome::Suspended)
}

/// Whether the operator has acted on the request `value`.
pub fn handled(pc: &ProviderCredential, value: &str) -> bool {
    pc.status
        .as_ref()
        .and_then(|s| s.last_refresh_request.as_deref())
        == Some(value)
}

/// The outcome of a handled request, from the status before and after it: the suspension (it
/// came while the request was on its way), a new failure, or else a Ready token.
pub fn outcome(before: &Before, after: &ProviderCredential) -> Outcome {
    if let Some(suspended) = at_once(after) {
        return suspended;
    }
    let status = after.status.clone().unwrap_or_default();
    if let Some(f) = status
        .last_failure
        .as_ref()
        .filter(|f| Some(f.time.0) != before.failed_at)
    {
        return Outcome::Failed {
            reason: f.reason.clone(),
            message: f.message.clone(),
        };
    }
    let ready = conditions::get(&status.conditions, ConditionType::Ready);
    if let Some(token) = status
        .access_token
        .as_ref()
        .filter(|_| ready.is_some_and(|c| c.status == "True"))
    {
        return Outcome::Refreshed {
            expires_at: Some(token.expires_at.0),
            same_token: before.fingerprint.as_ref() == Some(&token.fingerprint),
        };
    }
    Outcome::Failed {
        reason: ready
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "NoNewToken".into()),
        message: ready.map_or_else(
            || "handled without a new token".into(),
            |c| c.message.clone(),
        ),
    }
}

/// Requests a refresh of each chosen resource; prints a line for each; returns the exit code.
pub async fn run(args: &RefreshArgs) -> Result<u8, ClusterError> {
    let cluster = args.scope.connect().await?;
    let chosen = choose(args, &cluster).await?;
    // One value for this invocation: unique per request, and readable in the status.
    let value = Timestamp::now().to_string();
    let mut handles = Vec::new();
    for pc in chosen {
        let api = cluster.api_for(&pc);
        let name = pc.metadata.name.clone().unwrap_or_default();
        let namespace = pc.metadata.namespace.clone().unwrap_or_default();
        if let Some(outcome) = at_once(&pc) {
            handles.push(tokio::spawn(async move { (namespace, name, Ok(outcome)) }));
            continue;
        }
        let before = Before::of(&pc);
        let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_ANNOTATION: value}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ClusterError::Resource {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        let (wait, timeout, value) = (args.wait, args.timeout, value.clone());
        handles.push(tokio::spawn(async move {
            let outcome = if wait {
                wait_for(api, &name, &value, &before, timeout).await
            } else {
                Ok(Outcome::Requested)
            };
            (namespace, name, outcome)
        }));
    }
    let mut code = 0;
    for handle in handles {
        let (namespace, name, outcome) = handle.await.expect("a refresh task does not panic");
        let outcome = outcome.map_err(|message| ClusterError::Waiting {
            namespace: namespace.clone(),
            name: name.clone(),
            message,
        })?;
        println!("{namespace}/{name}: {}", outcome.describe(Timestamp::now()));
        code = code.max(outcome.exit_code());
    }
    Ok(code)
}

async fn choose(
    args: &RefreshArgs,
    cluster: &Cluster,
) -> Result<Vec<ProviderCredential>, ClusterError> {
    if !args.names.is_empty() {
        let api: Api<ProviderCredential> =
            Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let mut chosen = Vec::new();
        for name in &args.names {
            let pc = api
                .get(name)
                .await
                .map_err(|source| ClusterError::Resource {
                    namespace: cluster.namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            chosen.push(pc);
        }
        return Ok(chosen);
    }
    if !args.all && args.scope.selector.is_none() {
        return Err(ClusterError::NothingChosen);
    }
    args.scope.list(cluster).await
}

async fn wait_for(
    api: Api<ProviderCredential>,
    name: &str,
    value: &str,
    before: &Before,
    timeout: Duration,
) -> Result<Outcome, String> {
    let done = await_condition(api.clone(), name, |pc: Option<&ProviderCredential>| {
        pc.is_some_and(|pc| handled(pc, value))
    });
    match tokio::time::timeout(timeout, done).await {
        Ok(Ok(Some(pc))) => Ok(outcome(before, &pc)),
        Ok(Ok(None)) => Err("deleted while waiting".into()),
        Ok(Err(e)) => Err(format!("watching it failed: {e}")),
        Err(_) => {
            let pc = api.get(name).await.map_err(|e| e.to_string())?;
            let ready_reason = pc
                .status
                .as_ref()
                .and_then(|s| conditions::get(&s.conditions, ConditionType::Ready))
                .map(|c| c.reason.clone());
            Ok(Outcome::TimedOut { ready_reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> serde_json::Value {
        serde_json::json!({"type": "Ready", "status": "True", "reason": "TokenIssued",
            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn pc(status: serde_json::Value) -> ProviderCredential {
        crate::cli::fixture("p", status)
    }

    fn token(issued_at: &str) -> serde_json::Value {
        serde_json::json!({"issuedAt": issued_at, "expiresAt": "2026-01-01T02:00:00Z",
            "fingerprint": format!("sha256:{issued_at}"), "lifetimeSource": "expiresIn",
            "secretName": "t"})
    }

    #[test]
    fn a_new_token_or_a_new_failure_is_the_outcome() {
        let old = pc(
            serde_json::json!({"accessToken": token("2026-01-01T00:00:00Z"),
            "lastFailure": {"time": "2025-12-31T00:00:00Z", "reason": "Old", "message": "old"}}),
        );
        let before = Before::of(&old);
        let refreshed = pc(
            serde_json::json!({"accessToken": token("2026-01-01T01:00:00Z"),
            "lastRefreshRequest": "v", "conditions": [ready()],
            "lastFailure": {"time": "2025-12-31T00:00:00Z", "reason": "Old", "message": "old"}}),
        );
        assert!(handled(&refreshed, "v") && !handled(&old, "v"));
        assert_eq!(
            outcome(&before, &refreshed),
            Outcome::Refreshed {
                expires_at: Some("2026-01-01T02:00:00Z".parse().unwrap()),
                same_token: false
            }
        );
        let failed = pc(
            serde_json::json!({"accessToken": token("2026-01-01T00:00:00Z"),
            "lastFailure": {"time": "2026-01-01T00:30:00Z", "reason": "CredentialsRejected",
                "httpStatus": 401, "message": "invalid_client"}}),
        );
        let failure = outcome(&before, &failed);
        assert_eq!(
            failure,
            Outcome::Failed {
                reason: "CredentialsRejected".into(),
                message: "invalid_client".into()
            }
        );
        assert_eq!(failure.exit_code(), 1);
        // No new failure, and not Ready: handled without a token (e.g. the credentials were
        // rejected before and have not changed).
        let unchanged = outcome(&before, &old);
        assert!(matches!(&unchanged, Outcome::Failed { reason, .. } if reason == "NoNewToken"));
        // Ready with the token issued before: the provider answered with the same one.
        let mut same = old.clone();
        same.status.as_mut().unwrap().conditions = vec![serde_json::from_value(ready()).unwrap()];
        assert!(matches!(
            outcome(&before, &same),
            Outcome::Refreshed {
                same_token: true,
                ..
            }
        ));
        let now: Timestamp = "2026-01-01T01:55:00Z".parse().unwrap();
        assert_eq!(
            outcome(&before, &refreshed).describe(now),
            "refreshed; the new token expires in 5m0s (2026-01-01T02:00:00Z)"
        );
        assert_eq!(Outcome::TimedOut { ready_reason: None }.exit_code(), 2);
    }

    fn token_with(issued_at: &str, fingerprint: &str) -> serde_json::Value {
        let mut t = token(issued_at);
        t["fingerprint"] = fingerprint.into();
        t
    }

    #[test]
    fn a_new_token_in_the_same_second_is_new() {
        let old = pc(serde_json::json!({
            "accessToken": token_with("2026-01-01T00:00:00Z", "sha256:old"),
            "conditions": [ready()]}));
        let before = Before::of(&old);
        // Issue times have whole seconds: a new token can carry the old one's.
        let new = pc(serde_json::json!({
            "accessToken": token_with("2026-01-01T00:00:00Z", "sha256:new"),
            "lastRefreshRequest": "v", "conditions": [ready()]}));
        assert!(matches!(
            outcome(&before, &new),
            Outcome::Refreshed {
                same_token: false,
                ..
            }
        ));
        // The same token, whatever its issue time says.
        let same = pc(serde_json::json!({
            "accessToken": token_with("2026-01-01T00:00:07Z", "sha256:old"),
            "lastRefreshRequest": "v", "conditions": [ready()]}));
        assert!(matches!(
            outcome(&before, &same),
            Outcome::Refreshed {
                same_token: true,
                ..
            }
        ));
    }

    fn suspended(status: serde_json::Value) -> ProviderCredential {
        let mut pc = pc(status);
        pc.spec.suspend = Some(true);
        pc
    }

    #[test]
    fn a_suspended_resource_is_said_at_once() {
        let status = serde_json::json!({
            "accessToken": token("2026-01-01T00:00:00Z"), "conditions": [ready()]});
        // Known before anything is requested or waited for.
        let now = suspended(status.clone());
        let said = at_once(&now).expect("a suspended resource is answered at once");
        assert_eq!(said, Outcome::Suspended);
        assert_eq!(said.exit_code(), 1);
        assert!(
            said.describe(Timestamp::now())
                .contains("suspended (spec.suspend is true)"),
            "{}",
            said.describe(Timestamp::now())
        );
        assert_eq!(at_once(&pc(status.clone())), None);
        // Suspended while the request was on its way: the operator records it as seen,
        // Ready still says TokenIssued; the outcome is the suspension, not a refresh.
        let before = Before::of(&pc(status.clone()));
        let mut handled_status = status;
        handled_status["lastRefreshRequest"] = "v".into();
        let after = suspended(handled_status);
        assert!(handled(&after, "v"));
        assert_eq!(outcome(&before, &after), Outcome::Suspended);
    }
}

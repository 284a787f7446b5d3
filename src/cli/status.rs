//! `token-rotator status`: one line per ProviderCredential, what needs attention first.

use jiff::Timestamp;
use serde::Serialize;

use super::cluster::{ClusterError, Scope};
use crate::api::ProviderCredential;
use crate::conditions::{self, ConditionType};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What one resource looks like to someone on call.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `None`: the operator has not reported on it yet.
    pub ready: Option<bool>,
    pub reason: String,
    /// Refreshing is failing although the current token is still valid.
    pub degraded: bool,
    /// Seconds until the current token expires (negative: expired).
    pub expires_in_seconds: Option<i64>,
    /// Seconds until the next planned token request.
    pub next_refresh_in_seconds: Option<i64>,
    /// How many times the provider replaced the refresh token.
    pub refresh_token_rotations: Option<u32>,
    /// The last failed token request: its class and message.
    pub last_failure: Option<String>,
    /// Smaller needs attention sooner (0: not ready, 1: not reported yet, 2: degraded, 3: fine).
    #[serde(skip)]
    attention: u8,
}

/// The row of one resource at `now`.
pub fn row(pc: &ProviderCredential, now: Timestamp) -> Row {
    let status = pc.status.clone().unwrap_or_default();
    let ready = conditions::get(&status.conditions, ConditionType::Ready);
    let degraded = conditions::get(&status.conditions, ConditionType::Degraded)
        .is_some_and(|c| c.status == "True");
    let seconds_until = |t: Timestamp| t.as_second().saturating_sub(now.as_second());
    let ready_state = ready.map(|c| c.status == "True");
    let attention = match (ready_state, degraded) {
        (Some(false), _) => 0,
        (None, _) => 1,
        (Some(true), true) => 2,
        (Some(true), false) => 3,
    };
    Row {
        namespace: pc.metadata.namespace.clone().unwrap_or_default(),
        name: pc.metadata.name.clone().unwrap_or_default(),
        ready: ready_state,
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        degraded,
        expires_in_seconds: status
            .access_token
            .as_ref()
            .map(|t| seconds_until(t.expires_at.0)),
        next_refresh_in_seconds: status.next_refresh_at.as_ref().map(|t| seconds_until(t.0)),
        refresh_token_rotations: status.refresh_token.as_ref().map(|r| r.rotations),
        last_failure: status
            .last_failure
            .as_ref()
            .map(|f| format!("{}: {}", f.reason, f.message)),
        attention,
    }
}

/// Not ready first, then not reported yet, then degraded; within each, the soonest expiry
/// first; then by namespace and name.
pub fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        (a.attention, a.expires_in_seconds.unwrap_or(i64::MIN))
            .cmp(&(b.attention, b.expires_in_seconds.unwrap_or(i64::MIN)))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
}

/// `4m12s`, `2h5m`, `3d4h`, `-30s` (in the past), `-` (unknown).
pub fn duration(seconds: Option<i64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let sign = if s < 0 { "-" } else { "" };
    let s = s.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    let text = match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    };
    format!("{sign}{text}")
}

/// A table as kubectl prints one: a header, columns padded to the widest cell.
pub fn table(rows: &[Row]) -> String {
    let mut cells = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "EXPIRES IN",
            "NEXT REFRESH",
            "RT ROTATIONS",
            "LAST FAILURE",
        ]
        .map(String::from),
    ];
    for r in rows {
        cells.push([
            r.namespace.clone(),
            r.name.clone(),
            match r.ready {
                Some(true) if r.degraded => "True (degraded)".into(),
                Some(true) => "True".into(),
                Some(false) => "False".into(),
                None => "Unknown".into(),
            },
            r.reason.clone(),
            duration(r.expires_in_seconds),
            duration(r.next_refresh_in_seconds),
            r.refresh_token_rotations
                .map_or_else(|| "-".into(), |n| n.to_string()),
            r.last_failure.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for c in &cells {
        let line: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(args: &StatusArgs) -> Result<String, ClusterError> {
    let cluster = args.scope.connect().await?;
    let pcs = args.scope.list(&cluster).await?;
    let now = Timestamp::now();
    let mut rows: Vec<Row> = pcs.iter().map(|pc| row(pc, now)).collect();
    sort(&mut rows);
    Ok(match args.output {
        Output::Table if rows.is_empty() => "No ProviderCredentials found.\n".into(),
        Output::Table => table(&rows),
        Output::Json => serde_json::to_string_pretty(&rows).expect("rows serialise") + "\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(name: &str, status: serde_json::Value) -> ProviderCredential {
        crate::cli::fixture(name, status)
    }

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn token(expires_at: &str) -> serde_json::Value {
        serde_json::json!({"issuedAt": "2026-01-01T00:00:00Z", "expiresAt": expires_at,
            "fingerprint": "f", "lifetimeSource": "expiresIn", "secretName": "t"})
    }

    #[test]
    fn what_needs_attention_comes_first() {
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut rows: Vec<Row> = [
            pc(
                "fine-later",
                serde_json::json!({"conditions": [condition("Ready", "True", "TokenIssued")],
                    "accessToken": token("2026-01-01T03:00:00Z")}),
            ),
            pc(
                "fine-soon",
                serde_json::json!({"conditions": [condition("Ready", "True", "TokenIssued")],
                    "accessToken": token("2026-01-01T01:04:12Z"),
                    "nextRefreshAt": "2026-01-01T01:02:00Z",
                    "refreshToken": {"secretRef": {"name": "s", "key": "refresh_token"},
                        "issuedAt": "2026-01-01T00:00:00Z", "fingerprint": "x", "rotations": 7}}),
            ),
            pc(
                "degraded",
                serde_json::json!({"conditions": [condition("Ready", "True", "TokenIssued"),
                    condition("Degraded", "True", "RateLimited")],
                    "accessToken": token("2026-01-01T05:00:00Z"),
                    "lastFailure": {"time": "2026-01-01T00:59:00Z", "reason": "RateLimited",
                        "httpStatus": 429, "message": "slow down"}}),
            ),
            pc("new", serde_json::Value::Null),
            pc(
                "broken",
                serde_json::json!({"conditions": [condition("Ready", "False", "ReauthorizationRequired")],
                    "accessToken": token("2026-01-01T00:30:00Z")}),
            ),
        ]
        .iter()
        .map(|p| row(p, now))
        .collect();
        sort(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["broken", "new", "degraded", "fine-soon", "fine-later"]
        );
        assert_eq!(rows[0].expires_in_seconds, Some(-1800));
        assert_eq!(rows[0].reason, "ReauthorizationRequired");
        assert_eq!(rows[1].ready, None);
        assert_eq!(
            rows[2].last_failure.as_deref(),
            Some("RateLimited: slow down")
        );
        assert_eq!(rows[3].refresh_token_rotations, Some(7));
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        assert!(
            lines[1].contains("broken")
                && lines[1].contains("False")
                && lines[1].contains("-30m0s"),
            "{text}"
        );
        assert!(lines[3].contains("True (degraded)"), "{text}");
        assert!(
            lines[4].contains("4m12s") && lines[4].contains("2m0s"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[3]["refreshTokenRotations"], 7);
        assert!(json[0].get("attention").is_none());
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(0)), "0s");
        assert_eq!(duration(Some(59)), "59s");
        assert_eq!(duration(Some(252)), "4m12s");
        assert_eq!(duration(Some(7_500)), "2h5m");
        assert_eq!(duration(Some(3 * 86_400 + 4 * 3_600)), "3d4h");
        assert_eq!(duration(Some(-30)), "-30s");
        assert_eq!(duration(Some(i64::MIN)), "-106751991167300d15h");
    }
}

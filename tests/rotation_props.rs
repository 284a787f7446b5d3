//! Property tests of the pure rules with hostile numbers: any clock, any lifetime, any
//! Retry-After, any stored status. Nothing panics, every wait is bounded, no schedule is a
//! hot loop, and the request budget is never exceeded.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use secrecy::SecretString;
use token_rotator::api::resolve::{RenewBefore, RenewalPolicy};
use token_rotator::api::{ProviderCredential, ProviderCredentialSpec, ProviderCredentialStatus};
use token_rotator::provider::{FetchError, IssuedToken, LifetimeSource, RefreshOutcome};
use token_rotator::rotation::{
    self, ChainEnd, CredentialsView, MAX_REQUEUE, MIN_INTERVAL, Observed, Outcome, RequestBudget,
    Slot, Step, TargetView,
};
use token_rotator::target::ObservedTarget;

fn resource(status: ProviderCredentialStatus) -> ProviderCredential {
    let spec: ProviderCredentialSpec = serde_json::from_value(serde_json::json!({
        "preset": "reltio",
        "tokenEndpoint": {"url": "https://auth.example.test/oauth/token"},
        "credentials": {"secretRef": {"name": "login"}},
        "target": {"secretName": "token"},
    }))
    .unwrap();
    let mut pc = ProviderCredential::new("r", spec);
    pc.metadata.namespace = Some("ns".into());
    pc.metadata.uid = Some("uid".into());
    pc.metadata.generation = Some(1);
    pc.status = Some(status);
    pc
}

fn login() -> BTreeMap<String, Vec<u8>> {
    ["client_id", "client_secret", "username", "password"]
        .into_iter()
        .map(|k| (k.to_string(), b"v".to_vec()))
        .collect()
}

/// Any instant jiff can represent, weighted towards the edges.
fn arb_time() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        (min..=max).prop_map(|s| Timestamp::from_second(s).unwrap()),
        (1_700_000_000i64..1_900_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

fn arb_secs() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), 0u64..100_000, any::<u64>()]
}

fn arb_policy() -> impl Strategy<Value = RenewalPolicy> {
    (
        prop_oneof![
            (1u8..=90).prop_map(RenewBefore::Percentage),
            arb_secs().prop_map(|s| RenewBefore::Fixed(Duration::from_secs(s))),
        ],
        arb_secs(),
    )
        .prop_map(|(renew_before, margin)| RenewalPolicy {
            renew_before,
            minimum_margin: Duration::from_secs(margin),
        })
}

fn token(issued: Timestamp, expires: Timestamp) -> IssuedToken {
    IssuedToken {
        access_token: SecretString::from("tok"),
        token_type: "Bearer".into(),
        issued_at: issued,
        expires_at: expires,
        lifetime_seconds: 0,
        lifetime_source: LifetimeSource::ExpiresIn,
        lifetime_capped_from: None,
        refresh: RefreshOutcome::None,
    }
}

proptest! {
    #[test]
    fn a_renewal_is_never_a_hot_loop(
        issued in arb_time(),
        expires in arb_time(),
        policy in arb_policy(),
        jitter in any::<f64>(),
    ) {
        let r = rotation::renewal(issued, expires, &policy, jitter);
        // At least a second after issue, unless time itself runs out.
        let floor = issued.checked_add(SignedDuration::from_secs(1)).unwrap_or(Timestamp::MAX);
        prop_assert!(r.at >= floor, "{issued} → {}", r.at);
        if r.short_lifetime {
            let floor = issued
                .checked_add(SignedDuration::from_secs(30))
                .unwrap_or(Timestamp::MAX);
            prop_assert!(r.at >= floor);
        }
    }

    #[test]
    fn backoff_is_bounded(failures in any::<u32>(), retry in proptest::option::of(arb_secs()), jitter in any::<f64>()) {
        let retry = retry.map(Duration::from_secs);
        let d = rotation::backoff(failures, retry, jitter);
        prop_assert!(d >= Duration::from_millis(500) || failures == 0);
        prop_assert!(d <= rotation::BACKOFF_CAP.max(retry.unwrap_or_default()));
    }

    #[test]
    fn status_after_any_outcome_waits_a_bounded_time(
        now in arb_time(),
        issued in arb_time(),
        expires in arb_time(),
        retry in proptest::option::of(arb_secs()),
        attempts in any::<u32>(),
        failures in proptest::option::of(any::<u32>()),
        next in proptest::option::of(arb_time()),
        outcome in 0usize..5,
    ) {
        let status = ProviderCredentialStatus {
            consecutive_failures: failures,
            next_refresh_at: next.map(Time),
            ..Default::default()
        };
        let pc = resource(status);
        let observed = Observed {
            pc: &pc,
            now,
            target: Slot::Absent,
            state: Slot::Absent,
            credentials: CredentialsView::Found(login()),
            held: None,
            timeout_cap: None,
            inputs_key: None,
        };
        let planned = rotation::plan(&observed);
        let Step::Rotate(plan) = &planned.step else {
            // A new resource with credentials always rotates (or waits for a retry).
            prop_assert!(matches!(planned.step, Step::Wait(at) if at > now));
            return Ok(());
        };
        let t = token(issued, expires);
        let error = FetchError::RateLimited {
            retry_after: retry.map(Duration::from_secs),
            words: String::new(),
        };
        let outcome = match outcome {
            0 => Outcome::Issued { plan, token: &t },
            1 => Outcome::Failed { plan, error: &error, chain_end: ChainEnd::Intact },
            2 => Outcome::Wait(expires),
            3 => Outcome::Deferred { until: expires },
            _ => Outcome::HoldRejected,
        };
        let report = rotation::status_after(&pc, &planned.baseline, outcome, now, attempts);
        if let Some(requeue) = report.requeue {
            prop_assert!((MIN_INTERVAL..=MAX_REQUEUE).contains(&requeue), "{requeue:?}");
        }
        prop_assert!(serde_json::to_string(&report.status).is_ok());
    }

    #[test]
    fn plan_reads_any_target_annotations_and_status(
        now in arb_time(),
        expires in "[0-9TZ:+-]{0,30}|9999-12-30T00:00:00Z|-009999-01-02T01:59:59Z",
        issued in "[0-9TZ:+-]{0,30}|9999-12-30T00:00:00Z",
        failures in proptest::option::of(any::<u32>()),
        next in proptest::option::of(arb_time()),
    ) {
        let annotations = BTreeMap::from([
            ("tokenrotator.dev/expires-at".to_string(), expires),
            ("tokenrotator.dev/issued-at".to_string(), issued),
            ("tokenrotator.dev/token-fingerprint".to_string(), "sha256:00ff".to_string()),
        ]);
        let pc = resource(ProviderCredentialStatus {
            consecutive_failures: failures,
            next_refresh_at: next.map(Time),
            ..Default::default()
        });
        let observed = Observed {
            pc: &pc,
            now,
            target: Slot::Owned(TargetView {
                resource_version: Some("1".into()),
                secret_type: Some("Opaque".into()),
                token: ObservedTarget::from_annotations(&annotations),
            }),
            state: Slot::Absent,
            credentials: CredentialsView::Found(login()),
            held: None,
            timeout_cap: None,
            inputs_key: None,
        };
        match rotation::plan(&observed).step {
            Step::Wait(at) => prop_assert!(at > now),
            Step::Rotate(_) | Step::HoldRejected | Step::Blocked(_) => {}
        }
    }

    #[test]
    fn the_budget_is_never_exceeded(
        gaps in proptest::collection::vec(0i64..5_000, 1..400),
        per_minute in 1u32..20,
    ) {
        let mut budget = RequestBudget::default();
        let mut t = Timestamp::from_second(1_800_000_000).unwrap();
        let mut sent: Vec<Timestamp> = Vec::new();
        for gap in gaps {
            t = t.checked_add(SignedDuration::from_millis(gap)).unwrap();
            if budget.spend(t, per_minute).is_ok() {
                sent.push(t);
            }
        }
        for (i, first) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|s| s.duration_since(*first) < SignedDuration::from_secs(60))
                .count();
            prop_assert!(in_window <= per_minute as usize, "{in_window} in a minute");
        }
    }
}

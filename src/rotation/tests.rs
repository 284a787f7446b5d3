//! Unit tests of plan, settle and status_after from synthetic observations: every branch that
//! otherwise only an end-to-end test would reach.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::api::{
    ProviderCredential, ProviderCredentialSpec, ProviderCredentialStatus, credentials_from_data,
};
use crate::conditions::{self, ConditionType, Reason};
use crate::provider::{FetchError, GrantRequest, IssuedToken, LifetimeSource, RefreshOutcome};
use crate::state::StateData;
use crate::target::{self, ObservedTarget};
use crate::{api, digest};

const UID: &str = "uid-1";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    at("2026-06-01T12:00:00Z")
}

fn resource(spec: serde_json::Value) -> ProviderCredential {
    let spec: ProviderCredentialSpec = serde_json::from_value(spec).unwrap();
    let mut pc = ProviderCredential::new("reltio", spec);
    pc.metadata.namespace = Some("crm".into());
    pc.metadata.uid = Some(UID.into());
    pc.metadata.generation = Some(1);
    pc
}

fn reltio() -> ProviderCredential {
    resource(serde_json::json!({
        "preset": "reltio",
        "tokenEndpoint": {"url": "https://auth.example.test/oauth/token"},
        "credentials": {"secretRef": {"name": "login"}},
        "target": {"secretName": "reltio-token"},
    }))
}

fn retently() -> ProviderCredential {
    resource(serde_json::json!({
        "preset": "retently",
        "tokenEndpoint": {"url": "https://auth.example.test/oauth/token"},
        "grant": {"redirectUri": "https://app.example.test/cb"},
        "credentials": {"secretRef": {"name": "login"}},
        "target": {"secretName": "retently-token"},
    }))
}

fn login() -> BTreeMap<String, Vec<u8>> {
    [
        ("client_id", "cid"),
        ("client_secret", "csecret"),
        ("username", "user"),
        ("password", "pw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect()
}

fn inputs_of(pc: &ProviderCredential, data: &BTreeMap<String, Vec<u8>>) -> String {
    request_inputs_now(pc, &api::provider_config(&pc.spec).unwrap(), data)
}

fn token(fingerprint_seed: &str, issued: Timestamp, lifetime_s: i64) -> IssuedToken {
    IssuedToken {
        access_token: SecretString::from(fingerprint_seed.to_string()),
        token_type: "Bearer".into(),
        issued_at: issued,
        expires_at: issued + SignedDuration::from_secs(lifetime_s),
        lifetime_seconds: lifetime_s as u64,
        lifetime_source: LifetimeSource::ExpiresIn,
        lifetime_capped_from: None,
        refresh: RefreshOutcome::None,
    }
}

/// A target Secret holding `t`, written for this spec.
fn target_with(pc: &ProviderCredential, t: &IssuedToken) -> Slot<TargetView> {
    let desired = target::desired(&pc.spec.target, t, None, None).unwrap();
    Slot::Owned(TargetView {
        resource_version: Some("7".into()),
        secret_type: Some(desired.secret_type),
        token: ObservedTarget::from_annotations(&desired.annotations),
    })
}

fn stored(pc: &ProviderCredential, refresh: Option<&str>) -> Slot<StateView> {
    Slot::Owned(StateView {
        resource_version: Some("3".into()),
        data: StateData {
            refresh_token: refresh.map(|r| SecretString::from(r.to_string())),
            inputs_hash: Some(inputs_of(pc, &login())),
            ..StateData::default()
        },
    })
}

fn observed(pc: &ProviderCredential) -> Observed<'_> {
    Observed {
        pc,
        now: now(),
        target: Slot::Absent,
        state: Slot::Absent,
        credentials: CredentialsView::Found(login()),
        held: None,
        timeout_cap: None,
        inputs_key: None,
    }
}

fn blocked(o: &Observed<'_>) -> Blocked {
    match plan(o).step {
        Step::Blocked(b) => b,
        other => panic!("expected Blocked, got {other:?}"),
    }
}

fn rotation_plan(o: &Observed<'_>) -> Plan {
    match plan(o).step {
        Step::Rotate(p) => *p,
        other => panic!("expected Rotate, got {other:?}"),
    }
}

// ---- plan ----

#[test]
fn a_request_planned_with_credentials_replaced_since_is_known_by_its_inputs() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    assert_eq!(request_inputs_now(&pc, &p.config, &login()), p.inputs);
    let mut replaced = login();
    replaced.insert("client_secret".into(), b"replaced after a leak".to_vec());
    assert_ne!(request_inputs_now(&pc, &p.config, &replaced), p.inputs);
}

#[test]
fn a_new_resource_requests_a_token_with_its_primary_grant() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    assert_eq!(p.due, DueReason::NoToken);
    assert!(matches!(
        p.source,
        TokenSource::Request(GrantRequest::Primary)
    ));
    assert_eq!(p.target_secret.resource_version, None);
    assert_eq!(p.state_secret.name, "reltio-rotator-state");
}

#[test]
fn a_valid_token_waits_and_a_stored_refresh_token_is_spent_when_due() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    o.state = stored(&pc, Some("rt-1"));
    let Step::Wait(when) = plan(&o).step else {
        panic!("expected Wait")
    };
    assert!(when > now() && when < t.expires_at);
    o.now = t.expires_at - SignedDuration::from_secs(60);
    let p = rotation_plan(&o);
    assert_eq!(p.due, DueReason::RenewalTime);
    assert_eq!(p.choice, GrantChoice::StoredRefreshToken);
    assert_eq!(
        sent_refresh_token(&p).map(|s| s.expose_secret().to_string()),
        Some("rt-1".into())
    );
    assert_eq!(p.target_secret.resource_version.as_deref(), Some("7"));
    assert_eq!(p.state_secret.resource_version.as_deref(), Some("3"));
}

/// A target holding `t` written with a key: its inputs digest is on it, sealed.
fn sealed_target(
    pc: &ProviderCredential,
    t: &IssuedToken,
    key: &digest::InputsKey,
    data: &BTreeMap<String, Vec<u8>>,
) -> Slot<TargetView> {
    let sealed = key.seal(&inputs_of(pc, data));
    let desired = target::desired(&pc.spec.target, t, None, Some(&sealed)).unwrap();
    Slot::Owned(TargetView {
        resource_version: Some("7".into()),
        secret_type: Some(desired.secret_type),
        token: ObservedTarget::from_annotations(&desired.annotations),
    })
}

#[test]
fn without_a_state_secret_the_keyed_digest_on_the_target_tells_a_change_of_credentials() {
    let pc = reltio();
    let key = digest::InputsKey::new(&[5; 32]).unwrap();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.inputs_key = Some(&key);
    // A new resource: the plan seals its inputs for the target.
    let p = rotation_plan(&o);
    assert_eq!(p.sealed_inputs, Some(key.seal(&p.inputs)));
    // Written with these credentials: nothing to do until the renewal time.
    o.target = sealed_target(&pc, &t, &key, &login());
    assert!(matches!(plan(&o).step, Step::Wait(_)));
    // The credentials changed since: a new token at once.
    let mut replaced = login();
    replaced.insert("client_secret".into(), b"rotated".to_vec());
    o.credentials = CredentialsView::Found(replaced.clone());
    assert_eq!(rotation_plan(&o).due, DueReason::InputsChanged);
    // Sealed with a key since lost: tells nothing, so nothing is requested because of it.
    let lost = digest::InputsKey::new(&[6; 32]).unwrap();
    o.target = sealed_target(&pc, &t, &lost, &login());
    assert!(matches!(plan(&o).step, Step::Wait(_)));
    // No key at hand (run without one after running with one): it tells nothing either.
    o.inputs_key = None;
    assert!(matches!(plan(&o).step, Step::Wait(_)));
    o.inputs_key = Some(&key);
    // No digest at all (edited away, or a target of a build without a key): a change.
    o.target = target_with(&pc, &t);
    assert_eq!(rotation_plan(&o).due, DueReason::InputsChanged);
    // A state Secret's digest, where there is one, is what counts (written before the target).
    o.credentials = CredentialsView::Found(login());
    o.target = sealed_target(&pc, &t, &key, &replaced);
    o.state = stored(&pc, None);
    assert!(matches!(plan(&o).step, Step::Wait(_)));
}

#[test]
fn a_target_is_assumed_absent_only_for_a_resource_that_never_had_a_token_or_a_conflict() {
    assert!(target_may_be_assumed_absent(None));
    let mut status = ProviderCredentialStatus::default();
    assert!(target_may_be_assumed_absent(Some(&status)));
    conditions::set(
        &mut status.conditions,
        ConditionType::Ready,
        false,
        Reason::TargetConflict.reason(),
        "taken".into(),
        None,
        now(),
    );
    assert!(!target_may_be_assumed_absent(Some(&status)));
    let pc = reltio();
    let t = token("tok", now(), 600);
    let Slot::Owned(view) = target_with(&pc, &t) else {
        unreachable!()
    };
    let issued = ProviderCredentialStatus {
        access_token: Some(api::AccessTokenStatus {
            issued_at: Time(t.issued_at),
            expires_at: Time(t.expires_at),
            fingerprint: view.token.fingerprint.unwrap_or_default(),
            lifetime_source: "expires_in".into(),
            secret_name: pc.spec.target.secret_name.clone(),
        }),
        ..ProviderCredentialStatus::default()
    };
    assert!(!target_may_be_assumed_absent(Some(&issued)));
}

#[test]
fn a_state_secret_is_needed_only_for_what_only_it_can_hold() {
    let inputs_only = StateData {
        inputs_hash: Some("v1:x".into()),
        ..StateData::default()
    };
    assert!(!needs_state_secret(&StateData::default(), true));
    assert!(!needs_state_secret(&inputs_only, true));
    // Without a key the digest has nowhere else to go.
    assert!(needs_state_secret(&inputs_only, false));
    let each: [fn(&mut StateData); 7] = [
        |s| s.refresh_token = Some(SecretString::from("rt")),
        |s| s.refresh_binding = Some("b".into()),
        |s| s.seed_hash = Some("s".into()),
        |s| s.code_hash = Some("c".into()),
        |s| s.rejected_inputs_hash = Some("r".into()),
        |s| s.failing_inputs_hash = Some("f".into()),
        |s| s.unrenderable_target = Some("u".into()),
    ];
    for set in each {
        let mut state = inputs_only.clone();
        set(&mut state);
        assert!(needs_state_secret(&state, true), "{state:?}");
    }
}

#[test]
fn digests_stored_by_the_previous_release_fetch_nothing() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    let desired = target::desired(&pc.spec.target, &t, None, None).unwrap();
    let mut annotations = desired.annotations.clone();
    annotations.insert(
        target::SETTINGS_ANNOTATION.into(),
        digest::legacy::target_settings(&pc.spec.target),
    );
    o.target = Slot::Owned(TargetView {
        resource_version: Some("7".into()),
        secret_type: Some(desired.secret_type),
        token: ObservedTarget::from_annotations(&annotations),
    });
    let config = api::provider_config(&pc.spec).unwrap();
    let creds = credentials_from_data(&pc.spec, &login());
    o.state = Slot::Owned(StateView {
        resource_version: Some("3".into()),
        data: StateData {
            inputs_hash: Some(digest::legacy::request_inputs(UID, &config, &creds)),
            ..StateData::default()
        },
    });
    assert!(matches!(plan(&o).step, Step::Wait(_)));
    // A digest that matches nothing is a change.
    let Slot::Owned(mut s) = o.state.clone() else {
        unreachable!()
    };
    s.data.inputs_hash = Some("v1:0".into());
    o.state = Slot::Owned(s);
    assert!(matches!(plan(&o).step, Step::Rotate(_)));
}

#[test]
fn every_blocked_reason_is_found_before_a_request() {
    let pc = reltio();
    let mut o = observed(&pc);
    o.target = Slot::Foreign;
    let b = blocked(&o);
    assert_eq!(b.reason(), Reason::TargetConflict);
    assert!(b.message().contains("spec.target.secretName") && b.recheck());

    let mut o = observed(&pc);
    o.state = Slot::Foreign;
    assert_eq!(blocked(&o).reason(), Reason::TargetConflict);

    let mut o = observed(&pc);
    o.credentials = CredentialsView::NotFound;
    assert_eq!(blocked(&o).reason(), Reason::CredentialsNotFound);
    o.credentials = CredentialsView::NotLabelled;
    let b = blocked(&o);
    assert_eq!(b.reason(), Reason::CredentialsNotLabelled);
    assert!(b.message().contains("kubectl label secret login"));

    let mut suspended = reltio();
    suspended.spec.suspend = Some(true);
    let b = blocked(&observed(&suspended));
    assert_eq!((b.reason(), b.recheck()), (Reason::Suspended, false));

    let mut bad = reltio();
    bad.spec.token_endpoint.url = "not a url".into();
    let b = blocked(&observed(&bad));
    assert_eq!(b.reason(), Reason::InvalidSpec);
    assert!(b.message().contains("spec.tokenEndpoint.url"));

    let code = retently();
    let b = blocked(&observed(&code));
    assert_eq!(b.reason(), Reason::ReauthorizationRequired);
    assert!(b.message().contains("key `code`"));
}

/// Every way a rotation is blocked: its reason on the wire, whether it is rechecked without a
/// change, and a message. No wildcard: a new variant does not compile until it is written
/// down here (and in `all`).
#[test]
fn every_blocked_variant_has_its_reason_recheck_and_message() {
    let name = || "x".to_string();
    let all = [
        target_conflict("x"),
        Blocked::TargetTypeChanged {
            target: name(),
            actual: "Opaque".into(),
            desired: "kubernetes.io/basic-auth".into(),
        },
        Blocked::StateSecretTaken { state: name() },
        Blocked::InvalidSpec(InvalidSpec::TargetName("X".into())),
        Blocked::Suspended,
        Blocked::TemplateFailed("spec.target.template failed".into()),
        Blocked::RefreshTokenRebound {
            credentials: name(),
            code_key: "code".into(),
        },
        Blocked::CodeSpent {
            credentials: name(),
            code_key: "code".into(),
        },
        Blocked::TokenHostNotAllowed {
            credentials: name(),
            allowed: "a.test".into(),
            host: "b.test".into(),
        },
        Blocked::CredentialsNotFound {
            credentials: name(),
        },
        Blocked::CredentialsNotLabelled {
            credentials: name(),
        },
    ];
    for b in &all {
        let (wire, recheck) = match b {
            Blocked::TargetTaken { .. } => ("TargetConflict", true),
            Blocked::TargetTypeChanged { .. } => ("TargetConflict", true),
            Blocked::StateSecretTaken { .. } => ("TargetConflict", true),
            Blocked::InvalidSpec(_) => ("InvalidSpec", false),
            Blocked::Suspended => ("Suspended", false),
            Blocked::TemplateFailed(_) => ("TemplateFailed", false),
            Blocked::RefreshTokenRebound { .. } => ("ReauthorizationRequired", false),
            Blocked::CodeSpent { .. } => ("ReauthorizationRequired", false),
            Blocked::TokenHostNotAllowed { .. } => ("TokenHostNotAllowed", false),
            Blocked::CredentialsNotFound { .. } => ("CredentialsNotFound", true),
            Blocked::CredentialsNotLabelled { .. } => ("CredentialsNotLabelled", true),
        };
        assert_eq!((b.reason().reason(), b.recheck()), (wire, recheck), "{b:?}");
        assert!(
            b.message().contains("spec.") || b.message().contains("Secret x"),
            "{b:?}"
        );
    }
}

/// Regression: each of these used to request a token every few seconds, forever.
#[test]
fn what_would_fail_after_a_fetch_blocks_before_it() {
    // The target's type changed in the spec: a Secret's type is immutable.
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut typed = reltio();
    typed.spec.target.secret_type = Some("kubernetes.io/basic-auth".into());
    let mut o = observed(&typed);
    o.target = target_with(&pc, &t);
    o.state = stored(&typed, None);
    let b = blocked(&o);
    assert_eq!(b.reason(), Reason::TargetConflict);
    assert!(
        b.message().contains("kubectl delete secret reltio-token"),
        "{}",
        b.message()
    );

    // The target is named like this resource's own state Secret.
    let mut clash = reltio();
    clash.spec.target.secret_name = "reltio-rotator-state".into();
    let b = blocked(&observed(&clash));
    assert_eq!(b.reason(), Reason::InvalidSpec);
    assert!(b.message().contains("state Secret"));

    // A name whose state Secret would be too long.
    let mut long = reltio();
    long.metadata.name = Some("a".repeat(245));
    let b = blocked(&observed(&long));
    assert_eq!(b.reason(), Reason::InvalidSpec);
    assert!(
        b.message().contains("at most 239 characters"),
        "{}",
        b.message()
    );

    // A template that fails only with a token-shaped value.
    let mut tpl = reltio();
    tpl.spec.target.template = BTreeMap::from([(
        "k".into(),
        "{% if access_token|length > 20 %}{{ access_token|int }}{% endif %}".into(),
    )]);
    assert_eq!(blocked(&observed(&tpl)).reason(), Reason::InvalidSpec);

    // A target name the API server would refuse.
    let mut upper = reltio();
    upper.spec.target.secret_name = "Reltio_Token".into();
    let b = blocked(&observed(&upper));
    assert!(
        b.message().contains("not a valid Secret name"),
        "{}",
        b.message()
    );

    // An invalid label key on the target.
    let mut label = reltio();
    label.spec.target.labels = BTreeMap::from([("bad key".into(), "v".into())]);
    assert!(
        blocked(&observed(&label))
            .message()
            .contains("spec.target.labels")
    );
}

#[test]
fn a_template_that_failed_with_the_real_token_waits_for_a_change() {
    let pc = reltio();
    let Slot::Owned(mut s) = stored(&pc, None) else {
        unreachable!()
    };
    s.data.unrenderable_target = Some(digest::target_settings(&pc.spec.target));
    let mut o = observed(&pc);
    o.state = Slot::Owned(s);
    let b = blocked(&o);
    assert_eq!(b.reason(), Reason::TemplateFailed);
    assert!(b.message().contains("spec.target.template"));
    // Whatever the status says: the state Secret remembers it.
    let mut changed = reltio();
    changed.spec.target.template = BTreeMap::from([("k".into(), "{{ access_token }}".into())]);
    let mut o2 = observed(&changed);
    o2.state = o.state.clone();
    assert!(matches!(plan(&o2).step, Step::Rotate(_)));
}

#[test]
fn rejected_credentials_stored_by_the_previous_release_are_still_held() {
    let pc = reltio();
    let config = api::provider_config(&pc.spec).unwrap();
    let creds = credentials_from_data(&pc.spec, &login());
    let mut o = observed(&pc);
    o.state = Slot::Owned(StateView {
        resource_version: Some("3".into()),
        data: StateData {
            rejected_inputs_hash: Some(digest::legacy::request_inputs(UID, &config, &creds)),
            ..StateData::default()
        },
    });
    let step = plan(&o).step;
    assert!(matches!(step, Step::HoldRejected), "{step:?}");
}

#[test]
fn changed_inputs_that_failed_wait_for_backoff() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    let mut status = plan(&o).baseline.status;
    status.consecutive_failures = Some(1);
    status.next_refresh_at = Some(Time(now() + SignedDuration::from_secs(120)));
    let mut failing = pc.clone();
    failing.status = Some(status);
    let mut changed = login();
    changed.insert("password".into(), b"new".to_vec());
    let mut o = observed(&failing);
    o.target = target_with(&pc, &t);
    o.credentials = CredentialsView::Found(changed.clone());
    o.state = stored(&pc, None);
    // First try of the new inputs: at once.
    let p = rotation_plan(&o);
    assert_eq!(p.due, DueReason::InputsChanged);
    // It failed transiently: the next reconcile waits for the retry time.
    let s = settle(&p, Err(&unavailable()));
    assert_eq!(
        s.state.failing_inputs_hash.as_deref(),
        Some(p.inputs.as_str())
    );
    o.state = Slot::Owned(StateView {
        resource_version: Some("4".into()),
        data: s.state,
    });
    assert!(
        matches!(plan(&o).step, Step::Wait(at) if at == now() + SignedDuration::from_secs(120))
    );
}

#[test]
fn a_held_token_is_written_instead_of_requesting_another() {
    let pc = reltio();
    let held = token("held", now() - SignedDuration::from_secs(5), 3600);
    let mut o = observed(&pc);
    o.state = stored(&pc, None);
    o.held = Some(HeldToken {
        token: held.clone(),
        inputs: inputs_of(&pc, &login()),
        refresh_handled: None,
    });
    let p = rotation_plan(&o);
    assert!(matches!(&p.source, TokenSource::Held(t) if t.fingerprint() == held.fingerprint()));

    // Not when the inputs changed since, nor once it expired.
    let mut changed = login();
    changed.insert("password".into(), b"new".to_vec());
    o.credentials = CredentialsView::Found(changed);
    assert!(matches!(
        rotation_plan(&o).source,
        TokenSource::Request(GrantRequest::Primary)
    ));
    o.credentials = CredentialsView::Found(login());
    o.now = held.expires_at;
    let planned = plan(&o);
    assert!(
        matches!(&planned.step, Step::Rotate(p) if matches!(p.source, TokenSource::Request(_)))
    );
    assert!(planned.discard_held, "an expired held token is dropped");

    // A new refresh request is answered with a new token, not the held one.
    let mut asked = pc.clone();
    asked
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(api::REFRESH_ANNOTATION.into(), "n1".into());
    let mut o = observed(&asked);
    o.state = stored(&asked, None);
    o.held = Some(HeldToken {
        token: held.clone(),
        inputs: inputs_of(&asked, &login()),
        refresh_handled: None,
    });
    let planned = plan(&o);
    assert!(
        matches!(&planned.step, Step::Rotate(p) if matches!(p.source, TokenSource::Request(_)))
    );
    assert!(planned.discard_held);
}

#[test]
fn the_target_secret_is_the_truth_when_the_status_lags() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    o.state = stored(&pc, None);
    let planned = plan(&o);
    let tracked = planned.baseline.status.access_token.unwrap();
    assert_eq!(tracked.fingerprint, t.fingerprint());
    assert_eq!(tracked.expires_at, Time(t.expires_at));
    assert_eq!(
        planned.baseline.current.unwrap().fingerprint,
        t.fingerprint()
    );
}

// ---- settle ----

fn invalid_grant() -> FetchError {
    FetchError::CredentialsRejected {
        status: 400,
        oauth_error: Some("invalid_grant".into()),
        words: String::new(),
    }
}

fn unavailable() -> FetchError {
    FetchError::ProviderUnavailable {
        cause: "timeout".into(),
        status: None,
        retry_after: None,
        words: String::new(),
    }
}

fn refresh_plan(pc: &ProviderCredential, rt: &str) -> Plan {
    let mut o = observed(pc);
    o.state = stored(pc, Some(rt));
    o.target = target_with(
        pc,
        &token("old", now() - SignedDuration::from_secs(3590), 3600),
    );
    rotation_plan(&o)
}

/// A resource whose stored refresh token was issued for another token endpoint.
fn moved(pc: &ProviderCredential, binding_of: &ProviderCredential) -> Observed<'static> {
    let pc: &'static ProviderCredential = Box::leak(Box::new(pc.clone()));
    let mut o = observed(pc);
    let mut state = stored(pc, Some("rt-old"));
    if let Slot::Owned(s) = &mut state {
        s.data.refresh_binding = Some(refresh_plan(binding_of, "rt-old").refresh_binding);
    }
    o.state = state;
    o.target = target_with(
        pc,
        &token("old", now() - SignedDuration::from_secs(3590), 3600),
    );
    o
}

fn at_other_endpoint(pc: &ProviderCredential) -> ProviderCredential {
    let mut other = pc.clone();
    other.spec.token_endpoint.url = "https://elsewhere.example.test/oauth/token".into();
    other
}

#[test]
fn a_refresh_token_is_sent_only_where_it_came_from() {
    let pc = reltio();
    // Bound when it is received, to this endpoint and client.
    let p = refresh_plan(&pc, "rt-1");
    let mut t = token("new", now(), 3600);
    t.refresh = RefreshOutcome::Rotated(SecretString::from("rt-2"));
    let s = settle(&p, Ok(&t));
    assert_eq!(
        s.state.refresh_binding.as_deref(),
        Some(p.refresh_binding.as_str())
    );
    assert!(matches!(
        p.source,
        TokenSource::Request(GrantRequest::Refresh(_))
    ));

    // Same endpoint: the stored token is used.
    let same = rotation_plan(&moved(&pc, &pc));
    assert!(matches!(
        same.source,
        TokenSource::Request(GrantRequest::Refresh(_))
    ));

    // The URL changed: never sent there; the password grant takes over.
    let elsewhere = at_other_endpoint(&pc);
    let p = rotation_plan(&moved(&elsewhere, &pc));
    assert_eq!(p.choice, GrantChoice::Primary);
    assert!(matches!(
        p.source,
        TokenSource::Request(GrantRequest::Primary)
    ));
    assert_ne!(p.refresh_binding, refresh_plan(&pc, "x").refresh_binding);

    // The client id changed: the same.
    let mut creds = login();
    creds.insert("client_id".into(), b"another-client".to_vec());
    let mut o = moved(&pc, &pc);
    o.credentials = CredentialsView::Found(creds);
    assert!(matches!(
        rotation_plan(&o).source,
        TokenSource::Request(GrantRequest::Primary)
    ));

    // An authorization-code chain cannot fall back: a person consents again.
    let code = retently();
    let b = blocked(&moved(&at_other_endpoint(&code), &code));
    assert_eq!(b.reason(), Reason::ReauthorizationRequired);
    assert!(
        b.message().contains("spec.tokenEndpoint.url"),
        "{}",
        b.message()
    );

    // A state from before bindings existed is trusted once (then bound on the next answer).
    let mut o = moved(&pc, &pc);
    if let Slot::Owned(s) = &mut o.state {
        s.data.refresh_binding = None;
    }
    assert!(matches!(
        rotation_plan(&o).source,
        TokenSource::Request(GrantRequest::Refresh(_))
    ));
}

#[test]
fn the_credentials_owner_pins_where_they_go() {
    let pc = reltio();
    let pinned = |hosts: &[&str]| {
        let mut o = observed(&pc);
        o.credentials = CredentialsView::Pinned {
            data: login(),
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        plan(&o).step
    };
    let host = pc.spec.token_endpoint.url.parse::<url::Url>().unwrap();
    let host = host.host_str().unwrap().to_string();
    assert!(matches!(
        pinned(&["other.example", &host.to_uppercase()]),
        Step::Rotate(_)
    ));
    for hosts in [&["auth.reltio.com"][..], &[][..]] {
        let Step::Blocked(b) = pinned(hosts) else {
            panic!("expected Blocked for {hosts:?}")
        };
        assert_eq!(b.reason(), Reason::TokenHostNotAllowed);
        assert!(
            b.message().contains("tokenrotator.dev/allowed-token-hosts")
                && b.message().contains(&host),
            "{}",
            b.message()
        );
        assert!(!b.recheck(), "waits for a change of the Secret or the spec");
    }
}

#[test]
fn settle_keeps_the_chain_as_rfc_6749_says() {
    let pc = reltio();
    let p = refresh_plan(&pc, "rt-1");
    let mut t = token("new", now(), 3600);

    t.refresh = RefreshOutcome::Rotated(SecretString::from("rt-2"));
    let s = settle(&p, Ok(&t));
    assert_eq!(s.chain_end, ChainEnd::Intact);
    assert_eq!(s.state.refresh_token.unwrap().expose_secret(), "rt-2");
    assert_eq!(s.state.inputs_hash.as_deref(), Some(p.inputs.as_str()));

    t.refresh = RefreshOutcome::Kept;
    let s = settle(&p, Ok(&t));
    assert_eq!(s.state.refresh_token.unwrap().expose_secret(), "rt-1");

    t.refresh = RefreshOutcome::None;
    assert!(settle(&p, Ok(&t)).state.refresh_token.is_none());

    // Ambiguous outcomes keep the same token for the retry.
    let s = settle(&p, Err(&unavailable()));
    assert_eq!(s.chain_end, ChainEnd::Intact);
    assert_eq!(s.state.refresh_token.unwrap().expose_secret(), "rt-1");
    assert_eq!(s.state.inputs_hash, p.state.inputs_hash);
}

#[test]
fn only_invalid_grant_ends_a_chain() {
    let pc = reltio();
    let p = refresh_plan(&pc, "rt-1");
    let s = settle(&p, Err(&invalid_grant()));
    assert_eq!(s.chain_end, ChainEnd::FallBackToPrimary);
    assert!(s.state.refresh_token.is_none());

    let code = retently();
    let p = refresh_plan(&code, "rt-1");
    let s = settle(&p, Err(&invalid_grant()));
    assert_eq!(s.chain_end, ChainEnd::NeedsReauthorization);
    assert!(s.state.refresh_token.is_none());

    // A dead authorization code is remembered as spent.
    let mut creds = login();
    creds.insert("code".into(), b"c-1".to_vec());
    let mut o = observed(&code);
    o.credentials = CredentialsView::Found(creds);
    let p = rotation_plan(&o);
    assert_eq!(p.choice, GrantChoice::Primary);
    let s = settle(&p, Err(&invalid_grant()));
    assert_eq!(s.chain_end, ChainEnd::NeedsReauthorization);
    assert_eq!(s.state.code_hash, p.code_hash);

    // Rejected credentials are remembered so they are not retried.
    let p = rotation_plan(&observed(&pc));
    let rejected = FetchError::CredentialsRejected {
        status: 401,
        oauth_error: None,
        words: String::new(),
    };
    let s = settle(&p, Err(&rejected));
    assert_eq!(
        s.state.rejected_inputs_hash.as_deref(),
        Some(p.inputs.as_str())
    );
}

fn chain(rt: Option<&str>) -> StateData {
    StateData {
        refresh_token: rt.map(SecretString::from),
        inputs_hash: Some("inputs".into()),
        ..StateData::default()
    }
}

#[test]
fn a_conflicting_state_write_lets_the_newer_chain_win() {
    let pc = reltio();
    let p = refresh_plan(&pc, "rt-1");
    let mut t = token("new", now(), 3600);
    t.refresh = RefreshOutcome::Rotated(SecretString::from("rt-2"));
    let ours = ChainWrite::after(&p, settle(&p, Ok(&t)).state);
    assert_eq!(ours.base.as_ref().map(|b| b.expose_secret()), Some("rt-1"));

    // Only bookkeeping changed underneath (the stored chain is still the one we started
    // from): our result is written.
    let mut touched = chain(Some("rt-1"));
    touched.unrenderable_target = Some("t".into());
    assert_eq!(rebase(&ours, &touched), Rebase::Write(ours.state.clone()));
    // Our own earlier write (its answer was lost): written again, harmlessly.
    assert_eq!(
        rebase(&ours, &chain(Some("rt-2"))),
        Rebase::Write(ours.state.clone())
    );
    // Another writer emptied the chain (the provider refused rt-1 to it, because this
    // rotation had replaced it): the token the provider issued to us revives the chain.
    assert_eq!(
        rebase(&ours, &chain(None)),
        Rebase::Write(ours.state.clone())
    );
    // Another writer stored a newer token: it wins and ours is set aside, counted.
    assert_eq!(
        rebase(&ours, &chain(Some("rt-9"))),
        Rebase::Superseded { discarded: true }
    );

    // A failed refresh (invalid_grant) that would empty the chain never erases a newer
    // token: the refusal was caused by the rotation that stored it.
    let failed = ChainWrite::after(&p, settle(&p, Err(&invalid_grant())).state);
    assert!(failed.state.refresh_token.is_none());
    assert_eq!(
        rebase(&failed, &chain(Some("rt-9"))),
        Rebase::Superseded { discarded: false }
    );
    assert_eq!(
        rebase(&failed, &chain(Some("rt-1"))),
        Rebase::Write(failed.state.clone())
    );

    // A kept refresh token (no rotation) is nothing new to lose.
    t.refresh = RefreshOutcome::Kept;
    let kept = ChainWrite::after(&p, settle(&p, Ok(&t)).state);
    assert_eq!(
        rebase(&kept, &chain(Some("rt-9"))),
        Rebase::Superseded { discarded: false }
    );

    // A first grant (no chain yet) racing another first grant: the stored one wins.
    let first = rotation_plan(&observed(&pc));
    t.refresh = RefreshOutcome::NewlyIssued(SecretString::from("rt-a"));
    let fresh = ChainWrite::after(&first, settle(&first, Ok(&t)).state);
    assert!(fresh.base.is_none());
    assert_eq!(
        rebase(&fresh, &chain(Some("rt-b"))),
        Rebase::Superseded { discarded: true }
    );
    assert_eq!(
        rebase(&fresh, &StateData::default()),
        Rebase::Write(fresh.state.clone())
    );
}

#[test]
fn a_seed_refresh_token_is_spent_once() {
    let pc = reltio();
    let mut creds = login();
    creds.insert("refresh_token".into(), b"seed".to_vec());
    let mut o = observed(&pc);
    o.credentials = CredentialsView::Found(creds);
    let p = rotation_plan(&o);
    assert_eq!(p.choice, GrantChoice::SeedRefreshToken);
    let mut t = token("new", now(), 3600);
    t.refresh = RefreshOutcome::Rotated(SecretString::from("rt-2"));
    let s = settle(&p, Ok(&t));
    assert_eq!(s.state.seed_hash, p.seed_hash);
    let s = settle(&p, Err(&invalid_grant()));
    assert_eq!(s.state.seed_hash, p.seed_hash);
    assert_eq!(s.chain_end, ChainEnd::FallBackToPrimary);
}

#[test]
fn a_held_token_settles_nothing() {
    let pc = reltio();
    let held = token("held", now(), 3600);
    let mut o = observed(&pc);
    o.held = Some(HeldToken {
        token: held.clone(),
        inputs: inputs_of(&pc, &login()),
        refresh_handled: None,
    });
    let p = rotation_plan(&o);
    assert_eq!(settle(&p, Ok(&held)).state, p.state);
}

// ---- status_after ----

fn ready(r: &Report) -> (String, String) {
    let c = conditions::get(&r.status.conditions, ConditionType::Ready).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn degraded(r: &Report) -> (String, String) {
    let c = conditions::get(&r.status.conditions, ConditionType::Degraded).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn an_issued_token_is_tracked_and_scheduled() {
    let pc = reltio();
    let o = observed(&pc);
    let planned = plan(&o);
    let Step::Rotate(p) = &planned.step else {
        panic!()
    };
    let mut t = token("tok", now(), 3600);
    t.refresh = RefreshOutcome::NewlyIssued(SecretString::from("rt-1"));
    let r = status_after(
        &pc,
        &planned.baseline,
        Outcome::Issued { plan: p, token: &t },
        now(),
        0,
    );
    assert_eq!(
        ready(&r),
        ("True".into(), Reason::TokenIssued.reason().into())
    );
    let next = r.status.next_refresh_at.clone().unwrap().0;
    assert!(next > now() + SignedDuration::from_secs(2000) && next < t.expires_at);
    assert_eq!(r.requeue, Some(requeue_delay(now(), next)));
    let rt = r.status.refresh_token.clone().unwrap();
    assert_eq!(
        (rt.rotations, rt.secret_ref.name.as_str()),
        (0, "reltio-rotator-state")
    );
    assert!(!serde_json::to_string(&r.status).unwrap().contains("rt-1"));
    assert_eq!(
        r.events.len(),
        1,
        "Ready=True; Degraded=False at creation is no news"
    );
    assert!(!r.events[0].warning);
    assert_eq!(r.expires_at, Some(t.expires_at));

    // A rotated refresh token counts one more rotation.
    let mut again = pc.clone();
    again.status = Some(r.status.clone());
    let mut t2 = token("tok2", now(), 3600);
    t2.refresh = RefreshOutcome::Rotated(SecretString::from("rt-2"));
    let r2 = status_after(
        &again,
        &plan(&observed(&again)).baseline,
        Outcome::Issued {
            plan: p,
            token: &t2,
        },
        now(),
        0,
    );
    assert_eq!(r2.status.refresh_token.unwrap().rotations, 1);
}

#[test]
fn the_same_token_again_is_asked_for_again_only_at_expiry() {
    let pc = reltio();
    let t = token("same", now() - SignedDuration::from_secs(600), 3600);
    let mut with_status = pc.clone();
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    let base = plan(&o).baseline;
    with_status.status = Some(base.status.clone());
    let mut o = observed(&with_status);
    o.target = target_with(&pc, &t);
    let planned = plan(&o);
    let p = rotation_plan(&observed(&pc));
    let r = status_after(
        &with_status,
        &planned.baseline,
        Outcome::Issued {
            plan: &p,
            token: &t,
        },
        now(),
        0,
    );
    assert_eq!(
        r.status.next_refresh_at.unwrap().0,
        t.expires_at + SignedDuration::from_secs(1)
    );
}

#[test]
fn a_transient_failure_backs_off_and_honours_retry_after() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    let base = plan(&observed(&pc)).baseline;
    let limited = FetchError::RateLimited {
        retry_after: Some(Duration::from_secs(120)),
        words: String::new(),
    };
    let r = status_after(
        &pc,
        &base,
        Outcome::Failed {
            plan: &p,
            error: &limited,
            chain_end: ChainEnd::Intact,
        },
        now(),
        0,
    );
    assert_eq!(ready(&r), ("False".into(), "RateLimited".into()));
    assert_eq!(degraded(&r), ("True".into(), "RateLimited".into()));
    assert_eq!(r.requeue, Some(Duration::from_secs(120)));
    assert_eq!(
        r.status.next_refresh_at.clone().unwrap().0,
        now() + SignedDuration::from_secs(120)
    );
    assert_eq!(r.status.consecutive_failures, Some(1));
    assert_eq!(
        r.status.last_failure.clone().unwrap().http_status,
        Some(429)
    );
    assert_eq!(r.failure, Some("RateLimited"));
    assert!(r.events.iter().all(|e| e.warning));

    // While a valid token is in place, Ready stays true and Degraded says why.
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    let base = plan(&o).baseline;
    let r = status_after(
        &pc,
        &base,
        Outcome::Failed {
            plan: &p,
            error: &unavailable(),
            chain_end: ChainEnd::Intact,
        },
        now(),
        0,
    );
    assert_eq!(ready(&r).0, "True");
    assert_eq!(degraded(&r), ("True".into(), "ProviderUnavailable".into()));
}

#[test]
fn chain_ends_say_what_follows() {
    let pc = retently();
    let p = refresh_plan(&pc, "rt");
    let base = plan(&observed(&pc)).baseline;
    let r = status_after(
        &pc,
        &base,
        Outcome::Failed {
            plan: &p,
            error: &invalid_grant(),
            chain_end: ChainEnd::NeedsReauthorization,
        },
        now(),
        0,
    );
    assert_eq!(degraded(&r).1, Reason::ReauthorizationRequired.reason());
    assert_eq!(r.status.next_refresh_at, None);
    assert_eq!(r.requeue, None, "only a person can continue");

    let pc = reltio();
    let p = refresh_plan(&pc, "rt");
    let r = status_after(
        &pc,
        &base,
        Outcome::Failed {
            plan: &p,
            error: &invalid_grant(),
            chain_end: ChainEnd::FallBackToPrimary,
        },
        now(),
        0,
    );
    assert_eq!(
        r.requeue,
        Some(MIN_INTERVAL),
        "the primary grant follows at once"
    );
}

#[test]
fn blocked_rechecks_back_off_and_a_valid_token_keeps_ready() {
    let pc = reltio();
    let mut o = observed(&pc);
    o.target = Slot::Foreign;
    let planned = plan(&o);
    let Step::Blocked(b) = &planned.step else {
        panic!()
    };
    let delays: Vec<_> = (0..12)
        .map(|n| {
            status_after(&pc, &planned.baseline, Outcome::Blocked(b), now(), n)
                .requeue
                .unwrap()
        })
        .collect();
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert!(delays[0] < Duration::from_secs(5));
    assert!(*delays.last().unwrap() >= BACKOFF_CAP / 2 && *delays.last().unwrap() <= BACKOFF_CAP);
    let r = status_after(&pc, &planned.baseline, Outcome::Blocked(b), now(), 0);
    assert!(r.backing_off);
    assert_eq!(
        ready(&r),
        ("False".into(), Reason::TargetConflict.reason().into())
    );

    let mut suspended = reltio();
    suspended.spec.suspend = Some(true);
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&suspended);
    o.target = target_with(&suspended, &t);
    let planned = plan(&o);
    let Step::Blocked(b) = &planned.step else {
        panic!()
    };
    let r = status_after(&suspended, &planned.baseline, Outcome::Blocked(b), now(), 0);
    assert_eq!(ready(&r).0, "True");
    assert_eq!(
        degraded(&r),
        ("False".into(), Reason::Suspended.reason().into())
    );
    assert!(!r.backing_off);
    assert_eq!(r.requeue, Some(requeue_delay(now(), t.expires_at)));
    assert_eq!(r.status.last_refresh_request, None);
}

#[test]
fn a_refresh_request_is_recorded_as_seen_while_suspended() {
    let mut suspended = reltio();
    suspended.spec.suspend = Some(true);
    suspended
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(api::REFRESH_ANNOTATION.into(), "n1".into());
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&suspended);
    o.target = target_with(&suspended, &t);
    let planned = plan(&o);
    let Step::Blocked(b) = &planned.step else {
        panic!()
    };
    assert_eq!(b.reason(), Reason::Suspended);
    let r = status_after(&suspended, &planned.baseline, Outcome::Blocked(b), now(), 0);
    // Seen (so `refresh --wait` and anyone watching learn it was handled), and nothing
    // else changes: no token was requested.
    assert_eq!(r.status.last_refresh_request.as_deref(), Some("n1"));
    assert_eq!(
        degraded(&r),
        ("False".into(), Reason::Suspended.reason().into())
    );
    assert_eq!(ready(&r).0, "True");
    // Another Blocked reason does not consume the request: it is acted on once unblocked.
    let mut not_found = suspended.clone();
    not_found.spec.suspend = None;
    let mut o = observed(&not_found);
    o.target = target_with(&not_found, &t);
    o.credentials = CredentialsView::NotFound;
    let planned = plan(&o);
    let Step::Blocked(b) = &planned.step else {
        panic!()
    };
    let r = status_after(&not_found, &planned.baseline, Outcome::Blocked(b), now(), 0);
    assert_eq!(r.status.last_refresh_request, None);
}

#[test]
fn a_token_not_stored_is_retried_with_backoff_or_held() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    let base = plan(&observed(&pc)).baseline;
    let write = StoreFailure {
        reason: Reason::SecretWriteFailed,
        message: "quota".into(),
        retry: true,
    };
    let r = status_after(
        &pc,
        &base,
        Outcome::NotStored {
            plan: &p,
            failure: &write,
        },
        now(),
        0,
    );
    assert_eq!(degraded(&r).1, "SecretWriteFailed");
    assert!(r.requeue.unwrap() >= MIN_INTERVAL && r.requeue.unwrap() <= BACKOFF_BASE);
    assert!(r.status.next_refresh_at.is_some());

    let template = StoreFailure {
        reason: Reason::TemplateFailed,
        message: "bad".into(),
        retry: false,
    };
    let r = status_after(
        &pc,
        &base,
        Outcome::NotStored {
            plan: &p,
            failure: &template,
        },
        now(),
        0,
    );
    assert_eq!(r.requeue, None);
    assert_eq!(r.status.next_refresh_at, None);
}

#[test]
fn an_idle_reconcile_changes_nothing() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(600), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    o.state = stored(&pc, None);
    let first = plan(&o);
    let Step::Wait(when) = first.step else {
        panic!()
    };
    let r = status_after(&pc, &first.baseline, Outcome::Wait(when), now(), 0);
    let mut settled = pc.clone();
    settled.status = Some(r.status.clone());
    let mut o = observed(&settled);
    o.target = target_with(&pc, &t);
    o.state = stored(&pc, None);
    o.now = now() + SignedDuration::from_secs(30);
    let again = plan(&o);
    let Step::Wait(when2) = again.step else {
        panic!()
    };
    assert_eq!(
        when, when2,
        "jitter is derived from the token, not drawn anew"
    );
    let r2 = status_after(&settled, &again.baseline, Outcome::Wait(when2), o.now, 0);
    assert_eq!(r2.status, r.status);
    assert!(r2.events.is_empty());
}

#[test]
fn far_future_and_past_times_do_not_overflow() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    let base = plan(&observed(&pc)).baseline;
    for expires in [Timestamp::MAX, at("9999-12-30T00:00:00Z"), Timestamp::MIN] {
        let t = IssuedToken {
            expires_at: expires,
            ..token("far", now(), 60)
        };
        let r = status_after(
            &pc,
            &base,
            Outcome::Issued {
                plan: &p,
                token: &t,
            },
            now(),
            0,
        );
        let requeue = r.requeue.unwrap();
        assert!(
            (MIN_INTERVAL..=MAX_REQUEUE).contains(&requeue),
            "{requeue:?}"
        );
    }
    let huge = FetchError::RateLimited {
        retry_after: Some(Duration::from_secs(u64::MAX)),
        words: String::new(),
    };
    let r = status_after(
        &pc,
        &base,
        Outcome::Failed {
            plan: &p,
            error: &huge,
            chain_end: ChainEnd::Intact,
        },
        now(),
        u32::MAX,
    );
    assert_eq!(r.requeue, Some(status::MAX_RETRY_AFTER));
    let failure = conditions::get(&r.status.conditions, ConditionType::Degraded).unwrap();
    assert!(
        failure.message.contains("capped at 3600s"),
        "{}",
        failure.message
    );
}

#[test]
fn a_capped_lifetime_is_visible_in_the_status() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    let base = plan(&observed(&pc)).baseline;
    let t = IssuedToken {
        lifetime_capped_from: Some(u64::MAX),
        ..token("long", now(), 3600)
    };
    let r = status_after(
        &pc,
        &base,
        Outcome::Issued {
            plan: &p,
            token: &t,
        },
        now(),
        0,
    );
    let ready = conditions::get(&r.status.conditions, ConditionType::Ready).unwrap();
    assert!(
        ready.message.contains("capped at 3600s"),
        "{}",
        ready.message
    );
}

#[test]
fn a_zero_lifetime_warns_and_is_not_requested_again_at_once() {
    let pc = reltio();
    let p = rotation_plan(&observed(&pc));
    let base = plan(&observed(&pc)).baseline;
    let zero = token("zero", now(), 0);
    let r = status_after(
        &pc,
        &base,
        Outcome::Issued {
            plan: &p,
            token: &zero,
        },
        now(),
        0,
    );
    let warning = conditions::get(&r.status.conditions, ConditionType::ShortLifetime).unwrap();
    assert_eq!(warning.status, "True");
    assert!(
        warning.message.contains("spec.refresh.minimumMargin")
            && warning.message.contains("lives 0s")
    );
    assert!(
        r.events
            .iter()
            .any(|e| e.warning && e.reason == Reason::LifetimeShorterThanMargin.reason())
    );
    assert_eq!(r.requeue, Some(SHORT_LIFETIME_FLOOR));

    // The token in the target expired at once; the next reconciles wait for its renewal time.
    let mut pc2 = pc.clone();
    pc2.status = Some(r.status.clone());
    let mut o = observed(&pc2);
    o.target = target_with(&pc2, &zero);
    o.state = stored(&pc2, None);
    o.now = now() + jiff::SignedDuration::from_secs(1);
    let Step::Wait(when) = plan(&o).step else {
        panic!("expected Wait")
    };
    assert_eq!(when, now() + jiff::SignedDuration::from_secs(30));
    o.now = when;
    assert!(matches!(plan(&o).step, Step::Rotate(_)));

    // A sane lifetime clears the warning.
    let good = token("good", now(), 3600);
    let r2 = status_after(
        &pc2,
        &plan(&observed(&pc2)).baseline,
        Outcome::Issued {
            plan: &p,
            token: &good,
        },
        now(),
        0,
    );
    let warning = conditions::get(&r2.status.conditions, ConditionType::ShortLifetime).unwrap();
    assert_eq!(warning.status, "False");
}

// ---- leader election: what the lease covers ----

fn lease_cap(at_most_s: u64) -> TimeoutCap {
    TimeoutCap {
        at_most: Duration::from_secs(at_most_s),
        lease_duration: Duration::from_secs(6),
        renew_margin: Duration::from_secs(2),
    }
}

fn condition(r: &Report, type_: ConditionType) -> Option<(String, String)> {
    conditions::get(&r.status.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

#[test]
fn a_timeout_the_lease_cannot_cover_is_capped_and_said() {
    // A 6 s lease covers 1 s requests; the default timeout is 30 s.
    let pc = reltio();
    let mut o = observed(&pc);
    o.timeout_cap = Some(lease_cap(1));
    let planned = plan(&o);
    let Step::Rotate(p) = &planned.step else {
        panic!()
    };
    assert_eq!(p.config.limits.overall_timeout, Duration::from_secs(1));
    assert_eq!(
        p.timeout_capped.map(|c| c.asked),
        Some(Duration::from_secs(30))
    );
    // The request is the same one: the cap changes no digest, so nothing becomes due.
    assert_eq!(p.inputs, rotation_plan(&observed(&pc)).inputs);
    let t = token("tok", now(), 3600);
    let r = status_after(
        &pc,
        &planned.baseline,
        Outcome::Issued { plan: p, token: &t },
        now(),
        0,
    );
    assert_eq!(
        condition(&r, ConditionType::TimeoutCapped),
        Some(("True".into(), Reason::LeaseTooShort.reason().into()))
    );
    let message = &conditions::get(&r.status.conditions, ConditionType::TimeoutCapped)
        .unwrap()
        .message;
    for part in [
        "1s",
        "30s",
        "--lease-duration-seconds 6",
        "--lease-renew-margin-seconds 2",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(
        r.events
            .iter()
            .any(|e| e.warning && e.reason == Reason::LeaseTooShort.reason()),
        "{:?}",
        r.events
    );
    // A failed request is capped and said alike.
    let r = status_after(
        &pc,
        &planned.baseline,
        Outcome::Failed {
            plan: p,
            error: &unavailable(),
            chain_end: ChainEnd::Intact,
        },
        now(),
        0,
    );
    assert_eq!(
        condition(&r, ConditionType::TimeoutCapped).map(|c| c.0),
        Some("True".into())
    );

    // A cap above the timeout changes nothing, and no condition appears.
    let mut o = observed(&pc);
    o.timeout_cap = Some(lease_cap(31));
    let planned = plan(&o);
    let Step::Rotate(p) = &planned.step else {
        panic!()
    };
    assert_eq!(p.config.limits.overall_timeout, Duration::from_secs(30));
    assert_eq!(p.timeout_capped, None);
    let r = status_after(
        &pc,
        &planned.baseline,
        Outcome::Issued { plan: p, token: &t },
        now(),
        0,
    );
    assert_eq!(condition(&r, ConditionType::TimeoutCapped), None);

    // Capped before, not any more (the operator restarted with a longer lease): said too.
    let mut before = pc.clone();
    let mut capped = observed(&pc);
    capped.timeout_cap = Some(lease_cap(1));
    let planned = plan(&capped);
    let Step::Rotate(p) = &planned.step else {
        panic!()
    };
    before.status = Some(
        status_after(
            &pc,
            &planned.baseline,
            Outcome::Issued { plan: p, token: &t },
            now(),
            0,
        )
        .status,
    );
    let planned = plan(&observed(&before));
    let Step::Rotate(p) = &planned.step else {
        panic!("a refresh is due")
    };
    let t2 = token("tok2", now(), 3600);
    let r = status_after(
        &before,
        &planned.baseline,
        Outcome::Issued {
            plan: p,
            token: &t2,
        },
        now(),
        0,
    );
    assert_eq!(
        condition(&r, ConditionType::TimeoutCapped),
        Some(("False".into(), Reason::TimeoutAsSpecified.reason().into()))
    );
}

#[test]
fn a_request_withheld_for_long_shows_on_the_resource() {
    let pc = reltio();
    let t = token("tok", now() - SignedDuration::from_secs(3500), 3600);
    let mut o = observed(&pc);
    o.target = target_with(&pc, &t);
    let planned = plan(&o);
    assert!(matches!(planned.step, Step::Rotate(_)), "due for renewal");
    let since = now() - SignedDuration::from_secs(90);
    let withheld = || Outcome::Withheld {
        since,
        reason: "LeaseUnconfirmed",
        retry: Duration::from_secs(2),
    };
    let r = status_after(&pc, &planned.baseline, withheld(), now(), 0);
    // The token still works: Ready, and Degraded says why nothing is renewed.
    assert_eq!(
        ready(&r),
        ("True".into(), Reason::TokenIssued.reason().into())
    );
    assert_eq!(degraded(&r), ("True".into(), "LeaseUnconfirmed".into()));
    let message = &conditions::get(&r.status.conditions, ConditionType::Degraded)
        .unwrap()
        .message;
    assert!(message.contains(&since.to_string()), "{message}");
    assert!(
        r.events
            .iter()
            .any(|e| e.warning && e.reason == "LeaseUnconfirmed")
    );
    assert_eq!(r.requeue, Some(Duration::from_secs(2)));
    // Nothing was sent: no failure recorded.
    assert_eq!(r.status.consecutive_failures, None);
    assert!(r.status.last_failure.is_none());
    // The next look, still withheld: the same status (not written again), no new Event.
    let mut again = pc.clone();
    again.status = Some(r.status.clone());
    let mut o = observed(&again);
    o.target = target_with(&again, &t);
    let planned = plan(&o);
    let r2 = status_after(
        &again,
        &planned.baseline,
        withheld(),
        now() + SignedDuration::from_secs(2),
        0,
    );
    assert_eq!(r2.status, r.status);
    assert!(r2.events.is_empty(), "{:?}", r2.events);
    // No token at all: not Ready, for the same reason.
    let r = status_after(&pc, &plan(&observed(&pc)).baseline, withheld(), now(), 0);
    assert_eq!(ready(&r), ("False".into(), "LeaseUnconfirmed".into()));
}

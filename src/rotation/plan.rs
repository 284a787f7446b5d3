//! Plan: from what was observed and the clock, everything that can be known before a token is
//! requested. A token is requested only when its result can be stored; anything else is a
//! `Blocked` step with a reason and a message that names the fix.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use secrecy::SecretString;

use super::decide::{self, Decision, DueReason, Facts, GrantChoice, GrantFacts};
use super::schedule;
use crate::api::resolve::{RenewalPolicy, SpecError, renewal_policy};
use crate::api::{
    ALLOWED_TOKEN_HOSTS_ANNOTATION, AccessTokenStatus, ProviderCredential,
    ProviderCredentialStatus, REFRESH_ANNOTATION, credentials_from_data, credentials_from_spec,
    provider_config, state_secret_name,
};
use crate::conditions::{self, ConditionType, Reason};
use crate::digest;
use crate::provider::{Credentials, GrantRequest, GrantType, IssuedToken, Param, ProviderConfig};
use crate::state::StateData;
use crate::target::{self, ObservedTarget, TargetError};

/// How a Secret the resource relies on was found.
#[derive(Clone, Debug)]
pub enum Slot<T> {
    Absent,
    /// It exists and this resource does not own it: never written.
    Foreign,
    Owned(T),
}

/// The target Secret, as far as planning is concerned.
#[derive(Clone, Debug)]
pub struct TargetView {
    pub resource_version: Option<String>,
    pub secret_type: Option<String>,
    pub token: ObservedTarget,
}

/// The state Secret: the stored refresh token and bookkeeping.
#[derive(Clone, Debug)]
pub struct StateView {
    pub resource_version: Option<String>,
    pub data: StateData,
}

/// The credentials Secret (its data is never formatted: no `Debug`).
#[derive(Clone)]
pub enum CredentialsView {
    Found(BTreeMap<String, Vec<u8>>),
    /// Found, and its owner limited the token hosts it may be sent to (the
    /// `tokenrotator.dev/allowed-token-hosts` annotation).
    Pinned {
        data: BTreeMap<String, Vec<u8>>,
        allowed_hosts: Vec<String>,
    },
    NotFound,
    /// Present without the opt-in label: not read.
    NotLabelled,
}

/// A token that was obtained but could not be written to the target Secret yet. It is written
/// before a new one is requested, so a failing write never costs a token request per retry.
#[derive(Clone, Debug)]
pub struct HeldToken {
    pub token: IssuedToken,
    /// The request digest it was obtained with: a change of inputs makes it unusable.
    pub inputs: String,
    pub refresh_handled: Option<String>,
}

/// The longest token request the operator may make, when leader election bounds it (the lease
/// must outlive every request: see `leader::request_timeout_cap`), and the flags that do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutCap {
    pub at_most: Duration,
    pub lease_duration: Duration,
    pub renew_margin: Duration,
}

/// A request's timeout (spec.tokenEndpoint.timeoutSeconds) shortened to the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CappedTimeout {
    pub asked: Duration,
    pub cap: TimeoutCap,
}

/// Everything a reconcile observed; the input of [`plan`].
pub struct Observed<'a> {
    pub pc: &'a ProviderCredential,
    pub now: Timestamp,
    pub target: Slot<TargetView>,
    pub state: Slot<StateView>,
    pub credentials: CredentialsView,
    pub held: Option<HeldToken>,
    /// What the lease covers, when that is shorter than a request may take.
    pub timeout_cap: Option<TimeoutCap>,
    /// The key of the inputs digest on targets; without one, the digest lives in the state
    /// Secret only (which every resource then has).
    pub inputs_key: Option<&'a digest::InputsKey>,
}

/// The token in the target Secret, while it is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentToken {
    pub expires_at: Timestamp,
    pub issued_at: Timestamp,
    pub fingerprint: String,
}

/// What the status starts from in this reconcile: the stored status with the current
/// generation, corrected by the target Secret (the truth about which token is in use).
#[derive(Clone, Debug)]
pub struct Baseline {
    pub status: ProviderCredentialStatus,
    pub current: Option<CurrentToken>,
}

/// Why no token is requested: the user (or a change) must act first. Its `Display` is the
/// message on the status, naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error(
        "Secret {target} already exists and is not managed by this ProviderCredential; it is left untouched. Choose another spec.target.secretName or delete that Secret"
    )]
    TargetTaken { target: String },
    #[error(
        "Secret {target} has type {actual} but spec.target.type asks for {desired}, and a Secret's type cannot change; delete the Secret (kubectl delete secret {target}) and it will be recreated, or set spec.target.type back to {actual}"
    )]
    TargetTypeChanged {
        target: String,
        actual: String,
        desired: String,
    },
    #[error(
        "Secret {state} (where this resource keeps its refresh token) exists and is not managed by it; rename or delete that Secret"
    )]
    StateSecretTaken { state: String },
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    #[error("spec.suspend is true: no token requests are made")]
    Suspended,
    /// The token could not be rendered into the target Secret: the message seen with the real
    /// token (kept in the status), else a generic one.
    #[error("{0}")]
    TemplateFailed(String),
    #[error(
        "spec.tokenEndpoint.url or the client id changed: the refresh token held was issued to the previous endpoint or client and is never sent to another; obtain a new code from the new provider's consent page and put it in key `{code_key}` of Secret {credentials}"
    )]
    RefreshTokenRebound {
        credentials: String,
        code_key: String,
    },
    #[error(
        "the authorization code in Secret {credentials} was already used and no refresh token is held; obtain a new code from the provider's consent page and put it in key `{code_key}`"
    )]
    CodeSpent {
        credentials: String,
        code_key: String,
    },
    #[error(
        "the owner of credentials Secret {credentials} allows its credentials to go only to {allowed} (annotation {}); spec.tokenEndpoint.url points at {host}. Fix the URL, or ask the Secret's owner to add the host",
        ALLOWED_TOKEN_HOSTS_ANNOTATION
    )]
    TokenHostNotAllowed {
        credentials: String,
        /// The hosts the owner allows, comma-separated.
        allowed: String,
        host: String,
    },
    #[error(
        "credentials Secret {credentials} not found in this namespace; create it with the label tokenrotator.dev/credentials=true"
    )]
    CredentialsNotFound { credentials: String },
    #[error(
        "credentials Secret {credentials} lacks the label tokenrotator.dev/credentials=true; add it (kubectl label secret {credentials} tokenrotator.dev/credentials=true) so the operator may read it"
    )]
    CredentialsNotLabelled { credentials: String },
}

impl Blocked {
    /// The reason on the status.
    pub fn reason(&self) -> Reason {
        match self {
            Blocked::TargetTaken { .. }
            | Blocked::TargetTypeChanged { .. }
            | Blocked::StateSecretTaken { .. } => Reason::TargetConflict,
            Blocked::InvalidSpec(_) => Reason::InvalidSpec,
            Blocked::Suspended => Reason::Suspended,
            Blocked::TemplateFailed(_) => Reason::TemplateFailed,
            Blocked::RefreshTokenRebound { .. } | Blocked::CodeSpent { .. } => {
                Reason::ReauthorizationRequired
            }
            Blocked::TokenHostNotAllowed { .. } => Reason::TokenHostNotAllowed,
            Blocked::CredentialsNotFound { .. } => Reason::CredentialsNotFound,
            Blocked::CredentialsNotLabelled { .. } => Reason::CredentialsNotLabelled,
        }
    }

    /// The message on the status: what is wrong, the field and the fix.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Look again after a backoff, for changes no watch delivers (a foreign Secret removed, a
    /// credentials Secret created without the label); else only on a change.
    pub fn recheck(&self) -> bool {
        match self {
            Blocked::TargetTaken { .. }
            | Blocked::TargetTypeChanged { .. }
            | Blocked::StateSecretTaken { .. }
            | Blocked::CredentialsNotFound { .. }
            | Blocked::CredentialsNotLabelled { .. } => true,
            Blocked::InvalidSpec(_)
            | Blocked::Suspended
            | Blocked::TemplateFailed(_)
            | Blocked::RefreshTokenRebound { .. }
            | Blocked::CodeSpent { .. }
            | Blocked::TokenHostNotAllowed { .. } => false,
        }
    }
}

/// What makes a spec unusable before any Secret is read (the message of `InvalidSpec`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error(transparent)]
    Resolve(#[from] SpecError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "spec.target.secretName `{0}` is not a valid Secret name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    )]
    TargetName(String),
    #[error(
        "spec.target.secretName `{0}` is the name of this resource's state Secret (where it keeps its refresh token); choose another name"
    )]
    TargetNamedLikeState(String),
    #[error(
        "the resource name is too long: its state Secret would be named `{state_name}` ({} characters, at most {}); use a ProviderCredential name of at most {longest_name} characters",
        .state_name.len(),
        MAX_SECRET_NAME
    )]
    NameTooLong {
        state_name: String,
        longest_name: usize,
    },
}

/// Where a Secret is written: created when there is no resourceVersion, else replaced under
/// that resourceVersion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretWrite {
    pub name: String,
    pub resource_version: Option<String>,
}

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// One request to the token endpoint.
    Request(GrantRequest),
    /// A token obtained earlier and not written yet.
    Held(Box<IssuedToken>),
}

/// One rotation, fully decided: what to send and where the result goes.
#[derive(Clone, Debug)]
pub struct Plan {
    pub due: DueReason,
    pub config: ProviderConfig,
    pub policy: RenewalPolicy,
    pub credentials: Credentials,
    pub choice: GrantChoice,
    pub source: TokenSource,
    /// The state this rotation starts from: the chain it may replace.
    pub state: StateData,
    pub state_secret: SecretWrite,
    pub target_secret: SecretWrite,
    pub inputs: String,
    /// `inputs` sealed with the operator's key, for the target (None: no key).
    pub sealed_inputs: Option<String>,
    /// Where a refresh token issued now belongs (endpoint and client).
    pub refresh_binding: String,
    pub seed_hash: Option<String>,
    pub code_hash: Option<String>,
    /// The refresh-annotation value this rotation answers (new, or its predecessor's).
    pub refresh_handled: Option<String>,
    /// A new refresh-annotation value, recorded in the status once acted upon.
    pub refresh_request: Option<String>,
    /// `config`'s timeout was shortened to what the lease covers.
    pub timeout_capped: Option<CappedTimeout>,
}

#[derive(Clone, Debug)]
pub enum Step {
    /// Nothing to do until then.
    Wait(Timestamp),
    /// Credentials were rejected and nothing changed since: do not retry (accounts lock).
    HoldRejected,
    Blocked(Blocked),
    Rotate(Box<Plan>),
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub baseline: Baseline,
    pub step: Step,
    /// The held token can never be used (it expired, or a new one is being requested): drop
    /// it from memory.
    pub discard_held: bool,
}

const MAX_SECRET_NAME: usize = 253;

pub fn plan(o: &Observed<'_>) -> Planned {
    let baseline = baseline(o);
    let step = step(o, &baseline);
    let discard_held = o.held.as_ref().is_some_and(|h| {
        h.token.expires_at <= o.now
            || matches!(&step, Step::Rotate(p) if matches!(p.source, TokenSource::Request(_)))
    });
    Planned {
        baseline,
        step,
        discard_held,
    }
}

fn baseline(o: &Observed<'_>) -> Baseline {
    let mut status = o.pc.status.clone().unwrap_or_default();
    status.observed_generation = o.pc.meta().generation;
    let current = match &o.target {
        Slot::Owned(t) => match (t.token.expires_at, &t.token.fingerprint) {
            (Some(expires_at), Some(fp)) if expires_at > o.now => Some(CurrentToken {
                expires_at,
                issued_at: t.token.issued_at.unwrap_or(o.now),
                fingerprint: fp.clone(),
            }),
            _ => None,
        },
        _ => None,
    };
    match &current {
        None => status.access_token = None,
        // The status lags the target (a crash between the two writes, or a lost status).
        Some(c) if status.access_token.as_ref().map(|a| &a.fingerprint) != Some(&c.fingerprint) => {
            let source = status
                .access_token
                .as_ref()
                .map(|a| a.lifetime_source.clone())
                .unwrap_or_else(|| "unknown".into());
            status.access_token = Some(AccessTokenStatus {
                issued_at: Time(c.issued_at),
                expires_at: Time(c.expires_at),
                fingerprint: c.fingerprint.clone(),
                lifetime_source: source,
                secret_name: o.pc.spec.target.secret_name.clone(),
            });
            status.next_refresh_at = None;
        }
        Some(_) => {}
    }
    Baseline { status, current }
}

fn step(o: &Observed<'_>, base: &Baseline) -> Step {
    match rotation(o, base) {
        Ok(step) => step,
        Err(blocked) => Step::Blocked(blocked),
    }
}

fn rotation(o: &Observed<'_>, base: &Baseline) -> Result<Step, Blocked> {
    let pc = o.pc;
    let spec = &pc.spec;
    let name = pc.name_any();
    let target_name = &spec.target.secret_name;
    let state_name = state_secret_name(&name);

    let target = match &o.target {
        Slot::Foreign => return Err(target_conflict(target_name)),
        Slot::Absent => None,
        Slot::Owned(t) => Some(t),
    };
    let (mut config, policy) = resolve(pc, &state_name)?;
    let timeout_capped = cap_timeout(&mut config, o.timeout_cap);
    if spec.suspend == Some(true) {
        return Err(Blocked::Suspended);
    }
    let desired_type = target::secret_type(&spec.target);
    if let Some(t) = target
        && t.secret_type.as_deref().unwrap_or("Opaque") != desired_type
    {
        return Err(Blocked::TargetTypeChanged {
            target: target_name.clone(),
            actual: t.secret_type.as_deref().unwrap_or("Opaque").into(),
            desired: desired_type.into(),
        });
    }

    let creds_name = spec.credentials.secret_name().unwrap_or_default();
    let mut credentials = match spec.credentials.secret_name() {
        Some(name) => credentials_from_data(
            spec,
            usable_credentials(name, &o.credentials, &config.token_url)?,
        ),
        None => credentials_from_spec(spec),
    };
    let seed = credentials.remove(Param::RefreshToken);

    let state = match &o.state {
        Slot::Foreign => {
            return Err(Blocked::StateSecretTaken { state: state_name });
        }
        Slot::Absent => None,
        Slot::Owned(s) => Some(s),
    };
    let stored = state.map(|s| s.data.clone()).unwrap_or_default();
    if digest::target_settings_match(stored.unrenderable_target.as_deref(), &spec.target) {
        return Err(Blocked::TemplateFailed(template_failure_message(pc)));
    }

    let uid = pc.uid().unwrap_or_default();
    let inputs = digest::request_inputs(&uid, &config, &credentials);
    let refresh_binding = digest::refresh_binding(&uid, &config, &credentials);
    // A refresh token is sent only to the endpoint and client it came from: after a change of
    // either it stays unused (the primary grant, or a new consent, replaces it).
    let stored_refresh_token = stored.refresh_token.as_ref().filter(|_| {
        stored
            .refresh_binding
            .as_ref()
            .is_none_or(|b| *b == refresh_binding)
    });
    let rebound = stored.refresh_token.is_some() && stored_refresh_token.is_none();
    let seed_hash = seed.as_ref().map(|s| digest::secret_value(&uid, s));
    let code_hash = credentials
        .get(Param::Code)
        .map(|c| digest::secret_value(&uid, c));
    let new_seed = config.supports_refresh && seed_hash.is_some() && seed_hash != stored.seed_hash;
    let unspent_code = config.grant == GrantType::AuthorizationCode
        && code_hash.is_some()
        && code_hash != stored.code_hash;
    let observed_target = target.map(|t| &t.token);
    let refresh_request = pc
        .annotations()
        .get(REFRESH_ANNOTATION)
        .filter(|v| Some(*v) != base.status.last_refresh_request.as_ref())
        .filter(|v| Some(*v) != observed_target.and_then(|o| o.refresh_handled.as_ref()))
        .cloned();

    let facts = Facts {
        now: o.now,
        current: base.current.as_ref().map(|c| decide::CurrentToken {
            expires_at: c.expires_at,
            next_refresh_at: planned_refresh(base, c, &policy),
        }),
        last_renewal: observed_target
            .and_then(|t| {
                Some(schedule::next_refresh_at(
                    t.issued_at?,
                    t.expires_at?,
                    &policy,
                    schedule::jitter_for(t.fingerprint.as_deref()?),
                ))
            })
            // Only a short-lived token's floor can legitimately lie ahead; annotations someone
            // edited to a far-off time must not hold the resource.
            .filter(|at| {
                *at <= schedule::add(
                    o.now,
                    SignedDuration::try_from(schedule::SHORT_LIFETIME_FLOOR).unwrap_or_default(),
                )
            }),
        target_up_to_date: digest::target_settings_match(
            observed_target.and_then(|o| o.settings.as_deref()),
            &spec.target,
        ),
        inputs_unchanged: inputs_unchanged(
            &stored,
            observed_target,
            o.inputs_key,
            (&uid, &config, &credentials),
        ) && !new_seed
            && !unspent_code,
        inputs_failed_before: stored.failing_inputs_hash.as_deref() == Some(inputs.as_str()),
        refresh_requested: refresh_request.is_some(),
        retry_not_before: match base.status.consecutive_failures {
            Some(n) if n > 0 => base.status.next_refresh_at.as_ref().map(|t| t.0),
            _ => None,
        },
        rejected_with_same_inputs: digest::request_inputs_match(
            stored.rejected_inputs_hash.as_deref(),
            &uid,
            &config,
            &credentials,
        ),
    };
    let due = match decide::decide(&facts) {
        Decision::WaitUntil(at) => return Ok(Step::Wait(at)),
        Decision::HoldRejected => return Ok(Step::HoldRejected),
        Decision::Fetch(due) => due,
    };

    // The refresh-annotation value this token answers, else the one its predecessor answered.
    let refresh_handled = refresh_request
        .clone()
        .or_else(|| observed_target.and_then(|o| o.refresh_handled.clone()));
    let target_secret = SecretWrite {
        name: target_name.clone(),
        resource_version: target.and_then(|t| t.resource_version.clone()),
    };
    let state_secret = SecretWrite {
        name: state_name,
        resource_version: state.and_then(|s| s.resource_version.clone()),
    };
    let plan = |choice, source| Plan {
        due,
        config: config.clone(),
        policy,
        credentials: credentials.clone(),
        choice,
        source,
        state: stored.clone(),
        state_secret: state_secret.clone(),
        target_secret: target_secret.clone(),
        inputs: inputs.clone(),
        sealed_inputs: o.inputs_key.map(|k| k.seal(&inputs)),
        refresh_binding: refresh_binding.clone(),
        seed_hash: seed_hash.clone(),
        code_hash: code_hash.clone(),
        refresh_handled: refresh_handled.clone(),
        refresh_request: refresh_request.clone(),
        timeout_capped,
    };

    // A token already obtained for these inputs is written instead of asking for another,
    // unless the user asked for a new one.
    if let Some(held) = usable_held(o, &inputs)
        && refresh_request.is_none()
    {
        let mut p = plan(
            GrantChoice::Primary,
            TokenSource::Held(Box::new(held.token.clone())),
        );
        p.refresh_handled = held.refresh_handled.clone().or(p.refresh_handled);
        return Ok(Step::Rotate(Box::new(p)));
    }

    let choice = decide::choose_grant(&GrantFacts {
        primary: config.grant,
        supports_refresh: config.supports_refresh,
        has_stored_refresh_token: stored_refresh_token.is_some(),
        has_new_seed: new_seed,
        has_unspent_code: unspent_code,
    });
    let grant = match (choice, stored_refresh_token, &seed) {
        (GrantChoice::StoredRefreshToken, Some(t), _) => GrantRequest::Refresh(t.clone()),
        (GrantChoice::SeedRefreshToken, _, Some(t)) => GrantRequest::Refresh(t.clone()),
        (GrantChoice::Primary, _, _) => GrantRequest::Primary,
        _ if rebound => {
            return Err(Blocked::RefreshTokenRebound {
                credentials: creds_name.into(),
                code_key: credentials.key_name(Param::Code).to_string(),
            });
        }
        _ => {
            return Err(Blocked::CodeSpent {
                credentials: creds_name.into(),
                code_key: credentials.key_name(Param::Code).to_string(),
            });
        }
    };
    Ok(Step::Rotate(Box::new(plan(
        choice,
        TokenSource::Request(grant),
    ))))
}

/// Whether a target the complete watch of managed Secrets never showed may be taken as absent
/// without a read (the create then meets any Secret someone else made there). Not once the
/// status says the name is taken (TargetConflict: so a conflict costs at most the one token
/// request that found it, whatever restarts follow), nor for a resource that had a token (its
/// target should be in the watch: deleted, or its managed label removed, it is read).
pub fn target_may_be_assumed_absent(status: Option<&ProviderCredentialStatus>) -> bool {
    status.is_none_or(|s| {
        s.access_token.is_none()
            && !s
                .conditions
                .iter()
                .any(|c| c.reason == Reason::TargetConflict.reason())
    })
}

/// The target's name is taken by a Secret this resource does not own.
pub fn target_conflict(target_name: &str) -> Blocked {
    Blocked::TargetTaken {
        target: target_name.into(),
    }
}

/// Whether the token in use was issued with the inputs of now. The state Secret says so when
/// there is one (it is written before the target, and releases before the keyed digest kept
/// the digest only there); else the keyed digest on the target. A digest made with a key since
/// lost or replaced, or with no key at hand, tells nothing: taken as unchanged, so that a lost
/// key never makes every resource request a token at once; a change of credentials made meanwhile is then acted on
/// at the resource's next rotation, which writes a digest with the new key.
fn inputs_unchanged(
    stored: &StateData,
    target: Option<&ObservedTarget>,
    key: Option<&digest::InputsKey>,
    (uid, config, credentials): (&str, &ProviderConfig, &Credentials),
) -> bool {
    if stored.inputs_hash.is_some() {
        return digest::request_inputs_match(
            stored.inputs_hash.as_deref(),
            uid,
            config,
            credentials,
        );
    }
    match (key, target.and_then(|t| t.inputs.as_deref())) {
        (Some(key), Some(sealed)) => {
            let now = digest::request_inputs(uid, config, credentials);
            key.check(sealed, &now) != digest::KeyedInputs::Changed
        }
        // Sealed, and no key to check it with (this build run without one after running with
        // one): it tells nothing either, like a digest under a lost key.
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The spec resolved into the provider model and renewal policy, with every check that needs
/// no Secret: names, templates (rendered with a token-shaped placeholder), labels.
/// Shortens the request's timeout to what the lease covers (it never decides whether a token
/// is due: the request digests leave timeouts out); says what was asked when it did.
fn cap_timeout(config: &mut ProviderConfig, cap: Option<TimeoutCap>) -> Option<CappedTimeout> {
    let cap = cap.filter(|c| c.at_most < config.limits.overall_timeout)?;
    let asked = std::mem::replace(&mut config.limits.overall_timeout, cap.at_most);
    Some(CappedTimeout { asked, cap })
}

fn resolve(
    pc: &ProviderCredential,
    state_name: &str,
) -> Result<(ProviderConfig, RenewalPolicy), InvalidSpec> {
    let spec = &pc.spec;
    let config = provider_config(spec)?;
    let policy = renewal_policy(spec.refresh.as_deref())?;
    target::validate(&spec.target)?;
    if !target::is_dns_subdomain(&spec.target.secret_name) {
        return Err(InvalidSpec::TargetName(spec.target.secret_name.clone()));
    }
    if spec.target.secret_name == state_name {
        return Err(InvalidSpec::TargetNamedLikeState(state_name.into()));
    }
    if state_name.len() > MAX_SECRET_NAME {
        return Err(InvalidSpec::NameTooLong {
            state_name: state_name.into(),
            longest_name: MAX_SECRET_NAME - (state_name.len() - pc.name_any().len()),
        });
    }
    Ok((config, policy))
}

/// The digest of the inputs a request would be sent with, from a credentials Secret's data
/// as it is now: a request that waited for its turn is sent only if this still equals its
/// plan's (the owner may have replaced a leaked secret meanwhile).
pub fn request_inputs_now(
    pc: &ProviderCredential,
    config: &ProviderConfig,
    data: &BTreeMap<String, Vec<u8>>,
) -> String {
    let mut credentials = credentials_from_data(&pc.spec, data);
    credentials.remove(Param::RefreshToken);
    digest::request_inputs(&pc.uid().unwrap_or_default(), config, &credentials)
}

/// The message of the template failure seen with a real token (kept in the status), else a
/// generic one: the state Secret remembers the failure, the status only explains it.
/// The credentials a request may use: only an opted-in Secret's, and only for a token host its
/// owner allows. `token-rotator authorize` applies this same rule before a consent.
pub fn usable_credentials<'v>(
    creds_name: &str,
    view: &'v CredentialsView,
    token_url: &url::Url,
) -> Result<&'v BTreeMap<String, Vec<u8>>, Blocked> {
    match view {
        CredentialsView::Found(data) => Ok(data),
        CredentialsView::Pinned {
            data,
            allowed_hosts,
        } => {
            let host = token_url.host_str().unwrap_or_default();
            if !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return Err(Blocked::TokenHostNotAllowed {
                    credentials: creds_name.into(),
                    allowed: allowed_hosts.join(", "),
                    host: host.into(),
                });
            }
            Ok(data)
        }
        CredentialsView::NotFound => Err(Blocked::CredentialsNotFound {
            credentials: creds_name.into(),
        }),
        CredentialsView::NotLabelled => Err(Blocked::CredentialsNotLabelled {
            credentials: creds_name.into(),
        }),
    }
}

fn template_failure_message(pc: &ProviderCredential) -> String {
    pc.status
        .as_ref()
        .and_then(|s| conditions::get(&s.conditions, ConditionType::Degraded))
        .filter(|c| c.reason == Reason::TemplateFailed.reason())
        .map(|c| c.message.clone())
        .unwrap_or_else(|| {
            "spec.target.template failed with the token the provider issued; fix spec.target.template (no token is requested until it changes)".into()
        })
}

/// A held token is usable while it is valid and was obtained for these very inputs.
fn usable_held<'o>(o: &'o Observed<'_>, inputs: &str) -> Option<&'o HeldToken> {
    o.held
        .as_ref()
        .filter(|h| h.inputs == inputs && h.token.expires_at > o.now)
}

/// The renewal time of the current token: the one planned at issue (jitter included) when the
/// status describes this token, else recomputed (after a lost status).
fn planned_refresh(base: &Baseline, c: &CurrentToken, policy: &RenewalPolicy) -> Timestamp {
    let describes_it = base
        .status
        .access_token
        .as_ref()
        .map(|a| a.fingerprint.as_str())
        == Some(c.fingerprint.as_str());
    match (&base.status.next_refresh_at, describes_it) {
        (Some(t), true) => t.0,
        _ => schedule::next_refresh_at(
            c.issued_at,
            c.expires_at,
            policy,
            schedule::jitter_for(&c.fingerprint),
        ),
    }
}

/// The refresh token a plan sends, if it spends one.
pub fn sent_refresh_token(plan: &Plan) -> Option<&SecretString> {
    match &plan.source {
        TokenSource::Request(GrantRequest::Refresh(t)) => Some(t),
        _ => None,
    }
}

impl<T> Slot<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Slot<U> {
        match self {
            Slot::Absent => Slot::Absent,
            Slot::Foreign => Slot::Foreign,
            Slot::Owned(t) => Slot::Owned(f(t)),
        }
    }
}

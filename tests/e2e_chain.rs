//! The refresh chain end to end: two writers of one state Secret, a SIGTERM in the middle of
//! a rotation, and a minute-long outage of Secret writes. Retently's refresh tokens rotate on
//! every use and a replaced one is refused, so any lost or reused value shows as a refusal.

mod e2e;
mod support;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provider_emulator::{Control, Emulator, Fault, Options, Provider};
use serde_json::json;
use token_rotator::api::ProviderCredential;

use support::REDIRECT_URI;

const NAME: &str = "retently";
const STATE: &str = "retently-rotator-state";

async fn emulator() -> Result<Emulator> {
    token_rotator::install_crypto_provider();
    let emu = Emulator::start(Options::default()).await?;
    // Long-lived tokens: every rotation here is one the test asked for.
    emu.control().set_lifetime(Provider::Retently, 600);
    Ok(emu)
}

async fn retently(env: &Env, emu: &Emulator) -> Result<()> {
    env.create_credentials(
        "creds",
        &support::secret_data(Provider::Retently, emu),
        true,
    )
    .await?;
    env.create_pcred(
        NAME,
        &format!(
            "preset: retently\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\ngrant: {{redirectUri: \"{REDIRECT_URI}\"}}\n",
            emu.token_url(Provider::Retently)
        ),
    )
    .await?;
    Ok(())
}

async fn force_refresh(env: &Env, value: &str) -> Result<()> {
    env.pcreds()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": value}}}),
            ),
        )
        .await?;
    Ok(())
}

fn handled(pc: &ProviderCredential) -> Option<&str> {
    pc.status.as_ref()?.last_refresh_request.as_deref()
}

/// Waits until the request `value` was answered with a token: Ready, and recorded as handled.
async fn refreshed(env: &Env, value: &str) -> Result<ProviderCredential> {
    eventually(
        &format!("refresh {value:?} handled and Ready"),
        CONVERGE,
        || async {
            let pc = env.pcred(NAME).await?;
            let ready = pc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok((ready && handled(&pc) == Some(value)).then_some(pc))
        },
    )
    .await
}

async fn stored_refresh_token(env: &Env) -> Result<Option<String>> {
    stored_refresh_token_of(env, NAME).await
}

async fn stored_refresh_token_of(env: &Env, name: &str) -> Result<Option<String>> {
    Ok(env
        .secret_data(&format!("{name}-rotator-state"))
        .await?
        .and_then(|(_, data)| data.get("refresh_token").cloned()))
}

async fn target_token(env: &Env) -> Result<String> {
    let (_, data) = env.secret_data("token").await?.context("target Secret")?;
    data.get("access_token")
        .cloned()
        .context("access_token key")
}

/// The chain is alive: one more forced refresh succeeds, with nothing refused.
async fn chain_continues(env: &Env, c: &Control, value: &str) -> Result<()> {
    let refused = c.counters(Provider::Retently).stale_refresh_refused;
    force_refresh(env, value).await?;
    let pc = refreshed(env, value).await?;
    ensure!(
        c.counters(Provider::Retently).stale_refresh_refused == refused,
        "the stored refresh token was refused: {:?}",
        pc.status
    );
    ensure!(c.is_valid_access_token(Provider::Retently, &target_token(env).await?));
    Ok(())
}

#[tokio::test]
async fn two_writers_never_lose_the_newer_chain() -> Result<()> {
    const ROUNDS: u32 = 6;
    let env = Env::new("two-writers").await?;
    let emu = emulator().await?;
    let c = emu.control();
    retently(&env, &emu).await?;
    let a = env.start_operator().await?;
    env.wait_condition(NAME, "Ready", "True", None).await?;

    // Two operators without leader election both act on every refresh request, and a slow
    // endpoint makes their requests overlap: the provider rotates the token for one and
    // refuses the other, whose write must never erase the chain the first one stored.
    let mut b = env.start_operator().await?;
    c.set_latency(Provider::Retently, Duration::from_millis(800));
    for round in 1..=ROUNDS {
        let value = format!("race-{round}");
        force_refresh(&env, &value).await?;
        eventually(
            &format!("{value} handled, nothing in flight"),
            CONVERGE,
            || async {
                let pc = env.pcred(NAME).await?;
                Ok((handled(&pc) == Some(value.as_str())
                    && c.refreshes_in_flight(Provider::Retently) == 0)
                    .then_some(()))
            },
        )
        .await?;
    }
    let raced = c.counters(Provider::Retently);
    ensure!(
        raced.stale_refresh_presented > 0,
        "the two operators never raced ({raced:?}); the test proves nothing"
    );
    // Stopped as Kubernetes stops a pod (SIGTERM): a rotation it has in flight is finished and
    // stored. (Killed between the provider's answer and the write, a winner's new refresh
    // token would be lost with it: no writer can prevent that, and it is not this test's
    // subject; the status may already show the round handled by the loser.)
    let stopped = b.terminate(Duration::from_secs(65)).await?;
    ensure!(stopped.success(), "the second operator exited {stopped}");
    c.set_latency(Provider::Retently, Duration::ZERO);

    // Whichever writer lost each race, the stored refresh token is the provider's live one.
    eventually("the state to settle", CONVERGE, || async {
        Ok(stored_refresh_token(&env).await?.map(|_| ()))
    })
    .await?;
    chain_continues(&env, &c, "after-the-race").await?;
    let end = c.counters(Provider::Retently);
    ensure!(
        end.chains_started == 1,
        "the chain restarted: {end:?} (a new authorization would have been needed)"
    );
    let log = a.stop().await?;
    eprintln!(
        "two writers: {ROUNDS} rounds, {} requests, {} stale refresh tokens presented by the loser of a race ({} refused), chain intact; set aside by the CAS in the log: {}",
        end.requests,
        raced.stale_refresh_presented,
        raced.stale_refresh_refused,
        log.matches("another writer stored a newer refresh token")
            .count()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_finishes_the_rotation_in_flight_and_stores_its_refresh_token() -> Result<()> {
    let env = Env::new("sigterm").await?;
    let emu = emulator().await?;
    let c = emu.control();
    retently(&env, &emu).await?;
    let mut op = env.start_operator().await?;
    env.wait_condition(NAME, "Ready", "True", None).await?;
    let before = stored_refresh_token(&env).await?;

    c.set_latency(Provider::Retently, Duration::from_secs(3));
    force_refresh(&env, "during-shutdown").await?;
    eventually("the refresh to reach the provider", CONVERGE, || async {
        Ok((c.refreshes_in_flight(Provider::Retently) == 1).then_some(()))
    })
    .await?;
    // The provider has the old refresh token and is about to replace it.
    let status = op.terminate(Duration::from_secs(65)).await?;
    let log = op.log_text();
    ensure!(status.success(), "exit {status}; log:\n{log}");
    ensure!(log.contains("shutting down"), "log:\n{log}");

    // The answer arrived after SIGTERM and was still stored, written and reported.
    ensure!(c.counters(Provider::Retently).issued == 2);
    let after = stored_refresh_token(&env).await?;
    ensure!(
        after.is_some() && after != before,
        "the new refresh token was not stored"
    );
    let pc = env.pcred(NAME).await?;
    ensure!(
        handled(&pc) == Some("during-shutdown"),
        "the rotation in flight was not reported: {:?}",
        pc.status
    );
    ensure!(c.is_valid_access_token(Provider::Retently, &target_token(&env).await?));

    // The next process continues the chain from the stored token.
    c.set_latency(Provider::Retently, Duration::ZERO);
    let _op = env.start_operator().await?;
    chain_continues(&env, &c, "after-restart").await?;
    ensure!(c.counters(Provider::Retently).stale_refresh_presented == 0);
    Ok(())
}

/// Refuses every write of the state Secret in one namespace, as an API outage of Secret
/// writes would (status patches still work, so the outage can be reported).
async fn refuse_state_writes(env: &Env) -> Result<String> {
    refuse_state_writes_where(env, "true", env.secrets()).await
}

/// Refuses writes of the state Secret for which the CEL expression `who` holds; in force once
/// a dry-run write through `probe` is refused.
async fn refuse_state_writes_where(env: &Env, who: &str, probe: Api<Secret>) -> Result<String> {
    let name = format!("refuse-state-{}", env.name());
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]
            }]},
            "validations": [{
                "expression": format!("!(object.metadata.name == '{STATE}' && ({who}))"),
                "message": "test outage: state Secret writes are refused"
            }]
        }
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": env.name()
            }}}
        }
    }))?;
    let client = env.cp.client();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await?;
    eventually("the outage to begin", CONVERGE, || async {
        Ok(dry_run_touch(&probe).await.is_err().then_some(()))
    })
    .await?;
    Ok(name)
}

async fn dry_run_touch(secrets: &Api<Secret>) -> kube::Result<Secret> {
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let touch = json!({"metadata": {"annotations": {"test/outage": "probe"}}});
    secrets.patch(STATE, &dry, &Patch::Merge(&touch)).await
}

async fn end_outage(env: &Env, name: &str) -> Result<()> {
    let client = env.cp.client();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Api::<ValidatingAdmissionPolicy>::all(client)
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_outage_of_secret_writes_loses_nothing() -> Result<()> {
    let outage = Duration::from_secs(
        std::env::var("CHAIN_OUTAGE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let env = Env::new("outage").await?;
    let emu = emulator().await?;
    let c = emu.control();
    retently(&env, &emu).await?;
    let op = env.start_operator().await?;
    env.wait_condition(NAME, "Ready", "True", None).await?;
    let (token_before, rt_before) = (target_token(&env).await?, stored_refresh_token(&env).await?);
    let requests_before = c.counters(Provider::Retently).requests;

    let policy = refuse_state_writes(&env).await?;
    force_refresh(&env, "in-the-outage").await?;
    // The provider answered with a new refresh token that cannot be stored: held in memory,
    // reported, and no second request.
    env.wait_condition(NAME, "Degraded", "True", Some("SecretWriteFailed"))
        .await?;
    ensure!(c.counters(Provider::Retently).issued == 2);
    tokio::time::sleep(outage).await;
    let during = c.counters(Provider::Retently);
    ensure!(
        during.requests == requests_before + 1,
        "token requests piled up during the outage: {during:?}"
    );
    // The target keeps the token it had, still valid.
    ensure!(target_token(&env).await? == token_before);
    ensure!(c.is_valid_access_token(Provider::Retently, &token_before));
    ensure!(stored_refresh_token(&env).await? == rt_before);

    end_outage(&env, &policy).await?;
    // Stored when the API takes writes again, and the held token is written without asking
    // the provider again.
    let pc = eventually(
        "the held state and token to be stored",
        CONVERGE,
        || async {
            let pc = env.pcred(NAME).await?;
            let ready = pc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    && !s
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Degraded" && c.status == "True")
            });
            Ok((ready && handled(&pc) == Some("in-the-outage")).then_some(pc))
        },
    )
    .await?;
    let after = c.counters(Provider::Retently);
    ensure!(
        after.requests == requests_before + 1,
        "a new token was requested instead of storing the held one: {after:?}"
    );
    ensure!(stored_refresh_token(&env).await? != rt_before);
    let token_after = target_token(&env).await?;
    ensure!(
        token_after != token_before && c.is_valid_access_token(Provider::Retently, &token_after)
    );
    chain_continues(&env, &c, "after-the-outage").await?;
    drop(op);
    eprintln!(
        "outage of state writes for {outage:?}: 1 token request during it, held and stored afterwards; rotations {:?}",
        pc.status.and_then(|s| s.refresh_token).map(|r| r.rotations)
    );
    Ok(())
}

async fn lease_holder(env: &Env, name: &str) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(env.client.clone(), env.name())
        .get_opt(name)
        .await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

fn signal(op: &Operator, name: &str) -> Result<()> {
    let pid = op.pid().context("the operator has exited")?;
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()?;
    ensure!(sent.success(), "kill -{name} {pid} failed");
    Ok(())
}

async fn force_refresh_of(env: &Env, name: &str, value: &str) -> Result<()> {
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

async fn handled_and_ready(env: &Env, names: &[&str], value: &str) -> Result<()> {
    eventually(
        &format!("{names:?} to handle {value:?}"),
        CONVERGE,
        || async {
            for name in names {
                let pc = env.pcred(name).await?;
                let ready = pc.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                if !ready || handled(&pc) != Some(value) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// A leader frozen past its lease (a long pause, a frozen node) and then thawed must not send
/// the token request it had already planned: another replica leads by then. It exits, storing
/// what it holds, and the chains go on with the new leader.
#[tokio::test]
async fn a_frozen_leader_thaws_without_sending_a_token_request() -> Result<()> {
    // Renewed every 4 s; a 2 s request (+2 s skew) may start up to 6 s after a renewal.
    const LEASE_SECONDS: u64 = 10;
    const RESOURCES: [&str; 2] = ["first", "second"];
    let env = Env::new("frozen").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_lifetime(Provider::Reltio, 600);
    c.set_rotating_refresh(true);
    let (lease_name, args) = env.leader_election(LEASE_SECONDS, 6).await?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = tokio::try_join!(
        Operator::start_with_env(&env, &args, &[("POD_NAME", "replica-a")]),
        Operator::start_with_env(&env, &args, &[("POD_NAME", "replica-b")]),
    )?;
    let holder = eventually("a leader", CONVERGE, || lease_holder(&env, &lease_name)).await?;
    let (mut leader, standby) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };

    env.create_credentials("creds", &support::secret_data(Provider::Reltio, &emu), true)
        .await?;
    for name in RESOURCES {
        // One request per second to this host: the second request waits in the queue.
        env.create_pcred(
            name,
            &format!(
                "preset: reltio\ntokenEndpoint: {{url: \"{}\", timeoutSeconds: 2, requestsPerSecond: 1}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: {name}-token}}\n",
                emu.token_url(Provider::Reltio)
            ),
        )
        .await?;
    }
    for name in RESOURCES {
        env.wait_condition(name, "Ready", "True", None).await?;
    }

    // Both are asked to rotate; the first request meets a 429 that pauses the host for 10 s,
    // so the second request is planned and waiting in the queue when the leader freezes.
    c.inject(
        Provider::Reltio,
        Fault::RateLimited {
            retry_after_secs: 10,
        },
        1,
    );
    for name in RESOURCES {
        force_refresh_of(&env, name, "frozen").await?;
    }
    eventually("the 429", CONVERGE, || async {
        Ok((c.counters(Provider::Reltio).rate_limited == 1).then_some(()))
    })
    .await?;
    signal(&leader, "STOP")?;
    let frozen_at = leader.log_text().len();
    eventually("the standby to lead", CONVERGE, || async {
        Ok(lease_holder(&env, &lease_name)
            .await?
            .filter(|h| *h != holder)
            .map(|_| ()))
    })
    .await?;
    handled_and_ready(&env, &RESOURCES, "frozen").await?;

    signal(&leader, "CONT")?;
    let status = tokio::time::timeout(Duration::from_secs(70), leader.wait())
        .await
        .context("the thawed leader did not exit")??;
    let after_thaw = leader.log_text()[frozen_at..].to_string();
    ensure!(!status.success(), "a lost lease exits non-zero: {status}");
    ensure!(
        after_thaw.contains("leadership lost"),
        "log after thawing:\n{after_thaw}"
    );
    ensure!(
        !after_thaw.contains("token request answered"),
        "the thawed leader sent a token request:\n{after_thaw}"
    );
    // The second request was due before the freeze and waited for its turn: either in line
    // (as a name: it is planned afresh by a reconcile, which the closed gate stops) or, once
    // started, at the gate itself. Neither sends anything after the thaw.
    let before_thaw = &leader.log_text()[..frozen_at];
    let withheld = after_thaw.matches("token request withheld").count();
    let waited = before_thaw.contains("the token request waits for its turn");
    ensure!(
        withheld >= 1 || waited,
        "the second request was not kept waiting:\n{after_thaw}"
    );

    // No replaced refresh token was ever presented, and both chains go on.
    for name in RESOURCES {
        force_refresh_of(&env, name, "after-thaw").await?;
    }
    handled_and_ready(&env, &RESOURCES, "after-thaw").await?;
    let counters = c.counters(Provider::Reltio);
    ensure!(
        counters.stale_refresh_presented == 0 && counters.overlapping_refreshes == 0,
        "{counters:?}"
    );
    ensure!(
        counters.chains_started == 2,
        "a chain fell back to the password grant: {counters:?}"
    );
    drop(standby);
    eprintln!(
        "frozen leader: thawed after the standby took over; {withheld} planned token request(s) withheld, none sent; exited with {status}; {counters:?}"
    );
    Ok(())
}

/// A refresh token held in memory for a long time (its write refused) must not overwrite the
/// newer chain another writer stored meanwhile: it is set aside, counted and reported.
#[tokio::test]
async fn a_stale_held_refresh_token_never_overwrites_a_newer_chain() -> Result<()> {
    let env = Env::new("stale-held").await?;
    let emu = emulator().await?;
    let c = emu.control();
    // The second writer reuses the token the first one already replaced: a grace period
    // lets the provider accept it, so both hold a live token and only the order tells.
    c.set_refresh_grace(Provider::Retently, Duration::from_secs(600));
    retently(&env, &emu).await?;
    let a = env.start_operator().await?;
    env.wait_condition(NAME, "Ready", "True", None).await?;
    let original = stored_refresh_token(&env).await?;

    // Writer A (the operator's ServiceAccount) obtains a new refresh token it cannot store.
    let as_operator = Api::<Secret>::namespaced(
        env.cp
            .service_account_client(env.name(), OPERATOR_SA)
            .await?,
        env.name(),
    );
    let policy = refuse_state_writes_where(
        &env,
        "request.userInfo.username.startsWith('system:serviceaccount:')",
        as_operator.clone(),
    )
    .await?;
    force_refresh(&env, "held-by-a").await?;
    env.wait_condition(NAME, "Degraded", "True", Some("SecretWriteFailed"))
        .await?;
    ensure!(c.counters(Provider::Retently).issued == 2);

    // Writer B (another identity, not refused) moves the chain on twice.
    let args = Operator::run_args(env.name());
    let b = Operator::launch(
        env.cp.kubeconfig_path(),
        &format!("{}-b", env.name()),
        &args,
        &[
            ("RUST_LOG", "info,token_rotator=debug"),
            ("POD_NAMESPACE", env.name()),
        ],
    )
    .await?;
    for value in ["by-b-1", "by-b-2"] {
        force_refresh(&env, value).await?;
        refreshed(&env, value).await?;
    }
    let newest = stored_refresh_token(&env).await?;
    ensure!(newest.is_some() && newest != original);
    drop(b);

    // A may write again. Its held token is older than what B stored: it must be set aside.
    end_outage(&env, &policy).await?;
    eventually(
        "writes by the operator to be allowed again",
        CONVERGE,
        || async { Ok(dry_run_touch(&as_operator).await.ok().map(|_| ())) },
    )
    .await?;
    // Any change makes A reconcile at once (instead of after its backoff).
    let reconciled = a.metric("token_rotator_reconciles_total").await?;
    env.pcreds()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"test/poke": "1"}}})),
        )
        .await?;
    eventually("A to reconcile with writes allowed", CONVERGE, || async {
        Ok((a.metric("token_rotator_reconciles_total").await? > reconciled).then_some(()))
    })
    .await?;
    ensure!(
        stored_refresh_token(&env).await? == newest,
        "a held (older) refresh token overwrote the newer chain"
    );
    let discarded = a
        .metric("token_rotator_refresh_tokens_discarded_total")
        .await?;
    ensure!(discarded >= 1.0, "nothing set aside was counted");
    ensure!(env.events_with_reason("ChainSuperseded").await? >= 1);
    chain_continues(&env, &c, "after-a-stored").await?;
    ensure!(c.counters(Provider::Retently).stale_refresh_refused == 0);
    Ok(())
}

/// Whoever can edit a ProviderCredential must not be able to carry its refresh token away:
/// after `spec.tokenEndpoint.url` changes, the new endpoint never receives the old one.
#[tokio::test]
async fn a_refresh_token_never_follows_a_changed_endpoint() -> Result<()> {
    let env = Env::new("moved").await?;
    let (first, second) = (emulator().await?, emulator().await?);
    let spec = |emu: &Emulator| {
        format!(
            "preset: reltio\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: token}}\n",
            emu.token_url(Provider::Reltio)
        )
    };
    env.create_credentials(
        "creds",
        &support::secret_data(Provider::Reltio, &first),
        true,
    )
    .await?;
    env.create_pcred("reltio", &spec(&first)).await?;
    let _op = env.start_operator().await?;
    env.wait_condition("reltio", "Ready", "True", None).await?;
    let held = stored_refresh_token_of(&env, "reltio").await?;
    let held = held.context("Reltio's password grant returns a refresh token")?;
    ensure!(first.control().counters(Provider::Reltio).requests == 1);

    // A changed input: the operator would refresh through the stored token, but that token
    // belongs to the first endpoint.
    env.pcreds()
        .patch(
            "reltio",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"tokenEndpoint": {"url": second.token_url(Provider::Reltio)}}}),
            ),
        )
        .await?;
    eventually("a token from the second endpoint", CONVERGE, || async {
        let data = target_token(&env).await.ok();
        Ok(data
            .filter(|t| second.control().is_valid_access_token(Provider::Reltio, t))
            .map(|_| ()))
    })
    .await?;
    let c = second.control();
    let seen = c.counters(Provider::Reltio);
    ensure!(seen.requests == 1, "{seen:?}");
    let request = c.last_request(Provider::Reltio).context("a request")?;
    ensure!(
        !request.body.contains(&held) && !request.headers.iter().any(|(_, v)| v.contains(&held)),
        "the second endpoint received the first one's refresh token"
    );
    ensure!(
        request
            .form()
            .iter()
            .any(|(k, v)| k == "grant_type" && v == "password"),
        "expected the password grant: {:?}",
        request.form().iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    ensure!(first.control().counters(Provider::Reltio).requests == 1);
    // The new refresh token is the second endpoint's, and the next refresh goes there.
    let rebound = stored_refresh_token_of(&env, "reltio").await?;
    ensure!(rebound.is_some() && rebound.as_deref() != Some(held.as_str()));
    Ok(())
}

/// A lease shorter than a token request's timeout (6 s against the default 30 s) used to
/// withhold every rotation forever with an empty status; the request's timeout is now capped
/// at what the lease covers, the token is issued, and the resource says so (a lease that
/// covers not even a 1 s request is refused at start-up: tests/cli_run.rs).
#[tokio::test]
async fn a_lease_shorter_than_a_request_caps_its_timeout() -> Result<()> {
    let env = Env::new("short-lease").await?;
    let emu = emulator().await?;
    let (lease_name, args) = env.leader_election(6, 2).await?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _leader = Operator::start_with_env(&env, &args, &[("POD_NAME", "replica-a")]).await?;
    eventually("a leader", CONVERGE, || lease_holder(&env, &lease_name)).await?;
    env.create_credentials("creds", &support::secret_data(Provider::Reltio, &emu), true)
        .await?;
    env.create_pcred(
        "short",
        &format!(
            "preset: reltio\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: creds}}}}\ntarget: {{secretName: short-token}}\n",
            emu.token_url(Provider::Reltio)
        ),
    )
    .await?;
    env.wait_condition("short", "Ready", "True", Some("TokenIssued"))
        .await?;
    let pc = env
        .wait_condition("short", "TimeoutCapped", "True", Some("LeaseTooShort"))
        .await?;
    let capped = pc
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "TimeoutCapped")
        .context("TimeoutCapped")?;
    for part in [
        "1s",
        "30s",
        "--lease-duration-seconds 6",
        "--lease-renew-margin-seconds 2",
    ] {
        ensure!(capped.message.contains(part), "{part}: {}", capped.message);
    }
    Ok(())
}

//! The controller end to end: the operator binary, running as a ServiceAccount bound to the
//! chart's RBAC, against the real control plane and the seed providers' emulator. Every
//! assertion goes through the API server (or the emulator), never the operator's internals.

mod e2e;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use e2e::*;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use provider_emulator::{Emulator, Fault, Options, Provider, fixtures};
use serde_json::json;

use support::REDIRECT_URI;

async fn emulator() -> Result<Emulator> {
    token_rotator::install_crypto_provider();
    Ok(Emulator::start(Options::default()).await?)
}

fn preset(p: Provider) -> &'static str {
    support::preset_name(p)
}

/// A spec with fast renewal (half the lifetime, 1 s margin) so rotation is observable.
fn spec(p: Provider, emu: &Emulator, creds: &str, target: &str) -> String {
    let grant = if p == Provider::Retently {
        format!("grant: {{redirectUri: \"{REDIRECT_URI}\"}}\n")
    } else {
        String::new()
    };
    format!(
        "preset: {}\ntokenEndpoint: {{url: \"{}\"}}\ncredentials: {{secretRef: {{name: {creds}}}}}\ntarget: {{secretName: {target}}}\nrefresh: {{renewBeforePercentage: 50, minimumMargin: 1s}}\n{grant}",
        preset(p),
        emu.token_url(p)
    )
}

/// The emulator's default account, as a credentials Secret holds it.
fn credentials(p: Provider, emu: &Emulator) -> BTreeMap<String, Vec<u8>> {
    support::secret_data(p, emu)
}

const ALL: [Provider; 4] = [
    Provider::Rently,
    Provider::Carrental,
    Provider::Retently,
    Provider::Reltio,
];

#[tokio::test]
async fn every_seed_provider_is_ready_and_rotates_before_expiry() -> Result<()> {
    let env = Env::new("rotate").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(true);
    for p in ALL {
        c.set_lifetime(p, 6);
    }
    let _op = env.start_operator().await?;
    let mut sent_credentials = Vec::new();
    for p in ALL {
        let data = credentials(p, &emu);
        sent_credentials.extend(
            data.values()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        );
        env.create_credentials(&format!("{}-creds", preset(p)), &data, true)
            .await?;
        env.create_pcred(
            preset(p),
            &spec(
                p,
                &emu,
                &format!("{}-creds", preset(p)),
                &format!("{}-token", preset(p)),
            ),
        )
        .await?;
    }
    let mut seen_tokens = Vec::new();
    for p in ALL {
        let name = preset(p);
        let pc = env
            .wait_condition(name, "Ready", "True", Some("TokenIssued"))
            .await?;
        let (secret, data) = env
            .secret_data(&format!("{name}-token"))
            .await?
            .expect("target exists");
        ensure!(
            c.is_valid_access_token(p, &data["access_token"]),
            "{name}: the provider accepts the token"
        );
        ensure!(
            data["token_type"].eq_ignore_ascii_case("bearer"),
            "{name}: {:?}",
            data["token_type"]
        );
        let owner = &secret.owner_references()[0];
        ensure!(
            owner.uid == pc.uid().unwrap() && owner.controller == Some(true),
            "{name}: owned"
        );
        ensure!(secret.labels()["app.kubernetes.io/managed-by"] == "token-rotator");
        ensure!(secret.annotations()["tokenrotator.dev/expires-at"] == data["expires_at"]);
        ensure!(
            !data.contains_key("refresh_token"),
            "{name}: refresh tokens never go to the target"
        );
        let status = pc.status.clone().unwrap();
        ensure!(status.observed_generation == pc.metadata.generation);
        let at = status.access_token.clone().unwrap();
        // The Secret describes its own token (status may already be one rotation further).
        ensure!(
            secret.annotations()["tokenrotator.dev/token-fingerprint"]
                == token_rotator::provider::fingerprint(&data["access_token"])
        );
        ensure!(
            at.lifetime_source == "expiresIn",
            "{name}: {}",
            at.lifetime_source
        );
        ensure!(status.next_refresh_at.is_some());

        // Two rotations, each landing before the previous token expired.
        let mut fingerprints = vec![at.fingerprint.clone()];
        let mut previous_expiry = at.expires_at.0;
        while fingerprints.len() < 3 {
            let pc = eventually(
                &format!("{name}: rotation {}", fingerprints.len()),
                CONVERGE,
                || async {
                    let pc = env.pcred(name).await?;
                    Ok(fingerprint(&pc)
                        .filter(|f| !fingerprints.contains(f))
                        .map(|_| pc))
                },
            )
            .await?;
            let at = pc.status.clone().unwrap().access_token.unwrap();
            // Status times have second precision.
            ensure!(
                at.issued_at.0 <= previous_expiry,
                "{name}: renewed at {} after expiry {previous_expiry}",
                at.issued_at.0
            );
            previous_expiry = at.expires_at.0;
            fingerprints.push(at.fingerprint);
        }
        let (_, data) = env.secret_data(&format!("{name}-token")).await?.unwrap();
        seen_tokens.push(data["access_token"].clone());
        if p == Provider::Retently {
            let rt = pc_status_refresh(&env, name).await?;
            ensure!(
                rt.rotations >= 2,
                "retently rotates its refresh token: {rt:?}"
            );
            let (_, state) = env
                .secret_data(&rt.secret_ref.name)
                .await?
                .expect("state Secret");
            ensure!(
                token_rotator::provider::fingerprint(&state["refresh_token"]) == rt.fingerprint
            );
            seen_tokens.push(state["refresh_token"].clone());
        }
    }
    // Nothing a user can read (status, annotations, Events) holds a token or a credential.
    let visible = env.visible_text().await?;
    // Values shorter than 8 characters (Reltio's fixture client secret is "secret") would
    // match ordinary words such as secretRef.
    for value in seen_tokens
        .iter()
        .chain(sent_credentials.iter())
        .filter(|v| v.len() >= 8)
    {
        ensure!(
            !visible.contains(value.as_str()),
            "a secret value is visible: {value:.6}…"
        );
    }
    Ok(())
}

async fn pc_status_refresh(
    env: &Env,
    name: &str,
) -> Result<token_rotator::api::RefreshTokenStatus> {
    let pc = env.pcred(name).await?;
    Ok(*pc
        .status
        .and_then(|s| s.refresh_token)
        .expect("refresh token tracked"))
}

#[tokio::test]
async fn restart_fetches_nothing_and_keeps_the_refresh_chain() -> Result<()> {
    let env = Env::new("restart").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_lifetime(Provider::Retently, 600);
    env.create_credentials("creds", &credentials(Provider::Retently, &emu), true)
        .await?;
    env.create_pcred(
        "retently",
        &spec(Provider::Retently, &emu, "creds", "token"),
    )
    .await?;
    let op = env.start_operator().await?;
    let before = env
        .wait_condition("retently", "Ready", "True", None)
        .await?;
    let issued = c.counters(Provider::Retently).issued;
    ensure!(issued == 1, "one token request for one token, saw {issued}");
    op.stop().await?;

    // A new operator process rebuilds its schedule from the status and Secrets.
    let op = env.start_operator().await?;
    eventually("the restarted operator to reconcile", CONVERGE, || async {
        let m = op.metrics().await?;
        Ok(m.contains("token_rotator_token_expiry_timestamp_seconds{")
            .then_some(()))
    })
    .await?;
    ensure!(
        c.counters(Provider::Retently).requests == 1,
        "a valid token is not fetched again after a restart"
    );
    ensure!(fingerprint(&env.pcred("retently").await?) == fingerprint(&before));

    // The stored refresh token still works with the new process (chain unbroken).
    env.pcreds()
        .patch(
            "retently",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "1"}}})),
        )
        .await?;
    let after = eventually("a rotation after restart", CONVERGE, || async {
        let pc = env.pcred("retently").await?;
        Ok((fingerprint(&pc) != fingerprint(&before) && fingerprint(&pc).is_some()).then_some(pc))
    })
    .await?;
    let rt = after.status.clone().unwrap().refresh_token.unwrap();
    ensure!(rt.rotations == 1, "{rt:?}");
    ensure!(after.status.unwrap().last_refresh_request.as_deref() == Some("1"));
    ensure!(c.counters(Provider::Retently).issued == 2);
    let (_, data) = env.secret_data("token").await?.unwrap();
    ensure!(c.is_valid_access_token(Provider::Retently, &data["access_token"]));
    // The nonce triggers exactly one rotation.
    let m = op.metrics().await?;
    ensure!(
        m.contains("token_rotator_token_requests_total{"),
        "metrics scraped: {m}"
    );
    ensure!(c.counters(Provider::Retently).requests == 2);
    Ok(())
}

#[tokio::test]
async fn changed_credentials_are_fetched_again() -> Result<()> {
    let env = Env::new("creds-change").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(true);
    for p in ALL {
        let name = preset(p);
        env.create_credentials(&format!("{name}-creds"), &credentials(p, &emu), true)
            .await?;
        env.create_pcred(
            name,
            &spec(p, &emu, &format!("{name}-creds"), &format!("{name}-token")),
        )
        .await?;
    }
    let _op = env.start_operator().await?;
    for p in ALL {
        let name = preset(p);
        let first = env.wait_condition(name, "Ready", "True", None).await?;
        // The secret the provider expects changes, and so does the Secret's copy of it.
        let (account, key, new_secret) = match p {
            Provider::Rently => (
                fixtures::RENTLY_CLIENT_ID,
                "client_secret",
                "rotated-rently-42",
            ),
            Provider::Carrental => (fixtures::CARRENTAL_USERNAME, "password", "rotated-car-42"),
            Provider::Retently => (
                fixtures::RETENTLY_CLIENT_ID,
                "client_secret",
                "rotated-retently-42",
            ),
            Provider::Reltio => (fixtures::RELTIO_USERNAME, "password", "rotated-reltio-42"),
        };
        let issued_before = c.counters(p).issued;
        c.set_password(p, account, new_secret);
        env.set_credential(&format!("{name}-creds"), key, new_secret)
            .await?;
        eventually(
            &format!("{name}: a token issued after the change"),
            CONVERGE,
            || async {
                let pc = env.pcred(name).await?;
                Ok((fingerprint(&pc) != fingerprint(&first)).then_some(()))
            },
        )
        .await?;
        let (_, data) = env.secret_data(&format!("{name}-token")).await?.unwrap();
        ensure!(
            c.is_valid_access_token(p, &data["access_token"]),
            "{name}: the new token works"
        );
        ensure!(
            c.counters(p).issued == issued_before + 1,
            "{name}: exactly one new request"
        );
        env.wait_condition(name, "Degraded", "False", None).await?;
    }
    Ok(())
}

#[tokio::test]
async fn missing_or_unlabelled_credentials_are_reported_and_recover() -> Result<()> {
    let env = Env::new("creds-missing").await?;
    let emu = emulator().await?;
    let _op = env.start_operator().await?;
    env.create_pcred("missing", &spec(Provider::Rently, &emu, "later", "token-a"))
        .await?;
    env.wait_condition("missing", "Ready", "False", Some("CredentialsNotFound"))
        .await?;
    env.create_credentials("later", &credentials(Provider::Rently, &emu), true)
        .await?;
    env.wait_condition("missing", "Ready", "True", Some("TokenIssued"))
        .await?;

    env.create_credentials("unlabelled", &credentials(Provider::Carrental, &emu), false)
        .await?;
    env.create_pcred(
        "nolabel",
        &spec(Provider::Carrental, &emu, "unlabelled", "token-b"),
    )
    .await?;
    let pc = env
        .wait_condition("nolabel", "Ready", "False", Some("CredentialsNotLabelled"))
        .await?;
    let msg = &pc
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .clone();
    ensure!(
        msg.contains("tokenrotator.dev/credentials=true"),
        "the message says what to add: {msg}"
    );
    ensure!(emu.control().counters(Provider::Carrental).requests == 0);
    env.secrets()
        .patch(
            "unlabelled",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"tokenrotator.dev/credentials": "true"}}}),
            ),
        )
        .await?;
    env.wait_condition("nolabel", "Ready", "True", Some("TokenIssued"))
        .await?;
    ensure!(
        env.events_with_reason("CredentialsNotLabelled").await? >= 1,
        "an Event on the transition"
    );
    Ok(())
}

#[tokio::test]
async fn rejected_credentials_are_not_retried_until_they_change() -> Result<()> {
    let env = Env::new("rejected").await?;
    let emu = emulator().await?;
    let c = emu.control();
    // The key whose wrong value each provider must reject, and the right value.
    let secret_of = |p: Provider| match p {
        Provider::Rently => ("client_secret", fixtures::RENTLY_CLIENT_SECRET),
        Provider::Carrental => ("password", fixtures::CARRENTAL_PASSWORD),
        Provider::Retently => ("client_secret", fixtures::RETENTLY_CLIENT_SECRET),
        Provider::Reltio => ("password", fixtures::RELTIO_PASSWORD),
    };
    for p in ALL {
        let name = preset(p);
        let mut data = credentials(p, &emu);
        data.insert(secret_of(p).0.into(), b"wrong-secret-1".to_vec());
        env.create_credentials(&format!("{name}-creds"), &data, true)
            .await?;
        env.create_pcred(
            name,
            &spec(p, &emu, &format!("{name}-creds"), &format!("{name}-token")),
        )
        .await?;
    }
    let _op = env.start_operator().await?;
    for p in ALL {
        let name = preset(p);
        let pc = env
            .wait_condition(name, "Ready", "False", Some("CredentialsRejected"))
            .await?;
        let failure = pc.status.clone().unwrap().last_failure.unwrap();
        ensure!(
            !failure.message.contains("wrong-secret-1"),
            "{name}: {}",
            failure.message
        );
        ensure!(
            failure.http_status.is_some_and(|s| (400..500).contains(&s)),
            "{name}: {failure:?}"
        );
        if p == Provider::Carrental {
            ensure!(
                failure.message.contains("Authentication Failed"),
                "provider's words: {}",
                failure.message
            );
        }
    }
    // Poke every resource; a held rejection must not be retried (accounts lock).
    for p in ALL {
        env.pcreds()
            .patch(
                preset(p),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"poke": "1"}}})),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // an observation window, not synchronisation
    for p in ALL {
        ensure!(
            c.counters(p).requests == 1,
            "{}: no retry with the same credentials",
            preset(p)
        );
    }
    for p in ALL {
        let (key, right) = secret_of(p);
        env.set_credential(&format!("{}-creds", preset(p)), key, right)
            .await?;
    }
    for p in ALL {
        env.wait_condition(preset(p), "Ready", "True", Some("TokenIssued"))
            .await?;
        env.wait_condition(preset(p), "Degraded", "False", None)
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn rate_limits_and_outages_degrade_then_recover() -> Result<()> {
    let env = Env::new("faults").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(true);
    for p in ALL {
        let name = preset(p);
        // The very first request of each provider is answered with 429.
        c.inject(
            p,
            Fault::RateLimited {
                retry_after_secs: 2,
            },
            1,
        );
        env.create_credentials(&format!("{name}-creds"), &credentials(p, &emu), true)
            .await?;
        env.create_pcred(
            name,
            &spec(p, &emu, &format!("{name}-creds"), &format!("{name}-token")),
        )
        .await?;
    }
    let _op = env.start_operator().await?;
    for p in ALL {
        let name = preset(p);
        // The 429 may already be over by now: the failure stays on record.
        let pc = env
            .wait_condition(name, "Ready", "True", Some("TokenIssued"))
            .await?;
        let failure = pc.status.clone().unwrap().last_failure.unwrap();
        ensure!(
            failure.reason == "RateLimited" && failure.http_status == Some(429),
            "{name}: {failure:?}"
        );
        env.wait_condition(name, "Degraded", "False", None).await?;
    }
    ensure!(
        env.events_with_reason("RateLimited").await? >= 1,
        "a Warning Event says why"
    );

    // An outage while the token is valid: Ready stays true, Degraded says why, then recovers.
    for p in ALL {
        let name = preset(p);
        let ready = env.pcred(name).await?;
        c.inject(
            p,
            Fault::Status {
                code: 503,
                body: "maintenance window".into(),
            },
            2,
        );
        env.pcreds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "outage"}}}),
                ),
            )
            .await?;
        let degraded = env
            .wait_condition(name, "Degraded", "True", Some("ProviderUnavailable"))
            .await?;
        let status = degraded.status.unwrap();
        ensure!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{name}: the old token still serves"
        );
        ensure!(
            status
                .last_failure
                .unwrap()
                .message
                .contains("maintenance window")
        );
        ensure!(status.consecutive_failures >= Some(1));
        env.wait_condition(name, "Degraded", "False", None).await?;
        let recovered = env.pcred(name).await?;
        ensure!(
            fingerprint(&recovered) != fingerprint(&ready),
            "{name}: a new token after the outage"
        );
        ensure!(recovered.status.unwrap().consecutive_failures.is_none());
    }

    // The same outage again within minutes: its Warning is folded into the first Event (an
    // Event series, the count patched) rather than a second Event.
    let name = preset(Provider::Rently);
    c.inject(
        Provider::Rently,
        Fault::Status {
            code: 503,
            body: "maintenance window".into(),
        },
        2,
    );
    env.pcreds()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "outage-again"}}}),
            ),
        )
        .await?;
    env.wait_condition(name, "Degraded", "True", Some("ProviderUnavailable"))
        .await?;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), env.name());
    eventually(
        "the repeated Warning as an Event series",
        CONVERGE,
        || async {
            let folded = events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("ProviderUnavailable")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                });
            Ok(folded
                .and_then(|e| e.series)
                .filter(|series| series.count >= 2)
                .map(|_| ()))
        },
    )
    .await?;
    env.wait_condition(name, "Degraded", "False", None).await?;
    Ok(())
}

#[tokio::test]
async fn a_secret_it_does_not_own_is_never_touched() -> Result<()> {
    let env = Env::new("conflict").await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Rently, &emu), true)
        .await?;
    let mut theirs = BTreeMap::new();
    theirs.insert("mine".to_string(), b"user data".to_vec());
    env.create_credentials("taken", &theirs, false).await?;
    env.create_pcred("rently", &spec(Provider::Rently, &emu, "creds", "taken"))
        .await?;
    let op = env.start_operator().await?;
    env.wait_condition("rently", "Ready", "False", Some("TargetConflict"))
        .await?;
    let untouched = || async {
        let (secret, data) = env.secret_data("taken").await?.unwrap();
        ensure!(data == BTreeMap::from([("mine".to_string(), "user data".to_string())]));
        ensure!(secret.owner_references().is_empty() && secret.annotations().is_empty());
        Ok(())
    };
    untouched().await?;
    // A name the watch of managed Secrets does not show is not read before the first token
    // request (that read would cost every new resource a 404): the create meets the Secret
    // instead, so the conflict costs the one request that found it, and never another.
    ensure!(
        emu.control().counters(Provider::Rently).requests <= 1,
        "at most one token request for a conflicting target"
    );
    let found_by = emu.control().counters(Provider::Rently).requests;
    drop(op);
    let _op = env.start_operator().await?;
    let patched = env
        .pcreds()
        .patch(
            "rently",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"target": {"labels": {"app": "x"}}}})),
        )
        .await?;
    let generation = patched.metadata.generation;
    eventually(
        "the conflict reported after a restart and a spec change",
        CONVERGE,
        || async {
            let pc = env.pcred("rently").await?;
            let seen = pc.status.as_ref().and_then(|s| s.observed_generation) == generation;
            let conflict = pc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "TargetConflict")
            });
            Ok((seen && conflict).then_some(()))
        },
    )
    .await?;
    untouched().await?;
    ensure!(
        emu.control().counters(Provider::Rently).requests == found_by,
        "no token request after the conflict was reported, across a restart"
    );
    Ok(())
}

/// The previous release: the build named by TOKEN_ROTATOR_PREVIOUS_BIN when given (by hand),
/// else this build without a key of the inputs digests, which writes what the previous
/// release wrote: every resource's inputs digest in its state Secret, none on its target.
async fn previous_release(env: &Env) -> Result<Operator> {
    let kubeconfig = env
        .cp
        .service_account_kubeconfig(env.name(), e2e::OPERATOR_SA)
        .await?;
    let args = Operator::run_args(env.name());
    let vars = [("RUST_LOG", "info,token_rotator=debug")];
    match std::env::var_os("TOKEN_ROTATOR_PREVIOUS_BIN") {
        Some(binary) => {
            let binary = std::path::PathBuf::from(binary);
            Operator::launch_binary(&binary, &kubeconfig, env.name(), &args, &vars).await
        }
        None => Operator::launch(&kubeconfig, env.name(), &args, &vars).await,
    }
}

/// Waits until `op` has reconciled each of `names` (its expiry gauge shows them).
async fn reconciled(op: &Operator, names: &[&str]) -> Result<()> {
    eventually(
        "the operator to reconcile every resource",
        CONVERGE,
        || async {
            let m = op.metrics().await?;
            Ok(names
                .iter()
                .all(|n| {
                    m.lines().any(|l| {
                        l.starts_with("token_rotator_token_expiry_timestamp_seconds{")
                            && l.contains(&format!("name=\"{n}\""))
                    })
                })
                .then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn an_upgrade_over_the_previous_release_fetches_nothing_and_keeps_every_chain() -> Result<()>
{
    let env = Env::new("upgrade").await?;
    let emu = emulator().await?;
    let c = emu.control();
    let (plain, chained) = (Provider::Rently, Provider::Retently);
    for (p, name) in [(plain, "plain"), (chained, "chained")] {
        c.set_lifetime(p, 600);
        env.create_credentials(name, &credentials(p, &emu), true)
            .await?;
        env.create_pcred(name, &spec(p, &emu, name, &format!("{name}-token")))
            .await?;
    }
    let names = ["plain", "chained"];
    let previous = previous_release(&env).await?;
    let mut before = BTreeMap::new();
    for name in names {
        let pc = env.wait_condition(name, "Ready", "True", None).await?;
        before.insert(name, fingerprint(&pc));
        ensure!(
            env.secret_data(&format!("{name}-rotator-state"))
                .await?
                .is_some(),
            "the previous release keeps a state Secret for {name}"
        );
    }
    drop(previous);
    let requests = |p| c.counters(p).requests;
    let asked = (requests(plain), requests(chained));
    ensure!(asked == (1, 1), "{asked:?}");

    // Upgraded: nothing still valid is fetched again.
    let op = env.start_operator().await?;
    reconciled(&op, &names).await?;
    ensure!(
        (requests(plain), requests(chained)) == asked,
        "no token request at the upgrade"
    );
    for name in names {
        ensure!(fingerprint(&env.pcred(name).await?) == before[name]);
    }

    // The next rotation moves the digest onto the target: the state Secret that held only it
    // goes; the refresh chain stays whole.
    for name in names {
        env.pcreds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"tokenrotator.dev/refresh": "1"}}}),
                ),
            )
            .await?;
    }
    for name in names {
        eventually("a rotation after the upgrade", CONVERGE, || async {
            let pc = env.pcred(name).await?;
            Ok((fingerprint(&pc).is_some() && fingerprint(&pc) != before[name]).then_some(()))
        })
        .await?;
    }
    eventually(
        "the plain resource's state Secret removed",
        CONVERGE,
        || async {
            Ok(env
                .secret_data("plain-rotator-state")
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;
    let (target, _) = env
        .secret_data("plain-token")
        .await?
        .context("plain target")?;
    ensure!(
        target
            .annotations()
            .get("tokenrotator.dev/inputs-digest")
            .is_some_and(|d| d.contains(':')),
        "the target carries the keyed inputs digest: {:?}",
        target.annotations()
    );
    let (_, state) = env
        .secret_data("chained-rotator-state")
        .await?
        .context("the refresh token's state Secret stays")?;
    ensure!(state.contains_key("refresh_token"));
    let chained_pc = env.pcred("chained").await?;
    let rt = chained_pc
        .status
        .and_then(|s| s.refresh_token)
        .context("refresh token status")?;
    ensure!(
        rt.rotations == 1,
        "the chain went on from the stored refresh token: {rt:?}"
    );
    ensure!((requests(plain), requests(chained)) == (2, 2));
    drop(op);

    // The key lost (its Secret deleted): a new one is made, and still nothing is fetched.
    env.secrets()
        .delete(
            token_rotator::inputs_key::DEFAULT_SECRET_NAME,
            &DeleteParams::default(),
        )
        .await?;
    let op = env.start_operator().await?;
    reconciled(&op, &names).await?;
    ensure!(
        env.secret_data(token_rotator::inputs_key::DEFAULT_SECRET_NAME)
            .await?
            .is_some(),
        "a new key is made"
    );
    ensure!(
        (requests(plain), requests(chained)) == (2, 2),
        "no token request after the key was lost"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_the_resource_collects_what_it_created() -> Result<()> {
    let env = Env::new("gc").await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Retently, &emu), true)
        .await?;
    env.create_pcred(
        "retently",
        &spec(Provider::Retently, &emu, "creds", "token"),
    )
    .await?;
    let op = env.start_operator().await?;
    let pc = env
        .wait_condition("retently", "Ready", "True", None)
        .await?;
    let state = pc.status.unwrap().refresh_token.unwrap().secret_ref.name;
    ensure!(env.secret_data(&state).await?.is_some());
    env.pcreds()
        .delete("retently", &DeleteParams::default())
        .await?;
    eventually(
        "garbage collection of the target and state Secrets",
        CONVERGE,
        || async {
            let gone = env.secret_data("token").await?.is_none()
                && env.secret_data(&state).await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;
    ensure!(
        env.secret_data("creds").await?.is_some(),
        "the user's credentials stay"
    );
    eventually(
        "the deleted resource's metric series to go",
        CONVERGE,
        || async {
            let m = op.metrics().await?;
            Ok((!m.contains("token_rotator_token_expiry_timestamp_seconds{")).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn same_token_until_expiry_is_not_polled() -> Result<()> {
    let env = Env::new("same-token").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(false);
    c.set_lifetime(Provider::Reltio, 6);
    env.create_credentials("creds", &credentials(Provider::Reltio, &emu), true)
        .await?;
    env.create_pcred("reltio", &spec(Provider::Reltio, &emu, "creds", "token"))
        .await?;
    let _op = env.start_operator().await?;
    let first = env.wait_condition("reltio", "Ready", "True", None).await?;
    let mut seen = BTreeSet::new();
    seen.insert(fingerprint(&first));
    eventually("a new token after the first expired", CONVERGE, || async {
        let pc = env.pcred("reltio").await?;
        Ok((!seen.contains(&fingerprint(&pc))).then_some(()))
    })
    .await?;
    // First token, one early refresh answered with the same token, then a new one at expiry.
    let requests = c.counters(Provider::Reltio).requests;
    ensure!(
        requests <= 4,
        "asked again at expiry, not polled: {requests} requests"
    );
    Ok(())
}

#[tokio::test]
async fn without_the_finalizers_permission_no_owned_secret_can_be_created() -> Result<()> {
    let env = Env::new("rbac").await?;
    env.bind_operator_rbac(Some("providercredentials/finalizers"))
        .await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Rently, &emu), true)
        .await?;
    env.create_pcred("rently", &spec(Provider::Rently, &emu, "creds", "token"))
        .await?;
    let op = env.start_operator().await?;
    // In the short form every API error takes (code and reason, never the message).
    eventually("the denied write to show in the log", CONVERGE, || async {
        Ok(op.log_text().contains("403 Forbidden").then_some(()))
    })
    .await?;
    ensure!(
        env.secret_data("token").await?.is_none(),
        "OwnerReferencesPermissionEnforcement denied it"
    );
    Ok(())
}

/// Name and resourceVersion of each object, leaving out names ending in `skip_suffix`.
async fn resource_versions<K>(
    api: &kube::Api<K>,
    skip_suffix: &str,
) -> Result<Vec<(String, Option<String>)>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|o| !o.name_any().ends_with(skip_suffix))
        .map(|o| (o.name_any(), o.resource_version()))
        .collect())
}

/// Reads `token_rotator_reconciles_total` from the operator.
async fn reconciles(op: &Operator) -> Result<u64> {
    let metrics = op.metrics().await?;
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix("token_rotator_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn between_rotations_nothing_is_written_or_requested() -> Result<()> {
    let env = Env::new("idle").await?;
    let emu = emulator().await?;
    for p in [Provider::Rently, Provider::Retently] {
        env.create_credentials(&format!("{}-creds", preset(p)), &credentials(p, &emu), true)
            .await?;
        env.create_pcred(
            preset(p),
            &spec(
                p,
                &emu,
                &format!("{}-creds", preset(p)),
                &format!("{}-token", preset(p)),
            ),
        )
        .await?;
    }
    let op = env.start_operator().await?;
    let mut versions = Vec::new();
    for p in [Provider::Rently, Provider::Retently] {
        let pc = env.wait_condition(preset(p), "Ready", "True", None).await?;
        versions.push(pc.resource_version());
    }
    // Let the reconciles caused by the operator's own writes settle.
    let settled = eventually("reconciles to settle", CONVERGE, || async {
        let before = reconciles(&op).await?;
        tokio::time::sleep(Duration::from_secs(1)).await; // a quiet window to compare against
        Ok((reconciles(&op).await? == before).then_some(before))
    })
    .await?;
    let secrets_before = resource_versions(&env.secrets(), "-creds").await?;
    let requests_before = emu.control().counters(Provider::Rently).requests
        + emu.control().counters(Provider::Retently).requests;
    // Touch the credentials Secrets' metadata (nothing the operator reads: no reconcile) and
    // the resources' (each touch triggers a reconcile that must decide "nothing to do").
    let touch = json!({"metadata": {"annotations": {"touched": "yes"}}});
    // The resources as touched: a status write after that would be a new version.
    let mut pcs_touched = Vec::new();
    for p in [Provider::Rently, Provider::Retently] {
        env.secrets()
            .patch(
                &format!("{}-creds", preset(p)),
                &PatchParams::default(),
                &Patch::Merge(&touch),
            )
            .await?;
        let touched = env
            .pcreds()
            .patch(preset(p), &PatchParams::default(), &Patch::Merge(&touch))
            .await?;
        pcs_touched.push((touched.name_any(), touched.resource_version()));
    }
    pcs_touched.sort();
    eventually("the touches to be reconciled", CONVERGE, || async {
        Ok((reconciles(&op).await? >= settled + 2).then_some(()))
    })
    .await?;
    let secrets_after = resource_versions(&env.secrets(), "-creds").await?;
    let pcs_after = resource_versions(&env.pcreds(), "-").await?;
    let requests_after = emu.control().counters(Provider::Rently).requests
        + emu.control().counters(Provider::Retently).requests;
    ensure!(
        pcs_after == pcs_touched,
        "no status writes: {pcs_touched:?} → {pcs_after:?}"
    );
    let managed_before = secrets_before;
    ensure!(
        secrets_after == managed_before,
        "no Secret writes: {managed_before:?} → {secrets_after:?}"
    );
    ensure!(
        requests_after == requests_before,
        "no token requests between rotations"
    );
    ensure!(versions.len() == 2);
    Ok(())
}

/// Regressions: each of these was found only after a token was requested, and the operator
/// then requested a token every few seconds, forever. Now the plan finds them first (or, for a
/// template that fails only with the real token, holds after one request).
#[tokio::test]
async fn what_can_only_fail_after_a_fetch_is_checked_before_it() -> Result<()> {
    let env = Env::new("prefetch").await?;
    let emu = emulator().await?;
    for p in [Provider::Rently, Provider::Carrental, Provider::Reltio] {
        env.create_credentials(&format!("{}-creds", preset(p)), &credentials(p, &emu), true)
            .await?;
    }
    let op = env.start_operator().await?;

    // 1. The target's type changes in the spec: a Secret's type is immutable.
    env.create_pcred(
        "typed",
        &spec(Provider::Rently, &emu, "rently-creds", "typed-token"),
    )
    .await?;
    env.wait_condition("typed", "Ready", "True", None).await?;
    env.pcreds()
        .patch(
            "typed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {"type": "kubernetes.io/basic-auth", "template": {"username": "u", "password": "{{ access_token }}"}}}})),
        )
        .await?;
    let pc = env
        .wait_condition("typed", "Degraded", "True", Some("TargetConflict"))
        .await?;
    let message = condition_message(&pc, "Degraded");
    ensure!(
        message.contains("kubectl delete secret typed-token"),
        "the message names the fix: {message}"
    );
    ensure!(
        condition_message(&pc, "Ready").contains("token valid until"),
        "the valid token stays Ready"
    );

    // 2. The target is named like the resource's own state Secret: refused at admission (the
    // plan refuses it too, for objects admitted before the rule; unit-tested).
    let clash = env
        .create_pcred(
            "clash",
            &spec(
                Provider::Reltio,
                &emu,
                "reltio-creds",
                "clash-rotator-state",
            ),
        )
        .await;
    let refusal = format!("{:#}", clash.expect_err("admission refuses it"));
    ensure!(
        refusal.contains("spec.target.secretName must differ from <name>-rotator-state"),
        "{refusal}"
    );

    // 3. A template that renders with a token-shaped placeholder but not with the real
    // (short, UUID-shaped) token.
    let template = format!(
        "{}target: {{secretName: tpl-token, template: {{k: \"{{% if access_token|length < 100 %}}{{{{ access_token|int }}}}{{% endif %}}\"}}}}\n",
        spec(Provider::Reltio, &emu, "reltio-creds", "unused")
            .replace("target: {secretName: unused}\n", "")
    );
    env.create_pcred("tpl", &template).await?;
    let pc = env
        .wait_condition("tpl", "Degraded", "True", Some("TemplateFailed"))
        .await?;
    ensure!(condition_message(&pc, "Degraded").contains("spec.target.template"));

    // Touch all three: every touch is a reconcile that must not request a token.
    let requests = |emu: &Emulator| {
        [Provider::Rently, Provider::Carrental, Provider::Reltio]
            .map(|p| emu.control().counters(p).requests)
    };
    let before = requests(&emu);
    ensure!(
        before == [1, 0, 1],
        "one token each for the type change and the template, none for the clash: {before:?}"
    );
    let seen = reconciles(&op).await?;
    for (round, name) in ["typed", "tpl", "typed", "tpl", "typed", "tpl"]
        .into_iter()
        .enumerate()
    {
        env.pcreds()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touched": round.to_string()}}})),
            )
            .await?;
    }
    eventually("the touches to be reconciled", CONVERGE, || async {
        Ok((reconciles(&op).await? >= seen + 6).then_some(()))
    })
    .await?;
    ensure!(
        requests(&emu) == before,
        "no token requests: {:?}",
        requests(&emu)
    );
    ensure!(env.secret_data("tpl-token").await?.is_none());
    Ok(())
}

fn condition_message(pc: &token_rotator::api::ProviderCredential, type_: &str) -> String {
    pc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Last line of defence: a bug (a panic) while handling one resource becomes a condition on
/// it and a metric; the process and every other resource carry on.
#[tokio::test]
async fn a_panic_in_one_reconcile_is_contained() -> Result<()> {
    let env = Env::new("panic").await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Rently, &emu), true)
        .await?;
    let mut op = env.start_operator().await?;
    env.create_pcred(
        "buggy",
        &spec(Provider::Rently, &emu, "creds", "buggy-token"),
    )
    .await?;
    env.pcreds()
        .patch(
            "buggy",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tokenrotator.dev/test-panic": "yes"}}}),
            ),
        )
        .await?;
    let pc = env
        .wait_condition("buggy", "Degraded", "True", Some("InternalError"))
        .await?;
    ensure!(condition_message(&pc, "Degraded").contains("Other resources are not affected"));
    env.create_pcred("fine", &spec(Provider::Rently, &emu, "creds", "fine-token"))
        .await?;
    env.wait_condition("fine", "Ready", "True", Some("TokenIssued"))
        .await?;
    ensure!(op.is_running(), "the operator is still running");
    let metrics = op.metrics().await?;
    ensure!(
        metrics.lines().any(
            |l| l.starts_with("token_rotator_reconcile_errors_total{reason=\"InternalError\"}")
        ),
        "the panic is counted"
    );
    ensure!(
        op.log_text().contains("panic: a bug in the operator"),
        "the panic is logged"
    );
    Ok(())
}

/// Templates that would allocate without bound are refused before any token is requested;
/// the largest allowed ones render; the operator's peak memory stays under the chart's limit.
#[tokio::test]
async fn no_spec_can_bloat_the_operator() -> Result<()> {
    let env = Env::new("bloat").await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Reltio, &emu), true)
        .await?;
    let op = env.start_operator().await?;
    let base = spec(Provider::Reltio, &emu, "creds", "unused")
        .replace("target: {secretName: unused}\n", "");
    let hostile = [
        "{{ 'x' * 99999999 }}",
        "{% for i in range(100000) %}{{ access_token }}{% endfor %}",
        "{{ lipsum(100000) }}",
        "{{ access_token | join(access_token) }}",
        "{{ access_token | e | e | e }}",
    ];
    for (i, template) in hostile.iter().enumerate() {
        let name = format!("hostile-{i}");
        env.create_pcred(
            &name,
            &format!(
                "{base}target: {{secretName: {name}-token, template: {{k: {}}}}}\n",
                serde_json::to_string(template)?
            ),
        )
        .await?;
        let pc = env
            .wait_condition(&name, "Ready", "False", Some("InvalidSpec"))
            .await?;
        ensure!(
            condition_message(&pc, "Ready").contains("spec.target.template key `k`"),
            "{template}: {}",
            condition_message(&pc, "Ready")
        );
    }
    // About the largest template allowed: 20 keys of 4 KiB, each with the token
    // (20 × (4 KiB + 32 KiB) fits the 768 KiB bound; 21 would not).
    let filler = "z".repeat(4000);
    let keys: Vec<String> = (0..20)
        .map(|k| format!("k{k}: \"{filler}{{{{ access_token }}}}\""))
        .collect();
    env.create_pcred(
        "largest",
        &format!(
            "{base}target: {{secretName: largest-token, template: {{{}}}}}\n",
            keys.join(", ")
        ),
    )
    .await?;
    env.wait_condition("largest", "Ready", "True", Some("TokenIssued"))
        .await?;
    let (_, data) = env
        .secret_data("largest-token")
        .await?
        .context("target Secret")?;
    ensure!(data.len() == 20 && data["k0"].starts_with(&filler));
    ensure!(
        emu.control().counters(Provider::Reltio).requests == 1,
        "only the allowed template requested a token"
    );
    let peak = op.peak_rss_kib()?;
    eprintln!("operator peak RSS: {peak} KiB");
    ensure!(
        peak < 96 * 1024,
        "peak RSS {peak} KiB is over the chart's 96 MiB limit"
    );
    Ok(())
}

/// Every string, list and map of the CRD is bounded, and the API server itself refuses a
/// field over its bound (maxLength, maxItems, maxProperties, the rule on map keys): such a
/// spec never reaches the operator's cache. At its bound, a field is admitted.
#[tokio::test]
async fn over_long_fields_are_refused_at_admission() -> Result<()> {
    let env = Env::new("bounds").await?;
    let create = |name: &'static str, patch: serde_json::Value| {
        let mut spec = json!({
            "suspend": true,
            "tokenEndpoint": {"url": "https://auth.example.test/token"},
            "credentials": {"secretRef": {"name": "creds"}},
            "target": {"secretName": "token"},
        });
        merge(&mut spec, patch);
        let pcreds = env.pcreds();
        async move {
            let spec = serde_json::from_value(spec)?;
            let pc = token_rotator::api::ProviderCredential::new(name, spec);
            pcreds
                .create(&kube::api::PostParams::default(), &pc)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
    let many = |n: usize, key: usize, value: usize| -> serde_json::Value {
        (0..n)
            .map(|i| (format!("{i:0>key$}"), json!("v".repeat(value))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    create(
        "at-bounds",
        json!({
            "tokenEndpoint": {"caBundle": "c".repeat(65536)},
            "target": {"template": many(32, 317, 4096)},
            "credentials": {"keys": {"clientId": "k".repeat(253)}},
        }),
    )
    .await?;
    let refused = [
        (
            json!({"tokenEndpoint": {"caBundle": "c".repeat(1 << 20)}}),
            ["spec.tokenEndpoint.caBundle", "65536"],
        ),
        (
            json!({"response": {"accessToken": format!("/{}", "a".repeat(256))}}),
            ["spec.response.accessToken", "256"],
        ),
        (
            json!({"credentials": {"keys": {"clientId": "k".repeat(254)}}}),
            ["spec.credentials.keys.clientId", "253"],
        ),
        (
            json!({"target": {"template": many(33, 1, 1)}}),
            ["spec.target.template", "32"],
        ),
        (
            json!({"target": {"template": many(1, 318, 1)}}),
            [
                "spec.target.template",
                "keys must be at most 317 characters",
            ],
        ),
        (
            json!({"delivery": {"namespaceSelector": {"matchExpressions": [
                {"key": "k", "operator": "In", "values": vec!["v"; 65]}]}}}),
            [
                "spec.delivery.namespaceSelector.matchExpressions[0].values",
                "64",
            ],
        ),
    ];
    for (i, (patch, words)) in refused.into_iter().enumerate() {
        let name: &'static str = ["r0", "r1", "r2", "r3", "r4", "r5"][i];
        let refusal = match create(name, patch).await {
            Ok(_) => anyhow::bail!("{words:?}: admitted"),
            Err(e) => e.to_string(),
        };
        ensure!(
            words.iter().all(|w| refusal.contains(w)),
            "{words:?}: {refusal}"
        );
    }
    let names: Vec<String> = env
        .pcreds()
        .list(&Default::default())
        .await?
        .iter()
        .map(|pc| pc.name_any())
        .collect();
    ensure!(names == ["at-bounds"], "{names:?}");
    Ok(())
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Thirty Reltio credentials at once against an endpoint that counts every request in any
/// one-second window (rejected ones too): one request each, not one 429.
#[tokio::test]
async fn a_burst_of_new_credentials_stays_under_the_providers_rate() -> Result<()> {
    let env = Env::new("burst").await?;
    let emu = emulator().await?;
    let c = emu.control();
    c.set_multi_token(true);
    c.set_rate_limit(Provider::Reltio, Some(10));
    c.set_strict_rate_limit(Provider::Reltio, true);
    env.create_credentials("creds", &credentials(Provider::Reltio, &emu), true)
        .await?;
    const N: usize = 30;
    for i in 0..N {
        env.create_pcred(
            &format!("r{i}"),
            &spec(Provider::Reltio, &emu, "creds", &format!("r{i}-token")),
        )
        .await?;
    }
    let _op = env.start_operator().await?;
    for i in 0..N {
        env.wait_condition(&format!("r{i}"), "Ready", "True", Some("TokenIssued"))
            .await?;
    }
    let counters = c.counters(Provider::Reltio);
    ensure!(
        counters.rate_limited == 0 && counters.requests == N as u64,
        "{N} credentials: {} requests, {} answered 429",
        counters.requests,
        counters.rate_limited
    );
    Ok(())
}

/// A token endpoint answering with hostile values, one kind per endpoint: each resource shows a
/// named condition, asks a bounded number of times, shows no token in its status, and a
/// healthy resource keeps rotating beside them in the same live operator.
#[tokio::test]
async fn hostile_endpoints_are_contained() -> Result<()> {
    let env = Env::new("hostile").await?;
    let p = Provider::Rently;
    let big_retry = Fault::RateLimited {
        retry_after_secs: 1_000_000_000_000,
    };
    let ok = |body: &str| Fault::Status {
        code: 200,
        body: body.to_string(),
    };
    let nested = "[".repeat(100_000);
    // A JWT whose exp is the last day jiff can represent: the only lifetime clue.
    let year_9999 = {
        use base64::Engine as _;
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":253402214400}"#);
        format!(r#"{{"access_token":"e30.{claims}.sig"}}"#)
    };
    // (name, fault, extra endpoint settings, condition type, status, reason, message part)
    let cases: Vec<(&str, Fault, &str, &str, &str, &str, &str)> = vec![
        (
            "zero",
            ok(r#"{"access_token":"zero-life-tok","expires_in":0}"#),
            "",
            "ShortLifetime",
            "True",
            "LifetimeShorterThanMargin",
            "lives 0s",
        ),
        (
            "absurd",
            ok(r#"{"access_token":"absurd-life-tok","expires_in":1e308}"#),
            "",
            "Ready",
            "True",
            "TokenIssued",
            "capped at 31622400s",
        ),
        (
            "negative",
            ok(r#"{"access_token":"neg-life-tok","expires_in":-5}"#),
            "",
            "Ready",
            "True",
            "TokenIssued",
            "lifetime from default",
        ),
        (
            "y9999",
            ok(&year_9999),
            "",
            "Ready",
            "True",
            "TokenIssued",
            "capped at 31622400s",
        ),
        (
            "retry",
            big_retry,
            "",
            "Degraded",
            "True",
            "RateLimited",
            "capped at 3600s",
        ),
        (
            "notjson",
            ok("access_token=LEAKED-TOKEN-4242&expires_in=60"),
            "",
            "Degraded",
            "True",
            "InvalidResponse",
            "never quoted",
        ),
        (
            "nested",
            ok(&nested),
            "",
            "Degraded",
            "True",
            "InvalidResponse",
            "not a JSON object",
        ),
        (
            "redirect",
            Fault::Redirect("/token".into()),
            "",
            "Degraded",
            "True",
            "InvalidResponse",
            "redirects",
        ),
        (
            "hang",
            Fault::Hang,
            ", timeoutSeconds: 1",
            "Degraded",
            "True",
            "ProviderUnavailable",
            "",
        ),
        (
            "trickle",
            Fault::Trickle(200),
            ", timeoutSeconds: 2",
            "Degraded",
            "True",
            "ProviderUnavailable",
            "",
        ),
        (
            "headers",
            Fault::HugeHeader(1_000_000),
            "",
            "Degraded",
            "True",
            "ProviderUnavailable",
            "",
        ),
    ];
    let mut emulators = Vec::new();
    for (name, fault, extra, ..) in &cases {
        let emu = emulator().await?;
        emu.control().inject(p, fault.clone(), 1000);
        env.create_credentials(&format!("{name}-creds"), &credentials(p, &emu), true)
            .await?;
        let url = emu.token_url(p);
        let pc_spec = spec(p, &emu, &format!("{name}-creds"), &format!("{name}-token")).replace(
            &format!("tokenEndpoint: {{url: \"{url}\"}}"),
            &format!("tokenEndpoint: {{url: \"{url}\"{extra}}}"),
        );
        env.create_pcred(name, &pc_spec).await?;
        emulators.push(emu);
    }
    let healthy = emulator().await?;
    healthy.control().set_lifetime(p, 6);
    env.create_credentials("healthy-creds", &credentials(p, &healthy), true)
        .await?;
    env.create_pcred(
        "healthy",
        &spec(p, &healthy, "healthy-creds", "healthy-token"),
    )
    .await?;
    let mut op = env.start_operator().await?;

    for (name, _, _, type_, status, reason, part) in &cases {
        let pc = env
            .wait_condition(name, type_, status, Some(reason))
            .await?;
        let message = condition_message(&pc, type_);
        ensure!(message.contains(part), "{name}: {type_} says {message}");
    }
    // The healthy resource rotates beside them: two tokens issued by its endpoint.
    let first = fingerprint(&env.wait_condition("healthy", "Ready", "True", None).await?);
    eventually("the healthy resource to rotate", CONVERGE, || async {
        let now = fingerprint(&env.pcred("healthy").await?);
        Ok((now.is_some() && now != first).then_some(()))
    })
    .await?;
    ensure!(op.is_running(), "the operator is alive");
    let visible = env.visible_text().await?;
    ensure!(
        !visible.contains("LEAKED-TOKEN-4242"),
        "a 2xx body is never shown"
    );
    for ((name, ..), emu) in cases.iter().zip(&emulators) {
        let requests = emu.control().counters(p).requests;
        eprintln!("{name}: {requests} token requests");
        ensure!(requests <= 6, "{name}: {requests} requests");
    }
    Ok(())
}

/// Two instances with `--selector` share a namespace on disjoint sets: each reconciles only
/// the resources its selector matches and counts them; a selector the apiserver refuses stops
/// the operator at start with a message naming the flag.
#[tokio::test]
async fn shards_split_the_resources_by_label_selector() -> Result<()> {
    let env = Env::new("shards").await?;
    let emu = emulator().await?;
    env.create_credentials("creds", &credentials(Provider::Rently, &emu), true)
        .await?;
    let shards = [("a", 2), ("b", 1)];
    for (shard, count) in shards {
        for i in 0..count {
            let name = format!("{shard}-{i}");
            let mut pc: token_rotator::api::ProviderCredential = serde_json::from_value(json!({
                "apiVersion": "tokenrotator.dev/v1alpha1",
                "kind": "ProviderCredential",
                "metadata": {"name": name, "labels": {"shard": shard}},
                "spec": serde_saphyr::from_str::<serde_json::Value>(&spec(Provider::Rently, &emu, "creds", &format!("{name}-token")))?,
            }))?;
            pc.metadata.namespace = Some(env.name().to_string());
            env.pcreds().create(&Default::default(), &pc).await?;
        }
    }
    let a = Operator::start_with(&env, &["--selector", "shard=a"]).await?;
    for i in 0..2 {
        env.wait_condition(&format!("a-{i}"), "Ready", "True", None)
            .await?;
    }
    ensure!(a.metric("token_rotator_managed_credentials").await? == 2.0);
    let b_pc = env.pcred("b-0").await?;
    ensure!(
        b_pc.status.is_none(),
        "shard a reconciled shard b's resource: {:?}",
        b_pc.status
    );
    let b = Operator::start_with(&env, &["--selector", "shard in (b)"]).await?;
    env.wait_condition("b-0", "Ready", "True", None).await?;
    ensure!(b.metric("token_rotator_managed_credentials").await? == 1.0);
    ensure!(a.metric("token_rotator_managed_credentials").await? == 2.0);
    let log_a = a.stop().await?;
    ensure!(!log_a.contains("name=b-0"), "shard a touched b-0:\n{log_a}");

    // A selector the apiserver cannot parse: exit at start, naming the flag.
    let kubeconfig = env
        .cp
        .service_account_kubeconfig(env.name(), OPERATOR_SA)
        .await?;
    let refused = tokio::time::timeout(
        CONVERGE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_token-rotator"))
            .args([
                "run",
                "--namespace",
                env.name(),
                "--selector",
                "shard in (a",
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .output(),
    )
    .await
    .context("the operator did not stop on a bad selector")??;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "{stderr}");
    ensure!(
        stderr.contains("--selector") && stderr.contains("not a valid label selector"),
        "{stderr}"
    );
    Ok(())
}

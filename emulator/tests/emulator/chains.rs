//! Refresh-token chains: Retently's rotation and Reltio's optional one, the grace period,
//! and the chain counters a chaos test reads.

use std::time::Duration;

use provider_emulator::Provider::{Reltio, Retently};
use provider_emulator::fixtures::{RELTIO_PASSWORD, RETENTLY_CLIENT_ID, RETENTLY_CLIENT_SECRET};
use provider_emulator::{Control, Counters, Emulator, Fault};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::common::*;
use crate::reltio::{password_grant, refresh_grant};
use crate::retently::{exchange, refresh};

const REDIRECT: &str = "https://chains.example/";

/// A Retently chain's first refresh token, from a fresh authorization code.
async fn new_chain(c: &Client, emu: &Emulator) -> String {
    let code = emu.control().mint_authorization_code(REDIRECT);
    let resp = exchange(c, &emu.token_url(Retently), &code, REDIRECT).await;
    refresh_token(ok(resp).await)
}

async fn ok(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

fn refresh_token(body: Value) -> String {
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("refresh_token in {body}"))
        .to_owned()
}

/// The error code and description of a 400.
async fn refused(resp: reqwest::Response) -> (String, String) {
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json(resp).await;
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    (field("error"), field("error_description"))
}

/// (stale presented, stale refused, overlapping, chains started)
fn chain_counters(ctl: &Control, p: provider_emulator::Provider) -> (u64, u64, u64, u64) {
    let Counters {
        stale_refresh_presented,
        stale_refresh_refused,
        overlapping_refreshes,
        chains_started,
        ..
    } = ctl.counters(p);
    (
        stale_refresh_presented,
        stale_refresh_refused,
        overlapping_refreshes,
        chains_started,
    )
}

#[tokio::test]
async fn retently_refuses_a_replaced_token_at_once_by_default() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let rt1 = new_chain(&c, &emu).await;
    let rt2 = refresh_token(ok(refresh(&c, &url, &rt1).await).await);

    let (error, description) = refused(refresh(&c, &url, &rt1).await).await;
    assert_eq!(
        (error.as_str(), description.as_str()),
        ("invalid_grant", "The refresh token is invalid")
    );
    assert_eq!(chain_counters(&ctl, Retently), (1, 1, 0, 1));

    // A token that never existed is no stale token.
    refused(refresh(&c, &url, "made-up").await).await;
    assert_eq!(chain_counters(&ctl, Retently), (1, 1, 0, 1));
    // The chain itself goes on from its live end.
    ok(refresh(&c, &url, &rt2).await).await;
}

#[tokio::test]
async fn retently_accepts_a_replaced_token_within_the_grace() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    ctl.set_refresh_grace(Retently, Duration::from_secs(60));
    let rt1 = new_chain(&c, &emu).await;
    let rt2 = refresh_token(ok(refresh(&c, &url, &rt1).await).await);

    // Reused in time: a fresh successor, and the first successor stays good as well.
    let rt3 = refresh_token(ok(refresh(&c, &url, &rt1).await).await);
    assert_ne!(rt3, rt2);
    ok(refresh(&c, &url, &rt2).await).await;
    ok(refresh(&c, &url, &rt3).await).await;
    assert_eq!(chain_counters(&ctl, Retently), (1, 0, 0, 1));
    assert_eq!(ctl.counters(Retently).issued, 5);

    // A reset restores the strict default.
    ctl.reset();
    let rt1 = new_chain(&c, &emu).await;
    ok(refresh(&c, &url, &rt1).await).await;
    refused(refresh(&c, &url, &rt1).await).await;
    assert_eq!(chain_counters(&ctl, Retently), (1, 1, 0, 1));
}

#[tokio::test]
async fn retently_refuses_a_replaced_token_after_the_grace() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    ctl.set_refresh_grace(Retently, Duration::from_millis(300));
    let rt1 = new_chain(&c, &emu).await;
    let rt2 = refresh_token(ok(refresh(&c, &url, &rt1).await).await);

    // Nothing to await but the clock: the grace has to run out.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (error, _) = refused(refresh(&c, &url, &rt1).await).await;
    assert_eq!(error, "invalid_grant");
    assert_eq!(chain_counters(&ctl, Retently), (1, 1, 0, 1));
    ok(refresh(&c, &url, &rt2).await).await;
}

#[tokio::test]
async fn two_refreshes_of_one_chain_in_flight_count_as_an_overlap() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let rt1 = new_chain(&c, &emu).await;
    ctl.set_latency(Retently, Duration::from_secs(1));

    // The second request leaves only once the first is known to be in flight (its latency
    // keeps it there for a second).
    let first = refresh(&c, &url, &rt1);
    let second = async {
        eventually("the first refresh in flight", || {
            ctl.refreshes_in_flight(Retently) == 1
        })
        .await;
        refresh(&c, &url, &rt1).await
    };
    let (a, b) = tokio::join!(first, second);
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    // Strict: whichever is answered second presents a token the other one just replaced.
    assert_eq!(statuses, [200, 400]);
    assert_eq!(chain_counters(&ctl, Retently), (1, 1, 1, 1));
    assert_eq!(ctl.refreshes_in_flight(Retently), 0);
}

#[tokio::test]
async fn an_overlap_follows_the_chain_not_the_token() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    ctl.set_refresh_grace(Retently, Duration::from_secs(60));
    let rt1 = new_chain(&c, &emu).await;
    let rt2 = refresh_token(ok(refresh(&c, &url, &rt1).await).await);
    ctl.set_latency(Retently, Duration::from_secs(1));

    // rt1 (replaced, within the grace) and its successor rt2 belong to one chain.
    let first = refresh(&c, &url, &rt2);
    let second = async {
        eventually("the first refresh in flight", || {
            ctl.refreshes_in_flight(Retently) == 1
        })
        .await;
        refresh(&c, &url, &rt1).await
    };
    let (a, b) = tokio::join!(first, second);
    ok(a).await;
    ok(b).await;
    assert_eq!(chain_counters(&ctl, Retently), (1, 0, 1, 1));
}

#[tokio::test]
async fn refreshes_of_two_chains_at_once_do_not_overlap() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let x = new_chain(&c, &emu).await;
    let y = new_chain(&c, &emu).await;
    ctl.set_latency(Retently, Duration::from_secs(1));

    let first = refresh(&c, &url, &x);
    let second = async {
        eventually("the first refresh in flight", || {
            ctl.refreshes_in_flight(Retently) == 1
        })
        .await;
        let resp = refresh(&c, &url, &y);
        // Both in flight together, yet in different chains.
        let both = eventually("both refreshes in flight", || {
            ctl.refreshes_in_flight(Retently) == 2
        });
        let (resp, ()) = tokio::join!(resp, both);
        resp
    };
    let (a, b) = tokio::join!(first, second);
    ok(a).await;
    ok(b).await;
    assert_eq!(chain_counters(&ctl, Retently), (0, 0, 0, 2));
}

#[tokio::test]
async fn the_in_flight_mark_goes_with_a_failed_or_abandoned_request() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Retently));
    let rt1 = new_chain(&c, &emu).await;

    // Abandoned: the emulator hangs, the client gives up and closes the connection.
    ctl.inject(Retently, Fault::Hang, 1);
    let impatient = builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", RETENTLY_CLIENT_ID),
        ("client_secret", RETENTLY_CLIENT_SECRET),
        ("redirect_uri", REDIRECT),
        ("refresh_token", rt1.as_str()),
    ];
    let err = impatient.post(&url).form_pairs(&form).send().await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    eventually("the abandoned refresh unmarked", || {
        ctl.refreshes_in_flight(Retently) == 0
    })
    .await;

    // Failed: a fault answered after the latency.
    ctl.set_latency(Retently, Duration::from_millis(100));
    ctl.inject(
        Retently,
        Fault::Status {
            code: 503,
            body: "down".into(),
        },
        1,
    );
    assert_eq!(refresh(&c, &url, &rt1).await.status(), 503);
    assert_eq!(ctl.refreshes_in_flight(Retently), 0);

    // Neither left a mark behind: the next refresh of the chain overlaps nothing.
    ok(refresh(&c, &url, &rt1).await).await;
    assert_eq!(chain_counters(&ctl, Retently), (0, 0, 0, 1));
}

#[tokio::test]
async fn reltio_does_not_rotate_by_default() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Reltio));
    ctl.set_refresh_grace(Reltio, Duration::from_secs(60));
    let rt = refresh_token(ok(password_grant(&c, &url, RELTIO_PASSWORD).await).await);
    for _ in 0..2 {
        let body = ok(refresh_grant(&c, &url, &rt).await).await;
        assert!(body.get("refresh_token").is_none(), "{body}");
    }
    // The live token comes back with its refresh token: no new chain.
    let again = refresh_token(ok(password_grant(&c, &url, RELTIO_PASSWORD).await).await);
    assert_eq!(again, rt);
    assert_eq!(chain_counters(&ctl, Reltio), (0, 0, 0, 1));
}

#[tokio::test]
async fn reltio_rotates_when_asked() {
    let emu = start().await;
    let (c, ctl, url) = (client(), emu.control(), emu.token_url(Reltio));
    ctl.set_rate_limit(Reltio, None);
    ctl.set_rotating_refresh(true);
    let first = ok(password_grant(&c, &url, RELTIO_PASSWORD).await).await;
    let rt1 = refresh_token(first.clone());

    // Without multi-token support the access token is the live one, the refresh token new.
    let second = ok(refresh_grant(&c, &url, &rt1).await).await;
    assert_eq!(second["access_token"], first["access_token"]);
    let rt2 = refresh_token(second);
    assert_ne!(rt2, rt1);

    let (error, description) = refused(refresh_grant(&c, &url, &rt1).await).await;
    assert_eq!(error, "invalid_grant");
    assert_eq!(description, format!("Invalid refresh token: {rt1}"));
    assert_eq!(chain_counters(&ctl, Reltio), (1, 1, 0, 1));

    // With a grace, a replaced token is reused for a fresh successor.
    ctl.set_refresh_grace(Reltio, Duration::from_secs(60));
    let rt3 = refresh_token(ok(refresh_grant(&c, &url, &rt2).await).await);
    let rt4 = refresh_token(ok(refresh_grant(&c, &url, &rt2).await).await);
    assert_ne!(rt3, rt4);
    assert_eq!(chain_counters(&ctl, Reltio), (2, 1, 0, 1));

    // A password grant starts a new chain; the old one lives on.
    let rt5 = refresh_token(ok(password_grant(&c, &url, RELTIO_PASSWORD).await).await);
    assert!(![&rt1, &rt2, &rt3, &rt4].contains(&&rt5));
    assert_eq!(chain_counters(&ctl, Reltio), (2, 1, 0, 2));
    ok(refresh_grant(&c, &url, &rt4).await).await;
    let rt6 = refresh_token(ok(refresh_grant(&c, &url, &rt5).await).await);

    // Off again: the live end of a chain no longer changes.
    ctl.set_rotating_refresh(false);
    let body = ok(refresh_grant(&c, &url, &rt6).await).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    ok(refresh_grant(&c, &url, &rt6).await).await;
}

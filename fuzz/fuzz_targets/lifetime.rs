//! Any JSON values for the lifetime clues, any token and any clock: resolving the lifetime
//! never panics and never exceeds the cap.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use token_rotator::provider::lifetime::{MAX_LIFETIME, resolve};

fuzz_target!(|input: (&str, &str, &str, i64, u32)| {
    let (expires_in, expires_at, token, now, default) = input;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let Ok(now) = jiff::Timestamp::from_second(now.rem_euclid(253_402_207_200)) else {
        return;
    };
    let life = resolve(
        now,
        parse(expires_in).as_ref(),
        parse(expires_at).as_ref(),
        token,
        Duration::from_secs(default.into()),
    );
    assert!(life.seconds <= MAX_LIFETIME.as_secs());
});

//! Any template text: checking and rendering it (with a token-shaped placeholder) never
//! panics, and never allocates past libFuzzer's memory limit (`-rss_limit_mb`, set by
//! hack/fuzz.sh): whatever the bound check lets through renders small.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use token_rotator::api::TargetSpec;
use token_rotator::target::validate;

fuzz_target!(|source: &str| {
    let spec = TargetSpec {
        template: BTreeMap::from([("k".to_string(), source.to_string())]),
        ..TargetSpec::default()
    };
    let _ = validate(&spec);
});

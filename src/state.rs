//! The private state kept in a resource's state Secret: the refresh token and the bookkeeping
//! that must survive restarts without ever appearing in the status.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

pub const REFRESH_TOKEN_KEY: &str = "refresh_token";
const REFRESH_BINDING_KEY: &str = "refresh_token_for";
const INPUTS_HASH_KEY: &str = "inputs_hash";
const SEED_HASH_KEY: &str = "seed_hash";
const CODE_HASH_KEY: &str = "code_hash";
const REJECTED_INPUTS_KEY: &str = "rejected_inputs_hash";
const FAILING_INPUTS_KEY: &str = "failing_inputs_hash";
const UNRENDERABLE_TARGET_KEY: &str = "unrenderable_target";

/// Every key the state Secret may hold (a key not set is removed on write).
pub const KEYS: [&str; 8] = [
    REFRESH_TOKEN_KEY,
    REFRESH_BINDING_KEY,
    INPUTS_HASH_KEY,
    SEED_HASH_KEY,
    CODE_HASH_KEY,
    REJECTED_INPUTS_KEY,
    FAILING_INPUTS_KEY,
    UNRENDERABLE_TARGET_KEY,
];

#[derive(Clone, Default)]
pub struct StateData {
    pub refresh_token: Option<SecretString>,
    /// The token endpoint and client the refresh token belongs to (a digest); it is sent
    /// nowhere else. Absent in states written before it existed: then trusted once.
    pub refresh_binding: Option<String>,
    /// Inputs the current token was issued with.
    pub inputs_hash: Option<String>,
    /// The last seed refresh token taken from the credentials Secret.
    pub seed_hash: Option<String>,
    /// The last authorization code spent (or found dead).
    pub code_hash: Option<String>,
    /// Inputs the provider rejected; not retried until they change.
    pub rejected_inputs_hash: Option<String>,
    /// Inputs whose last request failed transiently: retried with backoff, not at once.
    pub failing_inputs_hash: Option<String>,
    /// Target settings that failed to render with a real token; not retried until they change.
    pub unrenderable_target: Option<String>,
}

impl PartialEq for StateData {
    fn eq(&self, other: &Self) -> bool {
        self.refresh_token.as_ref().map(|s| s.expose_secret())
            == other.refresh_token.as_ref().map(|s| s.expose_secret())
            && self.refresh_binding == other.refresh_binding
            && self.inputs_hash == other.inputs_hash
            && self.seed_hash == other.seed_hash
            && self.code_hash == other.code_hash
            && self.rejected_inputs_hash == other.rejected_inputs_hash
            && self.failing_inputs_hash == other.failing_inputs_hash
            && self.unrenderable_target == other.unrenderable_target
    }
}

impl std::fmt::Debug for StateData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateData")
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("inputs_hash", &self.inputs_hash)
            .finish_non_exhaustive()
    }
}

impl StateData {
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Self {
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .filter(|s| !s.is_empty())
        };
        StateData {
            refresh_token: text(REFRESH_TOKEN_KEY).map(SecretString::from),
            refresh_binding: text(REFRESH_BINDING_KEY),
            inputs_hash: text(INPUTS_HASH_KEY),
            seed_hash: text(SEED_HASH_KEY),
            code_hash: text(CODE_HASH_KEY),
            rejected_inputs_hash: text(REJECTED_INPUTS_KEY),
            failing_inputs_hash: text(FAILING_INPUTS_KEY),
            unrenderable_target: text(UNRENDERABLE_TARGET_KEY),
        }
    }

    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                data.insert(k.to_string(), v.as_bytes().to_vec());
            }
        };
        put(
            REFRESH_TOKEN_KEY,
            self.refresh_token.as_ref().map(|s| s.expose_secret()),
        );
        put(REFRESH_BINDING_KEY, self.refresh_binding.as_deref());
        put(INPUTS_HASH_KEY, self.inputs_hash.as_deref());
        put(SEED_HASH_KEY, self.seed_hash.as_deref());
        put(CODE_HASH_KEY, self.code_hash.as_deref());
        put(REJECTED_INPUTS_KEY, self.rejected_inputs_hash.as_deref());
        put(FAILING_INPUTS_KEY, self.failing_inputs_hash.as_deref());
        put(UNRENDERABLE_TARGET_KEY, self.unrenderable_target.as_deref());
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_secret_data() {
        let state = StateData {
            refresh_token: Some(SecretString::from("rt")),
            refresh_binding: Some("b".into()),
            inputs_hash: Some("a".into()),
            seed_hash: None,
            code_hash: Some("c".into()),
            rejected_inputs_hash: None,
            failing_inputs_hash: Some("f".into()),
            unrenderable_target: None,
        };
        assert_eq!(StateData::from_data(&state.to_data()), state);
        assert!(!format!("{state:?}").contains("rt\""));
    }
}

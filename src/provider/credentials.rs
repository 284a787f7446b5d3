//! Credential values read from the credentials Secret, wrapped so they redact themselves.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::config::Param;

/// The credentials a request may draw on, by OAuth parameter, with the Secret key each came
/// from (so errors can name the key the user must add).
#[derive(Clone, Default)]
pub struct Credentials {
    values: BTreeMap<Param, SecretString>,
    key_names: BTreeMap<Param, String>,
}

impl Credentials {
    pub fn new() -> Self {
        Credentials::default()
    }

    /// Adds a value read from `key`; empty values count as absent.
    pub fn insert(&mut self, param: Param, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        let key = key.into();
        if !value.is_empty() {
            self.values.insert(param, SecretString::from(value));
        }
        self.key_names.insert(param, key);
    }

    pub fn get(&self, param: Param) -> Option<&SecretString> {
        self.values.get(&param)
    }

    pub fn remove(&mut self, param: Param) -> Option<SecretString> {
        self.values.remove(&param)
    }

    /// The Secret key a parameter is read from (its OAuth name unless mapped).
    pub fn key_name(&self, param: Param) -> &str {
        self.key_names
            .get(&param)
            .map(String::as_str)
            .unwrap_or(param.oauth_name())
    }

    /// Every value, so provider excerpts can be scrubbed of all of them.
    pub fn all_values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(|v| v.expose_secret())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<&str> = self.values.keys().map(|p| self.key_name(*p)).collect();
        f.debug_struct("Credentials")
            .field("present_keys", &present)
            .finish_non_exhaustive()
    }
}

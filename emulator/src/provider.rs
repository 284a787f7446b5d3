use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::EmulatorError;

/// The four seed providers the emulator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Rently,
    Carrental,
    Retently,
    Reltio,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Rently,
        Provider::Carrental,
        Provider::Retently,
        Provider::Reltio,
    ];

    /// Lowercase name, also the first path segment of the provider's routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Rently => "rently",
            Provider::Carrental => "carrental",
            Provider::Retently => "retently",
            Provider::Reltio => "reltio",
        }
    }

    /// Path of the token endpoint: the provider's documented path under its own prefix.
    pub fn token_path(self) -> &'static str {
        match self {
            Provider::Rently => "/rently/auth/token",
            Provider::Carrental => "/carrental/authtoken",
            Provider::Retently => "/retently/api/oauth/token",
            Provider::Reltio => "/reltio/oauth/token",
        }
    }

    /// Path of the authorization endpoint a person consents at, for providers with the
    /// authorization-code grant.
    pub fn authorize_path(self) -> Option<&'static str> {
        match self {
            Provider::Retently => Some("/retently/api/oauth/authorize"),
            _ => None,
        }
    }

    /// Path of the protected demo resource that checks a bearer token.
    pub fn whoami_path(self) -> String {
        format!("/{}/api/whoami", self.as_str())
    }

    /// Dense index for per-provider arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = EmulatorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| EmulatorError::UnknownProvider(s.to_owned()))
    }
}

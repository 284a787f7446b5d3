//! Default accounts and defaults of every provider, so tests need not repeat literals.

/// Rently: the client id is the Rently username, the secret its password.
pub const RENTLY_CLIENT_ID: &str = "rently-user";
pub const RENTLY_CLIENT_SECRET: &str = "rently-pass";
/// Rently documents `expires_in` ≈ 86399.
pub const RENTLY_LIFETIME_SECS: u64 = 86_399;

pub const CARRENTAL_USERNAME: &str = "car-user";
pub const CARRENTAL_PASSWORD: &str = "car-pass";
/// Carrental documents no number; one hour is the emulator's choice.
pub const CARRENTAL_LIFETIME_SECS: u64 = 3_600;

pub const RETENTLY_CLIENT_ID: &str = "retently-client";
pub const RETENTLY_CLIENT_SECRET: &str = "retently-secret";
/// Retently: "Access tokens expire after 6 hours".
pub const RETENTLY_LIFETIME_SECS: u64 = 21_600;
/// How long a minted authorization code can be exchanged.
pub const RETENTLY_CODE_TTL_SECS: u64 = 600;

/// Reltio's documented Basic client (`cmVsdGlvX3VpOnNlY3JldA==`).
pub const RELTIO_CLIENT_ID: &str = "reltio_ui";
pub const RELTIO_CLIENT_SECRET: &str = "secret";
pub const RELTIO_USERNAME: &str = "reltio-user";
pub const RELTIO_PASSWORD: &str = "reltio-pass";
/// Reltio: "tokens expire after 60 minutes", example `expires_in` 3599.
pub const RELTIO_LIFETIME_SECS: u64 = 3_599;
/// Reltio: "a limit of 10 GET token requests per second".
pub const RELTIO_RATE_LIMIT_PER_SECOND: u32 = 10;
pub const RELTIO_SCOPES: [&str; 6] = [
    "configuration_api",
    "entities_api",
    "graphs_api",
    "groups_api",
    "interactions_api",
    "relations_api",
];

//! A local, faithful emulator of the seed providers' token endpoints (Rently, Carrental API,
//! Retently, Reltio) with knobs for lifetimes, latency, faults, rate limits and counters.
//!
//! Use it in-process from tests through [`Emulator::start`] and [`Control`], or run the
//! `provider-emulator` binary and drive the same knobs through the JSON admin API under
//! `/_emulator/...` (see the crate README).
//!
//! Beside the seeds, a standards OAuth 2.0 server under `/oauth2` verifies client
//! authentication without shared secrets for real, independently of the operator's code:
//!
//! - `POST /oauth2/token` ([`Emulator::oauth2_token_url`]) with
//!   `grant_type=client_credentials` and `private_key_jwt` (RS256, PS256, ES256, EdDSA) or
//!   `client_secret_jwt` (HS256) client assertions (RFC 7523 §2.2), or mutual-TLS client
//!   authentication with a registered self-signed certificate (RFC 8705 §2.2; the token is
//!   then certificate-bound); and with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   (RFC 7523 §2.1) as Google answers service accounts;
//! - `GET /oauth2/whoami` ([`Emulator::oauth2_whoami_url`]), which requires the same client
//!   certificate for a certificate-bound token (RFC 8705 §3).
//!
//! Register clients with [`Control::register_oauth_client`] ([`ClientMethod`]) and issuers
//! with [`Control::register_jwt_bearer_issuer`]; [`keys`] makes test key material. Client
//! certificates need [`Options::tls`]: the server then asks every client for an optional
//! certificate and accepts any (self-signed included); the token endpoint compares it with
//! the registered one.

// Provider dialects return `Result<Response, Response>` (token issued or the provider's error
// answer). One is built per HTTP request, so boxing the error side would only add noise.
#![allow(clippy::result_large_err)]

mod admin;
mod chains;
mod control;
mod emulator;
mod error;
mod faults;
pub mod fixtures;
mod inflight;
mod jwt;
pub mod keys;
mod oauth2;
mod pipeline;
mod provider;
mod providers;
mod ratelimit;
mod routes;
mod server;
mod state;
mod tls;
mod tokens;
mod whoami;
mod wire;

pub use control::Control;
pub use emulator::{Emulator, Options};
pub use error::EmulatorError;
pub use faults::Fault;
pub use oauth2::{
    CLIENT_ASSERTION_TYPE_JWT_BEARER, ClientMethod, FederatedClient, GRANT_TYPE_JWT_BEARER,
    GRANT_TYPE_TOKEN_EXCHANGE, JwsAlgorithm, OAuth2AccessToken, OAuth2Counters,
};
pub use provider::Provider;
pub use state::{AccountState, Counters, RecordedRequest};

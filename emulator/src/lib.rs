//! A local, faithful emulator of the seed providers' token endpoints (Rently, Carrental API,
//! Retently, Reltio) with knobs for lifetimes, latency, faults, rate limits and counters.
//!
//! Use it in-process from tests through [`Emulator::start`] and [`Control`], or run the
//! `provider-emulator` binary and drive the same knobs through the JSON admin API under
//! `/_emulator/...` (see the crate README).

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
pub use provider::Provider;
pub use state::{AccountState, Counters, RecordedRequest};

//! HTTP tests of the emulator over real sockets, one module per concern.

mod admin;
mod binary;
mod carrental;
mod chains;
mod common;
mod faults;
mod oauth2;
mod reltio;
mod rently;
mod retently;
mod tls;

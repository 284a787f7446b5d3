//! Command-line entry points.

pub mod crd;
pub mod fetch;
pub mod manifest;
pub mod run;

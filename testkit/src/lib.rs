//! Control-plane harness.

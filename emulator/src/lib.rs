//! Provider emulator.

//! Hearth coordinator: admission, rounds, verification, robust aggregation, checkpoint store, ledger, HTTP.

pub mod aggregate;
pub mod config;
pub mod engine;
pub mod outer;
pub mod round;
pub mod store;
pub mod verify;

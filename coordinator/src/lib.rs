//! Hearth coordinator: admission, rounds, verification, robust aggregation, checkpoint store, ledger, HTTP.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod base_model;
pub mod config;
pub mod demo;
pub mod engine;
pub mod eval_cmd;
pub mod evaluator;
pub mod export;
pub mod http;
pub mod ingest;
pub mod init;
pub mod journal;
pub mod ledger;
pub mod metrics;
pub mod outer;
pub mod overrides;
pub mod round;
pub mod screen;
pub mod service;
pub mod state;
pub mod status;
pub mod status_cmd;
pub mod store;
pub mod verify;

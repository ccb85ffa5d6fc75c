//! Hearth worker: join a swarm, train LoRA locally, send compressed signed deltas.
#![forbid(unsafe_code)]

pub mod attack;
pub mod bench;
pub mod client;
pub mod control;
pub mod device;
pub mod fetch;
pub mod memory;
pub mod metrics;
pub mod paths;
pub mod progress;
pub mod redial;
pub mod schedule;
pub mod session;
pub mod train_cmd;
pub mod trainer;

//! Hearth worker: join a swarm, train LoRA locally, send compressed signed deltas.

pub mod attack;
pub mod fetch;
pub mod metrics;
pub mod session;
pub mod train_cmd;
pub mod trainer;

//! Hearth worker: join a swarm, train LoRA locally, send compressed signed deltas.

pub mod fetch;
pub mod session;
pub mod trainer;
pub mod train_cmd;

//! Helpers for the multi-process swarm tests: start real `hearth-coordinator` and `hearth-worker`
//! processes on loopback, wait on their files, read the coordinator's committed state.

pub mod browser;
pub mod cluster;
pub mod http;
pub mod proc;
pub mod proxy;
/// Light simulated workers for the scale benchmark (`hearth-sim`).
pub mod sim;

pub use browser::*;
pub use cluster::*;
pub use http::*;
pub use proc::*;
pub use proxy::*;

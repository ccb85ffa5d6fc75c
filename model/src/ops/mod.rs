//! The model's CPU kernels: attention, fused RMSNorm/SwiGLU, the fused LM head and loss, frozen
//! linear layers, and the small building blocks they share.

pub mod attention;
pub mod fused;
pub mod head_loss;
pub mod kernels;
pub mod linear;

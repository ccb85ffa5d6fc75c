//! Llama-family decoder with LoRA on candle: loading, tokenizer, datasets, training, evaluation, PEFT export.

pub mod batch;
pub mod config;
pub mod corpus;
pub mod data;
pub mod demo;
pub mod error;
pub mod eval;
pub mod family;
pub mod fsutil;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod lora;
pub mod loss;
pub mod ops;
pub mod peft;
pub mod preset;
pub mod recompute;
pub mod schedule;
pub mod source;
pub mod spec;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use batch::Sequence;
pub use candle_core;
pub use candle_core::{DType, Device};
pub use config::{Family, Features, LoraConfig, LoraTarget, ModelConfig, RopeScaling};
pub use error::{ModelError, Result};
pub use eval::{evaluate, EvalReport};
pub use generate::generate_greedy;
pub use llama::Model;
pub use lora::LoraLinear;
pub use peft::{load_adapter, save_adapter, PeftConfig};
pub use source::{default_model_path, load_base, BaseModel, ModelSource};
pub use tokenizer::Tokenizer;
pub use train::{loss_gradient, train, StepInfo, TrainConfig, TrainReport, Trainer};

// The kernels live under `ops`; their old paths stay for other crates.
pub use ops::{attention, fused, head_loss, kernels, linear};

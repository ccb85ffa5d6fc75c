//! Llama-family decoder with LoRA on candle: loading, tokenizer, datasets, training, evaluation, PEFT export.

pub mod batch;

pub use batch::Sequence;

//! Sequences for the train and eval commands: dataset files through [`crate::data`], or one
//! plain-text file as a single token stream.

use std::path::Path;

use crate::batch::Sequence;
use crate::data::{prepare_with, ChatTemplate, DatasetLimits, PrepareOptions};
use crate::error::{ModelError, Result};
use crate::eval::chunk_stream;
use crate::fsutil::read_bounded;
use crate::source::BaseModel;

/// Largest plain-text file `text_file_sequences` reads.
pub const TEXT_FILE_LIMIT: u64 = 256 << 20;

/// The base model's chat template for dataset rendering (ChatML when the model has none).
pub fn chat_template(base: &BaseModel) -> Result<ChatTemplate> {
    let eos = base.tokenizer.decode(&[base.eos_token_id])?;
    let bos = if base.tokenizer.token_id("<|im_start|>").is_some() {
        "<|im_start|>"
    } else {
        ""
    };
    let source = base
        .chat_template
        .as_deref()
        .unwrap_or(crate::preset::CHATML_TEMPLATE);
    ChatTemplate::new(source, bos, &eos)
        .map_err(|e| ModelError::Input(format!("chat template: {e}")))
}

/// Packs a dataset file (JSONL or plain text) into `seq_len` sequences; returns (train, held-out).
pub fn dataset_sequences(
    base: &BaseModel,
    path: &Path,
    seq_len: usize,
    holdout_fraction: f64,
    seed: u64,
) -> Result<(Vec<Sequence>, Vec<Sequence>)> {
    let opts = PrepareOptions {
        seq_len,
        holdout_fraction,
        n_shards: 1,
        seed,
        limits: DatasetLimits::default(),
    };
    let prepared = prepare_with(path, base.tokenizer.inner(), &chat_template(base)?, &opts)
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    let train = prepared
        .train_shards
        .into_iter()
        .flat_map(|s| s.into_sequences())
        .collect();
    Ok((train, prepared.validation))
}

/// A whole UTF-8 text file as one token stream (no special tokens added), cut into windows of at
/// most `max_len` tokens that score every token after the first exactly once.
pub fn text_file_sequences(base: &BaseModel, path: &Path, max_len: usize) -> Result<Vec<Sequence>> {
    let bytes = read_bounded(path, TEXT_FILE_LIMIT)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ModelError::Input(format!("{}: not UTF-8: {e}", path.display())))?;
    let ids = base.tokenizer.encode(&text)?;
    if ids.len() < 2 {
        return Err(ModelError::Input(format!(
            "{}: {} tokens, need at least 2",
            path.display(),
            ids.len()
        )));
    }
    Ok(chunk_stream(&ids, max_len.min(base.config.max_position)))
}

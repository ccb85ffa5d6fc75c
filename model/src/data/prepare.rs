//! From a dataset file to training shards and a validation set.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::Sequence;

use super::encode::{encode_record, special_id, EncodedExample};
use super::example::Example;
use super::pack::{check_seq_len, pack, PackConfig, PackStats};
use super::shard::Shard;
use super::source::read_dataset;
use super::split::{holdout_split, shard_sequences};
use super::template::ChatTemplate;
use super::{DataError, DatasetLimits};

/// Parameters of [`prepare_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrepareOptions {
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Fraction of examples held out for validation, in `[0, 1)`.
    pub holdout_fraction: f64,
    /// Number of training shards.
    pub n_shards: usize,
    /// Seed of the split shuffle.
    pub seed: u64,
    /// Input bounds.
    pub limits: DatasetLimits,
}

/// Figures about a prepared dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatasetStats {
    /// Examples read from the file.
    pub examples: usize,
    /// Tokens in the longest example.
    pub max_example_tokens: usize,
    /// Packing figures of the training split.
    pub train: PackStats,
    /// Packing figures of the validation split.
    pub validation: PackStats,
}

/// The result of [`prepare_dataset`].
#[derive(Debug, Clone)]
pub struct PreparedDataset {
    /// Training shards (round-robin over the packed training sequences).
    pub train_shards: Vec<Shard>,
    /// Packed held-out sequences (for held-out loss). Never leaves the coordinator.
    pub validation: Vec<Sequence>,
    /// The held-out examples before tokenization (for generation metrics such as exact match).
    pub validation_examples: Vec<Example>,
    /// Figures.
    pub stats: DatasetStats,
}

/// Reads, tokenizes, splits (by example, before packing), packs and shards a dataset file.
/// Deterministic: the same file, tokenizer, template and arguments give byte-identical shards.
pub fn prepare_dataset(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    seq_len: usize,
    holdout_fraction: f64,
    n_shards: usize,
    seed: u64,
) -> Result<PreparedDataset, DataError> {
    let options = PrepareOptions {
        seq_len,
        holdout_fraction,
        n_shards,
        seed,
        limits: DatasetLimits::default(),
    };
    prepare_with(path, tokenizer, template, &options)
}

/// [`prepare_dataset`] with explicit limits.
pub fn prepare_with(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    options: &PrepareOptions,
) -> Result<PreparedDataset, DataError> {
    check_seq_len(options.seq_len)?;
    let eos = special_id(tokenizer, template.eos_token())?;
    let records = read_dataset(path, &options.limits)?;
    let examples = records.len();
    let encoded = records
        .into_iter()
        .map(|r| encode_record(tokenizer, template, &r).map(|e| (r.example, e)))
        .collect::<Result<Vec<(Example, EncodedExample)>, DataError>>()?;
    let max_example_tokens = encoded.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
    let (train, held) = holdout_split(encoded, options.holdout_fraction, options.seed)?;
    let cfg = PackConfig {
        seq_len: options.seq_len,
        separator: eos,
        pad: eos,
    };
    let train_encoded: Vec<EncodedExample> = train.into_iter().map(|(_, e)| e).collect();
    let (train_seqs, train_stats) = pack(&train_encoded, &cfg)?;
    let (validation_examples, held_encoded): (Vec<Example>, Vec<EncodedExample>) =
        held.into_iter().unzip();
    let (validation, validation_stats) = pack(&held_encoded, &cfg)?;
    let train_shards = shard_sequences(train_seqs, options.seq_len, options.n_shards)?;
    Ok(PreparedDataset {
        train_shards,
        validation,
        validation_examples,
        stats: DatasetStats {
            examples,
            max_example_tokens,
            train: train_stats,
            validation: validation_stats,
        },
    })
}

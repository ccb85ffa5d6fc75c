//! Packing tokenized examples into fixed-length sequences.
//!
//! Rule (deterministic, order-preserving "next fit"):
//! - each example is followed by one separator token (the model's EOS); the separator is a target
//!   exactly when the example's last token is (so text learns to end, while a chat, whose last
//!   token is the newline after its end-of-turn token, adds no extra target);
//! - an example (with its separator) that fits in the current sequence is appended to it;
//!   otherwise the current sequence is closed, padded with `pad` (mask false), and a new one starts;
//! - an example longer than `seq_len` is **split**, not truncated: it starts a fresh sequence and
//!   continues over as many sequences as it needs; its last piece stays open for the next example.
//!   No token is dropped, but tokens at the start of a continuation piece see no earlier context.
//!
//! Examples in one sequence attend to each other (no document masking), as in usual LM packing.

use crate::Sequence;

use super::encode::EncodedExample;
use super::DataError;

/// Largest sequence length accepted (matches the shard format's bound).
pub const MAX_SEQ_LEN: usize = 1 << 20;

/// How to pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackConfig {
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Token appended after every example (EOS).
    pub separator: u32,
    /// Token filling the unused tail of a sequence (mask false).
    pub pad: u32,
}

/// Counts gathered while packing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Examples packed.
    pub examples: usize,
    /// Examples longer than `seq_len - 1` that were split over several sequences.
    pub split_examples: usize,
    /// Sequences produced.
    pub sequences: usize,
    /// Non-padding tokens (examples plus separators).
    pub tokens: usize,
    /// Padding tokens.
    pub padding: usize,
    /// Scored positions (mask true, excluding each sequence's position 0).
    pub targets: usize,
}

impl PackStats {
    /// Fraction of positions that hold real tokens.
    pub fn fill(&self) -> f64 {
        let total = self.tokens + self.padding;
        if total == 0 {
            0.0
        } else {
            self.tokens as f64 / total as f64
        }
    }
}

/// Checks a sequence length against `1..=MAX_SEQ_LEN`.
pub fn check_seq_len(seq_len: usize) -> Result<(), DataError> {
    if !(2..=MAX_SEQ_LEN).contains(&seq_len) {
        return Err(DataError::InvalidParameter {
            name: "seq_len",
            value: seq_len.to_string(),
            reason: "must be in 2..=1048576",
        });
    }
    Ok(())
}

/// Packs examples in order into sequences of exactly `cfg.seq_len` tokens.
pub fn pack(
    examples: &[EncodedExample],
    cfg: &PackConfig,
) -> Result<(Vec<Sequence>, PackStats), DataError> {
    check_seq_len(cfg.seq_len)?;
    let mut packer = Packer {
        cfg: *cfg,
        out: Vec::new(),
        tokens: Vec::with_capacity(cfg.seq_len),
        mask: Vec::with_capacity(cfg.seq_len),
        stats: PackStats::default(),
    };
    for ex in examples {
        packer.add(ex);
    }
    packer.close();
    let stats = packer.stats;
    Ok((packer.out, stats))
}

struct Packer {
    cfg: PackConfig,
    out: Vec<Sequence>,
    tokens: Vec<u32>,
    mask: Vec<bool>,
    stats: PackStats,
}

impl Packer {
    fn add(&mut self, ex: &EncodedExample) {
        let sep_target = ex.loss_mask.last().copied().unwrap_or(false);
        let len = ex.tokens.len() + 1;
        self.stats.examples += 1;
        self.stats.tokens += len;
        if len > self.cfg.seq_len - self.tokens.len() {
            self.close();
        }
        if len > self.cfg.seq_len {
            self.stats.split_examples += 1;
        }
        let items = ex
            .tokens
            .iter()
            .copied()
            .zip(ex.loss_mask.iter().copied())
            .chain(std::iter::once((self.cfg.separator, sep_target)));
        for (t, m) in items {
            if self.tokens.len() == self.cfg.seq_len {
                self.close();
            }
            self.tokens.push(t);
            self.mask.push(m);
        }
    }

    /// Pads and emits the open sequence, if any.
    fn close(&mut self) {
        if self.tokens.is_empty() {
            return;
        }
        let pad = self.cfg.seq_len - self.tokens.len();
        self.stats.padding += pad;
        self.tokens.resize(self.cfg.seq_len, self.cfg.pad);
        self.mask.resize(self.cfg.seq_len, false);
        self.stats.sequences += 1;
        let seq = Sequence {
            tokens: std::mem::replace(&mut self.tokens, Vec::with_capacity(self.cfg.seq_len)),
            loss_mask: std::mem::replace(&mut self.mask, Vec::with_capacity(self.cfg.seq_len)),
        };
        self.stats.targets += seq.target_count();
        self.out.push(seq);
    }
}

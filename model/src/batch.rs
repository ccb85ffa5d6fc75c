//! Packed training sequences: the unit that datasets produce and the trainer consumes.

/// One packed sequence of `seq_len` token ids with its loss mask.
///
/// `loss_mask[i]` says whether token `i` is a training target, i.e. whether the loss counts the
/// prediction of `tokens[i]` from `tokens[..i]`. `loss_mask[0]` is therefore always ignored
/// (nothing predicts the first token). Padding positions have mask `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Token ids, exactly `seq_len` of them.
    pub tokens: Vec<u32>,
    /// Per-token target flags, same length as `tokens`.
    pub loss_mask: Vec<bool>,
}

impl Sequence {
    /// Number of positions whose prediction is scored (mask true, excluding position 0).
    pub fn target_count(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|m| **m).count()
    }
}

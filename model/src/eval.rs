//! Evaluation: mean token loss over sequences.

use candle_core::DType;

use crate::batch::Sequence;
use crate::error::{ModelError, Result};
use crate::llama::Model;
use crate::loss::make_batch;

/// Result of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Mean negative log-likelihood per scored token (nats).
    pub loss: f64,
    /// Scored tokens.
    pub tokens: usize,
    /// Sequences evaluated.
    pub sequences: usize,
}

impl EvalReport {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// Mean token loss of `model` over `data`, `batch_size` sequences at a time (no dropout, no backward).
pub fn evaluate(model: &Model, data: &[Sequence], batch_size: usize) -> Result<EvalReport> {
    let mut sum = 0f64;
    let mut tokens = 0usize;
    for chunk in data.chunks(batch_size.max(1)) {
        let batch = make_batch(chunk, model.config().vocab, model.device(), model.dtype())?;
        if batch.target_count == 0 {
            continue;
        }
        // The fused head never holds the [b·t, vocab] logits and computes no gradient.
        let hidden = model.hidden_states(&batch.ids, None)?.detach();
        let nll = model.head_nll_sum_eval(&hidden, &batch.targets, &batch.weights)?;
        sum += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        tokens += batch.target_count;
    }
    if tokens == 0 {
        return Err(ModelError::Input(format!(
            "none of the {} sequences has a scored token",
            data.len()
        )));
    }
    Ok(EvalReport {
        loss: sum / tokens as f64,
        tokens,
        sequences: data.len(),
    })
}

/// Splits one long token stream into sequences of at most `max_len` tokens that together score
/// every token after the first exactly once (each chunk after the first starts with the previous
/// chunk's last token as context, unscored).
pub fn chunk_stream(tokens: &[u32], max_len: usize) -> Vec<Sequence> {
    let max_len = max_len.max(2);
    let mut out = Vec::new();
    let mut start = 0usize;
    while start + 1 < tokens.len() {
        let end = (start + max_len).min(tokens.len());
        let toks = tokens.get(start..end).unwrap_or_default().to_vec();
        let mut mask = vec![true; toks.len()];
        if let Some(m) = mask.first_mut() {
            *m = false;
        }
        out.push(Sequence {
            tokens: toks,
            loss_mask: mask,
        });
        start = end - 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_score_every_token_once() {
        let toks: Vec<u32> = (0..10).collect();
        let seqs = chunk_stream(&toks, 4);
        let scored: usize = seqs.iter().map(Sequence::target_count).sum();
        assert_eq!(scored, 9);
        assert_eq!(seqs[1].tokens, vec![3, 4, 5, 6]);
        assert!(chunk_stream(&[1], 4).is_empty());
    }
}

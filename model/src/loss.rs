//! Batching of [`Sequence`]s and masked mean cross-entropy.

use candle_core::{DType, Device, Tensor, D};

use crate::batch::Sequence;
use crate::error::{ModelError, Result};

/// Tensors for one micro-batch: inputs, next-token targets and per-position weights.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `[b, t]` (u32).
    pub ids: Tensor,
    /// Target id per position `[b*t]` (u32): `tokens[i+1]`, 0 where unused.
    pub targets: Tensor,
    /// 1.0 where the position's prediction is scored, else 0.0, `[b*t]`.
    pub weights: Tensor,
    /// Number of scored positions.
    pub target_count: usize,
    /// Number of input tokens (b·t).
    pub tokens: usize,
}

/// Builds a batch; sequences shorter than the longest are padded (unscored). Checks ids < `vocab`.
pub fn make_batch(seqs: &[Sequence], vocab: usize, device: &Device, dtype: DType) -> Result<Batch> {
    let t = seqs.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
    if seqs.is_empty() || t == 0 {
        return Err(ModelError::Input("empty batch".into()));
    }
    let b = seqs.len();
    let mut ids = vec![0u32; b * t];
    let mut targets = vec![0u32; b * t];
    let mut weights = vec![0f32; b * t];
    let mut count = 0;
    for (row, s) in seqs.iter().enumerate() {
        if s.tokens.len() != s.loss_mask.len() {
            return Err(ModelError::Input(format!(
                "sequence {row}: {} tokens but {} mask entries",
                s.tokens.len(),
                s.loss_mask.len()
            )));
        }
        if let Some(bad) = s.tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Input(format!(
                "sequence {row}: token id {bad} >= vocab {vocab}"
            )));
        }
        let base = row * t;
        for (i, (&tok, &m)) in s.tokens.iter().zip(&s.loss_mask).enumerate() {
            ids[base + i] = tok;
            if i > 0 && m {
                targets[base + i - 1] = tok;
                weights[base + i - 1] = 1.0;
                count += 1;
            }
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        targets: Tensor::from_vec(targets, b * t, device)?,
        weights: Tensor::from_vec(weights, b * t, device)?.to_dtype(dtype)?,
        target_count: count,
        tokens: b * t,
    })
}

/// Sum over scored positions of `-log p(target)` for logits `[n, vocab]` (differentiable).
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let sum_exp = logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    let lse = (sum_exp.log()? + max)?.squeeze(D::Minus1)?;
    let picked = logits
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    Ok(((lse - picked)? * weights)?.sum_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shifts_targets_and_counts_mask() {
        let s = Sequence {
            tokens: vec![5, 6, 7, 8],
            loss_mask: vec![true, false, true, true],
        };
        let short = Sequence {
            tokens: vec![1, 2],
            loss_mask: vec![false, true],
        };
        let b = make_batch(&[s, short], 10, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(b.target_count, 3);
        assert_eq!(
            b.targets.to_vec1::<u32>().unwrap(),
            vec![0, 7, 8, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            b.weights.to_vec1::<f32>().unwrap(),
            vec![0., 1., 1., 0., 1., 0., 0., 0.]
        );
        let bad = Sequence {
            tokens: vec![10],
            loss_mask: vec![true],
        };
        assert!(make_batch(&[bad], 10, &Device::Cpu, DType::F32).is_err());
    }

    #[test]
    fn nll_matches_log_softmax() {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[2u32, 1], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1f32, 1.], &Device::Cpu).unwrap();
        let v = masked_nll_sum(&logits, &t, &w)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = -(3f32 - (1f32.exp() + 2f32.exp() + 3f32.exp()).ln()) + 3f32.ln();
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }
}

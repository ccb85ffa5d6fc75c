//! LM head and masked cross-entropy fused into one op that never holds the `[n, vocab]` logits.
//!
//! Composed from candle primitives, `Σ w·(logsumexp(h·Wᵀ) − (h·Wᵀ)[target])` allocates the
//! logits (1024 × 49152 f32 = 200 MB on SmolLM2 at batch 4 × 256) and then five more tensors of that
//! size in the forward and backward passes, each a fresh mmap that the kernel must zero page by
//! page. This op walks the scored rows in chunks of [`CHUNK_ROWS`]: logits for the chunk, then each
//! row's log-sum-exp, target logit and gradient `w·(softmax − onehot)`, and right away the
//! chunk's `[rows, hidden]` input gradient `(w·(softmax − onehot))·W`. The loss is a scalar at the
//! end of the graph, so that gradient is exact; the backward pass only scales it by the incoming
//! scalar. Rows with weight 0 are skipped (no logits at all). CPU only, f32 and f64; other
//! devices and dtypes take the composed path.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::loss::masked_nll_sum;
use crate::ops::kernels::Real;
use crate::ops::linear::frozen_linear;

/// Scored rows per chunk: 128 × 49152 f32 logits = 25 MB, below glibc's largest mmap threshold,
/// so the buffers are reused from the heap instead of being mapped and zeroed for every chunk.
pub const CHUNK_ROWS: usize = 128;

struct HeadNll {
    w: Tensor,
    targets: Vec<u32>,
    weights: Vec<f64>,
    chunk: usize,
    /// False for evaluation: only the loss, no logit or input gradient (half the work).
    with_grad: bool,
    grad: Mutex<Option<Tensor>>,
}

/// Loss of one row, `w·(logsumexp(x) − x[target])`, without its gradient.
fn row_loss<T: Real>(x: &[T], target: usize, w: f64) -> f64 {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
    let m = T::from_f64(max);
    let sum: f64 = x.iter().map(|&v| (v - m).exp().to_f64()).sum();
    w * (max + sum.ln() - x.get(target).map_or(0.0, |v| v.to_f64()))
}

/// Loss of one row and its logit gradient `w·(softmax − onehot)` written over `row` in `dl`.
fn row_kernel<T: Real>(x: &[T], dl: &mut [T], target: usize, w: f64) -> f64 {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
    let m = T::from_f64(max);
    let mut sum = 0f64;
    for (d, &v) in dl.iter_mut().zip(x) {
        let e = (v - m).exp();
        *d = e;
        sum += e.to_f64();
    }
    let lse = max + sum.ln();
    let scale = T::from_f64(w / sum);
    for d in dl.iter_mut() {
        *d *= scale;
    }
    if let Some(d) = dl.get_mut(target) {
        *d = T::from_f64(d.to_f64() - w);
    }
    w * (lse - x.get(target).map_or(0.0, |v| v.to_f64()))
}

impl HeadNll {
    fn run<T: Real>(
        &self,
        h: &[T],
        n: usize,
        hidden: usize,
    ) -> candle_core::Result<(T, Option<Tensor>)> {
        let vocab = self.w.dim(0)?;
        let wt = self.w.t()?;
        let rows: Vec<usize> = (0..n).filter(|&i| self.weights[i] != 0.0).collect();
        let mut grad = vec![T::zero(); if self.with_grad { n * hidden } else { 0 }];
        let mut loss = 0f64;
        for chunk in rows.chunks(self.chunk.max(1)) {
            let m = chunk.len();
            let mut xs = Vec::with_capacity(m * hidden);
            for &r in chunk {
                xs.extend_from_slice(&h[r * hidden..(r + 1) * hidden]);
            }
            let logits = Tensor::from_vec(xs, (m, hidden), &Device::Cpu)?.matmul(&wt)?;
            let (ls, ll) = logits.storage_and_layout();
            let candle_core::Storage::Cpu(ls) = &*ls else {
                candle_core::bail!("head_nll: logits not on cpu")
            };
            let Some((start, end)) = ll.contiguous_offsets() else {
                candle_core::bail!("head_nll: logits not contiguous")
            };
            let x = &ls.as_slice::<T>()?[start..end];
            if !self.with_grad {
                let losses: Vec<f64> = x
                    .par_chunks(vocab)
                    .zip(chunk.par_iter())
                    .map(|(x, &r)| row_loss(x, self.targets[r] as usize, self.weights[r]))
                    .collect();
                loss += losses.iter().sum::<f64>();
                continue;
            }
            let mut dl = vec![T::zero(); m * vocab];
            let losses: Vec<f64> = x
                .par_chunks(vocab)
                .zip(dl.par_chunks_mut(vocab))
                .zip(chunk.par_iter())
                .map(|((x, d), &r)| row_kernel(x, d, self.targets[r] as usize, self.weights[r]))
                .collect();
            loss += losses.iter().sum::<f64>();
            let g = Tensor::from_vec(dl, (m, vocab), &Device::Cpu)?
                .matmul(&self.w)?
                .flatten_all()?
                .to_vec1::<T>()?;
            for (i, &r) in chunk.iter().enumerate() {
                grad[r * hidden..(r + 1) * hidden]
                    .copy_from_slice(&g[i * hidden..(i + 1) * hidden]);
            }
        }
        let grad = if self.with_grad {
            Some(Tensor::from_vec(grad, (n, hidden), &Device::Cpu)?)
        } else {
            None
        };
        Ok((T::from_f64(loss), grad))
    }
}

impl CustomOp1 for HeadNll {
    fn name(&self) -> &'static str {
        "head-nll"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, hidden) = l.shape().dims2()?;
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("head_nll: hidden states not contiguous")
        };
        let (out, grad) = match s {
            CpuStorage::F32(v) => {
                let (loss, g) = self.run(&v[start..end], n, hidden)?;
                (CpuStorage::F32(vec![loss]), g)
            }
            CpuStorage::F64(v) => {
                let (loss, g) = self.run(&v[start..end], n, hidden)?;
                (CpuStorage::F64(vec![loss]), g)
            }
            _ => candle_core::bail!("head_nll: only f32 and f64"),
        };
        *self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("head_nll: poisoned gradient slot".into()))? =
            grad;
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let slot = self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("head_nll: poisoned gradient slot".into()))?;
        let Some(g) = slot.as_ref() else {
            candle_core::bail!("head_nll: backward before forward, or of an evaluation-only loss")
        };
        Ok(Some(g.broadcast_mul(&grad_res.reshape((1, 1))?)?))
    }
}

/// `Σ_i weights[i]·(logsumexp(h_i·Wᵀ) − h_i·W[targets[i]])` for `hidden: [n, d]`, `w: [vocab, d]`
/// (frozen), `targets: [n]` u32, `weights: [n]`; differentiable in `hidden` only.
pub fn head_nll_sum(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    head_nll_sum_chunked(hidden, w, targets, weights, CHUNK_ROWS)
}

/// [`head_nll_sum`] for evaluation: the same value, computed without any gradient (about half
/// the work of the LM head); not differentiable.
pub fn head_nll_sum_eval(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    fused_head_nll(hidden, w, targets, weights, CHUNK_ROWS, false)
}

/// [`head_nll_sum`] with an explicit chunk size (tests cross chunk boundaries with small ones).
pub fn head_nll_sum_chunked(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    chunk: usize,
) -> Result<Tensor> {
    fused_head_nll(hidden, w, targets, weights, chunk, true)
}

fn fused_head_nll(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    chunk: usize,
    with_grad: bool,
) -> Result<Tensor> {
    let fused = crate::ops::fused::supported(hidden.device(), hidden.dtype())
        && w.dtype() == hidden.dtype();
    if !fused {
        return masked_nll_sum(&frozen_linear(hidden, w)?, targets, weights);
    }
    let (n, _) = hidden.dims2()?;
    let vocab = w.dim(0)?;
    let targets = targets.to_vec1::<u32>()?;
    let weights = weights.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if targets.len() != n || weights.len() != n {
        return Err(crate::error::ModelError::Input(format!(
            "head_nll: {n} rows but {} targets and {} weights",
            targets.len(),
            weights.len()
        )));
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(crate::error::ModelError::Input(format!(
            "head_nll: target {bad} >= vocab {vocab}"
        )));
    }
    let w = if w.is_contiguous() {
        w.clone()
    } else {
        w.contiguous()?
    };
    let op = HeadNll {
        w,
        targets,
        weights,
        chunk,
        with_grad,
        grad: Mutex::new(None),
    };
    Ok(hidden.contiguous()?.apply_op1(op)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn setup(dtype: DType) -> (Var, Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let (n, d, v) = (7, 5, 13);
        let h: Vec<f64> = (0..n * d)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
            .collect();
        let w: Vec<f64> = (0..v * d)
            .map(|i| ((i * 53 % 29) as f64 - 14.0) / 9.0)
            .collect();
        let h = Var::from_tensor(
            &Tensor::from_vec(h, (n, d), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let w = Tensor::from_vec(w, (v, d), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let targets = Tensor::new(&[3u32, 0, 12, 7, 7, 1, 5], &dev).unwrap();
        let weights = Tensor::new(&[1f64, 1., 0., 1., 0.5, 1., 0.], &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        (h, w, targets, weights)
    }

    #[test]
    fn matches_composed_loss_and_gradient_across_chunk_sizes() {
        let (h, w, targets, weights) = setup(DType::F64);
        let want = (masked_nll_sum(
            &frozen_linear(h.as_tensor(), &w).unwrap(),
            &targets,
            &weights,
        )
        .unwrap()
            * 0.3)
            .unwrap();
        let want_loss = want.to_scalar::<f64>().unwrap();
        let want_g = want.backward().unwrap();
        let want_g = want_g.get(h.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        for chunk in [1, 2, 3, 128] {
            let got = (head_nll_sum_chunked(h.as_tensor(), &w, &targets, &weights, chunk).unwrap()
                * 0.3)
                .unwrap();
            assert!((got.to_scalar::<f64>().unwrap() - want_loss).abs() < 1e-12);
            let g = got.backward().unwrap();
            assert!(g.get(&w).is_none());
            let g = g.get(h.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
            for (a, b) in g.iter().flatten().zip(want_g.iter().flatten()) {
                assert!((a - b).abs() < 1e-12, "chunk {chunk}: {a} vs {b}");
            }
            // unscored rows get no gradient
            assert!(g[2].iter().chain(&g[6]).all(|&x| x == 0.0));
        }
        // The evaluation-only form gives the same loss and has no gradient to give.
        let eval = head_nll_sum_eval(h.as_tensor(), &w, &targets, &weights).unwrap();
        assert!((eval.to_scalar::<f64>().unwrap() * 0.3 - want_loss).abs() < 1e-12);
        assert!(eval.backward().is_err());
    }

    #[test]
    fn f32_matches_f64() {
        let (h, w, targets, weights) = setup(DType::F64);
        let want = head_nll_sum(h.as_tensor(), &w, &targets, &weights)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let (h, w, targets, weights) = setup(DType::F32);
        let got = head_nll_sum(h.as_tensor(), &w, &targets, &weights)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (got as f64 - want).abs() < 1e-4 * want.abs(),
            "{got} vs {want}"
        );
    }

    #[test]
    fn rejects_out_of_range_target() {
        let (h, w, _, weights) = setup(DType::F32);
        let targets = Tensor::new(&[3u32, 0, 13, 7, 7, 1, 5], &Device::Cpu).unwrap();
        assert!(head_nll_sum(h.as_tensor(), &w, &targets, &weights).is_err());
    }
}

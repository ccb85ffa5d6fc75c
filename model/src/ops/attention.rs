//! Causal grouped-query self-attention with half-split RoPE as one CPU op, forward and backward.
//!
//! Composed from candle primitives, one attention layer is ~30 tensor ops (head transposes and
//! copies, RoPE as narrow/neg/cat/mul/add, the K/V head expansion, scale, mask, a five-op softmax,
//! the output transpose) and twice as many in the backward pass, each a pass over memory and a
//! round trip through candle's thread barrier. This op reads the projections in their natural
//! `[b·t, heads·d]` layout, works on one (sequence, KV head) group per task in parallel (rayon),
//! and calls gemm on strided views, so nothing is transposed or copied. It keeps the softmax
//! probabilities for the backward pass (`b·heads·t·t` values).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::kernels::{matmul, Real, View};

/// Attention geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Sequences.
    pub b: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Head width (even).
    pub head_dim: usize,
}

struct CausalAttention {
    g: Geometry,
    /// cos/sin `[t, head_dim/2]` as f64.
    cos: Vec<f64>,
    sin: Vec<f64>,
    probs: Mutex<Option<Tensor>>,
}

/// Rotates `x` (`d` values at position `pos`) into `out`; `inverse` rotates by `-θ` (the transpose).
fn rope_row<T: Real>(x: &[T], out: &mut [T], cos: &[f64], sin: &[f64], inverse: bool) {
    let half = out.len() / 2;
    for i in 0..half {
        let (c, s) = (T::from_f64(cos[i]), T::from_f64(sin[i]));
        let s = if inverse { T::zero() - s } else { s };
        let (a, b) = (x[i], x[i + half]);
        out[i] = a * c - b * s;
        out[i + half] = b * c + a * s;
    }
}

impl CausalAttention {
    fn rep(&self) -> usize {
        self.g.heads / self.g.kv_heads
    }

    fn scale(&self) -> f64 {
        1.0 / (self.g.head_dim as f64).sqrt()
    }

    /// Head `head` of sequence `bi` from `x: [b·t, n_heads·d]`, rotated (or inverse-rotated).
    fn rotated<T: Real>(
        &self,
        x: &[T],
        n_heads: usize,
        bi: usize,
        head: usize,
        inv: bool,
    ) -> Vec<T> {
        let (t, d) = (self.g.t, self.g.head_dim);
        let half = d / 2;
        let mut out = vec![T::zero(); t * d];
        for (i, o) in out.chunks_exact_mut(d).enumerate() {
            let row = ((bi * t + i) * n_heads + head) * d;
            let trig = i * half..(i + 1) * half;
            rope_row(
                &x[row..row + d],
                o,
                &self.cos[trig.clone()],
                &self.sin[trig],
                inv,
            );
        }
        out
    }

    /// Inverse-rotates a `[t, d]` block in place.
    fn unrotate<T: Real>(&self, x: &mut [T]) {
        let d = self.g.head_dim;
        let half = d / 2;
        let mut tmp = vec![T::zero(); d];
        for (i, row) in x.chunks_exact_mut(d).enumerate() {
            let trig = i * half..(i + 1) * half;
            rope_row(
                row,
                &mut tmp,
                &self.cos[trig.clone()],
                &self.sin[trig],
                true,
            );
            row.copy_from_slice(&tmp);
        }
    }

    /// Scatters per-group `[rep·]t×d` blocks into a `[b·t, n_heads·d]` buffer.
    fn scatter<T: Real>(
        &self,
        blocks: &[Vec<T>],
        heads_per_group: usize,
        n_heads: usize,
    ) -> Vec<T> {
        let Geometry {
            b,
            t,
            head_dim: d,
            kv_heads,
            ..
        } = self.g;
        let mut out = vec![T::zero(); b * t * n_heads * d];
        for (gi, block) in blocks.iter().enumerate() {
            let (bi, g) = (gi / kv_heads, gi % kv_heads);
            for r in 0..heads_per_group {
                let head = g * heads_per_group + r;
                for i in 0..t {
                    let dst = ((bi * t + i) * n_heads + head) * d;
                    let src = (r * t + i) * d;
                    out[dst..dst + d].copy_from_slice(&block[src..src + d]);
                }
            }
        }
        out
    }

    fn fwd<T: Real>(&self, q: &[T], k: &[T], v: &[T]) -> candle_core::Result<(Vec<T>, Vec<T>)> {
        let Geometry {
            b,
            t,
            heads,
            kv_heads,
            head_dim: d,
        } = self.g;
        let rep = self.rep();
        let scale = T::from_f64(self.scale());
        let mut probs = vec![T::zero(); b * heads * t * t];
        let outs: Vec<Vec<T>> = probs
            .par_chunks_mut(rep * t * t)
            .enumerate()
            .map(|(gi, p_group)| -> candle_core::Result<Vec<T>> {
                let (bi, g) = (gi / kv_heads, gi % kv_heads);
                let kr = self.rotated(k, kv_heads, bi, g, false);
                let v_view = View::new(&v[(bi * t * kv_heads + g) * d..], kv_heads * d, 1)
                    .ok_or_else(|| candle_core::Error::Msg("attention: stride overflow".into()))?;
                let mut out = vec![T::zero(); rep * t * d];
                for (r, (p, o)) in p_group
                    .chunks_exact_mut(t * t)
                    .zip(out.chunks_exact_mut(t * d))
                    .enumerate()
                {
                    let qr = self.rotated(q, heads, bi, g * rep + r, false);
                    matmul(
                        (t, t, d),
                        View::rows(&qr, d),
                        View::rows(&kr, d).t(),
                        p,
                        false,
                    )?;
                    for (i, row) in p.chunks_exact_mut(t).enumerate() {
                        let (live, masked) = row.split_at_mut(i + 1);
                        let mut max = live[0] * scale;
                        for x in live.iter_mut() {
                            *x *= scale;
                            if *x > max {
                                max = *x;
                            }
                        }
                        let mut sum = T::zero();
                        for x in live.iter_mut() {
                            *x = (*x - max).exp();
                            sum += *x;
                        }
                        for x in live.iter_mut() {
                            *x /= sum;
                        }
                        masked.fill(T::zero());
                    }
                    matmul((t, d, t), View::rows(p, t), v_view, o, false)?;
                }
                Ok(out)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok((self.scatter(&outs, rep, heads), probs))
    }

    #[allow(clippy::type_complexity)]
    fn bwd_t<T: Real>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        p_all: &[T],
        dout: &[T],
    ) -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Geometry {
            b,
            t,
            heads,
            kv_heads,
            head_dim: d,
        } = self.g;
        let rep = self.rep();
        let scale = T::from_f64(self.scale());
        let groups: Vec<(Vec<T>, Vec<T>, Vec<T>)> = (0..b * kv_heads)
            .into_par_iter()
            .map(|gi| -> candle_core::Result<(Vec<T>, Vec<T>, Vec<T>)> {
                let (bi, g) = (gi / kv_heads, gi % kv_heads);
                let kr = self.rotated(k, kv_heads, bi, g, false);
                let v_view = View::new(&v[(bi * t * kv_heads + g) * d..], kv_heads * d, 1)
                    .ok_or_else(|| candle_core::Error::Msg("attention: stride overflow".into()))?;
                let mut dq = vec![T::zero(); rep * t * d];
                let mut dk = vec![T::zero(); t * d];
                let mut dv = vec![T::zero(); t * d];
                let mut ds = vec![T::zero(); t * t];
                for (r, dq_r) in dq.chunks_exact_mut(t * d).enumerate() {
                    let head = g * rep + r;
                    let qr = self.rotated(q, heads, bi, head, false);
                    let p0 = (bi * heads + head) * t * t;
                    let p = &p_all[p0..p0 + t * t];
                    let d_o = View::new(&dout[(bi * t * heads + head) * d..], heads * d, 1)
                        .ok_or_else(|| {
                            candle_core::Error::Msg("attention: stride overflow".into())
                        })?;
                    // dV += Pᵀ·dO ; dP = dO·Vᵀ
                    matmul((t, d, t), View::rows(p, t).t(), d_o, &mut dv, true)?;
                    matmul((t, t, d), d_o, v_view.t(), &mut ds, false)?;
                    // dS = P ⊙ (dP − Σ_j P·dP) · scale
                    for (prow, drow) in p.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
                        let mut dot = T::zero();
                        for (&pv, &dp) in prow.iter().zip(drow.iter()) {
                            dot += pv * dp;
                        }
                        for (dp, &pv) in drow.iter_mut().zip(prow) {
                            *dp = pv * (*dp - dot) * scale;
                        }
                    }
                    // dQr = dS·Kr ; dKr += dSᵀ·Qr
                    matmul(
                        (t, d, t),
                        View::rows(&ds, t),
                        View::rows(&kr, d),
                        dq_r,
                        false,
                    )?;
                    matmul(
                        (t, d, t),
                        View::rows(&ds, t).t(),
                        View::rows(&qr, d),
                        &mut dk,
                        true,
                    )?;
                    self.unrotate(dq_r);
                }
                self.unrotate(&mut dk);
                Ok((dq, dk, dv))
            })
            .collect::<candle_core::Result<_>>()?;
        let (mut dqs, mut dks, mut dvs) = (Vec::new(), Vec::new(), Vec::new());
        for (a, bb, c) in groups {
            dqs.push(a);
            dks.push(bb);
            dvs.push(c);
        }
        Ok((
            self.scatter(&dqs, rep, heads),
            self.scatter(&dks, 1, kv_heads),
            self.scatter(&dvs, 1, kv_heads),
        ))
    }

    fn check(&self, l: &Layout, n_heads: usize, what: &str) -> candle_core::Result<(usize, usize)> {
        let want = (self.g.b * self.g.t, n_heads * self.g.head_dim);
        if l.shape().dims2()? != want {
            candle_core::bail!(
                "causal_attention: {what} has shape {:?}, expected {want:?}",
                l.dims()
            );
        }
        l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg(format!("causal_attention: {what} not contiguous"))
        })
    }
}

fn host_vec<T: Real>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q0, q1) = self.check(l1, self.g.heads, "q")?;
        let (k0, k1) = self.check(l2, self.g.kv_heads, "k")?;
        let (v0, v1) = self.check(l3, self.g.kv_heads, "v")?;
        let shape = Shape::from((self.g.b * self.g.t, self.g.heads * self.g.head_dim));
        let pshape = (self.g.b * self.g.heads, self.g.t, self.g.t);
        let (out, probs) = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                let (o, p) = self.fwd(&q[q0..q1], &k[k0..k1], &v[v0..v1])?;
                (
                    CpuStorage::F32(o),
                    Tensor::from_vec(p, pshape, &Device::Cpu)?,
                )
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                let (o, p) = self.fwd(&q[q0..q1], &k[k0..k1], &v[v0..v1])?;
                (
                    CpuStorage::F64(o),
                    Tensor::from_vec(p, pshape, &Device::Cpu)?,
                )
            }
            _ => candle_core::bail!("causal_attention: q, k, v must all be f32 or all f64"),
        };
        *self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("causal_attention: poisoned slot".into()))? =
            Some(probs);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let slot = self
            .probs
            .lock()
            .map_err(|_| candle_core::Error::Msg("causal_attention: poisoned slot".into()))?;
        let Some(p) = slot.as_ref() else {
            candle_core::bail!("causal_attention: backward before forward")
        };
        let (n, g) = (self.g.b * self.g.t, self.g);
        let kv = g.kv_heads * g.head_dim;
        macro_rules! run {
            ($t:ty) => {{
                let (dq, dk, dv) = self.bwd_t::<$t>(
                    &host_vec(q)?,
                    &host_vec(k)?,
                    &host_vec(v)?,
                    &host_vec(p)?,
                    &host_vec(grad)?,
                )?;
                (
                    Tensor::from_vec(dq, (n, g.heads * g.head_dim), &Device::Cpu)?,
                    Tensor::from_vec(dk, (n, kv), &Device::Cpu)?,
                    Tensor::from_vec(dv, (n, kv), &Device::Cpu)?,
                )
            }};
        }
        let (dq, dk, dv) = match q.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            d => candle_core::bail!("causal_attention: unsupported dtype {d:?}"),
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Whether [`causal_attention`] runs for tensors on `dev` of type `dtype`.
pub fn supported(dev: &Device, dtype: DType) -> bool {
    crate::ops::fused::supported(dev, dtype)
}

/// Causal softmax attention of `q: [b·t, heads·d]` over `k, v: [b·t, kv_heads·d]` with RoPE
/// (`cos`, `sin`: `[≥t, d/2]`) applied to q and k; returns `[b·t, heads·d]`. CPU, f32/f64.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    g: Geometry,
) -> Result<Tensor> {
    if g.kv_heads == 0
        || !g.heads.is_multiple_of(g.kv_heads)
        || !g.head_dim.is_multiple_of(2)
        || g.t == 0
    {
        return Err(crate::error::ModelError::Config(format!(
            "causal_attention: bad geometry {g:?}"
        )));
    }
    let trig = |x: &Tensor| -> Result<Vec<f64>> {
        Ok(x.narrow(0, 0, g.t)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    let op = CausalAttention {
        g,
        cos: trig(cos)?,
        sin: trig(sin)?,
        probs: Mutex::new(None),
    };
    Ok(q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

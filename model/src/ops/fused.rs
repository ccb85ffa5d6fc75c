//! RMSNorm (frozen gain) and the SwiGLU gate `silu(g)·u` as single CPU ops, forward and backward.
//!
//! Composed from candle primitives, RMSNorm is six element-wise passes (and SwiGLU three) each way,
//! and every one of them goes through candle's spinning thread barrier, which on a loaded machine
//! burns a whole time slice whenever its helper thread is not scheduled. These ops do one pass per
//! direction with rows split over rayon's pool (whose threads sleep when idle). CPU, f32/f64.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::kernels::Real;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// Set: every fused CPU kernel (here, in `attention` and `head_loss`) steps aside for the
/// portable path of candle primitives that a GPU runs.
static PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the CPU take the portable path (the one CUDA takes), process-wide: for parity tests of
/// that path, which otherwise runs only on a GPU.
pub fn force_portable(on: bool) {
    PORTABLE.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`force_portable`] is on.
pub fn portable_forced() -> bool {
    PORTABLE.load(std::sync::atomic::Ordering::SeqCst)
}

/// Whether the fused ops run for tensors on `dev` of type `dtype`.
pub fn supported(dev: &Device, dtype: DType) -> bool {
    !portable_forced() && matches!(dev, Device::Cpu) && matches!(dtype, DType::F32 | DType::F64)
}

fn host_vec<T: Real>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

fn contiguous<'a, T: Real>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op: input not contiguous".into()))?;
    Ok(&s[a..b])
}

struct RmsNormOp {
    w: Vec<f64>,
    eps: f64,
}

impl RmsNormOp {
    fn inv_rms<T: Real>(&self, x: &[T]) -> f64 {
        let ms = x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / x.len() as f64;
        1.0 / (ms + self.eps).sqrt()
    }

    fn fwd<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.w.len();
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(ys, xs)| {
                for (yr, xr) in ys.chunks_exact_mut(n).zip(xs.chunks_exact(n)) {
                    let r = self.inv_rms(xr);
                    for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(&self.w) {
                        *y = T::from_f64(x.to_f64() * r * w);
                    }
                }
            });
        y
    }

    /// `dx = r·(w⊙g) − x·r³/n·Σ(w⊙g⊙x)` per row.
    fn bwd<T: Real>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let n = self.w.len();
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(
                x.par_chunks(n * ROWS_PER_TASK)
                    .zip(g.par_chunks(n * ROWS_PER_TASK)),
            )
            .for_each(|(ds, (xs, gs))| {
                for ((dr, xr), gr) in ds
                    .chunks_exact_mut(n)
                    .zip(xs.chunks_exact(n))
                    .zip(gs.chunks_exact(n))
                {
                    let r = self.inv_rms(xr);
                    let dot: f64 = xr
                        .iter()
                        .zip(gr)
                        .zip(&self.w)
                        .map(|((x, g), w)| x.to_f64() * g.to_f64() * w)
                        .sum();
                    let c = r * r * r * dot / n as f64;
                    for (((d, &x), &g), &w) in dr.iter_mut().zip(xr).zip(gr).zip(&self.w) {
                        *d = T::from_f64(r * w * g.to_f64() - x.to_f64() * c);
                    }
                }
            });
        dx
    }
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l.dims().last() != Some(&self.w.len()) {
            candle_core::bail!(
                "rms_norm: last dim of {:?} != gain {}",
                l.dims(),
                self.w.len()
            );
        }
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(self.fwd(contiguous(v, l)?)),
            CpuStorage::F64(v) => CpuStorage::F64(self.fwd(contiguous(v, l)?)),
            _ => candle_core::bail!("rms_norm: only f32 and f64"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = match x.dtype() {
            DType::F32 => Tensor::from_vec(
                self.bwd(&host_vec::<f32>(x)?, &host_vec::<f32>(g)?),
                x.shape(),
                x.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                self.bwd(&host_vec::<f64>(x)?, &host_vec::<f64>(g)?),
                x.shape(),
                x.device(),
            )?,
            d => candle_core::bail!("rms_norm: unsupported dtype {d:?}"),
        };
        Ok(Some(dx))
    }
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension, with `w` frozen.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let w = w.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(x.contiguous()?.apply_op1(RmsNormOp { w, eps })?)
}

struct SwiGlu;

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (T::zero() - x).exp())
}

fn swiglu_fwd<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); g.len()];
    y.par_chunks_mut(4096)
        .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
        .for_each(|(ys, (gs, us))| {
            for ((y, &g), &u) in ys.iter_mut().zip(gs).zip(us) {
                *y = g * sigmoid(g) * u;
            }
        });
    y
}

/// `(dg, du)` for `y = silu(g)·u`: `dg = dy·u·σ(g)(1 + g(1 − σ(g)))`, `du = dy·silu(g)`.
fn swiglu_bwd<T: Real>(g: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let mut dg = vec![T::zero(); g.len()];
    let mut du = vec![T::zero(); g.len()];
    dg.par_chunks_mut(4096)
        .zip(du.par_chunks_mut(4096))
        .zip(
            g.par_chunks(4096)
                .zip(u.par_chunks(4096))
                .zip(dy.par_chunks(4096)),
        )
        .for_each(|((dgs, dus), ((gs, us), dys))| {
            for ((((dg, du), &g), &u), &dy) in
                dgs.iter_mut().zip(dus.iter_mut()).zip(gs).zip(us).zip(dys)
            {
                let s = sigmoid(g);
                *dg = dy * u * s * (T::one() + g * (T::one() - s));
                *du = dy * g * s;
            }
        });
    (dg, du)
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => {
                CpuStorage::F32(swiglu_fwd(contiguous(g, l1)?, contiguous(u, l2)?))
            }
            (CpuStorage::F64(g), CpuStorage::F64(u)) => {
                CpuStorage::F64(swiglu_fwd(contiguous(g, l1)?, contiguous(u, l2)?))
            }
            _ => candle_core::bail!("swiglu: gate and up must both be f32 or both f64"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        macro_rules! run {
            ($t:ty) => {{
                let (dg, du) = swiglu_bwd::<$t>(&host_vec(g)?, &host_vec(u)?, &host_vec(dy)?);
                (
                    Tensor::from_vec(dg, g.shape(), g.device())?,
                    Tensor::from_vec(du, u.shape(), u.device())?,
                )
            }};
        }
        let (dg, du) = match g.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            d => candle_core::bail!("swiglu: unsupported dtype {d:?}"),
        };
        Ok((Some(dg), Some(du)))
    }
}

/// `silu(gate) · up`, element-wise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    fn var(n: usize, m: usize, seed: usize) -> Var {
        let data: Vec<f64> = (0..n * m)
            .map(|i| (((i * 7919 + seed * 104_729) % 1009) as f64 / 1009.0 - 0.5) * 4.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(data, (n, m), &Device::Cpu).unwrap()).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    #[test]
    fn rms_norm_matches_composed() {
        let (x, w, probe) = (var(37, 6, 1), var(1, 6, 2), var(37, 6, 3));
        let w = w.as_tensor().flatten_all().unwrap();
        let eps = 1e-5;
        let composed = {
            let x = x.as_tensor();
            let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let y = x
                .broadcast_div(&(ms + eps).unwrap().sqrt().unwrap())
                .unwrap();
            y.broadcast_mul(&w).unwrap()
        };
        let fused = rms_norm(x.as_tensor(), &w, eps).unwrap();
        close(&fused, &composed);
        let grad = |y: &Tensor| {
            let g = (y * probe.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            g.get(x.as_tensor()).unwrap().clone()
        };
        close(&grad(&fused), &grad(&composed));
    }

    #[test]
    fn swiglu_matches_composed() {
        let (g, u, probe) = (var(9, 600, 4), var(9, 600, 5), var(9, 600, 6));
        let composed = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap();
        close(&fused, &composed);
        let grads = |y: &Tensor| {
            let s = (y * probe.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                s.get(g.as_tensor()).unwrap().clone(),
                s.get(u.as_tensor()).unwrap().clone(),
            )
        };
        let ((a1, a2), (b1, b2)) = (grads(&fused), grads(&composed));
        close(&a1, &b1);
        close(&a2, &b2);
    }
}

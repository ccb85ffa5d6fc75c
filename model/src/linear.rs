//! `x·Wᵀ` with a frozen `W`: the backward pass computes only the input gradient.
//!
//! candle's `matmul` backward always computes the gradient of both operands, which for frozen base
//! weights (and the tied LM head, 49152 × 576 on SmolLM2) is a full extra matmul per layer that is
//! thrown away. This custom op runs the same backend matmul forward and `grad·W` backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::error::Result;

/// Matmul `(b, m, n, k)`, the transposed weight layout, and the output shape.
type Plan = ((usize, usize, usize, usize), Layout, Shape);

struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// Matmul dims and the transposed weight layout for input layout `l` (`[n, in]`).
    fn plan(&self, l: &Layout, w_layout: &Layout) -> candle_core::Result<Plan> {
        let (n, k) = match l.dims() {
            [n, k] => (*n, *k),
            d => candle_core::bail!("frozen_linear expects a 2d input, got {d:?}"),
        };
        let (out, k2) = match w_layout.dims() {
            [o, k2] => (*o, *k2),
            d => candle_core::bail!("frozen_linear expects a 2d weight, got {d:?}"),
        };
        if k != k2 {
            candle_core::bail!("frozen_linear: input width {k} != weight width {k2}");
        }
        Ok((
            (1, n, out, k),
            w_layout.transpose(0, 1)?,
            Shape::from((n, out)),
        ))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cpu(w) = &*ws else {
            candle_core::bail!("frozen_linear: weight not on cpu")
        };
        let (bmnk, wt, shape) = self.plan(l, wl)?;
        Ok((s.matmul(w, bmnk, l, &wt)?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cuda(w) = &*ws else {
            candle_core::bail!("frozen_linear: weight not on cuda")
        };
        let (bmnk, wt, shape) = self.plan(l, wl)?;
        Ok((s.matmul(w, bmnk, l, &wt)?, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

/// `x·Wᵀ` for `x: [n, in]`, `w: [out, in]`; gradients flow to `x` only, never to `w`.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = if w.is_contiguous() {
        w.clone()
    } else {
        w.contiguous()?
    };
    Ok(x.apply_op1(FrozenLinear { w })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_matmul_and_gives_input_grad_only() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 12., &dev)
                .unwrap()
                .reshape((3, 4))
                .unwrap(),
        )
        .unwrap();
        let w = (Tensor::arange(0f32, 8., &dev)
            .unwrap()
            .reshape((2, 4))
            .unwrap()
            * 0.5)
            .unwrap();
        let y = frozen_linear(x.as_tensor(), &w).unwrap();
        let want = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        let want_gx = (want * 2.0).unwrap().matmul(&w).unwrap();
        assert_eq!(
            gx.to_vec2::<f32>().unwrap(),
            want_gx.to_vec2::<f32>().unwrap()
        );
        assert!(g.get(&w).is_none());
    }
}

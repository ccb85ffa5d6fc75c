//! `x·Wᵀ` with a frozen `W`: the backward pass computes only the input gradient.
//!
//! `W` may be kept compact ([`FrozenWeight`]: bf16, f16, or 4/8-bit blocks, QLoRA-style) and is
//! expanded to the activations' dtype for the one matmul that needs it, in the forward pass and
//! again in the backward pass, then dropped: only one layer's weight is ever expanded at a time.
//!
//! candle's `matmul` backward always computes the gradient of both operands, which for frozen base
//! weights (and the tied LM head, 49152 × 576 on SmolLM2) is a full extra matmul per layer that is
//! thrown away. This custom op runs the same backend matmul forward and `grad·W` backward.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};

use crate::error::{ModelError, Result};

/// How the frozen base weights are held in memory (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseDType {
    /// Full precision: the weights as loaded.
    #[default]
    F32,
    /// bfloat16, expanded to f32 per matmul.
    Bf16,
    /// float16, expanded to f32 per matmul.
    F16,
    /// 8-bit blocks (ggml Q8_0: 32 values share an f16 scale; 8.5 bits a value).
    Q8,
    /// 4-bit blocks (ggml Q4_0: 32 values share an f16 scale; 4.5 bits a value), QLoRA-style.
    Q4,
}

impl BaseDType {
    /// Parses `f32`, `bf16`, `f16`, `q8` or `q4`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            "q8" | "q8_0" => Ok(Self::Q8),
            "q4" | "q4_0" | "4bit" => Ok(Self::Q4),
            other => Err(ModelError::Unsupported(format!(
                "base dtype {other:?} (f32, bf16, f16, q8, q4)"
            ))),
        }
    }

    /// Bytes per weight value in memory (block scales included).
    pub fn bytes_per_value(self) -> f64 {
        match self {
            Self::F32 => 4.0,
            Self::Bf16 | Self::F16 => 2.0,
            Self::Q8 => 34.0 / 32.0,
            Self::Q4 => 18.0 / 32.0,
        }
    }
}

#[derive(Debug, Clone)]
enum Store {
    Dense(Tensor),
    Quant(Arc<QTensor>),
}

/// A frozen `[out, in]` weight, full precision or compact; see [`BaseDType`].
#[derive(Debug, Clone)]
pub struct FrozenWeight {
    store: Store,
    /// The dtype it expands to (the activations' dtype).
    compute: DType,
}

impl FrozenWeight {
    /// Holds `w` as it is.
    pub fn dense(w: Tensor) -> Self {
        let compute = w.dtype();
        Self {
            store: Store::Dense(w),
            compute,
        }
    }

    /// Holds `w` (a 2-D weight) in `kind`; block formats need a row length divisible by 32 and
    /// fall back to bf16 otherwise.
    pub fn compact(w: &Tensor, kind: BaseDType) -> Result<Self> {
        let compute = w.dtype();
        let block = |g: GgmlDType| -> Result<Self> {
            if w.dim(1)? % g.block_size() != 0 {
                return Self::compact(w, BaseDType::Bf16);
            }
            let q = QTensor::quantize(&w.to_dtype(DType::F32)?, g)?;
            Ok(Self {
                store: Store::Quant(Arc::new(q)),
                compute,
            })
        };
        let half = |d: DType| -> Result<Self> {
            Ok(Self {
                store: Store::Dense(w.to_dtype(d)?),
                compute,
            })
        };
        match kind {
            BaseDType::F32 => Ok(Self::dense(w.clone())),
            BaseDType::Bf16 => half(DType::BF16),
            BaseDType::F16 => half(DType::F16),
            BaseDType::Q8 => block(GgmlDType::Q8_0),
            BaseDType::Q4 => block(GgmlDType::Q4_0),
        }
    }

    /// [`FrozenWeight::compact`] onto `device`: `w` (on the host or already there) is made
    /// compact first and only the compact form moves, so the device never holds `w` in full
    /// precision when `kind` is compact.
    pub fn compact_onto(w: &Tensor, kind: BaseDType, device: &Device) -> Result<Self> {
        let block = |g: GgmlDType| -> Result<Option<Self>> {
            if !w.device().is_cpu() || w.dim(1)? % g.block_size() != 0 {
                return Ok(None);
            }
            let q = QTensor::quantize_onto(&w.to_dtype(DType::F32)?, g, device)?;
            Ok(Some(Self {
                store: Store::Quant(Arc::new(q)),
                compute: w.dtype(),
            }))
        };
        let on_host = match kind {
            BaseDType::Q8 => block(GgmlDType::Q8_0)?,
            BaseDType::Q4 => block(GgmlDType::Q4_0)?,
            _ => None,
        };
        match on_host {
            Some(q) => Ok(q),
            None => Self::compact(w, kind)?.to_device(device),
        }
    }

    /// A weight kept in `q`'s own blocks (a GGUF file's quantization, not quantized again), its
    /// rows reordered when `rows` is given (row `r` is `q`'s row `rows[r]`), on `device`, for
    /// matmuls in `compute`. `None` when `kind` is not a block kind or `q`'s type takes more
    /// bytes a value than `kind` would: the caller expands and re-quantizes instead.
    pub fn from_blocks(
        q: &QTensor,
        rows: Option<&[usize]>,
        kind: BaseDType,
        compute: DType,
        device: &Device,
    ) -> Result<Option<Self>> {
        let ty = q.dtype();
        let dense = matches!(ty, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let per_value = ty.type_size() as f64 / ty.block_size() as f64;
        if !matches!(kind, BaseDType::Q8 | BaseDType::Q4)
            || dense
            || per_value > kind.bytes_per_value() + 1e-9
        {
            return Ok(None);
        }
        let (out, _) = q.shape().dims2()?;
        let data = q.data()?;
        let bytes = match rows {
            None => data.into_owned(),
            Some(rows) => {
                let row = data.len() / out.max(1);
                if rows.len() != out || row * out != data.len() {
                    return Err(ModelError::Config(format!(
                        "cannot reorder {out} rows of {} bytes by {} indices",
                        data.len(),
                        rows.len()
                    )));
                }
                let mut v = Vec::with_capacity(data.len());
                for &r in rows {
                    let chunk = data
                        .get(r * row..(r + 1) * row)
                        .ok_or_else(|| ModelError::Config(format!("row {r} out of {out}")))?;
                    v.extend_from_slice(chunk);
                }
                v
            }
        };
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), device, ty)?;
        Ok(Some(Self {
            store: Store::Quant(Arc::new(QTensor::new(storage, q.shape().clone())?)),
            compute,
        }))
    }

    /// The same weight on `device` (a no-op where it already is).
    pub fn to_device(self, device: &Device) -> Result<Self> {
        if self.device().same_device(device) {
            return Ok(self);
        }
        let store = match self.store {
            Store::Dense(t) => Store::Dense(t.to_device(device)?),
            Store::Quant(q) => {
                let storage = QStorage::from_data(q.data()?, device, q.dtype())?;
                Store::Quant(Arc::new(QTensor::new(storage, q.shape().clone())?))
            }
        };
        Ok(Self {
            store,
            compute: self.compute,
        })
    }

    /// `(out, in)`.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        Ok(match &self.store {
            Store::Dense(t) => t.dims2()?,
            Store::Quant(q) => q.shape().dims2()?,
        })
    }

    /// Device it lives on.
    pub fn device(&self) -> candle_core::Device {
        match &self.store {
            Store::Dense(t) => t.device().clone(),
            Store::Quant(q) => q.device(),
        }
    }

    /// The dtype matmuls run in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Store::Quant(q) => q.storage_size_in_bytes(),
        }
    }

    /// The weight in the compute dtype (the tensor itself when it is held that way).
    pub fn expand(&self) -> candle_core::Result<Tensor> {
        match &self.store {
            Store::Dense(t) if t.dtype() == self.compute => Ok(t.clone()),
            Store::Dense(t) => t.to_dtype(self.compute),
            Store::Quant(q) => q.dequantize(&q.device())?.to_dtype(self.compute),
        }
    }
}

/// Matmul `(b, m, n, k)`, the transposed weight layout, and the output shape.
type Plan = ((usize, usize, usize, usize), Layout, Shape);

struct FrozenLinear {
    w: FrozenWeight,
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
        let w = self.w.expand()?;
        let (ws, wl) = w.storage_and_layout();
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
        let w = self.w.expand()?;
        let (ws, wl) = w.storage_and_layout();
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
        Ok(Some(grad_res.matmul(&self.w.expand()?)?))
    }
}

/// `x·Wᵀ` for `x: [n, in]`, `w: [out, in]`; gradients flow to `x` only, never to `w`.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = if w.is_contiguous() {
        w.clone()
    } else {
        w.contiguous()?
    };
    frozen_linear_compact(x, &FrozenWeight::dense(w))
}

/// [`frozen_linear`] with a weight held in any [`BaseDType`] (contiguous when dense).
pub fn frozen_linear_compact(x: &Tensor, w: &FrozenWeight) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(x.apply_op1(FrozenLinear { w: w.clone() })?)
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

//! LoRA-wrapped linear layers: a frozen base weight plus a trainable low-rank update.

use candle_core::{DType, Device, Tensor, Var};
use hearth_proto::{NamedTensor, TensorLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{LoraConfig, LoraTarget};
use crate::error::{ModelError, Result};
use crate::ops::linear::{frozen_linear_compact, FrozenWeight};

/// A LoRA parameter: trainable (`Var`) or frozen (plain tensor, never gets a gradient).
#[derive(Debug, Clone)]
pub enum Param {
    /// Frozen value.
    Frozen(Tensor),
    /// Trainable leaf.
    Trainable(Var),
}

impl Param {
    /// The current value.
    pub fn tensor(&self) -> &Tensor {
        match self {
            Param::Frozen(t) => t,
            Param::Trainable(v) => v.as_tensor(),
        }
    }

    fn set(&mut self, t: Tensor) -> Result<()> {
        match self {
            Param::Frozen(old) => *old = t,
            Param::Trainable(v) => v.set(&t)?,
        }
        Ok(())
    }
}

/// The low-rank part of a [`LoraLinear`].
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// PEFT module prefix, e.g. `base_model.model.model.layers.3.self_attn.q_proj`.
    pub prefix: String,
    /// A, `[r, in]`.
    pub a: Param,
    /// B, `[out, r]`, zero at init.
    pub b: Param,
    /// α / r.
    pub scale: f64,
    /// Dropout probability on the LoRA input in training.
    pub dropout: f64,
}

/// `y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ` with W frozen.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// Frozen base weight `[out, in]`, full precision or compact.
    pub base: FrozenWeight,
    /// The adapter, if this projection is targeted.
    pub lora: Option<LoraAdapter>,
}

/// PEFT module prefix of `target` in block `layer`.
pub fn peft_prefix(layer: usize, target: LoraTarget) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}",
        target.parent(),
        target.module_name()
    )
}

/// A deterministic RNG for `label` under `seed` (independent streams per label).
pub fn seeded_rng(seed: u64, label: &str) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

impl LoraLinear {
    /// A plain frozen linear layer.
    pub fn frozen(base: FrozenWeight) -> Self {
        Self { base, lora: None }
    }

    /// Wraps `base` (`[out, in]`) with a fresh adapter: A ~ U(±1/√in) from the seed, B = 0.
    pub fn with_lora(
        base: FrozenWeight,
        layer: usize,
        target: LoraTarget,
        cfg: &LoraConfig,
    ) -> Result<Self> {
        let (out, inp) = base.dims2()?;
        let (dev, dtype) = (base.device(), base.compute_dtype());
        let prefix = peft_prefix(layer, target);
        let bound = 1.0 / (inp as f32).sqrt();
        let mut rng = seeded_rng(cfg.seed, &format!("{prefix}.lora_A"));
        let a_data: Vec<f32> = (0..cfg.rank * inp)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a_data, (cfg.rank, inp), &dev)?.to_dtype(dtype)?;
        let b = Tensor::zeros((out, cfg.rank), dtype, &dev)?;
        let a = if cfg.train_a {
            Param::Trainable(Var::from_tensor(&a)?)
        } else {
            Param::Frozen(a)
        };
        Ok(Self {
            base,
            lora: Some(LoraAdapter {
                prefix,
                a,
                b: Param::Trainable(Var::from_tensor(&b)?),
                scale: cfg.scale(),
                dropout: cfg.dropout,
            }),
        })
    }

    /// Applies the layer to `x` of shape `[n, in]`; `dropout_seed` enables dropout (training).
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let y = frozen_linear_compact(x, &self.base)?;
        let Some(l) = &self.lora else { return Ok(y) };
        let xin = match dropout_seed {
            Some(seed) if l.dropout > 0.0 => dropout_mask(x, l.dropout, seed, &l.prefix)?,
            _ => x.clone(),
        };
        let low = xin.matmul(&l.a.tensor().t()?)?;
        let up = low.matmul(&l.b.tensor().t()?)?;
        Ok((y + (up * l.scale)?)?)
    }
}

fn dropout_mask(x: &Tensor, p: f64, seed: u64, prefix: &str) -> Result<Tensor> {
    let mut rng = seeded_rng(seed, prefix);
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f64>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn adapter_entries<'a>(
    layers: impl Iterator<Item = &'a LoraLinear>,
    trainable_only: bool,
) -> Vec<(String, &'a Param)> {
    let mut out = Vec::new();
    for l in layers.filter_map(|l| l.lora.as_ref()) {
        if !trainable_only || matches!(l.a, Param::Trainable(_)) {
            out.push((format!("{}.lora_A.weight", l.prefix), &l.a));
        }
        out.push((format!("{}.lora_B.weight", l.prefix), &l.b));
    }
    out
}

/// Names and shapes of the adapter tensors (trainable ones only, or all of A and B).
pub fn layout<'a>(
    layers: impl Iterator<Item = &'a LoraLinear>,
    trainable_only: bool,
) -> Vec<TensorLayout> {
    adapter_entries(layers, trainable_only)
        .into_iter()
        .map(|(name, p)| TensorLayout {
            name,
            shape: p.tensor().dims().to_vec(),
        })
        .collect()
}

/// Copies the adapter tensors out as f32 (trainable ones only, or all of A and B).
pub fn tensors<'a>(
    layers: impl Iterator<Item = &'a LoraLinear>,
    trainable_only: bool,
) -> Result<Vec<NamedTensor>> {
    adapter_entries(layers, trainable_only)
        .into_iter()
        .map(|(name, p)| {
            Ok(NamedTensor {
                name,
                shape: p.tensor().dims().to_vec(),
                data: to_f32_vec(p.tensor())?,
            })
        })
        .collect()
}

/// The trainable leaves.
pub fn vars<'a>(layers: impl Iterator<Item = &'a LoraLinear>) -> Vec<Var> {
    let mut out = Vec::new();
    for l in layers.filter_map(|l| l.lora.as_ref()) {
        for p in [&l.a, &l.b] {
            if let Param::Trainable(v) = p {
                out.push(v.clone());
            }
        }
    }
    out
}

/// Sets adapter values by PEFT name. Every trainable tensor must be given; frozen A may be given too.
/// Names, shapes and finiteness are checked before anything changes.
pub fn set<'a>(
    layers: impl Iterator<Item = &'a mut LoraLinear>,
    given: &[NamedTensor],
) -> Result<()> {
    let mut slots: Vec<(String, bool, &mut Param, Device, DType)> = Vec::new();
    for l in layers.filter_map(|l| l.lora.as_mut()) {
        let a_train = matches!(l.a, Param::Trainable(_));
        let (dev, dtype) = (l.b.tensor().device().clone(), l.b.tensor().dtype());
        slots.push((
            format!("{}.lora_A.weight", l.prefix),
            a_train,
            &mut l.a,
            dev.clone(),
            dtype,
        ));
        slots.push((
            format!("{}.lora_B.weight", l.prefix),
            true,
            &mut l.b,
            dev,
            dtype,
        ));
    }
    let mut used = vec![false; slots.len()];
    let mut plan = Vec::with_capacity(given.len());
    for t in given {
        let idx = slots
            .iter()
            .position(|s| s.0 == t.name)
            .ok_or_else(|| ModelError::Adapter(format!("unknown adapter tensor {:?}", t.name)))?;
        if std::mem::replace(&mut used[idx], true) {
            return Err(ModelError::Adapter(format!(
                "adapter tensor {:?} given twice",
                t.name
            )));
        }
        let want = slots[idx].2.tensor().dims().to_vec();
        if t.shape != want {
            return Err(ModelError::Adapter(format!(
                "{} has shape {:?}, expected {:?}",
                t.name, t.shape, want
            )));
        }
        if t.data.len() != want.iter().product::<usize>() {
            return Err(ModelError::Adapter(format!(
                "{} has {} values for shape {:?}",
                t.name,
                t.data.len(),
                want
            )));
        }
        if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
            return Err(ModelError::Adapter(format!(
                "{} holds non-finite value {bad}",
                t.name
            )));
        }
        plan.push((idx, t));
    }
    if let Some(missing) = slots.iter().zip(&used).find(|(s, u)| s.1 && !**u) {
        return Err(ModelError::Adapter(format!(
            "trainable tensor {} not given",
            missing.0 .0
        )));
    }
    for (idx, t) in plan {
        let slot = &mut slots[idx];
        let value =
            Tensor::from_vec(t.data.clone(), t.shape.as_slice(), &slot.3)?.to_dtype(slot.4)?;
        slot.2.set(value)?;
    }
    Ok(())
}

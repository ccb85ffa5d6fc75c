//! Llama-family decoder (RMSNorm, half-split RoPE, GQA, SwiGLU, tied embeddings) built only from
//! ops that carry gradients, with LoRA on selected projections. The family features of
//! [`crate::config::Features`] add RoPE scaling (Llama 3), q/k/v biases (Qwen2) and per-head
//! q/k RMSNorm (Qwen3).

use candle_core::{DType, Device, Tensor, Var, D};

use crate::config::{LoraConfig, LoraTarget, ModelConfig};
use crate::error::{ModelError, Result};
use crate::lora::{self, LoraLinear};
use crate::ops::attention::{self, causal_attention, Geometry};
use crate::ops::fused;
use crate::ops::linear::{frozen_linear, BaseDType, FrozenWeight};
use crate::weights::Weights;
use hearth_proto::{NamedTensor, TensorLayout};

/// RMSNorm with a frozen gain, composed of differentiable primitives.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Builds from a gain vector.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// Normalises over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if fused::supported(x.device(), x.dtype()) {
            return fused::rms_norm(x, &self.weight, self.eps);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_mul(&self.weight)?)
    }
}

/// Rotary tables in the Hugging Face half-split layout.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Precomputes cos/sin `[max_position, head_dim/2]`, with the config's frequency scaling.
    pub fn new(cfg: &ModelConfig, dtype: DType, dev: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let mut inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64))
            .collect();
        if let Some(scaling) = &cfg.features.rope_scaling {
            scaling.apply(&mut inv);
        }
        let mut angles = Vec::with_capacity(cfg.max_position * half);
        for t in 0..cfg.max_position {
            angles.extend(inv.iter().map(|f| t as f64 * f));
        }
        let a = Tensor::from_vec(angles, (cfg.max_position, half), dev)?;
        Ok(Self {
            cos: a.cos()?.to_dtype(dtype)?,
            sin: a.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotates `x: [b, h, t, d]` for positions `0..t`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        Ok(candle_nn::rotary_emb::rope_slow(x, &cos, &sin)?)
    }
}

/// Self-attention with grouped-query heads.
#[derive(Debug, Clone)]
pub struct Attention {
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    /// q, k, v biases (Qwen2, `attention_bias`).
    qkv_bias: Option<[Tensor; 3]>,
    /// Output projection bias (`attention_bias`).
    o_bias: Option<Tensor>,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Where and how a model is built from its weights: each tensor is moved to `device` as it is
/// used, and the projections are made compact (`dtype`) before they move, so a base loaded on
/// the host reaches a GPU one tensor at a time and only in its compact form.
struct Loader<'a> {
    w: &'a Weights,
    dtype: BaseDType,
    device: &'a Device,
}

impl Loader<'_> {
    /// The tensor `name`, on the model's device.
    fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.w.get(name)?.to_device(self.device)?)
    }

    /// The projection weight `name` with its LoRA adapter when `target` is one of `lora`'s.
    fn proj(
        &self,
        name: &str,
        layer: usize,
        target: LoraTarget,
        lora: Option<&LoraConfig>,
    ) -> Result<LoraLinear> {
        let kept = match self.w.blocks(name) {
            Some(b) => FrozenWeight::from_blocks(
                &b.q,
                b.rows.as_deref(),
                self.dtype,
                b.dtype,
                self.device,
            )?,
            None => None,
        };
        let base = match kept {
            Some(k) => k,
            None => FrozenWeight::compact_onto(&self.w.get(name)?, self.dtype, self.device)?,
        };
        match lora {
            Some(c) if c.targets.contains(&target) => LoraLinear::with_lora(base, layer, target, c),
            _ => Ok(LoraLinear::frozen(base)),
        }
    }
}

impl Attention {
    /// Loads block `layer`'s attention.
    fn load(
        ld: &Loader,
        cfg: &ModelConfig,
        layer: usize,
        lora: Option<&LoraConfig>,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}.self_attn");
        let f = &cfg.features;
        let get = |n: &str| ld.tensor(&format!("{p}.{n}"));
        Ok(Self {
            q: ld.proj(&format!("{p}.q_proj.weight"), layer, LoraTarget::Q, lora)?,
            k: ld.proj(&format!("{p}.k_proj.weight"), layer, LoraTarget::K, lora)?,
            v: ld.proj(&format!("{p}.v_proj.weight"), layer, LoraTarget::V, lora)?,
            o: ld.proj(&format!("{p}.o_proj.weight"), layer, LoraTarget::O, lora)?,
            qkv_bias: if f.qkv_bias {
                Some([
                    get("q_proj.bias")?,
                    get("k_proj.bias")?,
                    get("v_proj.bias")?,
                ])
            } else {
                None
            },
            o_bias: f.o_bias.then(|| get("o_proj.bias")).transpose()?,
            qk_norm: if f.qk_norm {
                Some((
                    RmsNorm::new(get("q_norm.weight")?, cfg.rms_eps),
                    RmsNorm::new(get("k_norm.weight")?, cfg.rms_eps),
                ))
            } else {
                None
            },
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
        })
    }

    /// `x: [b*t, hidden]` → `[b*t, hidden]`.
    pub fn forward(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: &Rope,
        mask: &Tensor,
        seed: Option<u64>,
    ) -> Result<Tensor> {
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let mut q = self.q.forward(x, seed)?;
        let mut k = self.k.forward(x, seed)?;
        let mut v = self.v.forward(x, seed)?;
        if let Some([bq, bk, bv]) = &self.qkv_bias {
            q = q.broadcast_add(bq)?;
            k = k.broadcast_add(bk)?;
            v = v.broadcast_add(bv)?;
        }
        if let Some((nq, nk)) = &self.qk_norm {
            // Over each head's `d` values: [b·t, n·d] → [b·t·n, d] → back.
            let n = b * t;
            q = nq.forward(&q.reshape((n * h, d))?)?.reshape((n, h * d))?;
            k = nk
                .forward(&k.reshape((n * kvh, d))?)?
                .reshape((n, kvh * d))?;
        }
        let out = if attention::supported(x.device(), x.dtype()) {
            let g = Geometry {
                b,
                t,
                heads: h,
                kv_heads: kvh,
                head_dim: d,
            };
            causal_attention(&q, &k, &v, &rope.cos, &rope.sin, g)?
        } else {
            composed_attention(&q, &k, &v, (b, t, h, kvh, d), rope, mask)?
        };
        let out = self.o.forward(&out, seed)?;
        match &self.o_bias {
            Some(bo) => Ok(out.broadcast_add(bo)?),
            None => Ok(out),
        }
    }
}

/// Reference attention from candle primitives (any device): `q: [b·t, h·d]`, `k, v: [b·t, kvh·d]`
/// → `[b·t, h·d]`, with RoPE on q and k and the additive `mask`.
pub fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (b, t, h, kvh, d): (usize, usize, usize, usize, usize),
    rope: &Rope,
    mask: &Tensor,
) -> Result<Tensor> {
    let heads = |y: &Tensor, n: usize| -> Result<Tensor> {
        Ok(y.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?)
    };
    let q = rope.apply(&heads(q, h)?)?;
    let k = rope.apply(&heads(k, kvh)?)?;
    let v = heads(v, kvh)?;
    let rep = h / kvh;
    let (k, v) = if rep == 1 {
        (k, v)
    } else {
        let expand = |y: Tensor| -> Result<Tensor> {
            Ok(y.unsqueeze(2)?
                .broadcast_as((b, kvh, rep, t, d))?
                .reshape((b, h, t, d))?)
        };
        (expand(k)?, expand(v)?)
    };
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = scores.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((b * t, h * d))?)
}

/// SwiGLU feed-forward.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

impl Mlp {
    /// Loads block `layer`'s MLP.
    fn load(ld: &Loader, layer: usize, lora: Option<&LoraConfig>) -> Result<Self> {
        let p = format!("model.layers.{layer}.mlp");
        Ok(Self {
            gate: ld.proj(
                &format!("{p}.gate_proj.weight"),
                layer,
                LoraTarget::Gate,
                lora,
            )?,
            up: ld.proj(&format!("{p}.up_proj.weight"), layer, LoraTarget::Up, lora)?,
            down: ld.proj(
                &format!("{p}.down_proj.weight"),
                layer,
                LoraTarget::Down,
                lora,
            )?,
        })
    }

    /// `x: [n, hidden]` → `[n, hidden]`.
    pub fn forward(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        let g = self.gate.forward(x, seed)?;
        let u = self.up.forward(x, seed)?;
        let h = if fused::supported(x.device(), x.dtype()) {
            fused::swiglu(&g, &u)?
        } else {
            (g.silu()? * u)?
        };
        self.down.forward(&h, seed)
    }
}

/// One pre-norm decoder block.
#[derive(Debug, Clone)]
pub struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    /// Loads block `layer`.
    fn load(
        ld: &Loader,
        cfg: &ModelConfig,
        layer: usize,
        lora: Option<&LoraConfig>,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        Ok(Self {
            attn_norm: RmsNorm::new(
                ld.tensor(&format!("{p}.input_layernorm.weight"))?,
                cfg.rms_eps,
            ),
            attn: Attention::load(ld, cfg, layer, lora)?,
            mlp_norm: RmsNorm::new(
                ld.tensor(&format!("{p}.post_attention_layernorm.weight"))?,
                cfg.rms_eps,
            ),
            mlp: Mlp::load(ld, layer, lora)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: &Rope,
        mask: &Tensor,
        seed: Option<u64>,
    ) -> Result<Tensor> {
        let h = (x + self
            .attn
            .forward(&self.attn_norm.forward(x)?, b, t, rope, mask, seed)?)?;
        Ok((&h + self.mlp.forward(&self.mlp_norm.forward(&h)?, seed)?)?)
    }

    fn linears(&self) -> [&LoraLinear; 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }

    fn linears_mut(&mut self) -> [&mut LoraLinear; 7] {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        [
            &mut a.q,
            &mut a.k,
            &mut a.v,
            &mut a.o,
            &mut m.gate,
            &mut m.up,
            &mut m.down,
        ]
    }
}

/// The decoder with optional LoRA adapters.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    lora: Option<LoraConfig>,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: Rope,
}

impl Model {
    /// Builds the decoder from validated weights; `lora` adds fresh adapters (B = 0).
    pub fn load(w: &Weights, cfg: &ModelConfig, lora: Option<&LoraConfig>) -> Result<Self> {
        Self::load_with(w, cfg, lora, BaseDType::F32)
    }

    /// [`Model::load`] with the decoder's projection weights held in `dtype` (bf16, f16, or
    /// QLoRA-style 4/8-bit blocks), expanded per matmul in the forward and backward passes.
    /// The embedding, norms and LM head stay as loaded.
    pub fn load_with(
        w: &Weights,
        cfg: &ModelConfig,
        lora: Option<&LoraConfig>,
        dtype: BaseDType,
    ) -> Result<Self> {
        let device = w.get("model.embed_tokens.weight")?.device().clone();
        Self::load_onto(w, cfg, lora, dtype, &device)
    }

    /// [`Model::load_with`] onto `device`, from weights that may live elsewhere (the host): each
    /// tensor moves as it is used and each projection only once compact, so a GPU never holds
    /// the full-precision projections that a compact `dtype` leaves out.
    pub fn load_onto(
        w: &Weights,
        cfg: &ModelConfig,
        lora: Option<&LoraConfig>,
        dtype: BaseDType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if let Some(l) = lora {
            l.validate()?;
        }
        w.validate(cfg)?;
        let ld = Loader { w, dtype, device };
        let embed = ld.tensor("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_embeddings {
            embed.clone()
        } else {
            ld.tensor("lm_head.weight")?
        };
        let blocks = (0..cfg.layers)
            .map(|l| Block::load(&ld, cfg, l, lora))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            rope: Rope::new(cfg, embed.dtype(), device)?,
            norm: RmsNorm::new(ld.tensor("model.norm.weight")?, cfg.rms_eps),
            cfg: cfg.clone(),
            lora: lora.cloned(),
            embed,
            blocks,
            lm_head,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The LoRA configuration, if adapters are attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Final-norm hidden states `[b*t, hidden]` for token ids `[b, t]` (u32).
    pub fn hidden_states(&self, ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let (mut x, b, t) = self.embed_ids(ids)?;
        let mask = causal_mask(t, self.dtype(), self.device())?;
        for i in 0..self.blocks.len() {
            x = self.block(i, &x, b, t, &mask, dropout_seed)?;
        }
        self.norm.forward(&x)
    }

    /// Checks token ids `[b, t]` (length, sliding window, vocabulary) and embeds them:
    /// `([b*t, hidden], b, t)`.
    pub(crate) fn embed_ids(&self, ids: &Tensor) -> Result<(Tensor, usize, usize)> {
        let (b, t) = ids.dims2()?;
        if t == 0 || t > self.cfg.max_position {
            return Err(ModelError::Input(format!(
                "sequence length {t} not in 1..={}",
                self.cfg.max_position
            )));
        }
        if let Some(w) = self.cfg.features.sliding_window.filter(|w| t > *w) {
            return Err(ModelError::Unsupported(format!(
                "sequence length {t} above the model's sliding_window {w}: sliding-window \
                 attention is not implemented (within the window it changes nothing)"
            )));
        }
        let flat = ids.flatten_all()?;
        let max_id = flat.max(0)?.to_scalar::<u32>()?;
        if max_id as usize >= self.cfg.vocab {
            return Err(ModelError::Input(format!(
                "token id {max_id} >= vocab {}",
                self.cfg.vocab
            )));
        }
        Ok((self.embed.index_select(&flat, 0)?, b, t))
    }

    /// Decoder block `i` on the residual stream `x` (`[b*t, hidden]`); `dropout_seed` is the
    /// step's seed, from which each block derives its own.
    pub(crate) fn block(
        &self,
        i: usize,
        x: &Tensor,
        b: usize,
        t: usize,
        mask: &Tensor,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        let block = self
            .blocks
            .get(i)
            .ok_or_else(|| ModelError::Input(format!("no decoder block {i}")))?;
        let seed =
            dropout_seed.map(|s| s.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64));
        block.forward(x, b, t, &self.rope, mask, seed)
    }

    /// Decoder blocks.
    pub(crate) fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// The final RMSNorm.
    pub(crate) fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(x)
    }

    /// Logits for hidden states `[n, hidden]` → `[n, vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        frozen_linear(hidden, &self.lm_head)
    }

    /// Weighted next-token NLL sum of hidden states `[n, hidden]` through the LM head, without
    /// materialising the logits (see [`crate::ops::head_loss`]); differentiable in `hidden`.
    pub fn head_nll_sum(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor> {
        crate::ops::head_loss::head_nll_sum(hidden, &self.lm_head, targets, weights)
    }

    /// [`Model::head_nll_sum`] for evaluation: no gradient, about half the LM head's work.
    pub fn head_nll_sum_eval(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor> {
        crate::ops::head_loss::head_nll_sum_eval(hidden, &self.lm_head, targets, weights)
    }

    /// Logits `[b, t, vocab]` for token ids `[b, t]` (u32); `dropout_seed` turns on LoRA dropout.
    pub fn forward(&self, ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.hidden_states(ids, dropout_seed)?;
        Ok(self.logits(&h)?.reshape((b, t, self.cfg.vocab))?)
    }

    /// Logits `[b, vocab]` of the last position only (for generation).
    pub fn last_logits(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self
            .hidden_states(ids, None)?
            .reshape((b, t, self.cfg.hidden))?;
        let last = h.narrow(1, t - 1, 1)?.reshape((b, self.cfg.hidden))?;
        self.logits(&last)
    }

    fn linears(&self) -> impl Iterator<Item = &LoraLinear> {
        self.blocks.iter().flat_map(|b| b.linears())
    }

    /// The trainable LoRA leaves (B only in FFA mode, A and B otherwise).
    pub fn trainable_vars(&self) -> Vec<Var> {
        lora::vars(self.linears())
    }

    /// Names and shapes of the trainable adapter tensors.
    pub fn adapter_layout(&self) -> Vec<TensorLayout> {
        lora::layout(self.linears(), true)
    }

    /// Names and shapes of all adapter tensors (A and B), as exported to PEFT.
    pub fn full_adapter_layout(&self) -> Vec<TensorLayout> {
        lora::layout(self.linears(), false)
    }

    /// The trainable adapter tensors as f32.
    pub fn adapter_tensors(&self) -> Result<Vec<NamedTensor>> {
        lora::tensors(self.linears(), true)
    }

    /// All adapter tensors (A and B) as f32.
    pub fn all_adapter_tensors(&self) -> Result<Vec<NamedTensor>> {
        lora::tensors(self.linears(), false)
    }

    /// Sets adapter values by PEFT name (all trainable tensors required; frozen A optional).
    pub fn set_adapter(&mut self, tensors: &[NamedTensor]) -> Result<()> {
        lora::set(
            self.blocks.iter_mut().flat_map(|b| b.linears_mut()),
            tensors,
        )
    }
}

/// `[t, t]` additive mask: 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(m, (t, t), dev)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn var(n: usize, m: usize, seed: usize) -> Var {
        let data: Vec<f64> = (0..n * m)
            .map(|i| (((i * 7919 + seed * 104_729) % 1009) as f64 / 1009.0 - 0.5) * 2.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(data, (n, m), &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn fused_attention_matches_composed_values_and_gradients() {
        let (b, t, h, kvh, d) = (2, 6, 6, 2, 4);
        let half = d / 2;
        let angles: Vec<f64> = (0..t * half)
            .map(|i| (i / half) as f64 * 0.37 * (1 + i % half) as f64)
            .collect();
        let a = Tensor::from_vec(angles, (t, half), &Device::Cpu).unwrap();
        let rope = Rope {
            cos: a.cos().unwrap(),
            sin: a.sin().unwrap(),
        };
        let mask = causal_mask(t, DType::F64, &Device::Cpu).unwrap();
        let (q, k, v) = (
            var(b * t, h * d, 1),
            var(b * t, kvh * d, 2),
            var(b * t, kvh * d, 3),
        );
        let w = var(b * t, h * d, 4);
        let g = Geometry {
            b,
            t,
            heads: h,
            kv_heads: kvh,
            head_dim: d,
        };
        let run = |fused: bool| {
            let out = if fused {
                causal_attention(
                    q.as_tensor(),
                    k.as_tensor(),
                    v.as_tensor(),
                    &rope.cos,
                    &rope.sin,
                    g,
                )
            } else {
                composed_attention(
                    q.as_tensor(),
                    k.as_tensor(),
                    v.as_tensor(),
                    (b, t, h, kvh, d),
                    &rope,
                    &mask,
                )
            }
            .unwrap();
            let loss = (&out * w.as_tensor()).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let mut all = out.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for x in [&q, &k, &v] {
                let gx = grads.get(x.as_tensor()).unwrap();
                all.extend(gx.flatten_all().unwrap().to_vec1::<f64>().unwrap());
            }
            all
        };
        let (want, got) = (run(false), run(true));
        assert_eq!(want.len(), got.len());
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!((a - b).abs() < 1e-12, "element {i}: composed {a} fused {b}");
        }
    }
}

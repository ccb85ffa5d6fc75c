//! Model and LoRA hyper-parameters.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Shape and numerics of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// Hidden (residual stream) width.
    pub hidden: usize,
    /// SwiGLU inner width.
    pub intermediate: usize,
    /// Number of decoder blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when below `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Longest sequence the rotary cache covers.
    pub max_position: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_embeddings: bool,
    /// The family and its features that change the math (plain Llama when absent).
    #[serde(default)]
    pub features: Features,
}

/// The decoder families Hearth implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 1/2/3/3.1/3.2 (and SmolLM2).
    #[default]
    Llama,
    /// Mistral (Llama with an optional sliding window).
    Mistral,
    /// Qwen2 and Qwen2.5 (biases on q, k and v).
    Qwen2,
    /// Qwen3 (RMSNorm on each head of q and k).
    Qwen3,
}

impl Family {
    /// The name used by `config.json`'s `model_type` and by GGUF's `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

/// How RoPE frequencies are rescaled for longer contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (transformers `linear`).
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (transformers `llama3`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position: f64,
    },
    /// One divisor per frequency (GGUF's `rope_freqs.weight`, llama.cpp's form of `llama3`).
    Factors {
        /// `head_dim / 2` divisors.
        factors: Vec<f64>,
    },
}

impl RopeScaling {
    /// Applies the scaling to the unscaled inverse frequencies `inv` (`head_dim / 2` of them).
    pub fn apply(&self, inv: &mut [f64]) {
        match self {
            RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position: old,
            } => {
                // transformers `_compute_llama3_parameters`.
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            RopeScaling::Factors { factors } => {
                for (f, d) in inv.iter_mut().zip(factors) {
                    *f /= d;
                }
            }
        }
    }

    fn validate(&self, half: usize) -> std::result::Result<(), String> {
        let pos = |n: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("rope scaling {n} {v} must be positive"))
            }
        };
        match self {
            RopeScaling::Linear { factor } => pos("factor", *factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                pos("factor", *factor)?;
                pos("low_freq_factor", *low_freq_factor)?;
                pos("high_freq_factor", *high_freq_factor)?;
                pos("original_max_position_embeddings", *original_max_position)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope scaling high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                    ));
                }
                Ok(())
            }
            RopeScaling::Factors { factors } => {
                if factors.len() != half {
                    return Err(format!(
                        "{} rope frequency factors for {half} frequencies",
                        factors.len()
                    ));
                }
                factors.iter().try_for_each(|f| pos("frequency factor", *f))
            }
        }
    }
}

/// A family's features that change the math, beyond the shared Llama shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The family (for names in messages and exported configs).
    pub family: Family,
    /// RoPE frequency scaling.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Biases on the q, k and v projections (Qwen2; Llama/Qwen3 `attention_bias`).
    #[serde(default)]
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama/Qwen3 `attention_bias`).
    #[serde(default)]
    pub o_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3).
    #[serde(default)]
    pub qk_norm: bool,
    /// Sliding attention window (Mistral): sequences longer than it are refused, since within it
    /// the window changes nothing.
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// SmolLM2-135M (and -Instruct).
    pub fn smollm2_135m() -> Self {
        Self {
            vocab: 49152,
            hidden: 576,
            intermediate: 1536,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            max_position: 8192,
            tie_embeddings: true,
            features: Features::default(),
        }
    }

    /// A small config for fast tests (byte-level vocabulary).
    pub fn tiny() -> Self {
        Self {
            vocab: 512,
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_position: 512,
            tie_embeddings: true,
            features: Features::default(),
        }
    }

    /// Checks the invariants the decoder relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.vocab == 0 || self.hidden == 0 || self.intermediate == 0 || self.layers == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if self.heads == 0 || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "heads {} must be a positive multiple of kv_heads {}",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even and positive",
                self.head_dim
            ));
        }
        if self.max_position == 0 || self.max_position > 1 << 20 {
            return bad(format!("max_position {} out of range", self.max_position));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad(format!("rms_eps {} must be positive", self.rms_eps));
        }
        if let Some(r) = &self.features.rope_scaling {
            r.validate(self.head_dim / 2).map_err(ModelError::Config)?;
        }
        if self.features.sliding_window == Some(0) {
            return bad("sliding_window 0".into());
        }
        let limit = 1usize << 24;
        for (n, v) in [
            ("vocab", self.vocab),
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("layers", self.layers),
            ("heads", self.heads),
        ] {
            if v > limit {
                return bad(format!("{n} {v} exceeds {limit}"));
            }
        }
        Ok(())
    }

    /// Number of base-model parameters (embedding counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let (h, i) = (self.hidden, self.intermediate);
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        let f = &self.features;
        let bias = if f.qkv_bias { q + 2 * kv } else { 0 } + if f.o_bias { h } else { 0 };
        let norms = if f.qk_norm { 2 * self.head_dim } else { 0 };
        let block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + bias + norms;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab * h
        };
        self.vocab * h + self.layers * block + h + head
    }
}

/// A projection a LoRA adapter can wrap, named as in PEFT's `target_modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LoraTarget {
    /// Attention query projection.
    #[serde(rename = "q_proj")]
    Q,
    /// Attention key projection.
    #[serde(rename = "k_proj")]
    K,
    /// Attention value projection.
    #[serde(rename = "v_proj")]
    V,
    /// Attention output projection.
    #[serde(rename = "o_proj")]
    O,
    /// MLP gate projection.
    #[serde(rename = "gate_proj")]
    Gate,
    /// MLP up projection.
    #[serde(rename = "up_proj")]
    Up,
    /// MLP down projection.
    #[serde(rename = "down_proj")]
    Down,
}

impl LoraTarget {
    /// All targets in PEFT module order.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::O => "o_proj",
            LoraTarget::Gate => "gate_proj",
            LoraTarget::Up => "up_proj",
            LoraTarget::Down => "down_proj",
        }
    }

    /// The parent module (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            LoraTarget::Q | LoraTarget::K | LoraTarget::V | LoraTarget::O => "self_attn",
            _ => "mlp",
        }
    }

    /// Parses a module name such as `q_proj`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.module_name() == name)
            .ok_or_else(|| ModelError::Config(format!("unknown LoRA target module {name:?}")))
    }

    /// (out, in) of the wrapped projection for a config.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        let q = cfg.heads * cfg.head_dim;
        let kv = cfg.kv_heads * cfg.head_dim;
        match self {
            LoraTarget::Q => (q, cfg.hidden),
            LoraTarget::K | LoraTarget::V => (kv, cfg.hidden),
            LoraTarget::O => (cfg.hidden, q),
            LoraTarget::Gate | LoraTarget::Up => (cfg.intermediate, cfg.hidden),
            LoraTarget::Down => (cfg.hidden, cfg.intermediate),
        }
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub rank: usize,
    /// Scaling numerator α (scale = α / r).
    pub alpha: f64,
    /// Dropout probability on the LoRA input path during training.
    pub dropout: f64,
    /// Projections to adapt.
    pub targets: Vec<LoraTarget>,
    /// Train A as well as B; `false` is FFA-LoRA (A frozen, drawn from `seed`).
    pub train_a: bool,
    /// Seed for A's initialisation (and dropout masks).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![LoraTarget::Q, LoraTarget::V],
            train_a: false,
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// The multiplier α / r.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks rank, dropout and targets.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > 4096 {
            return Err(ModelError::Config(format!(
                "lora rank {} out of 1..=4096",
                self.rank
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!(
                "lora dropout {} out of [0, 1)",
                self.dropout
            )));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(ModelError::Config(format!(
                "lora alpha {} must be positive",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(ModelError::Config("lora targets are empty".into()));
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return Err(ModelError::Config(format!(
                "duplicate lora targets in {:?}",
                self.targets
            )));
        }
        Ok(())
    }

    /// Targets sorted in PEFT module order.
    pub fn sorted_targets(&self) -> Vec<LoraTarget> {
        let mut t = self.targets.clone();
        t.sort();
        t.dedup();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_has_135m_parameters() {
        let n = ModelConfig::smollm2_135m().parameter_count();
        assert!((134_000_000..136_000_000).contains(&n), "{n}");
    }

    #[test]
    fn validate_rejects_bad_gqa() {
        let mut c = ModelConfig::tiny();
        c.kv_heads = 3;
        assert!(c.validate().is_err());
        assert!(ModelConfig::tiny().validate().is_ok());
    }

    #[test]
    fn targets_serialize_as_peft_names() {
        let s = serde_json::to_string(&[LoraTarget::Q, LoraTarget::Down]).unwrap();
        assert_eq!(s, r#"["q_proj","down_proj"]"#);
        assert_eq!(LoraTarget::parse("gate_proj").unwrap(), LoraTarget::Gate);
        assert!(LoraTarget::parse("lm_head").is_err());
    }
}

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
        let block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
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

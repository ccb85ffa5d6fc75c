//! Base-model weights by Hugging Face name, with shape validation against a config.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// Frozen base weights keyed by Hugging Face Llama names (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

/// Expected (name, shape) pairs of a Llama checkpoint for `cfg`.
pub fn expected_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden, cfg.intermediate);
    let q = cfg.heads * cfg.head_dim;
    let kv = cfg.kv_heads * cfg.head_dim;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, h])];
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab, h]));
    }
    out
}

impl Weights {
    /// Wraps a name → tensor map.
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors }
    }

    /// Inserts or replaces one tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    /// The tensor called `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| ModelError::Weight {
            name: name.to_string(),
            msg: "missing".into(),
        })
    }

    /// All tensors by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Checks that every tensor `cfg` needs is present with the right shape.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        for (name, shape) in expected_shapes(cfg) {
            let t = self.get(&name)?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::Weight {
                    name,
                    msg: format!("shape {:?}, expected {:?}", t.dims(), shape),
                });
            }
        }
        Ok(())
    }

    /// Converts every tensor to `dtype` on `device`.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        let mut tensors = HashMap::with_capacity(self.tensors.len());
        for (k, v) in &self.tensors {
            tensors.insert(k.clone(), v.to_device(device)?.to_dtype(dtype)?);
        }
        Ok(Self { tensors })
    }
}

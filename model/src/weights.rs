//! Base-model weights by Hugging Face name, with shape validation against a config.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// Frozen base weights keyed by Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

/// Expected (name, shape) pairs of a checkpoint for `cfg` (with its family's biases and norms).
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
        if cfg.features.qkv_bias {
            out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
            out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
            out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
        }
        if cfg.features.o_bias {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        if cfg.features.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![cfg.head_dim]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![cfg.head_dim]));
        }
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

    /// Checks that every tensor `cfg` needs is present with the right shape, and that there is
    /// no other: a tensor the decoder would not use (a bias, a norm) means a model it would
    /// compute wrongly.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        let expected = expected_shapes(cfg);
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !expected.iter().any(|(n, _)| n == *k))
            .collect();
        extra.sort();
        if let Some(first) = extra.first() {
            return Err(ModelError::Unsupported(format!(
                "weight {first} ({} unexpected tensor(s) in all) is not part of a {} model with this config; \
                 Hearth would ignore it and compute a different model",
                extra.len(),
                cfg.features.family.name()
            )));
        }
        for (name, shape) in expected {
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

//! Base-model weights by Hugging Face name, with shape validation against a config. A GGUF
//! file's projection weights stay in the file's blocks until the model is built, so loading
//! a quantized file never holds the whole model in full precision.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// One weight: a tensor, or blocks expanded when it is used.
#[derive(Debug, Clone)]
enum Stored {
    Tensor(Tensor),
    Blocks(Blocks),
}

/// A weight still in a GGUF file's blocks, with how to expand it.
#[derive(Debug, Clone)]
pub struct Blocks {
    /// The blocks, on the host.
    pub q: Arc<QTensor>,
    /// Row `r` of the weight is row `rows[r]` of the blocks (llama.cpp's Q/K permutation undone).
    pub rows: Option<Vec<usize>>,
    /// The dtype it expands to.
    pub dtype: DType,
    /// Where it expands to.
    pub device: Device,
}

impl Blocks {
    /// The weight in full: the blocks expanded, rows in order, in `dtype` on `device`.
    pub fn expand(&self) -> Result<Tensor> {
        let t = self.q.dequantize(&Device::Cpu)?;
        let t = match &self.rows {
            Some(rows) => {
                let idx = Tensor::new(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    &Device::Cpu,
                )?;
                t.index_select(&idx, 0)?
            }
            None => t,
        };
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

/// Frozen base weights keyed by Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, ...).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: HashMap<String, Stored>,
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
        Self {
            tensors: tensors
                .into_iter()
                .map(|(k, v)| (k, Stored::Tensor(v)))
                .collect(),
        }
    }

    /// Inserts or replaces one tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), Stored::Tensor(t));
    }

    /// Inserts or replaces one weight kept in blocks until it is used.
    pub fn insert_blocks(&mut self, name: impl Into<String>, b: Blocks) {
        self.tensors.insert(name.into(), Stored::Blocks(b));
    }

    /// The tensor called `name` (expanded when it is held in blocks), or an error naming it.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        match self.tensors.get(name) {
            Some(Stored::Tensor(t)) => Ok(t.clone()),
            Some(Stored::Blocks(b)) => b.expand(),
            None => Err(ModelError::Weight {
                name: name.to_string(),
                msg: "missing".into(),
            }),
        }
    }

    /// The weight called `name` when it is held in a file's blocks.
    pub fn blocks(&self, name: &str) -> Option<&Blocks> {
        match self.tensors.get(name) {
            Some(Stored::Blocks(b)) => Some(b),
            _ => None,
        }
    }

    /// The shape of `name` without expanding it.
    pub fn dims(&self, name: &str) -> Result<Vec<usize>> {
        match self.tensors.get(name) {
            Some(Stored::Tensor(t)) => Ok(t.dims().to_vec()),
            Some(Stored::Blocks(b)) => Ok(b.q.shape().dims().to_vec()),
            None => Err(ModelError::Weight {
                name: name.to_string(),
                msg: "missing".into(),
            }),
        }
    }

    /// The names of all weights.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// All tensors by name, those held in blocks expanded.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.tensors
            .keys()
            .map(|k| Ok((k.clone(), self.get(k)?)))
            .collect()
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
            let dims = self.dims(&name)?;
            if dims != shape {
                return Err(ModelError::Weight {
                    name,
                    msg: format!("shape {dims:?}, expected {shape:?}"),
                });
            }
        }
        Ok(())
    }

    /// Converts every tensor to `dtype` on `device`.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        let mut tensors = HashMap::with_capacity(self.tensors.len());
        for k in self.tensors.keys() {
            tensors.insert(k.clone(), self.get(k)?.to_device(device)?.to_dtype(dtype)?);
        }
        Ok(Self::new(tensors))
    }
}

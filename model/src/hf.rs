//! Hugging Face checkpoint directories: `config.json` + `model.safetensors` + `tokenizer.json`
//! (+ optional `tokenizer_config.json` for the chat template and EOS token).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fsutil::{read_bounded, write_atomic};
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

const JSON_LIMIT: u64 = 64 << 20;
const WEIGHTS_LIMIT: u64 = 64 << 30;

/// The fields of a Llama `config.json` that the decoder uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// KV heads (defaults to query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width (defaults to hidden / heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Tied LM head.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// EOS id (a number or a list; the first counts).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_theta() -> f64 {
    10_000.0
}

fn default_eps() -> f64 {
    1e-6
}

impl HfConfig {
    /// Converts to a [`ModelConfig`].
    pub fn to_model_config(&self) -> ModelConfig {
        let heads = self.num_attention_heads;
        ModelConfig {
            vocab: self.vocab_size,
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads,
            kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size.checked_div(heads).unwrap_or(0)),
            rope_theta: self.rope_theta,
            rms_eps: self.rms_norm_eps,
            max_position: self.max_position_embeddings.min(1 << 20),
            tie_embeddings: self.tie_word_embeddings,
        }
    }

    /// A `config.json` for `cfg` (LlamaForCausalLM).
    pub fn from_model_config(cfg: &ModelConfig, eos: u32) -> Self {
        Self {
            vocab_size: cfg.vocab,
            hidden_size: cfg.hidden,
            intermediate_size: cfg.intermediate,
            num_hidden_layers: cfg.layers,
            num_attention_heads: cfg.heads,
            num_key_value_heads: Some(cfg.kv_heads),
            head_dim: Some(cfg.head_dim),
            rope_theta: cfg.rope_theta,
            rms_norm_eps: cfg.rms_eps,
            max_position_embeddings: cfg.max_position,
            tie_word_embeddings: cfg.tie_embeddings,
            eos_token_id: Some(serde_json::Value::from(eos)),
        }
    }
}

/// What a Hugging Face directory provides.
#[derive(Debug)]
pub struct HfModel {
    /// Model config.
    pub config: ModelConfig,
    /// Weights in `dtype` on the device.
    pub weights: Weights,
    /// The tokenizer from `tokenizer.json`.
    pub tokenizer: Tokenizer,
    /// Chat template from `tokenizer_config.json`.
    pub chat_template: Option<String>,
    /// EOS id.
    pub eos_token_id: u32,
}

/// Parses `config.json` bytes (`origin` names the file in errors) and checks the model config.
pub fn parse_hf_config(bytes: &[u8], origin: &Path) -> Result<(HfConfig, ModelConfig)> {
    let hf: HfConfig = serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
        path: origin.to_path_buf(),
        source,
    })?;
    let config = hf.to_model_config();
    config.validate()?;
    Ok((hf, config))
}

/// Decodes `model.safetensors` bytes into weights of `dtype` on `device` (names and shapes are
/// checked against a config by [`Weights::validate`]).
pub fn weights_from_safetensors_bytes(
    bytes: &[u8],
    origin: &Path,
    device: &Device,
    dtype: DType,
) -> Result<Weights> {
    let raw = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        ModelError::Weight {
            name: origin.display().to_string(),
            msg: e.to_string(),
        }
    })?;
    let mut weights = Weights::default();
    for (name, t) in raw {
        weights.insert(name, t.to_dtype(dtype)?.to_device(device)?);
    }
    Ok(weights)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bounded(path, JSON_LIMIT)?;
    serde_json::from_slice(&bytes).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a Hugging Face Llama checkpoint directory.
pub fn load_hf_dir(dir: &Path, device: &Device, dtype: DType) -> Result<HfModel> {
    let cfg_path = dir.join("config.json");
    let (hf, config) = parse_hf_config(&read_bounded(&cfg_path, JSON_LIMIT)?, &cfg_path)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let tc_path = dir.join("tokenizer_config.json");
    let tc: Option<serde_json::Value> = if tc_path.exists() {
        Some(read_json(&tc_path)?)
    } else {
        None
    };
    let chat_template = tc
        .as_ref()
        .and_then(|v| v.get("chat_template"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let eos_from_tc = tc
        .as_ref()
        .and_then(|v| v.get("eos_token"))
        .and_then(|v| {
            v.as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))
        })
        .and_then(|s| tokenizer.token_id(s));
    let eos_from_cfg = match &hf.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()),
        _ => None,
    };
    let eos = eos_from_tc
        .or(eos_from_cfg.and_then(|e| u32::try_from(e).ok()))
        .ok_or_else(|| ModelError::Config(format!("{}: no eos token id", dir.display())))?;
    let st = dir.join("model.safetensors");
    let bytes = read_bounded(&st, WEIGHTS_LIMIT)?;
    let weights = weights_from_safetensors_bytes(&bytes, &st, device, dtype)?;
    drop(bytes);
    weights.validate(&config)?;
    Ok(HfModel {
        config,
        weights,
        tokenizer,
        chat_template,
        eos_token_id: eos,
    })
}

/// Writes a Hugging Face directory (f32 weights) that [`load_hf_dir`] and `transformers` read.
pub fn save_hf_dir(
    dir: &Path,
    config: &ModelConfig,
    weights: &Weights,
    tokenizer: &Tokenizer,
    chat_template: Option<&str>,
    eos: u32,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut cfg =
        serde_json::to_value(HfConfig::from_model_config(config, eos)).map_err(|source| {
            ModelError::Json {
                path: dir.join("config.json"),
                source,
            }
        })?;
    if let Some(o) = cfg.as_object_mut() {
        o.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        o.insert("model_type".into(), serde_json::json!("llama"));
        o.insert("hidden_act".into(), serde_json::json!("silu"));
        o.insert("torch_dtype".into(), serde_json::json!("float32"));
    }
    write_atomic(&dir.join("config.json"), cfg.to_string().as_bytes())?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in weights.tensors() {
        tensors.insert(k.clone(), v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    let st = dir.join("model.safetensors");
    let bytes = safetensors::serialize(
        tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), crate::peft::F32View::new(v)?)))
            .collect::<Result<Vec<_>>>()?,
        None,
    )
    .map_err(|e| ModelError::Weight {
        name: st.display().to_string(),
        msg: e.to_string(),
    })?;
    write_atomic(&st, &bytes)?;
    write_atomic(&dir.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
    let eos_str = tokenizer.decode(&[eos])?;
    let tc = serde_json::json!({
        "chat_template": chat_template,
        "eos_token": eos_str,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write_atomic(
        &dir.join("tokenizer_config.json"),
        tc.to_string().as_bytes(),
    )
}

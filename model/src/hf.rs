//! Hugging Face checkpoint directories: `config.json` + `model.safetensors` + `tokenizer.json`
//! (+ optional `tokenizer_config.json` for the chat template and EOS token).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::fsutil::{read_bounded, write_atomic};
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

const JSON_LIMIT: u64 = 64 << 20;
const WEIGHTS_LIMIT: u64 = 64 << 30;

/// What `config.json` says besides the decoder's shape.
#[derive(Debug, Clone, Default)]
pub struct HfConfigInfo {
    /// `eos_token_id` (a number or a list; the first counts).
    pub eos_token_id: Option<u32>,
    /// Fields Hearth neither reads nor knows to be harmless (logged as a warning).
    pub unknown_fields: Vec<String>,
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

/// Parses `config.json` bytes (`origin` names the file in errors) into a checked model config of
/// a supported family (see [`crate::family`]); anything that would change the math and is not
/// implemented is refused by name.
pub fn parse_hf_config(bytes: &[u8], origin: &Path) -> Result<(HfConfigInfo, ModelConfig)> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
            path: origin.to_path_buf(),
            source,
        })?;
    let (config, unknown_fields) = crate::family::parse_config(&json)?;
    let eos_token_id = match json.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()),
        _ => None,
    }
    .and_then(|e| u32::try_from(e).ok());
    Ok((
        HfConfigInfo {
            eos_token_id,
            unknown_fields,
        },
        config,
    ))
}

/// Tensors a checkpoint may hold that Hearth does not use and that change nothing: cached rotary
/// tables (recomputed from the config) and a stored copy of a tied LM head.
fn ignorable(name: &str, cfg: &ModelConfig) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || (cfg.tie_embeddings && name == "lm_head.weight")
}

/// The safetensors files of a directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (plain file names inside the directory only).
pub fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Ok(vec![single]);
    }
    let v: serde_json::Value = read_json(&index)?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let f = file.as_str().unwrap_or_default();
        let plain = !f.is_empty()
            && Path::new(f).file_name().and_then(|n| n.to_str()) == Some(f)
            && f != ".."
            && f.ends_with(".safetensors");
        if !plain {
            return Err(ModelError::Config(format!(
                "{}: tensor {tensor} maps to {file}, not a .safetensors file in the directory",
                index.display()
            )));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Reads `config.json` and the weights of a Hugging Face directory (single or sharded
/// safetensors, f32/bf16/f16), converted to `dtype` on `device` and checked against the config.
pub fn load_hf_weights(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(HfConfigInfo, ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let (info, config) = parse_hf_config(&read_bounded(&cfg_path, JSON_LIMIT)?, &cfg_path)?;
    if !info.unknown_fields.is_empty() {
        tracing::warn!(
            fields = ?info.unknown_fields,
            "config.json fields Hearth does not know; assuming they do not change the model"
        );
    }
    let mut weights = Weights::default();
    for st in safetensors_files(dir)? {
        let bytes = read_bounded(&st, WEIGHTS_LIMIT)?;
        let part = weights_from_safetensors_bytes(&bytes, &st, device, dtype)?;
        for (name, t) in part.tensors()? {
            if !ignorable(&name, &config) {
                weights.insert(name, t);
            }
        }
    }
    weights.validate(&config)?;
    Ok((info, config, weights))
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

/// Loads a Hugging Face checkpoint directory of a supported family.
pub fn load_hf_dir(dir: &Path, device: &Device, dtype: DType) -> Result<HfModel> {
    let (info, config, weights) = load_hf_weights(dir, device, dtype)?;
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
    let eos = eos_from_tc
        .or(info.eos_token_id)
        .ok_or_else(|| ModelError::Config(format!("{}: no eos token id", dir.display())))?;
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
    let cfg = crate::family::config_json(config, eos);
    write_atomic(&dir.join("config.json"), cfg.to_string().as_bytes())?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in weights.tensors()? {
        tensors.insert(k, v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
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

//! One entry point for base models: the tiny preset, a GGUF file or a Hugging Face directory.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::config::{LoraConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::llama::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// Where a base model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// The tiny preset with weights drawn from `seed`.
    Tiny {
        /// Weight seed.
        seed: u64,
    },
    /// A llama GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face checkpoint directory.
    HfDir(PathBuf),
}

impl ModelSource {
    /// `tiny` (seed 0), a `.gguf` file, or a directory.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "tiny" {
            return Ok(Self::Tiny { seed: 0 });
        }
        let p = Path::new(s);
        if p.is_dir() {
            Ok(Self::HfDir(p.to_path_buf()))
        } else if p.is_file() {
            Ok(Self::Gguf(p.to_path_buf()))
        } else {
            Err(ModelError::Config(format!(
                "model {s:?} is neither `tiny`, a GGUF file nor a directory"
            )))
        }
    }
}

/// A loaded base model: frozen weights plus what is needed to tokenize and chat.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// Decoder shape.
    pub config: ModelConfig,
    /// Frozen weights.
    pub weights: Weights,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Jinja chat template, if any.
    pub chat_template: Option<String>,
    /// End-of-sequence (end-of-turn) token id.
    pub eos_token_id: u32,
}

impl BaseModel {
    /// Builds a decoder over these weights with fresh LoRA adapters (or none).
    pub fn model(&self, lora: Option<&LoraConfig>) -> Result<Model> {
        Model::load(&self.weights, &self.config, lora)
    }
}

/// Loads a base model onto `device` in `dtype` (f32 on CPU; bf16 is an option on GPU).
pub fn load_base(source: &ModelSource, device: &Device, dtype: DType) -> Result<BaseModel> {
    match source {
        ModelSource::Tiny { seed } => {
            let config = ModelConfig::tiny();
            let tokenizer = crate::preset::tiny_tokenizer()?;
            let eos = tokenizer
                .token_id("<|im_end|>")
                .ok_or_else(|| ModelError::Tokenizer("tiny tokenizer lacks <|im_end|>".into()))?;
            Ok(BaseModel {
                weights: crate::preset::random_weights(&config, *seed, device, dtype)?,
                config,
                tokenizer,
                chat_template: Some(crate::preset::CHATML_TEMPLATE.to_string()),
                eos_token_id: eos,
            })
        }
        ModelSource::Gguf(p) => {
            let g = crate::gguf::load_gguf(p, device, dtype)?;
            Ok(BaseModel {
                config: g.config,
                weights: g.weights,
                tokenizer: g.tokenizer,
                chat_template: g.chat_template,
                eos_token_id: g.eos_token_id,
            })
        }
        ModelSource::HfDir(p) => {
            let h = crate::hf::load_hf_dir(p, device, dtype)?;
            Ok(BaseModel {
                config: h.config,
                weights: h.weights,
                tokenizer: h.tokenizer,
                chat_template: h.chat_template,
                eos_token_id: h.eos_token_id,
            })
        }
    }
}

/// `${HEARTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn default_model_path() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = env("HEARTH_CACHE").unwrap_or_else(|| {
        env("XDG_CACHE_HOME")
            .unwrap_or_else(|| {
                env("HOME")
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache")
            })
            .join("hearth")
    });
    cache.join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The real model's path for tests: `HEARTH_MODEL` or [`default_model_path`], if the file exists.
pub fn real_model_for_tests() -> Option<PathBuf> {
    let p = std::env::var_os("HEARTH_MODEL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_model_path);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("HEARTH_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!(
            "HEARTH_REQUIRE_MODEL=1 but the real model is missing at {}",
            p.display()
        );
    }
    println!("skipped: real model not found at {}", p.display());
    None
}

/// Parses `cpu` or `cuda:N` (CUDA needs the `cuda` feature).
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let idx = s
        .strip_prefix("cuda:")
        .or_else(|| (s == "cuda").then_some("0"))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| ModelError::Config(format!("device {s:?} is not cpu or cuda:N")))?;
    Ok(Device::new_cuda(idx)?)
}

/// A name for `base_model_name_or_path`: the Hugging Face id for the SmolLM2 GGUF, else the path.
pub fn base_model_name(source: &ModelSource) -> String {
    match source {
        ModelSource::Tiny { seed } => format!("hearth/tiny-seed{seed}"),
        ModelSource::Gguf(p) if p.to_string_lossy().contains("SmolLM2-135M-Instruct") => {
            "HuggingFaceTB/SmolLM2-135M-Instruct".to_string()
        }
        ModelSource::Gguf(p) | ModelSource::HfDir(p) => p.display().to_string(),
    }
}

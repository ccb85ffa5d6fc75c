//! PEFT adapter directories: `adapter_model.safetensors` + `adapter_config.json`, written exactly
//! as Hugging Face PEFT writes them (atomically) and read back with size and shape checks.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};

use crate::config::{LoraConfig, LoraTarget};
use crate::error::{ModelError, Result};
use crate::fsutil::{read_bounded, write_atomic};
use crate::llama::Model;
use hearth_proto::NamedTensor;

/// Largest `adapter_model.safetensors` accepted on import.
pub const ADAPTER_FILE_LIMIT: u64 = 1 << 30;
/// Largest `adapter_config.json` accepted on import.
pub const CONFIG_FILE_LIMIT: u64 = 1 << 20;
/// Weights file name.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Config file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// A little-endian f32 tensor for `safetensors::serialize`.
#[derive(Debug, Clone)]
pub struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32View {
    /// From row-major values.
    pub fn from_slice(shape: &[usize], data: &[f32]) -> Self {
        Self {
            shape: shape.to_vec(),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// From a tensor (converted to f32).
    pub fn new(t: &Tensor) -> Result<Self> {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::from_slice(t.dims(), &v))
    }
}

impl View for F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// `adapter_config.json` as PEFT writes it for LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    pub task_type: String,
    /// Base model name or path.
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// α.
    pub lora_alpha: f64,
    /// Dropout.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Wrapped modules (`q_proj`, ...).
    pub target_modules: Vec<String>,
    /// Always `none`.
    #[serde(default = "bias_none")]
    pub bias: String,
    /// Always false.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Always false.
    #[serde(default)]
    pub use_rslora: bool,
    /// Always true.
    #[serde(default = "yes")]
    pub init_lora_weights: bool,
    /// Always false.
    #[serde(default)]
    pub use_dora: bool,
    /// Always null.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// PEFT marks saved adapters as inference-mode.
    #[serde(default = "yes")]
    pub inference_mode: bool,
}

fn bias_none() -> String {
    "none".into()
}

fn yes() -> bool {
    true
}

impl PeftConfig {
    /// The config for a LoRA setup.
    pub fn from_lora(lora: &LoraConfig, base_model: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            base_model_name_or_path: Some(base_model.to_string()),
            r: lora.rank,
            lora_alpha: lora.alpha,
            lora_dropout: lora.dropout,
            target_modules: lora
                .sorted_targets()
                .iter()
                .map(|t| t.module_name().to_string())
                .collect(),
            bias: bias_none(),
            fan_in_fan_out: false,
            use_rslora: false,
            init_lora_weights: true,
            use_dora: false,
            modules_to_save: None,
            inference_mode: true,
        }
    }

    /// Checks the fields Hearth cannot honour and returns the targets.
    pub fn validate(&self) -> Result<Vec<LoraTarget>> {
        let bad = |m: String| Err(ModelError::Adapter(m));
        if self.peft_type != "LORA" {
            return bad(format!("peft_type {:?} is not LORA", self.peft_type));
        }
        if self.r == 0 || self.r > 4096 {
            return bad(format!("rank {} out of 1..=4096", self.r));
        }
        if self.bias != "none" || self.fan_in_fan_out || self.use_rslora || self.use_dora {
            return bad(format!(
                "unsupported options: bias {:?}, fan_in_fan_out {}, use_rslora {}, use_dora {}",
                self.bias, self.fan_in_fan_out, self.use_rslora, self.use_dora
            ));
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad(format!(
                "modules_to_save {:?} is not supported",
                self.modules_to_save
            ));
        }
        self.target_modules
            .iter()
            .map(|t| LoraTarget::parse(t))
            .collect()
    }
}

/// An adapter read from disk.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// Its config.
    pub config: PeftConfig,
    /// A and B tensors by PEFT name, sorted by name.
    pub tensors: Vec<NamedTensor>,
}

/// Writes a PEFT adapter directory with the given tensors (A and B of every module).
pub fn export_peft(dir: &Path, config: &PeftConfig, tensors: &[NamedTensor]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let views: Vec<(String, F32View)> = tensors
        .iter()
        .map(|t| (t.name.clone(), F32View::from_slice(&t.shape, &t.data)))
        .collect();
    let path = dir.join(ADAPTER_WEIGHTS);
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| ModelError::Adapter(format!("{}: {e}", path.display())))?;
    write_atomic(&path, &bytes)?;
    let cfg = serde_json::to_string_pretty(config).map_err(|source| ModelError::Json {
        path: dir.join(ADAPTER_CONFIG),
        source,
    })?;
    write_atomic(&dir.join(ADAPTER_CONFIG), cfg.as_bytes())
}

fn check_name(name: &str, targets: &[LoraTarget]) -> Result<()> {
    let rest = name
        .strip_prefix("base_model.model.model.layers.")
        .ok_or_else(|| ModelError::Adapter(format!("tensor {name:?} is not a PEFT LoRA name")))?;
    let (layer, rest) = rest
        .split_once('.')
        .ok_or_else(|| ModelError::Adapter(format!("tensor {name:?} has no layer index")))?;
    layer
        .parse::<usize>()
        .map_err(|_| ModelError::Adapter(format!("tensor {name:?}: bad layer {layer:?}")))?;
    let ok = targets.iter().any(|t| {
        let m = format!("{}.{}.", t.parent(), t.module_name());
        rest.strip_prefix(&m)
            .is_some_and(|s| s == "lora_A.weight" || s == "lora_B.weight")
    });
    if !ok {
        return Err(ModelError::Adapter(format!(
            "tensor {name:?} is not a target of this adapter"
        )));
    }
    Ok(())
}

/// Parses and checks `adapter_config.json` bytes (`origin` names the file in errors).
pub fn parse_peft_config(bytes: &[u8], origin: &Path) -> Result<PeftConfig> {
    if bytes.len() as u64 > CONFIG_FILE_LIMIT {
        return Err(ModelError::TooLarge {
            path: origin.to_path_buf(),
            size: bytes.len() as u64,
            limit: CONFIG_FILE_LIMIT,
        });
    }
    let config: PeftConfig = serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
        path: origin.to_path_buf(),
        source,
    })?;
    config.validate()?;
    Ok(config)
}

/// Decodes and checks the tensors of `adapter_model.safetensors` bytes against `config`
/// (PEFT names of its targets, f32, 2-d, rank `config.r`), sorted by name.
pub fn adapter_tensors_from_bytes(
    config: &PeftConfig,
    bytes: &[u8],
    origin: &Path,
) -> Result<Vec<NamedTensor>> {
    let targets = config.validate()?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::Adapter(format!("{}: {e}", origin.display())))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        check_name(&name, &targets)?;
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::Adapter(format!(
                "{name}: dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let shape = view.shape().to_vec();
        let (rows, cols) = match shape.as_slice() {
            [r, c] => (*r, *c),
            s => {
                return Err(ModelError::Adapter(format!(
                    "{name}: shape {s:?} is not 2-d"
                )))
            }
        };
        let rank_dim = if name.ends_with("lora_A.weight") {
            rows
        } else {
            cols
        };
        if rank_dim != config.r {
            return Err(ModelError::Adapter(format!(
                "{name}: shape {shape:?} does not have rank {}",
                config.r
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok().map(f32::from_le_bytes))
            .collect();
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(ModelError::Adapter(format!(
                "{name}: {} values for shape {shape:?}",
                data.len()
            )));
        }
        tensors.push(NamedTensor { name, shape, data });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// Reads and checks a PEFT adapter directory (f32 tensors only).
pub fn import_peft(dir: &Path) -> Result<PeftAdapter> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let config = parse_peft_config(&read_bounded(&cfg_path, CONFIG_FILE_LIMIT)?, &cfg_path)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = read_bounded(&path, ADAPTER_FILE_LIMIT)?;
    let tensors = adapter_tensors_from_bytes(&config, &bytes, &path)?;
    Ok(PeftAdapter { config, tensors })
}

/// Exports `model`'s adapter (A and B) to `dir` in PEFT format.
pub fn save_adapter(model: &Model, dir: &Path, base_model: &str) -> Result<()> {
    let lora = model
        .lora_config()
        .ok_or_else(|| ModelError::Adapter("model has no LoRA adapter".into()))?;
    export_peft(
        dir,
        &PeftConfig::from_lora(lora, base_model),
        &model.all_adapter_tensors()?,
    )
}

/// Loads a PEFT adapter from `dir` into `model` (rank, α and targets must match).
pub fn load_adapter(model: &mut Model, dir: &Path) -> Result<PeftConfig> {
    let lora = model
        .lora_config()
        .ok_or_else(|| ModelError::Adapter("model has no LoRA adapter".into()))?
        .clone();
    let adapter = import_peft(dir)?;
    let mut targets = adapter.config.validate()?;
    targets.sort();
    if adapter.config.r != lora.rank
        || (adapter.config.lora_alpha - lora.alpha).abs() > 1e-9
        || targets != lora.sorted_targets()
    {
        return Err(ModelError::Adapter(format!(
            "{}: r {} alpha {} targets {:?} do not match the model's r {} alpha {} targets {:?}",
            dir.display(),
            adapter.config.r,
            adapter.config.lora_alpha,
            adapter.config.target_modules,
            lora.rank,
            lora.alpha,
            lora.sorted_targets()
        )));
    }
    model.set_adapter(&adapter.tensors)?;
    Ok(adapter.config)
}

/// The LoRA config an adapter directory describes (for building a model to load it into).
pub fn lora_config_of(cfg: &PeftConfig, train_a: bool, seed: u64) -> Result<LoraConfig> {
    let lora = LoraConfig {
        rank: cfg.r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        targets: cfg.validate()?,
        train_a,
        seed,
    };
    lora.validate()?;
    Ok(lora)
}

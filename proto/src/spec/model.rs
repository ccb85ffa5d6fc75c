//! The base model and its adapter: where the weights come from, the architecture, and LoRA.

use serde::{Deserialize, Serialize};

use super::{invalid, SpecError};
use crate::cid::ContentId;
use crate::layout::TensorLayout;
use crate::tagged::tagged_enum;

tagged_enum! {
    /// Where the base model weights come from.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ModelSource {
        /// A built-in config with deterministic random weights (`tiny`).
        Preset {
            /// Preset name.
            name: String
        },
        /// A GGUF file in the model cache.
        Gguf {
            /// File name.
            file_name: String
        },
        /// A Hugging Face directory with config.json, tokenizer.json and safetensors weights
        /// (single or sharded); its files are listed in [`BaseModel::files`].
        Safetensors {
            /// Directory name.
            dir_name: String
        },
    }
}

impl Default for ModelSource {
    fn default() -> Self {
        ModelSource::Preset {
            name: "tiny".into(),
        }
    }
}

/// The base model being adapted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseModel {
    /// Hugging Face id, used as PEFT `base_model_name_or_path`.
    pub name: String,
    /// Where the weights come from.
    pub source: ModelSource,
    /// blake3 of the weights file (GGUF), or of the directory's file list
    /// ([`BaseModel::manifest_id`]), checked before loading.
    pub blake3: Option<ContentId>,
    /// Size of the weights file (or all files of the directory) in bytes (0 for presets).
    pub size_bytes: u64,
    /// The model family (`llama`, `mistral`, `qwen2`, `qwen3`); workers refuse a model file of
    /// another family.
    pub family: String,
    /// The files of a directory model, each fetched and checked by its blake3.
    pub files: Vec<ModelFile>,
}

impl Default for BaseModel {
    fn default() -> Self {
        Self {
            name: "hearth/tiny-llama".into(),
            source: ModelSource::default(),
            blake3: None,
            size_bytes: 0,
            family: "llama".into(),
            files: Vec::new(),
        }
    }
}

/// Most files a directory model may have (config, tokenizer files and weight shards).
pub const MAX_MODEL_FILES: usize = 256;

/// One file of a Hugging Face directory model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// File name inside the directory (no path separators).
    pub name: String,
    /// blake3 of its bytes.
    pub blake3: ContentId,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl ModelFile {
    /// Whether `name` is a plain file name: no separators, not `.`/`..`, at most 255 bytes.
    pub fn plain_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 255
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\', '\0'])
    }
}

impl BaseModel {
    /// The id of a directory's file list: blake3 over each file's name, blake3 and size, in
    /// name order.
    pub fn manifest_id(files: &[ModelFile]) -> ContentId {
        let mut sorted: Vec<&ModelFile> = files.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut text = String::new();
        for f in sorted {
            text.push_str(&format!(
                "{}\0{}\0{}\n",
                f.name,
                f.blake3.to_hex(),
                f.size_bytes
            ));
        }
        ContentId::of(text.as_bytes())
    }

    pub(super) fn validate(&self) -> Result<(), SpecError> {
        if !matches!(
            self.family.as_str(),
            "llama" | "mistral" | "qwen2" | "qwen3"
        ) {
            return Err(invalid(
                "base.family",
                &self.family,
                "one of llama, mistral, qwen2, qwen3",
            ));
        }
        match &self.source {
            ModelSource::Safetensors { .. } => {
                if self.files.is_empty() || self.files.len() > MAX_MODEL_FILES {
                    return Err(invalid(
                        "base.files",
                        self.files.len(),
                        "a directory model lists 1 to 256 files",
                    ));
                }
                let mut names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
                if let Some(bad) = names.iter().find(|n| !ModelFile::plain_name(n)) {
                    return Err(invalid("base.files.name", bad, "a plain file name"));
                }
                names.sort_unstable();
                if names.windows(2).any(|w| w[0] == w[1]) {
                    return Err(invalid("base.files", "a repeated name", "unique names"));
                }
                for needed in ["config.json", "tokenizer.json"] {
                    if names.binary_search(&needed).is_err() {
                        return Err(invalid("base.files", needed, "a directory model needs it"));
                    }
                }
                if self.blake3 != Some(Self::manifest_id(&self.files)) {
                    return Err(invalid(
                        "base.blake3",
                        self.blake3.map(|c| c.to_hex()).unwrap_or_default(),
                        "must be the id of base.files",
                    ));
                }
                let total = self
                    .files
                    .iter()
                    .try_fold(0u64, |acc, f| acc.checked_add(f.size_bytes));
                if total != Some(self.size_bytes) {
                    return Err(invalid(
                        "base.size_bytes",
                        self.size_bytes,
                        "must be the sum of base.files sizes",
                    ));
                }
            }
            _ if !self.files.is_empty() => {
                return Err(invalid(
                    "base.files",
                    self.files.len(),
                    "only a directory model lists files",
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Largest size of any model dimension a spec may name (vocabulary, widths, context): 2^20.
pub const MAX_ARCH_SIZE: usize = 1 << 20;
/// Most decoder layers a spec may name.
pub const MAX_LAYERS: usize = 1024;

/// Llama-family architecture hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelArch {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Rotary base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Longest supported context.
    pub max_position: usize,
    /// Output projection shares the embedding matrix.
    pub tie_embeddings: bool,
}

impl Default for ModelArch {
    fn default() -> Self {
        Self::tiny()
    }
}

impl ModelArch {
    /// SmolLM2-135M.
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_position: 8192,
            tie_embeddings: true,
        }
    }

    /// A small Llama for fast tests.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 512,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position: 512,
            tie_embeddings: true,
        }
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key/value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// `(module path, in, out)` of a LoRA target, e.g. `("self_attn.q_proj", 576, 576)`.
    pub fn target_dims(&self, target: &str) -> Result<(&'static str, usize, usize), SpecError> {
        let h = self.hidden_size;
        Ok(match target {
            "q_proj" => ("self_attn.q_proj", h, self.q_dim()),
            "k_proj" => ("self_attn.k_proj", h, self.kv_dim()),
            "v_proj" => ("self_attn.v_proj", h, self.kv_dim()),
            "o_proj" => ("self_attn.o_proj", self.q_dim(), h),
            "gate_proj" => ("mlp.gate_proj", h, self.intermediate_size),
            "up_proj" => ("mlp.up_proj", h, self.intermediate_size),
            "down_proj" => ("mlp.down_proj", self.intermediate_size, h),
            other => return Err(SpecError::UnknownTarget(other.to_string())),
        })
    }

    /// Checks that sizes are positive and bounded and heads divide evenly.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (field, v) in [
            ("arch.vocab_size", self.vocab_size),
            ("arch.hidden_size", self.hidden_size),
            ("arch.intermediate_size", self.intermediate_size),
            ("arch.num_layers", self.num_layers),
            ("arch.num_heads", self.num_heads),
            ("arch.num_kv_heads", self.num_kv_heads),
            ("arch.head_dim", self.head_dim),
            ("arch.max_position", self.max_position),
        ] {
            if v == 0 {
                return Err(invalid(field, v, "must be positive"));
            }
            // Sizes come from the network (a join response) and from files: bound them, so that
            // everything derived from them (layouts, buffers) stays small and overflow-free.
            if v > MAX_ARCH_SIZE {
                return Err(invalid(field, v, "is larger than any supported model"));
            }
        }
        if self.num_layers > MAX_LAYERS {
            return Err(invalid(
                "arch.num_layers",
                self.num_layers,
                "must be at most 1024",
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(invalid(
                "arch.num_kv_heads",
                self.num_kv_heads,
                "must divide num_heads",
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(invalid(
                "arch.head_dim",
                self.head_dim,
                "must be even for rotary embeddings",
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(invalid(
                "arch.rope_theta",
                self.rope_theta,
                "must be positive",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(invalid(
                "arch.rms_norm_eps",
                self.rms_norm_eps,
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// LoRA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank r.
    pub rank: usize,
    /// Scale numerator: the update is `(alpha / r) · B·A`.
    pub alpha: f32,
    /// Dropout on the LoRA input during training.
    pub dropout: f32,
    /// Adapted projections, e.g. `["q_proj", "v_proj"]`.
    pub targets: Vec<String>,
    /// Train A as well as B (FedIT); false = FFA-LoRA with A frozen from `seed`.
    pub train_a: bool,
    /// Seed of A's initialisation (at most i64::MAX so TOML can hold it).
    pub seed: u64,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            train_a: false,
            seed: 0x4845_4152_5448,
        }
    }
}

/// Every projection a LoRA adapter may target, in module order.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// PEFT name of a LoRA tensor.
pub fn lora_tensor_name(layer: usize, module: &str, which: char) -> String {
    format!("base_model.model.model.layers.{layer}.{module}.lora_{which}.weight")
}

impl LoraSpec {
    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank.max(1) as f32
    }

    /// The trainable tensors in wire order (layer, then target, A before B): B `[out, r]` always, A `[r, in]` when `train_a`.
    pub fn adapter_layout(&self, arch: &ModelArch) -> Result<Vec<TensorLayout>, SpecError> {
        self.layout(arch, self.train_a)
    }

    /// All LoRA tensors, A and B, as exported to PEFT.
    pub fn full_layout(&self, arch: &ModelArch) -> Result<Vec<TensorLayout>, SpecError> {
        self.layout(arch, true)
    }

    pub(super) fn layout(
        &self,
        arch: &ModelArch,
        with_a: bool,
    ) -> Result<Vec<TensorLayout>, SpecError> {
        let dims = self
            .targets
            .iter()
            .map(|t| arch.target_dims(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(arch.num_layers * dims.len() * 2);
        for layer in 0..arch.num_layers {
            for &(module, input, output) in &dims {
                if with_a {
                    out.push(TensorLayout::new(
                        lora_tensor_name(layer, module, 'A'),
                        vec![self.rank, input],
                    ));
                }
                out.push(TensorLayout::new(
                    lora_tensor_name(layer, module, 'B'),
                    vec![output, self.rank],
                ));
            }
        }
        Ok(out)
    }

    /// Checks rank, alpha, dropout, seed and targets (known, no repeats).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.rank == 0 || self.rank > 1024 {
            return Err(invalid("lora.rank", self.rank, "must be in 1..=1024"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(invalid("lora.alpha", self.alpha, "must be positive"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("lora.dropout", self.dropout, "must be in [0, 1)"));
        }
        if self.seed > i64::MAX as u64 {
            return Err(invalid(
                "lora.seed",
                self.seed,
                "must fit in i64 (TOML integers)",
            ));
        }
        if self.targets.is_empty() {
            return Err(invalid("lora.targets", "[]", "needs at least one target"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            ModelArch::tiny().target_dims(t)?;
            if self.targets[..i].contains(t) {
                return Err(invalid("lora.targets", t, "listed twice"));
            }
        }
        Ok(())
    }
}

//! Run spec: everything a run organiser sets in `run.toml`; every field has a default.

use serde::{Deserialize, Serialize};

use crate::cid::ContentId;
use crate::codec::CodecSpec;
use crate::layout::TensorLayout;
use crate::tagged::tagged_enum;

/// Why a run spec is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A LoRA target this crate does not know.
    #[error("unknown LoRA target {0:?}; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")]
    UnknownTarget(String),
    /// A field has an invalid value.
    #[error("{field} = {value} is invalid: {why}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// Offending value.
        value: String,
        /// What is expected.
        why: &'static str,
    },
    /// The TOML text does not parse.
    #[error("run spec TOML: {0}")]
    Toml(String),
}

fn invalid(field: &'static str, value: impl ToString, why: &'static str) -> SpecError {
    SpecError::Invalid {
        field,
        value: value.to_string(),
        why,
    }
}

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

    fn validate(&self) -> Result<(), SpecError> {
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

    fn layout(&self, arch: &ModelArch, with_a: bool) -> Result<Vec<TensorLayout>, SpecError> {
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

/// One content-addressed shard of packed training sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// blake3 of the shard file.
    pub cid: ContentId,
    /// Packed sequences in the shard.
    pub sequences: u64,
    /// Tokens in the shard.
    pub tokens: u64,
}

/// The training data of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetManifest {
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Shards, leased to workers by index.
    pub shards: Vec<ShardInfo>,
}

impl Default for DatasetManifest {
    fn default() -> Self {
        Self {
            seq_len: 128,
            shards: Vec::new(),
        }
    }
}

/// Worker-side (inner) training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// AdamW steps per round (H).
    pub local_steps: u32,
    /// A round's training also stops after this many seconds, so slow devices still contribute.
    pub time_budget_secs: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup_steps: u32,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f32,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            local_steps: 50,
            time_budget_secs: 600,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-3,
            warmup_steps: 10,
            weight_decay: 0.0,
            grad_clip: 1.0,
        }
    }
}

tagged_enum! {
    /// How accepted deltas are combined.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Aggregator {
        /// Mean weighted by tokens × staleness weight.
        WeightedMean,
        /// Per-coordinate mean after dropping `trim_fraction` of values at each end.
        TrimmedMean {
            /// Fraction dropped at each end, in [0, 0.5).
            trim_fraction: f32
        },
        /// Per-coordinate median.
        CoordinateMedian,
        /// Centered clipping (Karimireddy et al. 2012.10333).
        CenteredClip {
            /// Clipping radius: the L2 norm (in the adapter's own units) above which a delta's
            /// difference from the current center is scaled down to it.
            tau: f32,
            /// Clipping iterations.
            iters: u32
        },
    }
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::CenteredClip { tau: 1.0, iters: 3 }
    }
}

tagged_enum! {
    /// How the coordinator applies the aggregated delta to the checkpoint.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum OuterOptimizer {
        /// Nesterov momentum SGD on the averaged delta (DiLoCo).
        Nesterov {
            /// Outer learning rate.
            lr: f32,
            /// Momentum.
            momentum: f32
        },
        /// `checkpoint += lr · mean delta`.
        Average {
            /// Outer learning rate.
            lr: f32
        },
    }
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        OuterOptimizer::Nesterov {
            lr: 0.7,
            momentum: 0.9,
        }
    }
}

/// Round closing, aggregation and compression settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSpec {
    /// Robust aggregator.
    pub aggregator: Aggregator,
    /// Outer optimizer.
    pub outer: OuterOptimizer,
    /// Close the round (after `grace_secs`) once this many deltas are accepted.
    pub target_deltas: u32,
    /// Fewest deltas worth aggregating at the deadline.
    pub min_deltas: u32,
    /// Wait after `target_deltas` for late arrivals.
    pub grace_secs: u64,
    /// Hard round deadline.
    pub deadline_secs: u64,
    /// Accept deltas built on checkpoints up to this many rounds old.
    pub max_staleness: u32,
    /// Delta codec every worker uses.
    pub codec: CodecSpec,
    /// Workers train from the checkpoint plus their own unsent error-feedback residual, so local
    /// training does not re-learn what is still waiting to be sent (off: train from the checkpoint).
    pub local_error_feedback: bool,
    /// With a sparse codec (top-k below density 1), each coordinate is averaged over the deltas
    /// that sent it, not over all of them (SparseLoCo, arXiv:2508.15706): a value one worker
    /// sent is not divided by the workers that did not. Dense codecs are unaffected.
    pub mean_over_senders: bool,
}

impl Default for AggregateSpec {
    fn default() -> Self {
        Self {
            aggregator: Aggregator::default(),
            outer: OuterOptimizer::default(),
            target_deltas: 4,
            min_deltas: 1,
            grace_secs: 5,
            deadline_secs: 900,
            max_staleness: 2,
            codec: CodecSpec::default(),
            local_error_feedback: false,
            mean_over_senders: true,
        }
    }
}

impl AggregateSpec {
    /// FedBuff staleness weight `1/√(1+τ)`.
    pub fn staleness_weight(staleness: u32) -> f32 {
        1.0 / (1.0 + staleness as f32).sqrt()
    }
}

/// How many times its learning rate AdamW moves one value in one step, at most, for the derived
/// norm cap ([`VerifySpec::norm_abs_cap`]). The update `m̂/(√v̂+ε)` is about 1 in size while a
/// gradient's sign holds and at most `(1−β1)/√(1−β2)` ≈ 3.2 after a sudden spike (Kingma & Ba
/// 2015, §2.1); 4 leaves room for the decoupled weight decay and the codec's rounding.
pub const ADAM_REACH: f32 = 4.0;

impl VerifySpec {
    /// The absolute norm cap for a delta of `dims` trained values under `spec`'s training
    /// settings (`None`: no cap). With local error feedback a sparse codec's delta also carries
    /// what earlier rounds left unsent, up to about `1/density` rounds of it.
    pub fn norm_cap(
        &self,
        train: &TrainSpec,
        aggregate: &AggregateSpec,
        dims: usize,
    ) -> Option<f32> {
        if self.norm_abs_cap > 0.0 {
            return Some(self.norm_abs_cap);
        }
        if self.norm_abs_cap < 0.0 {
            return None;
        }
        let mut cap = ADAM_REACH * train.lr * train.local_steps as f32 * (dims as f32).sqrt();
        if aggregate.local_error_feedback {
            if let CodecSpec::TopK { density, .. } = aggregate.codec {
                cap /= density.max(f32::MIN_POSITIVE);
            }
        }
        Some(cap)
    }
}

/// Delta verification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySpec {
    /// Reject a delta whose norm exceeds this multiple of the median recent norm.
    pub norm_kappa: f32,
    /// Absolute cap on a delta's L2 norm: a positive value is the cap itself; 0 (the default)
    /// derives it from the run's training settings, [`ADAM_REACH`] × lr × local steps × √(trained
    /// values), the farthest AdamW can move the adapter in a round; a negative value turns it off.
    pub norm_abs_cap: f32,
    /// Rejections after which a peer is banned.
    pub ban_after_rejects: u32,
    /// Tolerated relative rise of held-out loss before a merged update is discarded.
    pub eval_tolerance: f32,
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            norm_kappa: 5.0,
            norm_abs_cap: 0.0,
            ban_after_rejects: 3,
            eval_tolerance: 0.02,
        }
    }
}

tagged_enum! {
    /// Who may join a run.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub enum Admission {
        /// Anyone.
        #[default]
        Open,
        /// Only these peer ids (base58).
        Allowlist {
            /// Allowed peer ids.
            peers: Vec<String>
        },
        /// Anyone presenting the token whose blake3 is given.
        Token {
            /// blake3 of the token text.
            token_blake3: ContentId
        },
    }
}

impl Admission {
    /// Whether `peer` presenting `token` may join (token hashes compared in constant time).
    pub fn admits(&self, peer: &libp2p_identity::PeerId, token: Option<&str>) -> bool {
        match self {
            Admission::Open => true,
            Admission::Allowlist { peers } => {
                let me = peer.to_base58();
                peers.contains(&me)
            }
            Admission::Token { token_blake3 } => {
                token.is_some_and(|t| token_blake3.matches(t.as_bytes()))
            }
        }
    }
}

/// Network settings every peer of the run shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSpec {
    /// gossipsub `max_transmit_size` in bytes.
    pub max_transmit_size: usize,
    /// Encoded signed deltas up to this size travel inline by gossip; larger ones by content id.
    pub inline_delta_limit: usize,
    /// Bytes per blob request-response chunk.
    pub blob_chunk_size: u32,
}

impl Default for NetSpec {
    fn default() -> Self {
        Self {
            max_transmit_size: 262_144,
            inline_delta_limit: 131_072,
            blob_chunk_size: 262_144,
        }
    }
}

/// The whole run: written by `hearth-coordinator init`, sent to workers on join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSpec {
    /// Run id, used in topic names (`hearth/<run_id>/...`).
    pub run_id: String,
    /// Human-readable name.
    pub name: String,
    /// Base model.
    pub base: BaseModel,
    /// Architecture of the base model.
    pub arch: ModelArch,
    /// LoRA settings.
    pub lora: LoraSpec,
    /// Training data.
    pub data: DatasetManifest,
    /// Inner training.
    pub train: TrainSpec,
    /// Rounds and aggregation.
    pub aggregate: AggregateSpec,
    /// Delta verification.
    pub verify: VerifySpec,
    /// Admission policy.
    pub admission: Admission,
    /// Network limits.
    pub net: NetSpec,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            run_id: "tiny".into(),
            name: "tiny demo run".into(),
            base: BaseModel::default(),
            arch: ModelArch::tiny(),
            lora: LoraSpec::default(),
            data: DatasetManifest::default(),
            train: TrainSpec::default(),
            aggregate: AggregateSpec::default(),
            verify: VerifySpec::default(),
            admission: Admission::default(),
            net: NetSpec::default(),
        }
    }
}

impl RunSpec {
    /// A run on the `tiny` preset (the default).
    pub fn tiny() -> Self {
        Self::default()
    }

    /// A run on SmolLM2-135M-Instruct loaded from a GGUF file.
    pub fn smollm2_135m(
        file_name: impl Into<String>,
        blake3: Option<ContentId>,
        size_bytes: u64,
    ) -> Self {
        Self {
            run_id: "smollm2".into(),
            name: "SmolLM2-135M-Instruct LoRA".into(),
            base: BaseModel {
                name: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                source: ModelSource::Gguf {
                    file_name: file_name.into(),
                },
                blake3,
                size_bytes,
                ..BaseModel::default()
            },
            arch: ModelArch::smollm2_135m(),
            data: DatasetManifest {
                seq_len: 256,
                shards: Vec::new(),
            },
            ..Self::default()
        }
    }

    /// Content id of the spec's bincode encoding.
    pub fn spec_id(&self) -> ContentId {
        ContentId::of(&crate::decode::encode(self))
    }

    /// The trainable adapter tensors of this run, in wire order.
    pub fn adapter_layout(&self) -> Result<Vec<TensorLayout>, SpecError> {
        self.lora.adapter_layout(&self.arch)
    }

    /// Upper bound on the size of one signed delta of this run: the codec's payloads for the
    /// adapter layout plus 16 bytes of length prefix a tensor and 4 KiB for the message fields and
    /// the signed envelope. Request limits are sized from it, so a delta too large for gossip can
    /// still be submitted directly. `None` on an invalid layout or overflow.
    pub fn max_delta_bytes(&self) -> Option<usize> {
        let layout = self.adapter_layout().ok()?;
        let codec = &self.aggregate.codec;
        let mut total = 4096usize.checked_add(self.run_id.len())?;
        for t in &layout {
            let payload = crate::codec::payload_len(codec, t.numel()?, codec.chunk_size())?;
            total = total.checked_add(payload)?.checked_add(16)?;
        }
        Some(total)
    }

    /// Parses TOML and validates.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: RunSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Renders TOML.
    pub fn to_toml(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Toml(e.to_string()))
    }

    /// Checks every section for values a run cannot use.
    pub fn validate(&self) -> Result<(), SpecError> {
        let id_ok = !self.run_id.is_empty()
            && self.run_id.len() <= 64
            && self
                .run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !id_ok {
            return Err(invalid(
                "run_id",
                &self.run_id,
                "1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        if self.base.size_bytes > i64::MAX as u64 {
            return Err(invalid(
                "base.size_bytes",
                self.base.size_bytes,
                "must fit in i64",
            ));
        }
        self.base.validate()?;
        self.arch.validate()?;
        self.lora.validate()?;
        if self.data.seq_len < 2 || self.data.seq_len > self.arch.max_position {
            return Err(invalid(
                "data.seq_len",
                self.data.seq_len,
                "must be in 2..=arch.max_position",
            ));
        }
        let t = &self.train;
        if t.local_steps == 0 {
            return Err(invalid(
                "train.local_steps",
                t.local_steps,
                "must be positive",
            ));
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return Err(invalid(
                "train.batch_size",
                t.batch_size,
                "batch_size and grad_accum must be positive",
            ));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(invalid("train.lr", t.lr, "must be positive"));
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            return Err(invalid("train.grad_clip", t.grad_clip, "must be >= 0"));
        }
        self.validate_aggregate()?;
        if let Admission::Allowlist { peers } = &self.admission {
            for p in peers {
                p.parse::<libp2p_identity::PeerId>()
                    .map_err(|_| invalid("admission.peers", p, "not a peer id"))?;
            }
        }
        let n = &self.net;
        if n.max_transmit_size < 1024 || n.inline_delta_limit > n.max_transmit_size {
            return Err(invalid(
                "net.inline_delta_limit",
                n.inline_delta_limit,
                "must not exceed net.max_transmit_size (>= 1024)",
            ));
        }
        if n.blob_chunk_size == 0 || n.blob_chunk_size > crate::messages::MAX_BLOB_CHUNK {
            return Err(invalid(
                "net.blob_chunk_size",
                n.blob_chunk_size,
                "must be in 1..=4 MiB",
            ));
        }
        Ok(())
    }

    fn validate_aggregate(&self) -> Result<(), SpecError> {
        let a = &self.aggregate;
        a.codec
            .validate()
            .map_err(|e| invalid("aggregate.codec", e, "invalid codec"))?;
        if a.min_deltas == 0 || a.target_deltas < a.min_deltas {
            return Err(invalid(
                "aggregate.target_deltas",
                a.target_deltas,
                "need 1 <= min_deltas <= target_deltas",
            ));
        }
        if a.deadline_secs == 0 {
            return Err(invalid(
                "aggregate.deadline_secs",
                a.deadline_secs,
                "must be positive",
            ));
        }
        match a.aggregator {
            Aggregator::TrimmedMean { trim_fraction } if !(0.0..0.5).contains(&trim_fraction) => {
                return Err(invalid(
                    "aggregate.aggregator.trim_fraction",
                    trim_fraction,
                    "must be in [0, 0.5)",
                ));
            }
            Aggregator::CenteredClip { tau, iters }
                if !(tau.is_finite() && tau > 0.0) || iters == 0 =>
            {
                return Err(invalid(
                    "aggregate.aggregator.tau",
                    tau,
                    "tau > 0 and iters > 0",
                ));
            }
            _ => {}
        }
        let lr_ok = |lr: f32| lr.is_finite() && lr > 0.0;
        match a.outer {
            OuterOptimizer::Nesterov { lr, momentum }
                if !lr_ok(lr) || !(0.0..1.0).contains(&momentum) =>
            {
                Err(invalid(
                    "aggregate.outer",
                    lr,
                    "lr > 0 and momentum in [0, 1)",
                ))
            }
            OuterOptimizer::Average { lr } if !lr_ok(lr) => {
                Err(invalid("aggregate.outer.lr", lr, "must be positive"))
            }
            _ => Ok(()),
        }
    }
}

//! Bridges from the wire run spec (`hearth-proto`) to this crate's configs and tensors.

use std::path::Path;

use hearth_proto::{LoraSpec, ModelArch, TrainSpec};

use crate::config::{LoraConfig, LoraTarget, ModelConfig};
use crate::error::Result;
use crate::source::ModelSource;
use crate::train::TrainConfig;

/// Seed of the tiny preset's random base weights (fixed so every peer builds the same model).
pub const TINY_WEIGHT_SEED: u64 = 0;

/// The decoder shape of a run.
pub fn model_config(arch: &ModelArch) -> ModelConfig {
    ModelConfig {
        vocab: arch.vocab_size,
        hidden: arch.hidden_size,
        intermediate: arch.intermediate_size,
        layers: arch.num_layers,
        heads: arch.num_heads,
        kv_heads: arch.num_kv_heads,
        head_dim: arch.head_dim,
        rope_theta: arch.rope_theta,
        rms_eps: arch.rms_norm_eps,
        max_position: arch.max_position,
        tie_embeddings: arch.tie_embeddings,
        features: Default::default(),
    }
}

/// The run spec's shape of a loaded model (the inverse of [`model_config`] for the shape; the
/// family travels in `base.family`).
pub fn model_arch(cfg: &ModelConfig) -> ModelArch {
    ModelArch {
        vocab_size: cfg.vocab,
        hidden_size: cfg.hidden,
        intermediate_size: cfg.intermediate,
        num_layers: cfg.layers,
        num_heads: cfg.heads,
        num_kv_heads: cfg.kv_heads,
        head_dim: cfg.head_dim,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_eps,
        max_position: cfg.max_position,
        tie_embeddings: cfg.tie_embeddings,
    }
}

/// Checks that a loaded base model is the one the run spec describes: same family and shape.
pub fn check_model(
    base: &hearth_proto::BaseModel,
    arch: &ModelArch,
    cfg: &ModelConfig,
) -> std::result::Result<(), String> {
    if matches!(base.source, hearth_proto::ModelSource::Preset { .. }) {
        return Ok(());
    }
    if cfg.features.family.name() != base.family {
        return Err(format!(
            "the model file is a {} model, but the run trains a {} model",
            cfg.features.family.name(),
            base.family
        ));
    }
    let ours = model_arch(cfg);
    // GGUF stores floats as f32: compare them to f32 precision.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs());
    let same = ModelArch {
        rope_theta: arch.rope_theta,
        rms_norm_eps: arch.rms_norm_eps,
        ..ours.clone()
    } == *arch
        && close(ours.rope_theta, arch.rope_theta)
        && close(ours.rms_norm_eps, arch.rms_norm_eps);
    if !same {
        return Err(format!(
            "the model file's shape {ours:?} differs from the run's {arch:?}"
        ));
    }
    Ok(())
}

/// The LoRA settings of a run.
pub fn lora_config(spec: &LoraSpec) -> Result<LoraConfig> {
    let targets = spec
        .targets
        .iter()
        .map(|t| LoraTarget::parse(t))
        .collect::<Result<Vec<_>>>()?;
    let cfg = LoraConfig {
        rank: spec.rank,
        alpha: f64::from(spec.alpha),
        dropout: f64::from(spec.dropout),
        targets,
        train_a: spec.train_a,
        seed: spec.seed,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The inner-loop settings of a run for one round of local training.
pub fn train_config(spec: &TrainSpec, seed: u64) -> TrainConfig {
    TrainConfig {
        lr: f64::from(spec.lr),
        weight_decay: f64::from(spec.weight_decay),
        warmup_steps: spec.warmup_steps as usize,
        max_steps: spec.local_steps as usize,
        max_seconds: (spec.time_budget_secs > 0).then_some(spec.time_budget_secs as f64),
        grad_clip: (spec.grad_clip > 0.0).then_some(f64::from(spec.grad_clip)),
        batch_size: spec.batch_size.max(1),
        accum_steps: spec.grad_accum.max(1),
        seed,
        ..TrainConfig::default()
    }
}

/// Where to load a run's base model from: the tiny preset, or the given (verified) file.
pub fn model_source(source: &hearth_proto::ModelSource, file: Option<&Path>) -> ModelSource {
    match (source, file) {
        (hearth_proto::ModelSource::Preset { .. }, _) | (_, None) => ModelSource::Tiny {
            seed: TINY_WEIGHT_SEED,
        },
        (hearth_proto::ModelSource::Safetensors { .. }, Some(p)) => {
            ModelSource::HfDir(p.to_path_buf())
        }
        (hearth_proto::ModelSource::Gguf { .. }, Some(p)) => ModelSource::Gguf(p.to_path_buf()),
    }
}

/// The chat template of a base model (its own Jinja template, or ChatML), with ChatML's special tokens.
pub fn chat_template(
    base: &crate::source::BaseModel,
) -> std::result::Result<crate::data::ChatTemplate, crate::data::DataError> {
    match &base.chat_template {
        Some(t) => crate::data::ChatTemplate::new(t, "<|im_start|>", "<|im_end|>"),
        None => crate::data::ChatTemplate::chatml(),
    }
}

/// Tokenize, split, pack and shard a dataset file for a run on `base`.
pub fn prepare_run_dataset(
    base: &crate::source::BaseModel,
    path: &Path,
    seq_len: usize,
    holdout_fraction: f64,
    n_shards: usize,
    seed: u64,
) -> std::result::Result<crate::data::PreparedDataset, crate::data::DataError> {
    let template = chat_template(base)?;
    crate::data::prepare_dataset(
        path,
        base.tokenizer.inner(),
        &template,
        seq_len,
        holdout_fraction,
        n_shards,
        seed,
    )
}

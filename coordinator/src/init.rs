//! `hearth-coordinator init`: write run.toml and prepare the dataset shards.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use hearth_model::candle_core::{DType, Device};
use hearth_model::data::Shard;
use hearth_model::spec;
use hearth_proto::{ContentId, RunSpec, ShardInfo};
use tracing::info;

use crate::base_model::{store_model, StoredModel};
use crate::config::{CoordinatorSettings, RunConfig};
use crate::store::{write_atomic, BlobStore};

/// Which base model a run starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// A small Llama with deterministic random weights (tests, quick local checks).
    Tiny,
    /// SmolLM2-135M-Instruct from its GGUF file.
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    /// Any supported model named by `--model` (a GGUF file or a Hugging Face directory), with
    /// generic settings to edit in run.toml. Chosen by giving `--model` without `--preset`.
    #[value(skip)]
    Custom,
}

impl Preset {
    /// Rounds `demo` runs on this preset unless told otherwise.
    pub fn demo_rounds(self) -> u64 {
        match self {
            Preset::Tiny | Preset::Custom => 3,
            Preset::Smollm2_135m => 12,
        }
    }

    /// The preset `--preset` and `--model` ask for: `--model` alone means a custom model.
    pub fn resolve(preset: Option<Preset>, model: Option<&Path>) -> Preset {
        match (preset, model) {
            (Some(p), _) => p,
            (None, Some(_)) => Preset::Custom,
            (None, None) => Preset::Tiny,
        }
    }

    /// Sequences of `seq_len` tokens in the screen's reference batch: a backward pass per round.
    /// Free on the tiny model (64 sequences). On larger models a token budget,
    /// [`REFERENCE_TOKENS`]: the smollm2 demo's 8 sequences of 48 tokens gave honest deltas a
    /// median z of 107 and a 5th percentile of 27 over 30 rounds, while 3 of 48 (144 tokens) let
    /// the reference's own noise push 5 % of honest deltas below z = −12 (docs/RELIABILITY.md).
    pub fn reference_sequences(self, seq_len: usize) -> usize {
        match self {
            Preset::Tiny => 64,
            Preset::Smollm2_135m | Preset::Custom => REFERENCE_TOKENS.div_ceil(seq_len.max(1)),
        }
    }

    /// The run id prefix.
    fn tag(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Smollm2_135m => "smollm2",
            Preset::Custom => "model",
        }
    }
}

/// Tokens in the screen's reference batch on models where its backward pass costs something.
pub const REFERENCE_TOKENS: usize = 384;

/// Reference sequences for a custom model: as many as the tiny preset for a model small enough
/// that its backward pass is free (under 20 M parameters), otherwise SmolLM2's token budget.
fn custom_reference_sequences(cfg: &hearth_model::ModelConfig, seq_len: usize) -> usize {
    if cfg.parameter_count() < 20_000_000 {
        64
    } else {
        Preset::Custom.reference_sequences(seq_len)
    }
}

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Base model preset.
    pub preset: Preset,
    /// Model file (GGUF) for smollm2-135m (default: the fetch script's location), or the GGUF
    /// file or Hugging Face directory of a custom model.
    pub model: Option<PathBuf>,
    /// LoRA target modules of a custom model (default q_proj, v_proj).
    pub lora_targets: Option<Vec<String>>,
    /// LoRA rank of a custom model (default 8).
    pub rank: Option<usize>,
    /// Tokens per sequence of a custom model (default 256, at most its context).
    pub seq_len: Option<usize>,
    /// Dataset file (JSONL or text); defaults to the generated demo task.
    pub dataset: Option<PathBuf>,
    /// Output directory (run.toml and data/ go here).
    pub out: PathBuf,
    /// Number of training shards.
    pub shards: usize,
    /// Examples of the generated demo task when no dataset is given.
    pub demo_examples: usize,
    /// Seed of the split, the shards and the demo task.
    pub seed: u64,
    /// Keep at most this many held-out sequences (0 = all): evaluation cost per round.
    pub max_validation: usize,
}

impl InitOptions {
    /// Defaults for `preset` writing to `out`.
    pub fn new(preset: Preset, out: impl Into<PathBuf>) -> Self {
        Self {
            preset,
            model: None,
            lora_targets: None,
            rank: None,
            seq_len: None,
            dataset: None,
            out: out.into(),
            shards: 8,
            demo_examples: 1500,
            seed: 7,
            max_validation: if preset == Preset::Tiny { 0 } else { 32 },
        }
    }
}

/// The run spec for a preset with the settings the demo is tuned for (`stored`: the model file
/// or directory in the blob store; `config`: the loaded model's shape, for custom models).
fn base_spec(
    opts: &InitOptions,
    stored: Option<&StoredModel>,
    config: &hearth_model::ModelConfig,
) -> Result<RunSpec> {
    let preset = opts.preset;
    let mut s = match (preset, stored) {
        (Preset::Smollm2_135m, Some(m)) => {
            let name = match &m.source {
                hearth_proto::ModelSource::Gguf { file_name } => file_name.clone(),
                _ => return Err(anyhow!("smollm2-135m needs its GGUF file")),
            };
            RunSpec::smollm2_135m(name, Some(m.blake3), m.size_bytes)
        }
        (Preset::Custom, Some(m)) => return custom_spec(opts, m, config),
        _ => RunSpec::tiny(),
    };
    // SmolLM2's chat template makes a demo example at most 47 tokens: one example a sequence,
    // little padding. The tiny preset's byte-level tokenizer needs 64.
    s.data.seq_len = if preset == Preset::Tiny { 64 } else { 48 };
    s.aggregate.target_deltas = 3;
    s.aggregate.grace_secs = 2;
    s.aggregate.deadline_secs = if preset == Preset::Tiny { 60 } else { 300 };
    if preset == Preset::Tiny {
        // The best setting at every swarm size in table 3b (docs/bench/3-speedup.md): a random
        // model this small takes a high inner rate, and light outer momentum beats 0.7/0.9 at
        // every rate and N. lr 0.32 was best at 1 and 4 workers; 0.16 ends within 0.1 % of f32
        // with the default codec after 10 and 30 rounds, 0.32 moved 0.5 % and 1.4 % (STATUS).
        s.train.local_steps = 20;
        s.train.lr = 0.16;
        s.train.warmup_steps = 2;
        s.aggregate.outer = hearth_proto::OuterOptimizer::Nesterov {
            lr: 0.5,
            momentum: 0.5,
        };
    } else {
        // Tuned so the README demo (3 workers sharing 2 CPU cores, `Preset::demo_rounds` rounds)
        // teaches the task in well under 10 minutes (docs/STATUS.md): LoRA on all seven
        // projections, as the single-worker experiment (model/tests/demo_experiment.rs) found
        // necessary, and a higher inner learning rate than one worker would use, since three
        // averaged deltas are one step of three times the batch (5e-3 got there two rounds
        // sooner but its deltas overshot on their own shard and failed the loss probe twice in
        // 33). The time budget stops a slow
        // machine's local training instead of dropping it.
        s.lora.targets = hearth_proto::LORA_TARGETS
            .iter()
            .map(|t| t.to_string())
            .collect();
        // Quality first: f32 deltas. At these settings every lossy codec measured ended more than
        // 1 % from f32's held-out loss: dense 8-bit was worse after 10 rounds in 3 of 3 seeds
        // (+8 %, +49 %, +149 %, table 2i), top-k 1/64 2-bit 94 % (table 2). f32 costs 4× the
        // bytes of dense 8-bit: 5.0 MB a delta, 2 s at 20 Mbit/s against rounds of about 40 s.
        s.aggregate.codec = hearth_proto::CodecSpec::F32;
        s.train.local_steps = 14;
        s.train.lr = 4e-3;
        s.train.warmup_steps = 3;
        s.train.time_budget_secs = 120;
    }
    Ok(s)
}

/// The run spec of a custom model: its shape and family from the loaded model, LoRA as asked,
/// and the tiny preset's round settings (every one spelled out in run.toml to tune).
fn custom_spec(
    opts: &InitOptions,
    m: &StoredModel,
    config: &hearth_model::ModelConfig,
) -> Result<RunSpec> {
    let mut s = RunSpec::tiny();
    let name = match &m.source {
        hearth_proto::ModelSource::Gguf { file_name } => file_name.clone(),
        hearth_proto::ModelSource::Safetensors { dir_name } => dir_name.clone(),
        hearth_proto::ModelSource::Preset { name } => name.clone(),
    };
    s.name = format!("{name} LoRA");
    s.base = hearth_proto::BaseModel {
        name,
        source: m.source.clone(),
        blake3: Some(m.blake3),
        size_bytes: m.size_bytes,
        family: config.features.family.name().to_string(),
        files: m.files.clone(),
    };
    s.arch = spec::model_arch(config);
    if let Some(targets) = &opts.lora_targets {
        s.lora.targets = targets.clone();
    }
    if let Some(rank) = opts.rank {
        s.lora.rank = rank;
        s.lora.alpha = 2.0 * rank as f32;
    }
    s.data.seq_len = opts.seq_len.unwrap_or(256).min(config.max_position);
    s.aggregate.target_deltas = 3;
    s.aggregate.grace_secs = 2;
    s.aggregate.deadline_secs = 300;
    s.train.local_steps = 20;
    s.train.lr = 3e-3;
    s.train.warmup_steps = 2;
    Ok(s)
}

/// Create `out/run.toml` and `out/data/` with the shards, the validation split and (for file
/// models) the base model as content-addressed blobs. Returns the run.toml path. (A few lines
/// over 120: the steps of `init` in the order the organiser's files appear.)
pub fn init(opts: &InitOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let config_path = opts.out.join("run.toml");
    if config_path.exists() {
        return Err(anyhow!(
            "{} already exists; choose another --out",
            config_path.display()
        ));
    }
    let settings = CoordinatorSettings::default();
    let data_dir = opts.out.join(&settings.data_dir);
    let store = BlobStore::open(data_dir.join("blobs"))?;

    let model_path = match opts.preset {
        Preset::Tiny => None,
        Preset::Smollm2_135m => Some(
            opts.model
                .clone()
                .unwrap_or_else(hearth_model::default_model_path),
        ),
        Preset::Custom => Some(
            opts.model
                .clone()
                .ok_or_else(|| anyhow!("a custom model needs --model FILE|DIR"))?,
        ),
    };
    let stored = match &model_path {
        None => None,
        Some(path) => {
            if !path.exists() {
                return Err(anyhow!(
                    "model {} not found; run deploy/fetch-model.sh or pass --model FILE|DIR",
                    path.display()
                ));
            }
            info!(path = %path.display(), "hashing and storing the base model");
            Some(store_model(&store, path)?)
        }
    };
    // Load (and so check) the model before writing the spec: an unsupported family, rope type
    // or tensor is refused here, by name. The files just stored are these same bytes.
    let source = match &model_path {
        Some(p) if p.is_dir() => hearth_model::ModelSource::HfDir(p.clone()),
        Some(p) => hearth_model::ModelSource::Gguf(p.clone()),
        None => hearth_model::ModelSource::Tiny {
            seed: spec::TINY_WEIGHT_SEED,
        },
    };
    let base = hearth_model::load_base(&source, &Device::Cpu, DType::F32)
        .context("loading the base model")?;
    let mut spec = base_spec(opts, stored.as_ref(), &base.config)?;

    let dataset = match &opts.dataset {
        Some(p) => p.clone(),
        None => {
            let p = opts.out.join("demo.jsonl");
            hearth_model::demo::write_jsonl(&p, opts.demo_examples, opts.seed)
                .with_context(|| format!("writing {}", p.display()))?;
            p
        }
    };
    let prepared = spec::prepare_run_dataset(
        &base,
        &dataset,
        spec.data.seq_len,
        0.1,
        opts.shards,
        opts.seed,
    )
    .with_context(|| format!("preparing {}", dataset.display()))?;
    spec.data.shards = prepared
        .train_shards
        .iter()
        .map(|s| {
            let cid = store.put(&s.to_bytes())?;
            Ok(ShardInfo {
                cid,
                sequences: s.len() as u64,
                tokens: s.target_count() as u64,
            })
        })
        .collect::<Result<_>>()?;
    let mut held_out = prepared.validation.clone();
    if opts.max_validation > 0 {
        held_out.truncate(opts.max_validation);
    }
    let validation = Shard::new(spec.data.seq_len, held_out)?;
    let validation_cid = store.put(&validation.to_bytes())?;
    let tag = ContentId::of(
        format!(
            "{}{:?}{}",
            opts.out.display(),
            std::time::SystemTime::now(),
            std::process::id()
        )
        .as_bytes(),
    );
    spec.run_id = format!("{}-{}", opts.preset.tag(), &tag.to_hex()[..8]);
    spec.validate()?;

    let cfg = RunConfig {
        coordinator: CoordinatorSettings {
            model_path: model_path
                .map(|p| std::path::absolute(&p).unwrap_or(p))
                .unwrap_or_default(),
            validation: Some(validation_cid),
            reference_sequences: match opts.preset {
                Preset::Custom => custom_reference_sequences(&base.config, spec.data.seq_len),
                p => p.reference_sequences(spec.data.seq_len),
            },
            ..settings
        },
        run: spec,
    };
    write_atomic(&config_path, cfg.to_commented_toml()?.as_bytes())?;
    info!(
        shards = cfg.run.data.shards.len(),
        validation_sequences = validation.len(),
        examples = prepared.stats.examples,
        "run prepared"
    );
    Ok(config_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::CodecSpec;

    /// What `init` writes by default: the tiny preset keeps dense 8-bit (within 0.02 % of f32,
    /// table 2e); SmolLM2 sends f32 (dense 8-bit ended above f32 in 3 of 3 seeds, table 2i).
    #[test]
    fn each_preset_writes_its_measured_default_codec_and_the_spec_survives_toml() {
        let tiny = base_spec(
            &InitOptions::new(Preset::Tiny, "unused"),
            None,
            &hearth_model::ModelConfig::tiny(),
        )
        .unwrap();
        assert_eq!(tiny.aggregate.codec, CodecSpec::QUALITY);
        let stored = StoredModel {
            source: hearth_proto::ModelSource::Gguf {
                file_name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            },
            blake3: ContentId::of(b"model"),
            size_bytes: 1,
            files: Vec::new(),
        };
        let smol = base_spec(
            &InitOptions::new(Preset::Smollm2_135m, "unused"),
            Some(&stored),
            &hearth_model::ModelConfig::smollm2_135m(),
        )
        .unwrap();
        assert_eq!(smol.aggregate.codec, CodecSpec::F32);
        assert_eq!(smol.lora.targets.len(), hearth_proto::LORA_TARGETS.len());
        for spec in [tiny, smol] {
            spec.validate().unwrap();
            let back = RunSpec::from_toml(&spec.to_toml().unwrap()).unwrap();
            assert_eq!(back.aggregate.codec, spec.aggregate.codec);
        }
    }
}

//! `hearth-worker bench`: training speed and memory on this machine, and what they mean for a round.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use hearth_model::spec::lora_config;
use hearth_model::{load_base, DType, ModelSource, Sequence, TrainConfig, Trainer};
use hearth_proto::RunSpec;
use serde::{Deserialize, Serialize};

use crate::device::DeviceArg;
use crate::memory::{cap_batch, estimate_with, human_bytes, peak_rss, reset_peak_rss, Footprint};

/// Arguments of `hearth-worker bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A run's run.toml (as `hearth-coordinator init` writes it): benchmark its model, LoRA,
    /// batch, sequence length and local steps.
    #[arg(long, value_name = "FILE")]
    pub run: Option<PathBuf>,
    /// Base model file (GGUF) or Hugging Face directory (default: the run's, or the SmolLM2
    /// file fetched by deploy/fetch-model.sh when it is there).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Built-in model instead of a file: `tiny`, or `llama-1b` (random weights in Llama 3.2
    /// 1B's shape, for speed and memory on a GPU).
    #[arg(long)]
    pub preset: Option<String>,
    /// Activation checkpointing, as `join --checkpoint-activations`.
    #[arg(long)]
    pub checkpoint_activations: bool,
    /// How the frozen base weights are held, as `join --dtype`: f32, bf16, f16, q8 or q4.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Timed optimizer steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sequences per step (default: the run's batch, else 4).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence (default: the run's, else 64).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Largest micro-batch, as `join --max-batch` would use.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Optimizer steps in one round, for the round-time estimate (default: the run's, else 15).
    #[arg(long)]
    pub local_steps: Option<u32>,
    /// Where to train: cpu, cuda:N, or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `bench` measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// Model measured.
    pub model: String,
    /// Device used.
    pub device: String,
    /// CPU threads.
    pub threads: usize,
    /// Sequences per optimizer step.
    pub batch: usize,
    /// Sequences per micro-batch (after --max-batch).
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// LoRA rank.
    pub rank: usize,
    /// Timed steps.
    pub steps: usize,
    /// Training tokens per second.
    pub tokens_per_second: f64,
    /// Seconds per optimizer step.
    pub seconds_per_step: f64,
    /// Peak resident memory of this process while training (bytes): the peak is reset once the
    /// model is built and the host's full-precision copy of the base is dropped, as in `join`.
    pub peak_memory_bytes: Option<u64>,
    /// Peak resident memory while loading the base and building the model (bytes).
    pub load_peak_memory_bytes: Option<u64>,
    /// The worker's estimate for this configuration (bytes), which `join` checks.
    pub estimated_memory_bytes: u64,
    /// Steps per round.
    pub local_steps: u32,
    /// Seconds of training per round.
    pub round_seconds: f64,
    /// The round's time budget (s), 0 for none.
    pub time_budget_secs: u64,
    /// Steps that fit in the time budget (all when the budget is not binding).
    pub steps_within_budget: u64,
}

#[derive(Deserialize)]
struct RunFile {
    run: RunSpec,
}

/// Run the benchmark and print its report.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let report = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn load_spec(args: &BenchArgs) -> Result<RunSpec> {
    let Some(path) = &args.run else {
        let mut spec = if args.preset.as_deref() == Some("tiny") {
            RunSpec::tiny()
        } else {
            RunSpec::default()
        };
        spec.data.seq_len = 64;
        spec.train.local_steps = 15;
        return Ok(spec);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: RunFile =
        toml::from_str(&text).with_context(|| format!("{} is not a run.toml", path.display()))?;
    Ok(file.run)
}

fn source(args: &BenchArgs, spec: &RunSpec) -> Result<ModelSource> {
    let tiny = ModelSource::Tiny {
        seed: hearth_model::spec::TINY_WEIGHT_SEED,
    };
    match (&args.model, args.preset.as_deref()) {
        (_, Some("tiny")) => Ok(tiny),
        (_, Some("llama-1b")) => Ok(ModelSource::Tiny {
            seed: LLAMA_1B_SEED,
        }),
        (_, Some(other)) => bail!("unknown preset {other:?} (known: tiny, llama-1b)"),
        (Some(p), None) if p.is_dir() => Ok(ModelSource::HfDir(p.clone())),
        (Some(p), None) => Ok(ModelSource::Gguf(p.clone())),
        (None, None) => {
            if args.run.is_some()
                && matches!(spec.base.source, hearth_proto::ModelSource::Preset { .. })
            {
                return Ok(tiny);
            }
            let p = hearth_model::default_model_path();
            if !p.is_file() {
                bail!(
                    "no model to measure: give --model FILE, or --preset tiny ({} is not there; deploy/fetch-model.sh fetches it)",
                    p.display()
                );
            }
            Ok(ModelSource::Gguf(p))
        }
    }
}

/// Weight seed of the `llama-1b` bench preset.
const LLAMA_1B_SEED: u64 = 1;

/// Llama 3.2 1B's shape (for the `llama-1b` preset and the memory table).
pub fn llama_3_2_1b_config() -> hearth_model::ModelConfig {
    hearth_model::ModelConfig {
        vocab: 128_256,
        hidden: 2048,
        intermediate: 8192,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        head_dim: 64,
        rope_theta: 500_000.0,
        rms_eps: 1e-5,
        max_position: 8192,
        tie_embeddings: true,
        features: Default::default(),
    }
}

/// Random weights in Llama 3.2 1B's shape (the tokenizer is the tiny preset's; the bench feeds
/// token ids).
fn llama_1b(device: &hearth_model::Device) -> Result<hearth_model::BaseModel> {
    let config = llama_3_2_1b_config();
    Ok(hearth_model::BaseModel {
        weights: hearth_model::preset::random_weights(&config, LLAMA_1B_SEED, device, DType::F32)?,
        config,
        tokenizer: hearth_model::preset::tiny_tokenizer()?,
        chat_template: None,
        eos_token_id: 0,
    })
}

/// Deterministic token sequences, every position scored.
fn sequences(n: usize, seq_len: usize, vocab: usize) -> Vec<Sequence> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| Sequence {
            tokens: (0..seq_len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % vocab.max(1) as u64) as u32
                })
                .collect(),
            loss_mask: vec![true; seq_len],
        })
        .collect()
}

/// Train `1 + steps` steps and time the last `steps`.
pub fn measure(args: &BenchArgs) -> Result<BenchReport> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        bail!("--threads must be positive");
    }
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let choice = args.device.parse::<DeviceArg>()?.resolve()?;
    let device = choice.open()?;
    let mut spec = load_spec(args)?;
    if let Some(b) = args.batch {
        spec.train.batch_size = b.max(1);
        spec.train.grad_accum = 1;
    }
    if let Some(t) = args.seq_len {
        spec.data.seq_len = t.max(2);
    }
    if let Some(s) = args.local_steps {
        spec.train.local_steps = s;
    }
    let src = source(args, &spec)?;
    let file_bytes = match &src {
        ModelSource::Gguf(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        _ => 0,
    };
    // As the worker loads: read on the host, build onto the device, drop the host copy.
    let host = hearth_model::Device::Cpu;
    let base = if args.preset.as_deref() == Some("llama-1b") {
        llama_1b(&host)?
    } else {
        load_base(&src, &host, DType::F32).with_context(|| format!("loading {src:?}"))?
    };
    let dtype = hearth_model::linear::BaseDType::parse(&args.dtype).context("--dtype")?;
    let lora = lora_config(&spec.lora)?;
    let model =
        hearth_model::Model::load_onto(&base.weights, &base.config, Some(&lora), dtype, &device)?;
    let base_config = base.config.clone();
    drop(base);
    let load_peak = choice.is_cpu().then(peak_rss).flatten();
    reset_peak_rss();
    let batch = spec.train.batch_size.max(1) * spec.train.grad_accum.max(1);
    let (micro, accum) = cap_batch(batch, 1, args.max_batch.unwrap_or(batch));
    let seq_len = spec.data.seq_len;
    if seq_len > base_config.max_position {
        bail!(
            "sequence length {seq_len} exceeds the model's {}",
            base_config.max_position
        );
    }
    let data = sequences(batch * (args.steps + 1), seq_len, base_config.vocab);
    let cfg = TrainConfig {
        lr: 1e-4,
        warmup_steps: 0,
        max_steps: 1,
        batch_size: micro,
        accum_steps: accum,
        checkpoint_activations: args.checkpoint_activations,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, cfg.clone())?;
    trainer.train(&model, &data, |_| ControlFlow::Continue(()))?;
    let mut trainer_timed = Trainer::new(
        &model,
        TrainConfig {
            max_steps: args.steps,
            ..cfg
        },
    )?;
    let start = Instant::now();
    let report = trainer_timed.train(&model, &data, |_| ControlFlow::Continue(()))?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    if report.steps == 0 {
        return Err(anyhow!("no step was trained"));
    }
    let per_step = seconds / report.steps as f64;
    let budget = spec.train.time_budget_secs;
    let round_steps = u64::from(spec.train.local_steps);
    let within = if budget > 0 {
        round_steps.min((budget as f64 / per_step).floor() as u64)
    } else {
        round_steps
    };
    Ok(BenchReport {
        model: if args.preset.as_deref() == Some("llama-1b") {
            "llama-1b (random weights)".into()
        } else {
            hearth_model::source::base_model_name(&src)
        },
        device: choice.to_string(),
        threads,
        batch,
        micro_batch: micro,
        seq_len,
        rank: lora.rank,
        steps: report.steps,
        tokens_per_second: report.tokens as f64 / seconds,
        seconds_per_step: per_step,
        peak_memory_bytes: if choice.is_cpu() { peak_rss() } else { None },
        load_peak_memory_bytes: load_peak,
        estimated_memory_bytes: estimate_with(
            &base_config,
            &lora,
            micro,
            seq_len,
            Footprint {
                dtype,
                checkpoint: args.checkpoint_activations,
            },
        )
        .with_model_file(file_bytes)
        .total(),
        local_steps: spec.train.local_steps,
        round_seconds: per_step * within as f64,
        time_budget_secs: budget,
        steps_within_budget: within,
    })
}

/// The human-readable report.
pub fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<22} {v}\n"));
    row("model", r.model.clone());
    row("device", format!("{} ({} threads)", r.device, r.threads));
    row(
        "batch",
        format!(
            "{} × {} tokens (micro-batch {}), LoRA rank {}",
            r.batch, r.seq_len, r.micro_batch, r.rank
        ),
    );
    row(
        "training speed",
        format!("{:.1} tokens/s", r.tokens_per_second),
    );
    row("time per step", format!("{:.2} s", r.seconds_per_step));
    row(
        "peak memory",
        r.peak_memory_bytes
            .map_or("not measured on this device".into(), human_bytes),
    );
    if let Some(p) = r.load_peak_memory_bytes {
        row("peak while loading", human_bytes(p));
    }
    row("estimated memory", human_bytes(r.estimated_memory_bytes));
    let budget = if r.time_budget_secs > 0 {
        format!(", budget {} s", r.time_budget_secs)
    } else {
        String::new()
    };
    row(
        "one round",
        format!(
            "{:.0} s for {} of {} local steps{budget}",
            r.round_seconds, r.steps_within_budget, r.local_steps
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_deterministic_and_in_range() {
        let a = sequences(3, 16, 512);
        assert_eq!(a, sequences(3, 16, 512));
        assert!(a.iter().flat_map(|s| &s.tokens).all(|&t| t < 512));
        assert_eq!(a[0].target_count(), 15);
    }
}

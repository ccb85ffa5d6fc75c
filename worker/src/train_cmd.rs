//! `hearth-worker train`: local LoRA training on a dataset, written as a PEFT adapter.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_model::corpus::dataset_sequences;
use hearth_model::source::{base_model_name, parse_device};
use hearth_model::DType;
use hearth_model::{
    evaluate, load_base, save_adapter, LoraConfig, LoraTarget, ModelSource, TrainConfig, Trainer,
};

/// Arguments of `hearth-worker train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Base model: a GGUF file or a Hugging Face directory.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub model: Option<PathBuf>,
    /// Built-in preset instead of --model (`tiny`).
    #[arg(long)]
    pub preset: Option<String>,
    /// Dataset: JSONL (text, instruction/output, chat messages) or plain text.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Output directory for the PEFT adapter.
    #[arg(long)]
    pub out: PathBuf,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Comma-separated target modules.
    #[arg(long, default_value = "q_proj,v_proj", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Train A too (default: FFA-LoRA, A frozen from the seed).
    #[arg(long)]
    pub train_a: bool,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Wall-clock budget in seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Fraction of examples held out to report a validation loss.
    #[arg(long, default_value_t = 0.0)]
    pub holdout: f64,
    /// Seed (LoRA A, dropout, split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn source_of(args: &TrainArgs) -> anyhow::Result<ModelSource> {
    match (&args.model, args.preset.as_deref()) {
        (Some(p), None) if p.is_dir() => Ok(ModelSource::HfDir(p.clone())),
        (Some(p), None) => Ok(ModelSource::Gguf(p.clone())),
        (None, Some("tiny")) => Ok(ModelSource::Tiny { seed: args.seed }),
        (None, Some(other)) => bail!("unknown preset {other:?} (known: tiny)"),
        _ => bail!("give exactly one of --model or --preset"),
    }
}

/// Runs the command; prints one JSON line with the training report.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be positive");
        }
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let device = parse_device(&args.device)?;
    let source = source_of(&args)?;
    let base =
        load_base(&source, &device, DType::F32).with_context(|| format!("loading {source:?}"))?;
    let targets = args
        .targets
        .iter()
        .map(|t| LoraTarget::parse(t.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let lora = LoraConfig {
        rank: args.rank,
        alpha: args.alpha.unwrap_or(2.0 * args.rank as f64),
        dropout: 0.0,
        targets,
        train_a: args.train_a,
        seed: args.seed,
    };
    let model = base.model(Some(&lora))?;
    let (train, held) =
        dataset_sequences(&base, &args.dataset, args.seq_len, args.holdout, args.seed)?;
    if train.is_empty() {
        bail!("{}: no training sequences", args.dataset.display());
    }
    tracing::info!(
        sequences = train.len(),
        held_out = held.len(),
        "dataset packed"
    );
    let cfg = TrainConfig {
        lr: args.lr,
        warmup_steps: args.warmup.min(args.steps / 2),
        max_steps: args.steps,
        max_seconds: args.max_seconds,
        batch_size: args.batch,
        accum_steps: args.accum,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let held_before = if held.is_empty() {
        None
    } else {
        Some(evaluate(&model, &held, args.batch)?.loss)
    };
    let mut trainer = Trainer::new(&model, cfg)?;
    let report = trainer.train(&model, &train, |s| {
        tracing::info!(
            step = s.step,
            loss = s.loss,
            lr = s.lr,
            grad_norm = s.grad_norm,
            tokens = s.tokens,
            "step"
        );
        ControlFlow::Continue(())
    })?;
    let held_after = if held.is_empty() {
        None
    } else {
        Some(evaluate(&model, &held, args.batch)?.loss)
    };
    save_adapter(&model, &args.out, &base_model_name(&source))?;
    let line = serde_json::json!({
        "steps": report.steps,
        "tokens": report.tokens,
        "mean_loss": report.mean_loss,
        "last_loss": report.last_loss,
        "seconds": report.seconds,
        "tokens_per_second": report.tokens_per_second,
        "heldout_loss_before": held_before,
        "heldout_loss_after": held_after,
        "out": args.out,
    });
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn trains_tiny_on_plain_text_and_writes_a_peft_adapter() {
        let dir = std::env::temp_dir().join(format!("hearth-train-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data.txt");
        std::fs::write(&data, "the hearth keeps the house warm.\n\n".repeat(50)).unwrap();
        let out = dir.join("adapter");
        let cli = Cli::try_parse_from([
            "train",
            "--preset",
            "tiny",
            "--dataset",
            data.to_str().unwrap(),
            "--steps",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--seq-len",
            "32",
            "--batch",
            "2",
            "--rank",
            "4",
        ])
        .unwrap();
        run(cli.args).unwrap();
        let adapter = hearth_model::peft::import_peft(&out).unwrap();
        assert_eq!(adapter.config.r, 4);
        assert_eq!(adapter.config.target_modules, vec!["q_proj", "v_proj"]);
        assert_eq!(adapter.tensors.len(), 2 * 2 * 2);
        let b_moved = adapter
            .tensors
            .iter()
            .filter(|t| t.name.ends_with("lora_B.weight"))
            .all(|t| t.data.iter().any(|v| *v != 0.0));
        assert!(b_moved, "3 steps of training must move every B");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rejects_both_or_neither_model_source() {
        assert!(Cli::try_parse_from(["train", "--dataset", "d", "--out", "o"]).is_err());
        assert!(Cli::try_parse_from([
            "train",
            "--preset",
            "tiny",
            "--model",
            "m",
            "--dataset",
            "d",
            "--out",
            "o"
        ])
        .is_err());
        let cli =
            Cli::try_parse_from(["train", "--preset", "huge", "--dataset", "d", "--out", "o"])
                .unwrap();
        assert!(run(cli.args)
            .unwrap_err()
            .to_string()
            .contains("unknown preset"));
    }
}

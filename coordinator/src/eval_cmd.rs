//! `hearth-coordinator eval`: mean token loss of a base model (optionally with a PEFT adapter)
//! on a text file or a dataset, printed as one JSON line.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_model::DType;
use hearth_model::corpus::{dataset_sequences, text_file_sequences};
use hearth_model::peft::{import_peft, lora_config_of};
use hearth_model::source::parse_device;
use hearth_model::{evaluate, load_adapter, load_base, ModelSource};

/// Arguments of `hearth-coordinator eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Base model: a GGUF file, a Hugging Face directory, or `tiny`.
    #[arg(long)]
    pub model: String,
    /// PEFT adapter directory to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Plain-text file scored as one token stream (no special tokens added).
    #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
    pub text: Option<PathBuf>,
    /// Dataset file (JSONL or plain text), packed into sequences.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Tokens per sequence (text: window length, default the model's context; dataset: 256).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs the command.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let source = ModelSource::parse(&args.model)?;
    let base = load_base(&source, &device, DType::F32).with_context(|| format!("loading {}", args.model))?;
    let model = match &args.adapter {
        None => base.model(None)?,
        Some(dir) => {
            let cfg = import_peft(dir)?.config;
            let mut m = base.model(Some(&lora_config_of(&cfg, false, 0)?))?;
            load_adapter(&mut m, dir)?;
            m
        }
    };
    let seqs = match (&args.text, &args.dataset) {
        (Some(t), None) => text_file_sequences(&base, t, args.seq_len.unwrap_or(base.config.max_position))?,
        (None, Some(d)) => dataset_sequences(&base, d, args.seq_len.unwrap_or(256), 0.0, 0)?.0,
        _ => bail!("give exactly one of --text or --dataset"),
    };
    let r = evaluate(&model, &seqs, args.batch)?;
    let line = serde_json::json!({
        "loss": r.loss,
        "perplexity": r.perplexity(),
        "tokens": r.tokens,
        "sequences": r.sequences,
        "adapter": args.adapter,
    });
    println!("{line}");
    Ok(())
}

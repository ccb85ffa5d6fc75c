//! `hearth-coordinator eval`: mean token loss of a base model (optionally with a PEFT adapter)
//! on a text file or a dataset, printed as one JSON line.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_model::corpus::{dataset_sequences, text_file_sequences};
use hearth_model::peft::{import_peft, lora_config_of};
use hearth_model::source::parse_device;
use hearth_model::DType;
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

/// Runs the command: prints one JSON line with `loss`, `perplexity`, `tokens`, `sequences`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    println!("{}", report(&args)?);
    Ok(())
}

/// Computes the JSON report without printing it.
pub fn report(args: &EvalArgs) -> anyhow::Result<serde_json::Value> {
    let device = parse_device(&args.device)?;
    let source = ModelSource::parse(&args.model)?;
    let base = load_base(&source, &device, DType::F32)
        .with_context(|| format!("loading {}", args.model))?;
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
        (Some(t), None) => {
            text_file_sequences(&base, t, args.seq_len.unwrap_or(base.config.max_position))?
        }
        (None, Some(d)) => dataset_sequences(&base, d, args.seq_len.unwrap_or(256), 0.0, 0)?.0,
        _ => bail!("give exactly one of --text or --dataset"),
    };
    let r = evaluate(&model, &seqs, args.batch)?;
    Ok(serde_json::json!({
        "loss": r.loss,
        "perplexity": r.perplexity(),
        "tokens": r.tokens,
        "sequences": r.sequences,
        "adapter": args.adapter,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use hearth_model::{DType, Device, LoraConfig};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EvalArgs,
    }

    #[test]
    fn evaluates_text_with_and_without_adapter() {
        let dir = std::env::temp_dir().join(format!("hearth-eval-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("t.txt");
        std::fs::write(
            &text,
            "a small text to score, twice. a small text to score, twice.",
        )
        .unwrap();
        let cli =
            Cli::try_parse_from(["eval", "--model", "tiny", "--text", text.to_str().unwrap()])
                .unwrap();
        let plain = report(&cli.args).unwrap();
        let tokens = std::fs::read(&text).unwrap().len() as u64 - 1;
        assert_eq!(
            plain["tokens"].as_u64().unwrap(),
            tokens,
            "byte tokenizer: every byte after the first is scored"
        );
        let loss = plain["loss"].as_f64().unwrap();
        assert!(loss > 4.0 && loss < 9.0, "untrained tiny loss {loss}");

        // an adapter with non-zero B loads and is applied
        let base = load_base(&ModelSource::Tiny { seed: 0 }, &Device::Cpu, DType::F32).unwrap();
        let mut m = base.model(Some(&LoraConfig::default())).unwrap();
        let mut ts = m.adapter_tensors().unwrap();
        for t in &mut ts {
            t.data
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = ((i % 7) as f32 - 3.0) * 0.1);
        }
        m.set_adapter(&ts).unwrap();
        let adapter = dir.join("adapter");
        hearth_model::save_adapter(&m, &adapter, "tiny").unwrap();
        let cli = Cli::try_parse_from([
            "eval",
            "--model",
            "tiny",
            "--adapter",
            adapter.to_str().unwrap(),
            "--text",
            text.to_str().unwrap(),
            "--seq-len",
            "16",
        ])
        .unwrap();
        let with = report(&cli.args).unwrap();
        assert_eq!(
            with["tokens"], plain["tokens"],
            "windows of 16 still score every token once"
        );
        let diff = (with["loss"].as_f64().unwrap() - loss).abs();
        assert!(diff > 1e-3, "adapter must change the loss (diff {diff})");
        let missing =
            Cli::try_parse_from(["eval", "--model", "tiny", "--text", "/nonexistent/x.txt"])
                .unwrap();
        assert!(run(missing.args).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

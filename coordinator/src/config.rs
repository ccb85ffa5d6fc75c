//! `run.toml`: the run spec every peer shares plus the coordinator's own settings.

use std::path::{Path, PathBuf};

use hearth_proto::{ContentId, RunSpec};
use serde::{Deserialize, Serialize};

/// Largest run.toml read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Errors reading or writing run.toml.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a run config.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The coordinator's own settings (never sent to workers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorSettings {
    /// Data directory (blobs, checkpoints, state, identity); relative paths are relative to run.toml.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<String>,
    /// HTTP bind address for the dashboard, JSON API and /metrics.
    pub http: String,
    /// Base model file (GGUF) or Hugging Face directory; empty for the tiny preset.
    pub model_path: PathBuf,
    /// Content id of the held-out validation shard in the blob store (never leaves the coordinator).
    pub validation: Option<ContentId>,
    /// Stop after this many committed rounds (0 = run until stopped).
    pub rounds: u64,
    /// Batch size for held-out evaluation.
    pub eval_batch: usize,
    /// Train-shard sequences in each round's reference batch, whose gradient the screen scores
    /// every delta against (one forward and backward pass per round).
    pub reference_sequences: usize,
    /// Private swarm (libp2p pnet): `run` refuses to start without `--swarm-key`, so the run
    /// cannot be opened to everyone by forgetting the flag. Absent in older files: false.
    pub private: bool,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            http: "127.0.0.1:8080".into(),
            model_path: PathBuf::new(),
            validation: None,
            rounds: 0,
            eval_batch: 8,
            reference_sequences: 64,
            private: false,
        }
    }
}

/// The whole run.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Settings of this coordinator.
    #[serde(default)]
    pub coordinator: CoordinatorSettings,
    /// The run spec shared with every worker.
    pub run: RunSpec,
}

/// One-line explanations written above each setting of run.toml, by dotted key.
const COMMENTS: &[(&str, &str)] = &[
    ("coordinator.data_dir", "Data directory: blobs, checkpoints, state file, identity (relative to this file)."),
    ("coordinator.listen", "libp2p listen multiaddrs (TCP and QUIC). Workers dial these."),
    ("coordinator.http", "Dashboard, JSON API and /metrics bind address."),
    ("coordinator.model_path", "Base model file (GGUF) or Hugging Face directory; empty for the tiny preset."),
    ("coordinator.validation", "Content id of the held-out validation shard (stays on the coordinator)."),
    ("coordinator.rounds", "Stop after this many committed rounds (0 = run until stopped)."),
    ("coordinator.eval_batch", "Batch size of held-out evaluation."),
    ("coordinator.reference_sequences", "Train-shard sequences in each round's reference batch: the screen scores every delta against its gradient (one backward pass per round; more sequences, a less noisy reference)."),
    ("coordinator.private", "Private swarm: true = `run` refuses to start without --swarm-key (pnet over TCP; QUIC off)."),
    ("run.run_id", "Run id: names the gossip topics hearth/<run_id>/announce and hearth/<run_id>/deltas."),
    ("run.name", "Human-readable run name shown on the dashboard."),
    ("run.base.name", "Base model name (PEFT base_model_name_or_path)."),
    ("run.base.blake3", "blake3 of the base model file (or of a directory's file list); workers refuse a file that does not match."),
    ("run.base.size_bytes", "Size of the base model file (or all of a directory's files) in bytes."),
    ("run.base.family", "Model family: llama, mistral, qwen2 or qwen3; workers refuse a model of another family or shape."),
    ("run.base.source.kind", "Where the weights come from: preset, gguf or safetensors."),
    ("run.arch.vocab_size", "Vocabulary size."),
    ("run.arch.hidden_size", "Hidden size."),
    ("run.arch.intermediate_size", "MLP intermediate size."),
    ("run.arch.num_layers", "Decoder layers."),
    ("run.arch.num_heads", "Attention heads."),
    ("run.arch.num_kv_heads", "Key/value heads (grouped-query attention)."),
    ("run.arch.head_dim", "Per-head dimension."),
    ("run.arch.rope_theta", "Rotary embedding base."),
    ("run.arch.rms_norm_eps", "RMSNorm epsilon."),
    ("run.arch.max_position", "Longest sequence the model supports."),
    ("run.arch.tie_embeddings", "Output projection shares the embedding matrix."),
    ("run.lora.rank", "LoRA rank r."),
    ("run.lora.alpha", "LoRA alpha (scale = alpha / r)."),
    ("run.lora.dropout", "Dropout on the LoRA input path while training."),
    ("run.lora.targets", "Projections that get adapters: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj."),
    ("run.lora.train_a", "false = FFA-LoRA (A frozen from the seed, only B trains; exact averaging); true = train and average A and B."),
    ("run.lora.seed", "Seed of the frozen A matrices and of the run's randomness."),
    ("run.data.seq_len", "Tokens per packed training sequence."),
    ("run.train.local_steps", "Inner AdamW steps per round on each worker (H)."),
    ("run.train.time_budget_secs", "Wall-clock budget per round's local training; slow devices stop early instead of being dropped."),
    ("run.train.batch_size", "Sequences per micro-batch."),
    ("run.train.grad_accum", "Micro-batches accumulated per optimizer step."),
    ("run.train.lr", "Inner learning rate (peak)."),
    ("run.train.warmup_steps", "Linear warmup steps of the inner schedule."),
    ("run.train.weight_decay", "AdamW weight decay."),
    ("run.train.grad_clip", "Global gradient-norm clip (0 = off)."),
    ("run.aggregate.target_deltas", "Close the round once this many deltas are accepted (then wait the grace period)."),
    ("run.aggregate.min_deltas", "Fewer than this at the deadline: extend once, then carry them to the next round."),
    ("run.aggregate.grace_secs", "Grace period after the target is met, for stragglers."),
    ("run.aggregate.deadline_secs", "Round deadline from opening."),
    ("run.aggregate.max_staleness", "Accept deltas built on a checkpoint at most this many rounds old (weight 1/sqrt(1+staleness))."),
    ("run.aggregate.aggregator.kind", "weighted_mean, trimmed_mean, coordinate_median or centered_clip."),
    ("run.aggregate.aggregator.tau", "centered_clip: L2 radius, in the adapter's own units, above which a delta's difference from the current center is scaled down to it."),
    ("run.aggregate.outer.kind", "Outer optimizer: nesterov (DiLoCo) or average."),
    ("run.aggregate.codec.kind", "Delta codec: f32, f16, int8 or top_k (density, bits)."),
    ("run.aggregate.mean_over_senders", "Sparse codecs: average each coordinate over the deltas that sent it, not over all (SparseLoCo)."),
    ("run.aggregate.error_feedback_decay", "Workers scale their unsent error-feedback residual by this each round (1: plain error feedback; SparseLoCo: 0.95 with outer average at lr 1)."),
    ("run.aggregate.dense_rounds", "Density schedule for a sparse top-k codec: the first this many rounds send at density 1 with the same bits, later rounds at the codec's density (0: one codec for the whole run)."),
    ("run.aggregate.local_error_feedback", "Workers train from the checkpoint plus their unsent residual (helps lossy codecs; see docs/BENCHMARKS.md table 2)."),
    ("run.verify.norm_kappa", "Scale a delta whose norm exceeds kappa x the median of recently accepted norms down to that bound."),
    ("run.verify.norm_abs_cap", "Absolute cap on a delta's L2 norm; 0 = derived: 4 x lr x local_steps x sqrt(trained values), the farthest AdamW moves the adapter in a round; < 0 = none."),
    ("run.verify.ban_after_rejects", "Ban a peer after this many deltas no honest worker can send (undecodable, forged, malformed, non-finite, over the norm bound, implausible reports). The screen's findings ban by evidence instead (docs/RELIABILITY.md)."),
    ("run.verify.eval_tolerance", "Keep the old checkpoint when held-out loss worsens by more than this fraction."),
    ("run.admission.kind", "open, allowlist (peers = [...]) or token (token_blake3 = blake3 of the token)."),
    ("run.net.max_transmit_size", "Gossipsub max message size (1 KiB to 16 MiB); every peer of the run uses this value."),
    ("run.net.inline_delta_limit", "Deltas up to this size travel inline by gossip; larger ones go by request-response."),
    ("run.net.blob_chunk_size", "Chunk size of blob transfers (model, shards, checkpoints)."),
];

impl RunConfig {
    /// Read and validate run.toml.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "{} bytes, more than the {MAX_CONFIG_BYTES}-byte limit",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_toml(&text, path)
    }

    /// Parse and validate run.toml text (`origin` names the file in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            reason,
        };
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(invalid(format!(
                "{} bytes, more than the {MAX_CONFIG_BYTES}-byte limit",
                text.len()
            )));
        }
        let cfg: RunConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        cfg.run.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(cfg)
    }

    /// The data directory, resolved against the directory holding run.toml.
    pub fn data_dir(&self, config_path: &Path) -> PathBuf {
        let base = config_path.parent().unwrap_or(Path::new("."));
        base.join(&self.coordinator.data_dir)
    }

    /// The base model path, resolved against the directory holding run.toml (None for presets).
    pub fn model_path(&self, config_path: &Path) -> Option<PathBuf> {
        if self.coordinator.model_path.as_os_str().is_empty() {
            return None;
        }
        let base = config_path.parent().unwrap_or(Path::new("."));
        Some(base.join(&self.coordinator.model_path))
    }

    /// TOML text with a comment above every setting.
    pub fn to_commented_toml(&self) -> Result<String, toml::ser::Error> {
        let plain = toml::to_string_pretty(self)?;
        let mut out = String::from(
            "# Hearth run configuration, written by `hearth-coordinator init`.\n\
             # Every setting is spelled out with its value; `hearth-coordinator run --config` reads it.\n\n",
        );
        let mut section = String::new();
        for line in plain.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                section = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
            } else if let Some((key, _)) = trimmed.split_once(" = ") {
                let dotted = if section.is_empty() {
                    key.to_string()
                } else {
                    format!("{section}.{key}")
                };
                if let Some((_, c)) = COMMENTS.iter().find(|(k, _)| *k == dotted) {
                    out.push_str("# ");
                    out.push_str(c);
                    out.push('\n');
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_toml_round_trips() {
        let cfg = RunConfig {
            run: RunSpec::tiny(),
            ..Default::default()
        };
        let text = cfg.to_commented_toml().unwrap();
        assert!(text.contains("# LoRA rank r."), "{text}");
        assert!(text.contains("# Outer optimizer"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.toml");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(RunConfig::load(&p).unwrap(), cfg);
    }

    #[test]
    fn private_defaults_to_false_in_files_that_predate_it() {
        let cfg = RunConfig {
            run: RunSpec::tiny(),
            ..Default::default()
        };
        let text = cfg.to_commented_toml().unwrap();
        assert!(text.contains("# Private swarm"), "{text}");
        let old = text.replace("private = false\n", "");
        assert!(!old.contains("private ="), "{old}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.toml");
        std::fs::write(&p, &old).unwrap();
        assert!(!RunConfig::load(&p).unwrap().coordinator.private);
        std::fs::write(&p, text.replace("private = false", "private = true")).unwrap();
        assert!(RunConfig::load(&p).unwrap().coordinator.private);
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.toml");
        std::fs::write(&p, "[run]\nrun_id = 5\n").unwrap();
        let err = RunConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("run.toml"), "{err}");
    }
}

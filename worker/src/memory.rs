//! Memory: how much a run's training needs, how much this machine has, and how to shrink it.
//!
//! The estimate counts f32 base weights, the activations autograd keeps for backward (one
//! micro-batch), LoRA parameters with their gradients and AdamW moments, and a fixed runtime
//! overhead. Its per-token factors were fitted to the peak RSS of real training steps (see the
//! `memory` integration test, which checks it against a measurement).

use std::fmt;

use hearth_model::linear::BaseDType;
use hearth_model::{LoraConfig, LoraTarget, ModelConfig};

/// Bytes per f32.
const F32: u64 = 4;
/// The process itself: code, tokio, libp2p, allocator slack (a tiny-preset worker peaks at
/// 26 MiB in all).
pub const RUNTIME_OVERHEAD: u64 = 32 << 20;
/// f32 values alive at the peak of a step, per token per layer, in units of the hidden width
/// (norms, residuals, projections, rotary and attention outputs, contiguous copies). These four
/// factors were fitted to measured peaks: a 6-layer model of SmolLM2's proportions at 4 × 128
/// (`tests/memory.rs`, estimate/measured 1.10) and SmolLM2-135M at 4 × 64 and 1 × 64 (`bench`, 1.08 and 0.99).
const KEPT_PER_HIDDEN: f64 = 7.0;
/// ... in units of the MLP width (gate, up, SiLU, product).
const KEPT_PER_INTERMEDIATE: f64 = 3.0;
/// ... per attention score (`b·heads·t²`): scores, mask, softmax pieces.
const KEPT_PER_SCORE: f64 = 3.0;
/// ... per logit (`b·t·vocab`): logits, log-softmax pieces, their gradient.
const KEPT_PER_LOGIT: f64 = 2.5;

/// The worker's memory choices: how the frozen base weights are held (`--dtype`) and activation
/// checkpointing (`--checkpoint-activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// How the seven projections are held.
    pub dtype: BaseDType,
    /// Keep one block's activations at a time and recompute in the backward pass.
    pub checkpoint: bool,
}

/// The parts of a training estimate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Frozen base weights (f32).
    pub weights: u64,
    /// Activations kept for backward, one micro-batch.
    pub activations: u64,
    /// LoRA parameters, gradients and AdamW moments.
    pub adapter: u64,
    /// Fixed process overhead.
    pub overhead: u64,
    /// The model file, held while its weights are decoded (0 for presets).
    pub loading: u64,
}

impl MemoryEstimate {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.adapter + self.overhead + self.loading
    }

    /// Count a model file of `bytes`, read whole while its weights are decoded.
    pub fn with_model_file(self, bytes: u64) -> Self {
        Self {
            loading: bytes,
            ..self
        }
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (weights {}, activations {}, adapter+optimizer {}, runtime {}",
            human_bytes(self.total()),
            human_bytes(self.weights),
            human_bytes(self.activations),
            human_bytes(self.adapter),
            human_bytes(self.overhead)
        )?;
        if self.loading > 0 {
            write!(f, ", model file {}", human_bytes(self.loading))?;
        }
        f.write_str(")")
    }
}

/// `(in, out)` widths of an adapted projection.
fn dims(cfg: &ModelConfig, t: &LoraTarget) -> (u64, u64) {
    let (h, i) = (cfg.hidden as u64, cfg.intermediate as u64);
    let q = (cfg.heads * cfg.head_dim) as u64;
    let kv = (cfg.kv_heads * cfg.head_dim) as u64;
    match t {
        LoraTarget::Q => (h, q),
        LoraTarget::K | LoraTarget::V => (h, kv),
        LoraTarget::O => (q, h),
        LoraTarget::Gate | LoraTarget::Up => (h, i),
        LoraTarget::Down => (i, h),
    }
}

/// Estimate the memory of training `cfg` with `lora` on micro-batches of `batch` × `seq_len`
/// with f32 base weights.
pub fn estimate(
    cfg: &ModelConfig,
    lora: &LoraConfig,
    batch: usize,
    seq_len: usize,
) -> MemoryEstimate {
    estimate_with(cfg, lora, batch, seq_len, Footprint::default())
}

/// Parameters of the decoder's seven projections (the weights `--dtype` makes compact).
pub fn projection_parameters(cfg: &ModelConfig) -> u64 {
    LoraTarget::ALL
        .iter()
        .map(|t| {
            let (i, o) = dims(cfg, t);
            i * o
        })
        .sum::<u64>()
        * cfg.layers as u64
}

/// [`estimate`] with the projection weights held in `footprint.dtype` (the embedding, norms and
/// LM head stay f32), plus one projection expanded to f32 at a time; with `footprint.checkpoint`
/// autograd keeps one block's activations and each block's `[b·t, hidden]` input in place of
/// every block's activations.
pub fn estimate_with(
    cfg: &ModelConfig,
    lora: &LoraConfig,
    batch: usize,
    seq_len: usize,
    footprint: Footprint,
) -> MemoryEstimate {
    let Footprint { dtype, checkpoint } = footprint;
    let (b, t) = (batch as f64, seq_len as f64);
    let tokens = b * t;
    let per_layer = tokens
        * (KEPT_PER_HIDDEN * cfg.hidden as f64 + KEPT_PER_INTERMEDIATE * cfg.intermediate as f64)
        + KEPT_PER_SCORE * b * cfg.heads as f64 * t * t;
    let blocks = if checkpoint {
        cfg.layers as f64 * tokens * cfg.hidden as f64 + per_layer
    } else {
        cfg.layers as f64 * per_layer
    };
    let floats = blocks + KEPT_PER_LOGIT * tokens * cfg.vocab as f64;
    // Saturating float-to-int conversion: absurd configs give u64::MAX, never a wrap.
    let activations = (F32 as f64 * floats) as u64;
    let r = lora.rank as u64;
    let (mut all, mut trained) = (0u64, 0u64);
    for target in &lora.targets {
        let (i, o) = dims(cfg, target);
        all += r * (i + o);
        trained += if lora.train_a { r * (i + o) } else { r * o };
    }
    let layers = cfg.layers as u64;
    let projections = projection_parameters(cfg);
    let rest = (cfg.parameter_count() as u64).saturating_sub(projections);
    let largest = LoraTarget::ALL
        .iter()
        .map(|t| {
            let (i, o) = dims(cfg, t);
            i * o
        })
        .max()
        .unwrap_or(0);
    let weights = if dtype == BaseDType::F32 {
        F32 * (projections + rest)
    } else {
        (projections as f64 * dtype.bytes_per_value()) as u64 + F32 * (rest + largest)
    };
    MemoryEstimate {
        weights,
        activations,
        // parameters, plus gradient and two AdamW moments for the trained ones.
        adapter: F32 * layers * (all + 3 * trained),
        overhead: RUNTIME_OVERHEAD,
        loading: 0,
    }
}

/// The largest micro-batch ≤ `cap` that divides `batch`, and the accumulation factor that keeps
/// the effective batch (`micro × accum` = `batch × accum_in`) unchanged.
pub fn cap_batch(batch: usize, accum: usize, cap: usize) -> (usize, usize) {
    let batch = batch.max(1);
    let cap = cap.clamp(1, batch);
    let micro = (1..=cap)
        .rev()
        .find(|m| batch.is_multiple_of(*m))
        .unwrap_or(1);
    (micro, accum.max(1) * (batch / micro))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&text, "MemAvailable:")
}

/// A `kB` field of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line
        .get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// This process's peak resident memory (`VmHWM`), in bytes (Linux).
pub fn peak_rss() -> Option<u64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// Resets this process's peak resident memory (`VmHWM`) to what it holds now, so a later
/// [`peak_rss`] measures only what comes after (Linux ≥ 4.0: `/proc/self/clear_refs`, value 5;
/// elsewhere nothing happens and the peak stays the process's own).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's resident memory now (`VmRSS`), in bytes (Linux).
pub fn current_rss() -> Option<u64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// Parse a size such as `6G`, `6GiB`, `512M`, `1.5g` or `123456` (bytes); units are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 8G or 512M"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use K, M, G or T)")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

/// `1.5 GiB`, `320 MiB`, `12 KiB`, `100 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// Why training will not fit in `limit` bytes (named by `limit_source`) with `footprint`, and
/// what to try instead; `None` when it fits.
pub fn refusal(
    cfg: &ModelConfig,
    lora: &LoraConfig,
    (batch, seq_len): (usize, usize),
    file_bytes: u64,
    (limit, limit_source): (u64, &str),
    footprint: Footprint,
) -> Option<String> {
    let need = |b, f| estimate_with(cfg, lora, b, seq_len, f).with_model_file(file_bytes);
    let need_now = need(batch, footprint);
    if need_now.total() <= limit {
        return None;
    }
    let checkpointed = Footprint {
        checkpoint: true,
        ..footprint
    };
    let fits = |f| (1..=batch).rev().find(|&b| need(b, f).total() <= limit);
    let hint = if let Some(b) = (1..batch)
        .rev()
        .find(|&b| need(b, footprint).total() <= limit)
    {
        format!("; try --max-batch {b} (the effective batch is kept by accumulating gradients)")
    } else if let Some(b) = fits(checkpointed).filter(|_| !footprint.checkpoint) {
        let cap = if b < batch {
            format!(" --max-batch {b}")
        } else {
            String::new()
        };
        format!("; try --checkpoint-activations{cap} (the same training, one more forward pass per step)")
    } else if footprint.dtype == BaseDType::F32
        && need(
            batch,
            Footprint {
                dtype: BaseDType::Q4,
                ..checkpointed
            },
        )
        .total()
            <= limit
    {
        "; try --dtype q4 --checkpoint-activations (4-bit frozen weights, QLoRA-style)".to_string()
    } else {
        format!("; even one sequence at a time does not fit: the run's sequence length {seq_len} is too long for this machine (ask the organiser for a shorter seq_len), or use a machine with more memory")
    };
    Some(format!(
        "training this run needs about {need_now} with micro-batch {batch} × {seq_len} tokens, but only {} is available ({limit_source}){hint}",
        human_bytes(limit)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lora(targets: Vec<LoraTarget>, train_a: bool) -> LoraConfig {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets,
            train_a,
            seed: 1,
        }
    }

    #[test]
    fn smollm2_has_135m_parameters() {
        let n = ModelConfig::smollm2_135m().parameter_count();
        assert!((134_000_000..=135_000_000).contains(&n), "{n}");
    }

    #[test]
    fn adapter_counts_match_the_layout() {
        let cfg = ModelConfig::smollm2_135m();
        // q: 576→576, v: 576→192; FFA trains B only.
        let ffa = estimate(&cfg, &lora(vec![LoraTarget::Q, LoraTarget::V], false), 1, 1);
        let all = 30 * 8 * ((576 + 576) + (576 + 192));
        let trained = 30 * 8 * (576 + 192);
        assert_eq!(ffa.adapter, 4 * (all + 3 * trained));
        let full = estimate(&cfg, &lora(vec![LoraTarget::Q, LoraTarget::V], true), 1, 1);
        assert_eq!(full.adapter, 4 * 4 * all);
    }

    #[test]
    fn activations_grow_with_batch_and_quadratically_in_scores() {
        let cfg = ModelConfig::smollm2_135m();
        let l = lora(vec![LoraTarget::Q, LoraTarget::V], false);
        let a1 = estimate(&cfg, &l, 1, 256).activations;
        let a4 = estimate(&cfg, &l, 4, 256).activations;
        assert!(a4.abs_diff(4 * a1) <= 4, "{a4} vs 4 × {a1}");
        let long = estimate(&cfg, &l, 1, 512).activations;
        assert!(long > 2 * a1, "scores grow with t²");
        // Batch 4 × 256 on SmolLM2: weights 540 MB, activations in the low GiB.
        let e = estimate(&cfg, &l, 4, 256);
        assert!(e.total() > 1 << 30 && e.total() < 8 << 30, "{e}");
    }

    #[test]
    fn checkpointing_keeps_one_block_of_activations() {
        let cfg = ModelConfig::smollm2_135m();
        let l = lora(LoraTarget::ALL.to_vec(), false);
        let ckpt = Footprint {
            checkpoint: true,
            ..Footprint::default()
        };
        let full = estimate(&cfg, &l, 4, 256);
        let lean = estimate_with(&cfg, &l, 4, 256, ckpt);
        assert_eq!(full.weights, lean.weights);
        // 30 blocks: from 30 blocks' activations to one block's plus 30 inputs and the head.
        assert!(
            lean.activations * 3 < full.activations,
            "{} vs {}",
            human_bytes(lean.activations),
            human_bytes(full.activations)
        );
    }

    #[test]
    fn refusal_names_a_batch_that_fits() {
        let cfg = ModelConfig::smollm2_135m();
        let l = lora(vec![LoraTarget::Q, LoraTarget::V], false);
        let need4 = estimate(&cfg, &l, 4, 256).total();
        let need2 = estimate(&cfg, &l, 2, 256).total();
        let f32 = Footprint::default();
        let ckpt = Footprint {
            checkpoint: true,
            ..f32
        };
        assert!(refusal(&cfg, &l, (4, 256), 0, (need4, "test"), f32).is_none());
        let msg = refusal(&cfg, &l, (4, 256), 0, (need2, "--max-memory"), f32).unwrap();
        assert!(msg.contains("--max-batch 2"), "{msg}");
        assert!(msg.contains("--max-memory"), "{msg}");
        // When no smaller batch fits, checkpointing is what to try.
        let with_ckpt = estimate_with(&cfg, &l, 1, 256, ckpt).total();
        assert!(with_ckpt < estimate(&cfg, &l, 1, 256).total());
        let msg = refusal(&cfg, &l, (4, 256), 0, (with_ckpt, "test"), f32).unwrap();
        assert!(
            msg.contains("--checkpoint-activations --max-batch 1"),
            "{msg}"
        );
        assert!(refusal(&cfg, &l, (1, 256), 0, (with_ckpt, "test"), ckpt).is_none());
        // The compact base counts: what q4 needs is not refused for q4.
        let q4 = Footprint {
            dtype: BaseDType::Q4,
            checkpoint: false,
        };
        let need_q4 = estimate_with(&cfg, &l, 4, 256, q4).total();
        assert!(need_q4 < need4);
        assert!(refusal(&cfg, &l, (4, 256), 0, (need_q4, "test"), q4).is_none());
        let msg = refusal(&cfg, &l, (4, 256), 0, (1 << 20, "test"), f32).unwrap();
        assert!(msg.contains("sequence length"), "{msg}");
    }

    #[test]
    fn batch_cap_keeps_the_effective_batch() {
        assert_eq!(cap_batch(4, 1, 8), (4, 1));
        assert_eq!(cap_batch(4, 1, 2), (2, 2));
        assert_eq!(cap_batch(4, 2, 3), (2, 4));
        assert_eq!(cap_batch(6, 1, 4), (3, 2));
        assert_eq!(cap_batch(7, 1, 3), (1, 7));
        assert_eq!(cap_batch(8, 1, 0), (1, 8));
        for (b, a, c) in [(12, 3, 5), (9, 1, 2), (16, 2, 7)] {
            let (m, acc) = cap_batch(b, a, c);
            assert!(m <= c && m * acc == b * a, "{b} {a} {c}");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 KB "), Ok(2048));
        for bad in ["", "G", "8X", "-1G", "0", "1e9", "1.2.3G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(320 << 20), "320 MiB");
    }

    #[test]
    fn meminfo_fields_parse() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(meminfo_field(text, "MemAvailable:"), Some(12345 * 1024));
        assert_eq!(meminfo_field(text, "VmHWM:"), None);
        assert!(available_memory().is_some_and(|m| m > 0));
        assert!(peak_rss().is_some_and(|m| m > 0));
    }
}

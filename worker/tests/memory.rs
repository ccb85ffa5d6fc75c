//! The memory estimate `join` checks, against the peak resident memory of real training steps.
//!
//! Its own test binary, so no other test's allocations share the process. A model of SmolLM2's
//! proportions (scaled down so a step takes a second) is built with random weights and trained
//! for two steps; the growth of the peak RSS (VmHWM) is compared with the estimate less its fixed
//! runtime overhead.

use std::ops::ControlFlow;

use hearth_model::preset::random_weights;
use hearth_model::{DType, Device, LoraConfig, LoraTarget, Model, ModelConfig, Sequence};
use hearth_model::{TrainConfig, Trainer};
use hearth_worker::memory::{current_rss, estimate, human_bytes, peak_rss, RUNTIME_OVERHEAD};

fn config() -> ModelConfig {
    ModelConfig {
        vocab: 8192,
        hidden: 256,
        intermediate: 768,
        layers: 6,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        max_position: 512,
        tie_embeddings: true,
        features: Default::default(),
    }
}

fn lora() -> LoraConfig {
    LoraConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
        train_a: false,
        seed: 7,
    }
}

fn sequences(n: usize, t: usize, vocab: u32) -> Vec<Sequence> {
    (0..n)
        .map(|i| Sequence {
            tokens: (0..t)
                .map(|j| ((i * 7919 + j * 104_729) as u32) % vocab)
                .collect(),
            loss_mask: vec![true; t],
        })
        .collect()
}

#[test]
fn estimate_is_within_a_factor_of_measured_peak_memory() {
    std::env::set_var("RAYON_NUM_THREADS", "2");
    let (batch, seq_len) = (4, 128);
    let cfg = config();
    let lora = lora();
    let before = current_rss().expect("VmRSS (Linux only)");
    let weights = random_weights(&cfg, 1, &Device::Cpu, DType::F32).unwrap();
    let model = Model::load(&weights, &cfg, Some(&lora)).unwrap();
    drop(weights);
    let data = sequences(batch * 2, seq_len, cfg.vocab as u32);
    let train = TrainConfig {
        max_steps: 2,
        batch_size: batch,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, train).unwrap();
    let report = trainer
        .train(&model, &data, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(report.steps, 2);
    let measured = peak_rss().unwrap().saturating_sub(before);
    let est = estimate(&cfg, &lora, batch, seq_len);
    let predicted = est.total() - RUNTIME_OVERHEAD;
    let ratio = predicted as f64 / measured as f64;
    eprintln!(
        "batch {batch} × {seq_len}: measured peak growth {} ({measured} B), estimate {est} → {} without runtime ({predicted} B), ratio {ratio:.2}",
        human_bytes(measured),
        human_bytes(predicted)
    );
    assert!(
        (0.8..=1.5).contains(&ratio),
        "estimate {predicted} vs measured {measured}: ratio {ratio:.2}"
    );
}

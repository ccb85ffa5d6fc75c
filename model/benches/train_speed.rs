//! LoRA training and forward-only throughput on SmolLM2-135M (CPU, f32), and the machine's sgemm rate.
//!
//! Config: batch 4 × 256 tokens, AdamW (lr 1e-4, clip 1.0), A and B trainable as PEFT's default,
//! threads from RAYON_NUM_THREADS. `HEARTH_BENCH_LORA`: `qv8` (rank 8, α 16 on q_proj, v_proj;
//! default) or `all16` (rank 16, α 32 on all seven linear layers). `HEARTH_BENCH_STEPS` (default 3)
//! timed steps after one warm-up step. `HEARTH_BENCH_MODE=matmul` instead times a 2048³ f32 matmul
//! through candle (the gemm crate Hearth's linear layers use). Prints one JSON line on stdout.
//! Same configs as model/reference/bench_torch.py; tests/bench/1-training.sh runs both.
//!     RAYON_NUM_THREADS=2 cargo bench -p hearth-model --bench train_speed

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use hearth_model::source::real_model_for_tests;
use hearth_model::{
    load_base, LoraConfig, LoraTarget, ModelSource, Sequence, TrainConfig, Trainer,
};

const BATCH: usize = 4;
const SEQ: usize = 256;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
}

/// Median GFLOP/s of `reps` timed 2048³ f32 matmuls (after one warm-up).
fn matmul_rate() -> Res<()> {
    let n = 2048;
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &dev)?;
    a.matmul(&b)?;
    let mut rates: Vec<f64> = (0..env_usize("HEARTH_BENCH_STEPS", 3).max(1))
        .map(|_| -> Res<f64> {
            let t0 = Instant::now();
            a.matmul(&b)?;
            Ok(2.0 * (n * n * n) as f64 / t0.elapsed().as_secs_f64() / 1e9)
        })
        .collect::<Res<_>>()?;
    rates.sort_by(f64::total_cmp);
    println!(
        "{{\"side\":\"hearth\",\"mode\":\"matmul\",\"n\":{n},\"threads\":\"{}\",\"gflops\":{:.2}}}",
        threads(),
        rates[rates.len() / 2]
    );
    Ok(())
}

fn main() -> Res<()> {
    if std::env::var("HEARTH_BENCH_MODE").is_ok_and(|m| m == "matmul") {
        return matmul_rate();
    }
    let Some(path) = real_model_for_tests() else {
        eprintln!("real model not found (set HEARTH_MODEL or run deploy/fetch-model.sh); skipping");
        return Ok(());
    };
    let steps = env_usize("HEARTH_BENCH_STEPS", 3).max(1);
    let which = std::env::var("HEARTH_BENCH_LORA").unwrap_or_else(|_| "qv8".into());
    let (rank, targets) = match which.as_str() {
        "qv8" => (8, vec![LoraTarget::Q, LoraTarget::V]),
        "all16" => (16, LoraTarget::ALL.to_vec()),
        other => return Err(format!("HEARTH_BENCH_LORA={other:?}: expected qv8 or all16").into()),
    };
    let base = load_base(&ModelSource::Gguf(path), &Device::Cpu, DType::F32)?;
    let lora = LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets,
        train_a: true,
        seed: 0,
    };
    let model = base.model(Some(&lora))?;
    let text = "Volunteers fine-tune a small language model on their home computers. ".repeat(200);
    let ids = base.tokenizer.encode(&text)?;
    let data: Vec<Sequence> = ids
        .chunks(SEQ)
        .filter(|c| c.len() == SEQ)
        .map(|c| Sequence {
            tokens: c.to_vec(),
            loss_mask: vec![true; SEQ],
        })
        .collect();

    // forward only (logits for every position, no graph)
    let batch: Vec<u32> = data
        .iter()
        .take(BATCH)
        .flat_map(|s| s.tokens.clone())
        .collect();
    let ids_t = Tensor::from_vec(batch, (BATCH, SEQ), &Device::Cpu)?;
    model.forward(&ids_t, None)?;
    let t0 = Instant::now();
    for _ in 0..steps {
        model.forward(&ids_t, None)?;
    }
    let fwd = (steps * BATCH * SEQ) as f64 / t0.elapsed().as_secs_f64();

    // training: one warm-up step, then `steps` timed ones
    let cfg = TrainConfig {
        lr: 1e-4,
        max_steps: 1,
        batch_size: BATCH,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, cfg.clone())?;
    trainer.train(&model, &data, |_| ControlFlow::Continue(()))?;
    let mut trainer2 = Trainer::new(
        &model,
        TrainConfig {
            max_steps: steps,
            ..cfg
        },
    )?;
    let r = trainer2.train(&model, &data, |s| {
        eprintln!("step {} loss {:.4} {:.1}s", s.step, s.loss, s.seconds);
        ControlFlow::Continue(())
    })?;
    eprintln!(
        "hearth (candle) SmolLM2-135M f32, batch {BATCH}x{SEQ}, LoRA {which}, threads {}: \
         train {:.1} tokens/s, forward-only {fwd:.1} tokens/s",
        threads(),
        r.tokens_per_second
    );
    println!(
        "{{\"side\":\"hearth\",\"mode\":\"model\",\"lora\":\"{which}\",\"threads\":\"{}\",\
         \"steps\":{steps},\"train_tps\":{:.2},\"forward_tps\":{fwd:.2},\"last_loss\":{:.4}}}",
        threads(),
        r.tokens_per_second,
        r.last_loss
    );
    Ok(())
}

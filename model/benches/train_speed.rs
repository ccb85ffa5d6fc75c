//! LoRA training and forward-only throughput on SmolLM2-135M (CPU, f32).
//!
//! Config: batch 4 × 256 tokens, LoRA rank 8 (α 16) on q_proj and v_proj, AdamW, threads from
//! RAYON_NUM_THREADS. `HEARTH_BENCH_STEPS` (default 3) timed steps after one warm-up step.
//! Same config as model/reference/bench_torch.py.
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = real_model_for_tests() else {
        return Ok(());
    };
    let steps: usize = std::env::var("HEARTH_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let base = load_base(&ModelSource::Gguf(path), &Device::Cpu, DType::F32)?;
    let lora = LoraConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
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

    // forward only
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

    // training (A and B trainable, as PEFT's default LoRA)
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
    println!(
        "hearth (candle) SmolLM2-135M f32, batch {BATCH}x{SEQ}, LoRA r8 q,v, threads {threads}: \
         train {:.1} tokens/s, forward-only {fwd:.1} tokens/s",
        r.tokens_per_second
    );
    Ok(())
}

//! Shared helpers for the model tests.
#![allow(dead_code)]

use candle_core::{DType, Device};
use hearth_model::{load_base, BaseModel, LoraConfig, LoraTarget, ModelSource, Sequence};

pub fn tiny(dtype: DType) -> BaseModel {
    load_base(&ModelSource::Tiny { seed: 1 }, &Device::Cpu, dtype).unwrap()
}

pub fn lora_all(train_a: bool) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        train_a,
        seed: 3,
    }
}

/// Sequences of `len` tokens covering `text` (byte tokenizer), all positions scored.
pub fn text_sequences(base: &BaseModel, text: &str, len: usize) -> Vec<Sequence> {
    let ids = base.tokenizer.encode(text).unwrap();
    ids.chunks(len)
        .filter(|c| c.len() == len)
        .map(|c| Sequence {
            tokens: c.to_vec(),
            loss_mask: vec![true; len],
        })
        .collect()
}

/// Deterministic pseudo-random values in [-s, s].
pub fn pseudo_random(n: usize, seed: u64, s: f32) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * s
        })
        .collect()
}

/// Gives every adapter tensor (A and B) non-zero values.
pub fn randomize_adapter(model: &mut hearth_model::Model, seed: u64) {
    let mut ts = model.all_adapter_tensors().unwrap();
    for (i, t) in ts.iter_mut().enumerate() {
        t.data = pseudo_random(t.data.len(), seed + i as u64, 0.2);
    }
    model.set_adapter(&ts).unwrap();
}

//! Shared helpers for the integration tests.
#![allow(dead_code)]

use hearth_proto::{LoraSpec, ModelArch, NamedTensor, TensorLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Standard normal samples by Box-Muller, scaled by `sigma`.
pub fn gaussian(rng: &mut ChaCha8Rng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * sigma
        })
        .collect()
}

/// SmolLM2-135M rank-8 q,v adapter layout (B only unless `train_a`).
pub fn smollm_layout(train_a: bool) -> Vec<TensorLayout> {
    LoraSpec {
        train_a,
        ..LoraSpec::default()
    }
    .adapter_layout(&ModelArch::smollm2_135m())
    .unwrap()
}

/// Gaussian tensors filling `layout`.
pub fn gaussian_tensors(layout: &[TensorLayout], seed: u64, sigma: f32) -> Vec<NamedTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    layout
        .iter()
        .map(|l| NamedTensor {
            name: l.name.clone(),
            shape: l.shape.clone(),
            data: gaussian(&mut rng, l.numel().unwrap(), sigma),
        })
        .collect()
}

//! The `tiny` preset: a small Llama with deterministic random weights and a byte-level tokenizer.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::lora::seeded_rng;
use crate::tokenizer::Tokenizer;
use crate::weights::{expected_shapes, Weights};

/// Special tokens of the byte-level tokenizer, ids 256, 257, 258.
pub const TINY_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A minimal ChatML template (Jinja) for the tiny preset.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Standard-normal samples scaled by `std` (Box–Muller over a seeded stream).
fn normal(n: usize, std: f32, seed: u64, label: &str) -> Vec<f32> {
    let mut rng = seeded_rng(seed, label);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let th = std::f64::consts::TAU * u2;
        out.push((r * th.cos()) as f32 * std);
        out.push((r * th.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// Deterministic random weights for `cfg`: N(0, 0.02) matrices (output projections scaled by
/// 1/√(2·layers)), unit norm gains, and a N(0, 0.1) embedding: with tied embeddings and a final
/// RMSNorm the logit range is bounded by ‖e‖·√hidden, which N(0, 0.02) keeps too small to learn.
pub fn random_weights(
    cfg: &ModelConfig,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> Result<Weights> {
    let mut w = Weights::default();
    let out_std = 0.02 / (2.0 * cfg.layers as f32).sqrt();
    for (name, shape) in expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let data = if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
            normal(n, 0.1, seed, &name)
        } else if name.ends_with("norm.weight") {
            vec![1f32; n]
        } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            normal(n, out_std, seed, &name)
        } else {
            normal(n, 0.02, seed, &name)
        };
        let t = Tensor::from_vec(data, shape.as_slice(), device)?.to_dtype(dtype)?;
        w.insert(name, t);
    }
    Ok(w)
}

/// The tiny preset's tokenizer: 256 bytes + [`TINY_SPECIALS`].
pub fn tiny_tokenizer() -> Result<Tokenizer> {
    Tokenizer::byte_level(&TINY_SPECIALS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_deterministic_and_scaled() {
        let cfg = ModelConfig::tiny();
        let a = random_weights(&cfg, 7, &Device::Cpu, DType::F32).unwrap();
        let b = random_weights(&cfg, 7, &Device::Cpu, DType::F32).unwrap();
        let c = random_weights(&cfg, 8, &Device::Cpu, DType::F32).unwrap();
        let get = |w: &Weights| {
            w.get("model.layers.1.mlp.up_proj.weight")
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(get(&a), get(&b));
        assert_ne!(get(&a), get(&c));
        let v = get(&a);
        let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "std {std}");
        a.validate(&cfg).unwrap();
    }
}

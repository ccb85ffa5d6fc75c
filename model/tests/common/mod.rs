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

/// The transformers parity fixtures written by `model/reference/make_families.py`.
pub fn families_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

/// `expected.json` of the family fixtures.
pub fn families_expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(families_root().join("expected.json")).unwrap()).unwrap()
}

/// The fixtures' token ids, one row per sequence.
pub fn fixture_ids(exp: &serde_json::Value) -> Vec<Vec<u32>> {
    exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// The fixtures' token ids as sequences with every position scored.
pub fn fixture_sequences(exp: &serde_json::Value) -> Vec<Sequence> {
    fixture_ids(exp)
        .into_iter()
        .map(|tokens| Sequence {
            loss_mask: vec![true; tokens.len()],
            tokens,
        })
        .collect()
}

/// A family fixture loaded on a device, with a PEFT adapter of its directory set (A and B trainable).
pub struct FamilyModel {
    /// The fixture's config.
    pub cfg: hearth_model::ModelConfig,
    /// Its base weights.
    pub weights: hearth_model::weights::Weights,
    /// The adapter's LoRA config.
    pub lora: LoraConfig,
    /// The model with the adapter set.
    pub model: hearth_model::Model,
}

/// Loads fixture directory `dir` on `dev` with the PEFT adapter in `dir/adapter_dir`.
pub fn family_model(dir: &std::path::Path, adapter_dir: &str, dev: &Device) -> FamilyModel {
    let (_, cfg, weights) = hearth_model::hf::load_hf_weights(dir, dev, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let adapter = hearth_model::peft::import_peft(&dir.join(adapter_dir))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let lora = hearth_model::peft::lora_config_of(&adapter.config, true, 0).unwrap();
    let mut model = hearth_model::Model::load(&weights, &cfg, Some(&lora)).unwrap();
    model.set_adapter(&adapter.tensors).unwrap();
    FamilyModel {
        cfg,
        weights,
        lora,
        model,
    }
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    diff / norm
}

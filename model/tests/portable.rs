//! The portable path (candle primitives only, what CUDA runs) against the fused CPU kernels and
//! against transformers: loss and LoRA gradients, on the family fixtures. One test in its own
//! binary, since `force_portable` is process-wide.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use hearth_model::fused::force_portable;
use hearth_model::hf::load_hf_weights;
use hearth_model::peft::{import_peft, lora_config_of};
use hearth_model::{loss_gradient, Model, Sequence};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

#[test]
fn portable_path_matches_fused_kernels_and_transformers_in_loss_and_gradients() {
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("expected.json")).unwrap()).unwrap();
    let seqs: Vec<Sequence> = exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let tokens: Vec<u32> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            Sequence {
                loss_mask: vec![true; tokens.len()],
                tokens,
            }
        })
        .collect();
    for (name, fam) in exp["families"].as_object().unwrap() {
        let dir = root().join(name);
        let (_, cfg, weights) = load_hf_weights(&dir, &Device::Cpu, DType::F32).unwrap();
        let adapter = import_peft(&dir.join("adapter")).unwrap();
        let lora = lora_config_of(&adapter.config, true, 0).unwrap();
        let mut model = Model::load(&weights, &cfg, Some(&lora)).unwrap();
        model.set_adapter(&adapter.tensors).unwrap();
        force_portable(false);
        let (fused_loss, fused_grad) = loss_gradient(&model, &seqs, seqs.len()).unwrap();
        force_portable(true);
        let (loss, grad) = loss_gradient(&model, &seqs, seqs.len()).unwrap();
        force_portable(false);
        let theirs = fam["lora_loss"].as_f64().unwrap();
        let diff: f64 = grad
            .iter()
            .zip(&fused_grad)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = fused_grad
            .iter()
            .map(|b| f64::from(*b).powi(2))
            .sum::<f64>()
            .sqrt();
        eprintln!(
            "{name:13} portable loss {loss:.6}, fused {fused_loss:.6}, transformers {theirs:.6}; gradient rel diff {:.1e}",
            diff / norm
        );
        assert!(
            (loss - theirs).abs() < 1e-4 * theirs,
            "{name}: {loss} vs {theirs}"
        );
        assert!(
            (loss - fused_loss).abs() < 1e-5 * theirs,
            "{name}: {loss} vs fused {fused_loss}"
        );
        assert!(
            diff / norm < 1e-4,
            "{name}: portable gradient differs by {:.1e}",
            diff / norm
        );
    }
}

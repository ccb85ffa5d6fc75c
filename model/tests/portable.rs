//! The portable path (candle primitives only, what CUDA runs) against the fused CPU kernels and
//! against transformers: loss and LoRA gradients, on the family fixtures. One test in its own
//! binary, since `force_portable` is process-wide.

mod common;

use candle_core::Device;
use common::{families_expected, families_root, family_model, fixture_sequences, rel_l2};
use hearth_model::fused::force_portable;
use hearth_model::loss_gradient;

#[test]
fn portable_path_matches_fused_kernels_and_transformers_in_loss_and_gradients() {
    let exp = families_expected();
    let seqs = fixture_sequences(&exp);
    for (name, fam) in exp["families"].as_object().unwrap() {
        let model = family_model(&families_root().join(name), "adapter", &Device::Cpu).model;
        force_portable(false);
        let (fused_loss, fused_grad) = loss_gradient(&model, &seqs, seqs.len()).unwrap();
        force_portable(true);
        let (loss, grad) = loss_gradient(&model, &seqs, seqs.len()).unwrap();
        force_portable(false);
        let theirs = fam["lora_loss"].as_f64().unwrap();
        let r = rel_l2(&grad, &fused_grad);
        eprintln!(
            "{name:13} portable loss {loss:.6}, fused {fused_loss:.6}, transformers {theirs:.6}; gradient rel diff {r:.1e}"
        );
        assert!(
            (loss - theirs).abs() < 1e-4 * theirs,
            "{name}: {loss} vs {theirs}"
        );
        assert!(
            (loss - fused_loss).abs() < 1e-5 * theirs,
            "{name}: {loss} vs fused {fused_loss}"
        );
        assert!(r < 1e-4, "{name}: portable gradient differs by {r:.1e}");
    }
}

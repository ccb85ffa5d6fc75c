//! Compact frozen base weights (bf16, f16, 8-bit and QLoRA-style 4-bit blocks, expanded per
//! matmul): the loss and the LoRA gradients equal those of the f32 model holding the same
//! expanded weights, and the compact model holds the projections in a fraction of the bytes.

mod common;

use candle_core::{DType, Device, Tensor};
use hearth_model::linear::{BaseDType, FrozenWeight};
use hearth_model::weights::Weights;
use hearth_model::{loss_gradient, Model};

fn is_projection(name: &str) -> bool {
    name.contains("_proj.weight")
}

#[test]
fn compact_bases_match_the_f32_model_of_their_expanded_weights() {
    let base = common::tiny(DType::F32);
    let lora = common::lora_all(true);
    let data = common::text_sequences(
        &base,
        &"The hearth keeps the house warm through the winter. ".repeat(12),
        64,
    );
    // A trained-looking adapter: B is not zero.
    let mut reference = Model::load(&base.weights, &base.config, Some(&lora)).unwrap();
    let mut adapter = reference.adapter_tensors().unwrap();
    for (i, t) in adapter.iter_mut().enumerate() {
        for (j, x) in t.data.iter_mut().enumerate() {
            *x += 0.05 * (((i * 31 + j * 17) % 13) as f32 / 6.0 - 1.0);
        }
    }
    reference.set_adapter(&adapter).unwrap();
    let (f32_loss, _) = loss_gradient(&reference, &data, 4).unwrap();
    for kind in [
        BaseDType::Bf16,
        BaseDType::F16,
        BaseDType::Q8,
        BaseDType::Q4,
    ] {
        // The f32 model of the same expanded weights.
        let mut expanded = std::collections::HashMap::new();
        for (name, t) in base.weights.tensors().unwrap() {
            let t = if is_projection(&name) {
                FrozenWeight::compact(&t, kind).unwrap().expand().unwrap()
            } else {
                t
            };
            expanded.insert(name, t);
        }
        let mut dense = Model::load(&Weights::new(expanded), &base.config, Some(&lora)).unwrap();
        dense.set_adapter(&adapter).unwrap();
        let mut compact = Model::load_with(&base.weights, &base.config, Some(&lora), kind).unwrap();
        compact.set_adapter(&adapter).unwrap();
        let (want, g_want) = loss_gradient(&dense, &data, 4).unwrap();
        let (got, g_got) = loss_gradient(&compact, &data, 4).unwrap();
        let r = common::rel_l2(&g_got, &g_want);

        eprintln!(
            "{kind:?}: loss {got:.6} (expanded f32 {want:.6}, original f32 {f32_loss:.6}), gradient rel diff {:.1e}",
            r
        );
        assert!(
            (got - want).abs() < 1e-3 * want,
            "{kind:?}: {got} vs {want}"
        );
        assert!(r < 1e-4, "{kind:?}: gradient differs by {:.1e}", r);
        // Compact but not far from the original model.
        assert!(
            (got - f32_loss).abs() < 0.05 * f32_loss,
            "{kind:?}: {got} vs {f32_loss}"
        );
    }
}

#[test]
fn a_model_built_onto_a_device_from_host_weights_equals_one_built_in_place() {
    // `load_onto` makes each projection compact before it moves (what a GPU worker does from
    // the host): the same blocks, so the same loss and gradients as compacting in place.
    let base = common::tiny(DType::F32);
    let lora = common::lora_all(true);
    let data = common::text_sequences(&base, &"A warm hearth. ".repeat(20), 64);
    for kind in [
        BaseDType::F32,
        BaseDType::Bf16,
        BaseDType::Q8,
        BaseDType::Q4,
    ] {
        let in_place = Model::load_with(&base.weights, &base.config, Some(&lora), kind).unwrap();
        let onto =
            Model::load_onto(&base.weights, &base.config, Some(&lora), kind, &Device::Cpu).unwrap();
        let (want, g_want) = loss_gradient(&in_place, &data, 4).unwrap();
        let (got, g_got) = loss_gradient(&onto, &data, 4).unwrap();
        assert_eq!(got, want, "{kind:?}");
        assert_eq!(common::rel_l2(&g_got, &g_want), 0.0, "{kind:?}");
    }
    // Compacting on the host and moving gives the blocks compacting in place gives.
    let w = Tensor::randn(0f32, 1.0, (16, 64), &Device::Cpu).unwrap();
    for kind in [BaseDType::Q8, BaseDType::Q4, BaseDType::Bf16] {
        let a = FrozenWeight::compact(&w, kind).unwrap().expand().unwrap();
        let b = FrozenWeight::compact_onto(&w, kind, &Device::Cpu)
            .unwrap()
            .expand()
            .unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{kind:?}");
    }
}

#[test]
fn compact_weights_take_their_stated_bytes() {
    let w = Tensor::randn(0f32, 1.0, (64, 256), &Device::Cpu).unwrap();
    let f32_bytes = 64 * 256 * 4;
    for kind in [
        BaseDType::F32,
        BaseDType::Bf16,
        BaseDType::F16,
        BaseDType::Q8,
        BaseDType::Q4,
    ] {
        let c = FrozenWeight::compact(&w, kind).unwrap();
        let want = (64.0 * 256.0 * kind.bytes_per_value()) as usize;
        assert_eq!(c.bytes(), want, "{kind:?}");
        assert!(c.bytes() <= f32_bytes);
        assert_eq!(c.expand().unwrap().dims(), &[64, 256]);
    }
    // A row length that is not a whole number of blocks falls back to bf16.
    let odd = Tensor::randn(0f32, 1.0, (8, 48), &Device::Cpu).unwrap();
    assert_eq!(
        FrozenWeight::compact(&odd, BaseDType::Q4).unwrap().bytes(),
        8 * 48 * 2
    );
    assert!(BaseDType::parse("nf4").is_err());
    assert_eq!(BaseDType::parse("q4").unwrap(), BaseDType::Q4);
}

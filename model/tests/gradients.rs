//! Gradients reach every LoRA variable, match finite differences, and never touch base weights.

mod common;

use candle_core::{DType, Tensor, Var};
use hearth_model::loss::{make_batch, masked_nll_sum};
use hearth_model::{Model, Sequence};

fn loss(model: &Model, seqs: &[Sequence]) -> Tensor {
    let b = make_batch(seqs, model.config().vocab, model.device(), model.dtype()).unwrap();
    let logits = model
        .logits(&model.hidden_states(&b.ids, None).unwrap())
        .unwrap();
    (masked_nll_sum(&logits, &b.targets, &b.weights).unwrap() / b.target_count as f64).unwrap()
}

#[test]
fn every_lora_var_gets_a_gradient_and_base_weights_none() {
    let base = common::tiny(DType::F32);
    let mut model = base.model(Some(&common::lora_all(true))).unwrap();
    common::randomize_adapter(&mut model, 11);
    let seqs = common::text_sequences(&base, "Hearth trains adapters on home machines. ", 16);
    let grads = loss(&model, &seqs[..2]).backward().unwrap();
    let vars = model.trainable_vars();
    assert_eq!(vars.len(), 2 * 7 * 2, "A and B for 7 targets in 2 layers");
    for (slot, v) in model.adapter_layout().iter().zip(&vars) {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{} has no gradient", slot.name));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(n > 1e-7, "{} gradient norm {n}", slot.name);
        println!("{:70} |grad| = {n:.3e}", slot.name);
    }
    for (name, w) in base.weights.tensors().unwrap() {
        assert!(grads.get(&w).is_none(), "base weight {name} got a gradient");
    }
}

#[test]
fn ffa_mode_trains_only_b() {
    let base = common::tiny(DType::F32);
    let model = base.model(Some(&common::lora_all(false))).unwrap();
    let layout = model.adapter_layout();
    assert_eq!(layout.len(), 14);
    assert!(layout.iter().all(|s| s.name.ends_with("lora_B.weight")));
    assert_eq!(model.full_adapter_layout().len(), 28);
    // B starts at zero, so the adapter does not change the base model's output.
    let plain = base.model(None).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], model.device()).unwrap();
    let a = model
        .forward(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = plain
        .forward(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

fn set_elem(v: &Var, idx: usize, value: f64) {
    let shape = v.as_tensor().dims().to_vec();
    let mut data = v
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    data[idx] = value;
    v.set(&Tensor::from_vec(data, shape.as_slice(), v.device()).unwrap())
        .unwrap();
}

#[test]
fn lora_gradients_match_central_finite_differences_f64() {
    let base = common::tiny(DType::F64);
    let mut model = base.model(Some(&common::lora_all(true))).unwrap();
    common::randomize_adapter(&mut model, 5);
    let seqs = common::text_sequences(&base, "finite differences check the backward pass. ", 12);
    let seqs = &seqs[..2];
    let grads = loss(&model, seqs).backward().unwrap();
    let eps = 1e-5;
    let mut worst = 0f64;
    let mut checked = 0;
    for (slot, v) in model.adapter_layout().iter().zip(model.trainable_vars()) {
        let g = grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let orig = v
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // the coordinates with the largest analytic gradient, plus one fixed one
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in order.iter().take(2).chain([g.len() / 2].iter()) {
            set_elem(&v, i, orig[i] + eps);
            let lp = loss(&model, seqs).to_scalar::<f64>().unwrap();
            set_elem(&v, i, orig[i] - eps);
            let lm = loss(&model, seqs).to_scalar::<f64>().unwrap();
            set_elem(&v, i, orig[i]);
            let fd = (lp - lm) / (2.0 * eps);
            let rel = (fd - g[i]).abs() / fd.abs().max(g[i].abs()).max(1e-8);
            if g[i].abs() > 1e-9 {
                worst = worst.max(rel);
            }
            checked += 1;
            assert!(
                rel < 1e-2 || (fd - g[i]).abs() < 1e-9,
                "{}[{i}]: analytic {} vs fd {fd} (rel {rel:.2e})",
                slot.name,
                g[i]
            );
        }
    }
    println!("finite differences: {checked} coordinates, worst relative error {worst:.2e}");
    assert!(checked >= 28 * 3);
}

#[test]
fn loss_gradient_is_the_directional_derivative_in_layout_order() {
    let base = common::tiny(DType::F64);
    let mut model = base.model(Some(&common::lora_all(true))).unwrap();
    common::randomize_adapter(&mut model, 7);
    let seqs = common::text_sequences(&base, "the reference gradient screens deltas. ", 12);
    let seqs = &seqs[..3];
    // batch 2 splits the three sequences: the sum must still be the gradient of the mean.
    let (l0, g) = hearth_model::loss_gradient(&model, seqs, 2).unwrap();
    let direct = loss(&model, seqs).to_scalar::<f64>().unwrap();
    assert!((l0 - direct).abs() < 1e-9, "loss {l0} vs {direct}");
    let params = model.adapter_tensors().unwrap();
    assert_eq!(g.len(), params.iter().map(|t| t.data.len()).sum::<usize>());
    let g2: f64 = g.iter().map(|x| f64::from(*x).powi(2)).sum();
    assert!(g2 > 0.0);
    // Step along −g: the loss falls by ε‖g‖² to first order. A gradient in another order than
    // the layout would not.
    let eps = 1e-3 / g2.sqrt();
    let mut at = 0;
    let stepped: Vec<_> = params
        .iter()
        .map(|t| {
            let mut t = t.clone();
            for x in t.data.iter_mut() {
                *x -= (eps * f64::from(g[at])) as f32;
                at += 1;
            }
            t
        })
        .collect();
    model.set_adapter(&stepped).unwrap();
    let l1 = loss(&model, seqs).to_scalar::<f64>().unwrap();
    let predicted = eps * g2;
    let observed = l0 - l1;
    println!("directional derivative: predicted drop {predicted:.3e}, observed {observed:.3e}");
    assert!(
        (observed - predicted).abs() < 0.05 * predicted,
        "predicted {predicted:.3e} observed {observed:.3e}"
    );
}

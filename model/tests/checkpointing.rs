//! Activation checkpointing (`TrainConfig::checkpoint_activations`, `hearth_model::recompute`):
//! the same losses, gradients and trained adapter as the ordinary backward pass.

mod common;

use std::ops::ControlFlow;

use candle_core::{DType, Device};
use hearth_model::loss::make_batch;
use hearth_model::train::{train, TrainConfig};
use hearth_model::{recompute, Model};

fn flat(model: &Model) -> Vec<f32> {
    model
        .all_adapter_tensors()
        .unwrap()
        .into_iter()
        .flat_map(|t| t.data)
        .collect()
}

#[test]
fn checkpointed_gradients_equal_the_ordinary_backward_pass() {
    let base = common::tiny(DType::F32);
    let mut lora = common::lora_all(true);
    lora.dropout = 0.1;
    let mut model = Model::load(&base.weights, &base.config, Some(&lora)).unwrap();
    common::randomize_adapter(&mut model, 11);
    let data = common::text_sequences(
        &base,
        &"Checkpoints trade compute for memory. ".repeat(8),
        48,
    );
    let batch = make_batch(&data[..3], base.config.vocab, &Device::Cpu, DType::F32).unwrap();
    let divisor = batch.target_count as f64;
    for seed in [None, Some(42)] {
        let h = model.hidden_states(&batch.ids, seed).unwrap();
        let loss = (model
            .head_nll_sum(&h, &batch.targets, &batch.weights)
            .unwrap()
            / divisor)
            .unwrap();
        let want_loss = loss.to_scalar::<f32>().unwrap() as f64;
        let want = loss.backward().unwrap();
        let (got_loss, got) = recompute::loss_and_grads(
            &model,
            &batch.ids,
            &batch.targets,
            &batch.weights,
            divisor,
            seed,
        )
        .unwrap();
        assert!(
            (got_loss - want_loss).abs() < 1e-6 * want_loss,
            "{got_loss} vs {want_loss}"
        );
        let vars = model.trainable_vars();
        assert_eq!(vars.len(), 2 * 7 * base.config.layers);
        let collect = |g: &candle_core::backprop::GradStore| -> Vec<f32> {
            vars.iter()
                .flat_map(|v| {
                    g.get(v.as_tensor())
                        .expect("every adapter tensor has a gradient")
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect()
        };
        let (w, g) = (collect(&want), collect(&got));
        let r = common::rel_l2(&g, &w);
        eprintln!("dropout seed {seed:?}: loss {got_loss:.6}, gradient rel diff {r:.1e}");
        assert!(r < 1e-5, "gradients differ by {r:.1e}");
        assert!(w.iter().any(|x| *x != 0.0));
    }
    // A gradient of another seed differs: the masks are really reproduced, not ignored.
    let (_, other) = recompute::loss_and_grads(
        &model,
        &batch.ids,
        &batch.targets,
        &batch.weights,
        divisor,
        Some(7),
    )
    .unwrap();
    let v = &model.trainable_vars()[0];
    let (_, same) = recompute::loss_and_grads(
        &model,
        &batch.ids,
        &batch.targets,
        &batch.weights,
        divisor,
        Some(42),
    )
    .unwrap();
    let diff = (other.get(v.as_tensor()).unwrap() - same.get(v.as_tensor()).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 0.0, "dropout seeds change the gradient");
}

#[test]
fn training_with_checkpointing_gives_the_same_adapter() {
    let base = common::tiny(DType::F32);
    let lora = common::lora_all(false);
    let data = common::text_sequences(
        &base,
        &"The swarm learns one round at a time. ".repeat(20),
        64,
    );
    let run = |checkpoint: bool| {
        let model = Model::load(&base.weights, &base.config, Some(&lora)).unwrap();
        let cfg = TrainConfig {
            lr: 1e-2,
            max_steps: 5,
            batch_size: 2,
            accum_steps: 2,
            checkpoint_activations: checkpoint,
            ..TrainConfig::default()
        };
        let mut losses = Vec::new();
        train(&model, &data, &cfg, |s| {
            losses.push(s.loss);
            ControlFlow::Continue(())
        })
        .unwrap();
        (losses, flat(&model))
    };
    let (l0, a0) = run(false);
    let (l1, a1) = run(true);
    assert_eq!(l0.len(), 5);
    for (x, y) in l0.iter().zip(&l1) {
        assert!((x - y).abs() < 1e-5 * x, "step losses {l0:?} vs {l1:?}");
    }
    assert!(l0[4] < l0[0], "training lowers the loss: {l0:?}");
    let r = common::rel_l2(&a1, &a0);
    assert!(r < 1e-4, "adapters differ by {r:.1e}");
    let moved: f32 = a0.iter().map(|x| x.abs()).sum();
    assert!(moved > 0.0);
}

//! Training lowers the loss, honours its budgets, and the trained model reproduces its text.

mod common;

use std::ops::ControlFlow;

use candle_core::DType;
use hearth_model::train::StopReason;
use hearth_model::{evaluate, generate_greedy, TrainConfig, Trainer};

const TEXT: &str = "the hearth keeps the house warm. ";

#[test]
fn loss_goes_down_over_50_steps_and_model_learns_the_text() {
    let base = common::tiny(DType::F32);
    let mut lora = common::lora_all(false);
    lora.rank = 8;
    lora.alpha = 16.0;
    let model = base.model(Some(&lora)).unwrap();
    let seqs = common::text_sequences(&base, &TEXT.repeat(40), 64);
    assert!(seqs.len() >= 8);
    let before = evaluate(&model, &seqs, 4).unwrap();
    let cfg = TrainConfig {
        lr: 5e-2,
        warmup_steps: 5,
        max_steps: 50,
        batch_size: 4,
        accum_steps: 1,
        ..TrainConfig::default()
    };
    let mut losses = Vec::new();
    let report = Trainer::new(&model, cfg)
        .unwrap()
        .train(&model, &seqs, |s| {
            losses.push(s.loss);
            ControlFlow::Continue(())
        })
        .unwrap();
    let after = evaluate(&model, &seqs, 4).unwrap();
    println!(
        "loss {:.4} -> {:.4} (train first {:.4}, last {:.4}), {} steps, {:.0} tokens/s",
        before.loss,
        after.loss,
        losses[0],
        report.last_loss,
        report.steps,
        report.tokens_per_second
    );
    assert_eq!(report.steps, 50);
    assert_eq!(report.stopped_by, StopReason::Steps);
    assert_eq!(report.tokens, 50 * 4 * 64);
    assert!(
        after.loss < 0.5 * before.loss,
        "loss {} -> {}",
        before.loss,
        after.loss
    );
    // the trained adapter continues the memorised text
    let prompt = base.tokenizer.encode("the hearth keeps").unwrap();
    let out = generate_greedy(&model, &prompt, 12, Some(base.eos_token_id)).unwrap();
    let text = base.tokenizer.decode(&out).unwrap();
    println!("generated: {text:?}");
    // a bigram-level model of the text: after "keeps" comes " the"
    assert!(text.starts_with(" the "), "{text:?}");
    let fresh = base.model(Some(&lora)).unwrap();
    let untrained = generate_greedy(&fresh, &prompt, 12, Some(base.eos_token_id)).unwrap();
    assert_ne!(untrained, out);
}

#[test]
fn accumulation_equals_one_big_batch() {
    let base = common::tiny(DType::F64);
    let seqs = common::text_sequences(&base, &TEXT.repeat(8), 16);
    let run = |batch: usize, accum: usize| {
        let model = base.model(Some(&common::lora_all(false))).unwrap();
        let cfg = TrainConfig {
            lr: 1e-2,
            max_steps: 2,
            batch_size: batch,
            accum_steps: accum,
            grad_clip: None,
            ..TrainConfig::default()
        };
        let r = Trainer::new(&model, cfg)
            .unwrap()
            .train(&model, &seqs, |_| ControlFlow::Continue(()))
            .unwrap();
        (r.mean_loss, model.adapter_tensors().unwrap())
    };
    let (l1, a1) = run(4, 1);
    let (l2, a2) = run(2, 2);
    assert!((l1 - l2).abs() < 1e-9, "{l1} vs {l2}");
    for (x, y) in a1.iter().zip(&a2) {
        for (p, q) in x.data.iter().zip(&y.data) {
            assert!((p - q).abs() < 1e-5, "{}: {p} vs {q}", x.name);
        }
    }
}

#[test]
fn stops_on_time_budget_and_callback() {
    let base = common::tiny(DType::F32);
    let model = base.model(Some(&common::lora_all(false))).unwrap();
    let seqs = common::text_sequences(&base, &TEXT.repeat(8), 16);
    let cfg = TrainConfig {
        max_steps: 1_000_000,
        max_seconds: Some(0.3),
        batch_size: 2,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(&model, cfg.clone()).unwrap();
    let r = t
        .train(&model, &seqs, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(r.stopped_by, StopReason::Time);
    assert!(r.seconds < 5.0 && r.steps > 0, "{r:?}");
    let r = t
        .train(&model, &seqs, |s| {
            if s.step == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((r.steps, r.stopped_by), (3, StopReason::Callback));
}

#[test]
fn evaluate_matches_the_loss_computed_from_full_logits() {
    // evaluate() runs the fused evaluation-only LM head; the reference materialises the logits.
    let base = common::tiny(DType::F64);
    let model = base.model(Some(&common::lora_all(false))).unwrap();
    let mut seqs = common::text_sequences(&base, &TEXT.repeat(10), 32);
    // A short, partly masked sequence: padding and unscored positions must not count.
    if let Some(s) = seqs.first_mut() {
        s.tokens.truncate(20);
        s.loss_mask.truncate(20);
        s.loss_mask[..5].iter_mut().for_each(|m| *m = false);
    }
    let got = evaluate(&model, &seqs, 3).unwrap();
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in seqs.chunks(3) {
        let b = hearth_model::loss::make_batch(
            chunk,
            base.config.vocab,
            &candle_core::Device::Cpu,
            DType::F64,
        )
        .unwrap();
        let logits = model
            .logits(&model.hidden_states(&b.ids, None).unwrap())
            .unwrap();
        let nll = hearth_model::loss::masked_nll_sum(&logits, &b.targets, &b.weights).unwrap();
        sum += nll.to_scalar::<f64>().unwrap();
        n += b.target_count;
    }
    assert_eq!(got.tokens, n);
    assert!(
        (got.loss - sum / n as f64).abs() < 1e-10,
        "{} vs {}",
        got.loss,
        sum / n as f64
    );
}

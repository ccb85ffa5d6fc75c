//! The demo experiment on the real SmolLM2-135M-Instruct: base model vs. a few hundred LoRA steps
//! on the Vesk task, measured by held-out loss and greedy exact-match accuracy.
//!
//! Ignored by default (minutes of CPU). Run with
//! `cargo test -p hearth-model --test demo_experiment -- --ignored --nocapture`.
//! Knobs (env): HEARTH_DEMO_STEPS (200), HEARTH_DEMO_LR (2e-3), HEARTH_DEMO_TARGETS (`qv` or
//! `all`, default `all`), HEARTH_DEMO_RANK (8), HEARTH_DEMO_TRAIN (2000 examples),
//! HEARTH_DEMO_EVAL (50 held-out examples), HEARTH_DEMO_ACC (how many of them to decode for exact
//! match; default all), HEARTH_DEMO_BASE_GEN (0 skips decoding with the base model), HEARTH_DEMO_BATCH (4 sequences of 96 tokens: two examples each).

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Device};
use hearth_model::data::{encode_prompt, prepare_dataset, ChatTemplate, Example};
use hearth_model::demo::{self, exact_match};
use hearth_model::source::real_model_for_tests;
use hearth_model::{
    evaluate, generate_greedy, load_base, BaseModel, LoraConfig, LoraTarget, Model, ModelSource,
    TrainConfig, Trainer,
};

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Greedy exact-match accuracy over held-out chat examples; prints the first few answers.
fn accuracy(
    model: &Model,
    base: &BaseModel,
    template: &ChatTemplate,
    examples: &[Example],
    label: &str,
) -> f64 {
    let tok = base.tokenizer.inner();
    let mut hits = 0;
    for (i, ex) in examples.iter().enumerate() {
        let Example::Chat(messages) = ex else {
            panic!("demo examples are chats")
        };
        let (prompt_msgs, answer) = messages.split_at(messages.len() - 1);
        let prompt = encode_prompt(tok, template, prompt_msgs).unwrap();
        let out = generate_greedy(model, &prompt, 12, Some(base.eos_token_id)).unwrap();
        let ids: Vec<u32> = out
            .into_iter()
            .take_while(|t| *t != base.eos_token_id)
            .collect();
        let text = tok.decode(&ids, false).unwrap();
        let ok = exact_match(&text, &answer[0].content);
        hits += usize::from(ok);
        if i < 3 {
            println!(
                "[{label}] {:?} -> {text:?} (want {:?}) {}",
                prompt_msgs[0].content,
                answer[0].content,
                if ok { "✓" } else { "✗" }
            );
        }
    }
    hits as f64 / examples.len() as f64
}

#[test]
#[ignore = "minutes of CPU on the real model; run with --ignored"]
fn lora_beats_base_model_on_held_out_vesk() {
    let Some(path) = real_model_for_tests() else {
        return;
    };
    let steps: usize = env("HEARTH_DEMO_STEPS", 200);
    let lr: f64 = env("HEARTH_DEMO_LR", 2e-3);
    let rank: usize = env("HEARTH_DEMO_RANK", 8);
    let n_train: usize = env("HEARTH_DEMO_TRAIN", 2000);
    let n_eval: usize = env("HEARTH_DEMO_EVAL", 50);
    let batch: usize = env("HEARTH_DEMO_BATCH", 4);
    let n_acc: usize = env("HEARTH_DEMO_ACC", n_eval);
    let base_gen: usize = env("HEARTH_DEMO_BASE_GEN", 1);
    let targets = match std::env::var("HEARTH_DEMO_TARGETS").as_deref() {
        Ok("qv") => vec![LoraTarget::Q, LoraTarget::V],
        _ => LoraTarget::ALL.to_vec(),
    };

    let base = load_base(&ModelSource::Gguf(path), &Device::Cpu, DType::F32).unwrap();
    let template = ChatTemplate::new(
        base.chat_template.as_deref().unwrap(),
        "<|im_start|>",
        "<|im_end|>",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vesk.jsonl");
    demo::write_jsonl(&data, n_train + n_eval, 2024).unwrap();
    let fraction = n_eval as f64 / (n_train + n_eval) as f64;
    let prepared =
        prepare_dataset(&data, base.tokenizer.inner(), &template, 96, fraction, 1, 7).unwrap();
    assert_eq!(prepared.validation_examples.len(), n_eval);
    let train_seqs = prepared.train_shards[0].sequences().to_vec();
    println!(
        "data: {} train sequences x 96 (fill {:.2}), {} validation sequences, {} held-out examples",
        train_seqs.len(),
        prepared.stats.train.fill(),
        prepared.validation.len(),
        n_eval
    );

    let lora = LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets,
        train_a: false,
        seed: 2024,
    };
    let model = base.model(Some(&lora)).unwrap();
    let t0 = Instant::now();
    let before = evaluate(&model, &prepared.validation, 8).unwrap();
    let acc_examples = &prepared.validation_examples[..n_acc.min(n_eval)];
    let acc_before = if base_gen == 0 {
        0.0
    } else {
        accuracy(&model, &base, &template, acc_examples, "base")
    };
    println!(
        "base:  held-out loss {:.4} over {} tokens, exact match {:.1}% of {} (decoded: {}) ({:.0} s)",
        before.loss,
        before.tokens,
        100.0 * acc_before,
        acc_examples.len(),
        base_gen != 0,
        t0.elapsed().as_secs_f64()
    );

    let cfg = TrainConfig {
        lr,
        warmup_steps: steps / 10,
        max_steps: steps,
        batch_size: batch,
        accum_steps: 1,
        ..TrainConfig::default()
    };
    let t1 = Instant::now();
    let report = Trainer::new(&model, cfg)
        .unwrap()
        .train(&model, &train_seqs, |s| {
            if s.step % 20 == 0 || s.step == 1 {
                println!(
                    "step {:4} loss {:.4} lr {:.2e} grad {:.3} ({:.0} s)",
                    s.step,
                    s.loss,
                    s.lr,
                    s.grad_norm,
                    t1.elapsed().as_secs_f64()
                );
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let after = evaluate(&model, &prepared.validation, 8).unwrap();
    let acc_after = accuracy(&model, &base, &template, acc_examples, "lora");
    println!(
        "lora:  held-out loss {:.4}, exact match {:.1}% of {} after {} steps ({} tokens, {:.0} tokens/s, {:.0} s)",
        after.loss,
        100.0 * acc_after,
        acc_examples.len(),
        report.steps,
        report.tokens,
        report.tokens_per_second,
        report.seconds
    );
    assert!(
        after.loss < before.loss * 0.5,
        "{} -> {}",
        before.loss,
        after.loss
    );
    assert!(acc_after >= acc_before + 0.3, "{acc_before} -> {acc_after}");
}

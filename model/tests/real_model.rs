//! Tests on the real SmolLM2-135M-Instruct GGUF. Skipped (with a message) when the file is
//! missing unless HEARTH_REQUIRE_MODEL=1. Reference figures come from transformers/PEFT
//! (model/reference/make_reference.py), so no Python runs here.

use std::path::Path;

use candle_core::{DType, Device};
use hearth_model::eval::chunk_stream;
use hearth_model::source::real_model_for_tests;
use hearth_model::{
    evaluate, load_adapter, load_base, BaseModel, LoraConfig, LoraTarget, ModelConfig, ModelSource,
};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn load() -> Option<BaseModel> {
    let p = real_model_for_tests()?;
    Some(load_base(&ModelSource::Gguf(p), &Device::Cpu, DType::F32).unwrap())
}

fn text_loss(model: &hearth_model::Model, ids: &[u32]) -> f64 {
    evaluate(model, &chunk_stream(ids, model.config().max_position), 1)
        .unwrap()
        .loss
}

/// Rank-1 adapter on q and v used by the committed fixture.
fn fixture_lora() -> LoraConfig {
    LoraConfig {
        rank: 1,
        alpha: 2.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
        train_a: false,
        seed: 2024,
    }
}

#[test]
fn gguf_matches_reference_tokens_and_losses() {
    let Some(base) = load() else { return };
    let mut want = ModelConfig::smollm2_135m();
    want.max_position = base.config.max_position;
    assert!(
        (base.config.rms_eps - want.rms_eps).abs() < 1e-9,
        "eps {}",
        base.config.rms_eps
    );
    want.rms_eps = base.config.rms_eps; // stored as f32 in the GGUF
    assert_eq!(base.config, want);
    assert_eq!(base.tokenizer.vocab_size(), 49152);
    assert_eq!(
        base.tokenizer.decode(&[base.eos_token_id]).unwrap(),
        "<|im_end|>"
    );
    assert!(base
        .chat_template
        .as_deref()
        .is_some_and(|t| t.contains("im_start")));

    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap(),
    )
    .unwrap();
    let model = base.model(None).unwrap();
    for t in fixture["texts"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let text = t["text"].as_str().unwrap();
        let want_ids: Vec<u32> = t["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = base.tokenizer.encode(text).unwrap();
        assert_eq!(ids, want_ids, "token ids differ for {name}");
        assert_eq!(base.tokenizer.decode(&ids).unwrap(), text);
        let loss = text_loss(&model, &ids);
        let want = t["loss"].as_f64().unwrap();
        let rel = (loss - want).abs() / want;
        println!(
            "{name:10} {:3} tokens  loss {loss:.5}  reference {want:.5}  rel diff {rel:.2e}",
            ids.len()
        );
        assert!(rel < 0.01, "{name}: loss {loss} vs reference {want}");
    }
}

#[test]
fn committed_adapter_matches_peft_loss() {
    let Some(base) = load() else { return };
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap(),
    )
    .unwrap();
    let Some(adapter) = fixture.get("adapter") else {
        panic!("fixture has no adapter entry: run make_reference.py after write_adapter_fixture");
    };
    let ids = base
        .tokenizer
        .encode(adapter["text"].as_str().unwrap())
        .unwrap();
    let mut model = base.model(Some(&fixture_lora())).unwrap();
    let base_loss = text_loss(&model, &ids);
    load_adapter(
        &mut model,
        &fixtures().join(adapter["dir"].as_str().unwrap()),
    )
    .unwrap();
    let loss = text_loss(&model, &ids);
    let want = adapter["loss"].as_f64().unwrap();
    println!("adapter: base loss {base_loss:.5} -> {loss:.5}, PEFT reference {want:.5}");
    assert!(
        (loss - base_loss).abs() > 0.05,
        "adapter should change the loss"
    );
    assert!(
        (loss - want).abs() / want < 0.01,
        "loss {loss} vs PEFT {want}"
    );
}

/// Writes model/tests/fixtures/adapter_r1 (deterministic values). Run once, then make_reference.py.
#[test]
#[ignore]
fn write_adapter_fixture() {
    let Some(base) = load() else { return };
    let mut model = base.model(Some(&fixture_lora())).unwrap();
    let mut ts = model.all_adapter_tensors().unwrap();
    for (i, t) in ts
        .iter_mut()
        .filter(|t| t.name.ends_with("lora_B.weight"))
        .enumerate()
    {
        let mut x = 0x2545_F491_4F6C_DD1Du64 ^ i as u64;
        for v in t.data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6;
        }
    }
    model.set_adapter(&ts).unwrap();
    hearth_model::save_adapter(
        &model,
        &fixtures().join("adapter_r1"),
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    .unwrap();
}

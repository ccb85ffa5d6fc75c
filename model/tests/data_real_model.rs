//! Datasets with the real SmolLM2-135M-Instruct tokenizer and chat template (from its GGUF).
//! Skipped with a message when the file is missing, unless HEARTH_REQUIRE_MODEL=1.

use candle_core::{DType, Device};
use hearth_model::data::{
    encode_chat, encode_prompt, prepare_dataset, ChatTemplate, Message, Shard,
};
use hearth_model::demo;
use hearth_model::source::real_model_for_tests;
use hearth_model::{load_base, BaseModel, ModelSource};

fn load() -> Option<(BaseModel, ChatTemplate)> {
    let path = real_model_for_tests()?;
    let base = load_base(&ModelSource::Gguf(path), &Device::Cpu, DType::F32).unwrap();
    let source = base
        .chat_template
        .clone()
        .expect("GGUF has a chat template");
    let template = ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>").unwrap();
    Some((base, template))
}

#[test]
fn smollm2_chat_encoding_and_demo_lengths() {
    let Some((base, template)) = load() else {
        return;
    };
    let tok = base.tokenizer.inner();
    let messages = vec![
        Message::new("user", "What is 12 + 7?"),
        Message::new("assistant", "19"),
    ];
    let enc = encode_chat(tok, &template, &messages, 0).unwrap();
    let text = tok.decode(&enc.tokens, false).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n19<|im_end|>\n"
    );
    // The whole-string encoding (what transformers' apply_chat_template(tokenize=True) gives)
    // equals the segment-wise encoding for ChatML.
    assert_eq!(
        enc.tokens,
        tok.encode(text.as_str(), false).unwrap().get_ids()
    );
    // Targets: "1", "9" (digits split one by one) and <|im_end|> (id 2).
    let targets: Vec<u32> = enc
        .tokens
        .iter()
        .zip(&enc.loss_mask)
        .filter(|(_, m)| **m)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[2], base.eos_token_id);
    assert_eq!(tok.decode(&targets, false).unwrap(), "19<|im_end|>");
    let prompt = encode_prompt(tok, &template, &messages[..1]).unwrap();
    assert_eq!(prompt, enc.tokens[..enc.tokens.len() - 4]);

    // Demo examples stay short with the template (system prompt included).
    let lengths: Vec<usize> = demo::generate(2000, 0)
        .iter()
        .map(|e| {
            let m = [
                Message::new("user", e.instruction.clone()),
                Message::new("assistant", e.answer.clone()),
            ];
            encode_chat(tok, &template, &m, 0).unwrap().len()
        })
        .collect();
    let max = *lengths.iter().max().unwrap();
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    println!("demo example tokens with template: mean {mean:.1}, max {max}");
    assert!(max <= 48, "longest demo example has {max} tokens");
}

#[test]
fn smollm2_demo_shards_are_reproducible() {
    let Some((base, template)) = load() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vesk.jsonl");
    demo::write_jsonl(&path, 1000, 0).unwrap();
    let tok = base.tokenizer.inner();
    let a = prepare_dataset(&path, tok, &template, 256, 0.05, 4, 1).unwrap();
    let b = prepare_dataset(&path, tok, &template, 256, 0.05, 4, 1).unwrap();
    let ca: Vec<String> = a.train_shards.iter().map(Shard::cid_hex).collect();
    let cb: Vec<String> = b.train_shards.iter().map(Shard::cid_hex).collect();
    assert_eq!(ca, cb);
    let bytes: usize = a.train_shards.iter().map(|s| s.to_bytes().len()).sum();
    println!(
        "1000 demo examples -> {} train sequences of 256 (fill {:.3}), {} validation sequences, {} shard bytes, cids {:?}",
        a.stats.train.sequences,
        a.stats.train.fill(),
        a.stats.validation.sequences,
        bytes,
        ca
    );
    assert_eq!(a.validation_examples.len(), 50);
    // SmolLM2's vocabulary needs 2-byte tokens.
    assert!(a.train_shards.iter().all(|s| s.to_bytes()[5] == 2));
}

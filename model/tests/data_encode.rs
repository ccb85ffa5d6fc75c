//! Tokenization with loss masks: text, chats rendered by Jinja chat templates, prompts.

use hearth_model::data::{
    byte_level_tokenizer, encode_chat, encode_prompt, encode_record, ChatTemplate, DataError,
    Example, Message, Record,
};
use tokenizers::Tokenizer;

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// SmolLM2-135M-Instruct's template, copied from its GGUF metadata.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn tok() -> Tokenizer {
    byte_level_tokenizer(&SPECIALS).unwrap()
}

fn decode(t: &Tokenizer, ids: &[u32]) -> String {
    t.decode(ids, false).unwrap()
}

/// The decoded target tokens, one string per maximal run of targets.
fn target_runs(t: &Tokenizer, tokens: &[u32], mask: &[bool]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (id, m) in tokens.iter().zip(mask) {
        if *m {
            cur.push(*id);
        } else if !cur.is_empty() {
            runs.push(decode(t, &cur));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        runs.push(decode(t, &cur));
    }
    runs
}

#[test]
fn byte_tokenizer_round_trips_and_knows_specials() {
    let t = tok();
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    let ids = t.encode("a<|im_end|>é", false).unwrap().get_ids().to_vec();
    // 'a' = 3 + 97, then the special, then the two UTF-8 bytes of 'é' (0xC3 0xA9).
    assert_eq!(ids, vec![100, 2, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(decode(&t, &ids), "a<|im_end|>é");
}

#[test]
fn text_is_all_targets_without_added_specials() {
    let t = tok();
    let template = ChatTemplate::chatml().unwrap();
    let rec = Record {
        line: 1,
        example: Example::Text("hello world".into()),
    };
    let enc = encode_record(&t, &template, &rec).unwrap();
    assert_eq!(enc.len(), 11);
    assert_eq!(enc.target_count(), 11);
    assert_eq!(decode(&t, &enc.tokens), "hello world");
}

#[test]
fn chat_targets_only_assistant_turns_through_end_of_turn() {
    let t = tok();
    let template = ChatTemplate::chatml().unwrap();
    let messages = vec![
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
        Message::new("assistant", "Yo"),
        Message::new("user", "Again"),
        Message::new("assistant", "Sure thing"),
    ];
    let enc = encode_chat(&t, &template, &messages, 7).unwrap();
    assert_eq!(
        decode(&t, &enc.tokens),
        template.render(&messages, false, 7).unwrap()
    );
    assert_eq!(
        target_runs(&t, &enc.tokens, &enc.loss_mask),
        vec![
            "Yo<|im_end|>".to_string(),
            "Sure thing<|im_end|>".to_string()
        ]
    );
    assert_eq!(enc.target_count(), 3 + 11);
}

#[test]
fn smollm2_template_keeps_default_system_prompt_out_of_targets() {
    let t = tok();
    let template = ChatTemplate::new(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>").unwrap();
    let messages = vec![Message::new("user", "2+2?"), Message::new("assistant", "4")];
    let enc = encode_chat(&t, &template, &messages, 0).unwrap();
    let text = decode(&t, &enc.tokens);
    assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    assert!(text.ends_with("<|im_start|>assistant\n4<|im_end|>\n"));
    assert_eq!(
        target_runs(&t, &enc.tokens, &enc.loss_mask),
        vec!["4<|im_end|>"]
    );

    // The inference prompt is exactly the training ids before the first target.
    let prompt = encode_prompt(&t, &template, &messages[..1]).unwrap();
    let first_target = enc.loss_mask.iter().position(|m| *m).unwrap();
    assert_eq!(prompt, enc.tokens[..first_target]);
    assert!(decode(&t, &prompt).ends_with("<|im_start|>assistant\n"));
}

#[test]
fn hugging_face_conventions_trim_blocks_bos_and_raise_exception() {
    let t = tok();
    // Llama-3 style: bos_token variable, `-` whitespace control, trim_blocks/lstrip_blocks.
    let source = "{{ bos_token }}\n{% for m in messages %}\n  {% if m['role'] == 'tool' %}\n{{ raise_exception('no tools here') }}\n  {% endif %}\n<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let template = ChatTemplate::new(source, "<|endoftext|>", "<|im_end|>").unwrap();
    let messages = vec![Message::new("user", "a"), Message::new("assistant", "b")];
    let rendered = template.render(&messages, false, 0).unwrap();
    assert_eq!(
        rendered,
        "<|endoftext|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
    );
    let enc = encode_chat(&t, &template, &messages, 0).unwrap();
    assert_eq!(
        target_runs(&t, &enc.tokens, &enc.loss_mask),
        vec!["b<|im_end|>"]
    );

    let err = template
        .render(&[Message::new("tool", "x")], false, 12)
        .unwrap_err();
    assert!(
        matches!(err, DataError::TemplateRender { line: 12, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no tools here"), "{err}");
}

#[test]
fn template_errors_are_reported() {
    let err = ChatTemplate::new("{% for %}", "<s>", "</s>").unwrap_err();
    assert!(matches!(err, DataError::TemplateSyntax { .. }), "{err}");

    // Renders newest message first: a prefix rendering is not a prefix of the full one.
    let reversed = "{% for m in messages|reverse %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let template = ChatTemplate::new(reversed, "<|im_start|>", "<|im_end|>").unwrap();
    let messages = vec![Message::new("user", "a"), Message::new("assistant", "b")];
    let err = encode_chat(&tok(), &template, &messages, 3).unwrap_err();
    assert!(
        matches!(err, DataError::TemplateNotIncremental { line: 3, .. }),
        "{err}"
    );

    let unknown = ChatTemplate::new(reversed, "<s>", "</s>").unwrap();
    let err = encode_chat(&tok(), &unknown, &messages, 0).unwrap_err();
    assert!(err.to_string().contains("\"</s>\""), "{err}");
}

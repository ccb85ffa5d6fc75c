//! The GGUF header reader: metadata, llama config, tokenizer and tensor ranges (no tensor data).
#![no_main]

use hearth_model::gguf::gguf_header_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = gguf_header_from_bytes(data) {
        assert!(h.config.validate().is_ok());
        assert!((h.eos_token_id as usize) < h.config.vocab);
    }
});

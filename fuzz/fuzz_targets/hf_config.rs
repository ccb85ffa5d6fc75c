//! A Hugging Face `config.json`: parsed and turned into a checked model config.
#![no_main]

use std::path::Path;

use hearth_model::hf::parse_hf_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, cfg)) = parse_hf_config(data, Path::new("config.json")) {
        assert!(cfg.validate().is_ok());
    }
});

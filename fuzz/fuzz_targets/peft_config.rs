//! PEFT `adapter_config.json`: parsed, checked, and turned into a LoRA config.
#![no_main]

use std::path::Path;

use hearth_model::peft::{lora_config_of, parse_peft_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = parse_peft_config(data, Path::new("adapter_config.json")) {
        let _ = lora_config_of(&cfg, false, 0);
    }
});

//! `adapter_model.safetensors` of a PEFT directory, checked against the tiny run's PEFT config.
#![no_main]

use std::path::Path;

use hearth_model::peft::{adapter_tensors_from_bytes, parse_peft_config};
use libfuzzer_sys::fuzz_target;

const CONFIG: &[u8] =
    br#"{"peft_type":"LORA","task_type":"CAUSAL_LM","base_model_name_or_path":"tiny",
"r":8,"lora_alpha":16.0,"lora_dropout":0.0,"target_modules":["q_proj","v_proj"],"bias":"none"}"#;

fuzz_target!(|data: &[u8]| {
    let config = parse_peft_config(CONFIG, Path::new("adapter_config.json")).expect("fixed config");
    if let Ok(tensors) = adapter_tensors_from_bytes(&config, data, Path::new("<fuzz>")) {
        for t in &tensors {
            assert_eq!(t.shape.len(), 2);
            assert_eq!(Some(t.data.len()), t.shape[0].checked_mul(t.shape[1]));
        }
    }
});

//! `model.safetensors` of a Hugging Face directory: decoded into weights, then checked against the
//! tiny preset's config as `load_hf_dir` does.
#![no_main]

use std::path::Path;

use hearth_model::hf::weights_from_safetensors_bytes;
use hearth_model::{DType, Device, ModelConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(weights) =
        weights_from_safetensors_bytes(data, Path::new("<fuzz>"), &Device::Cpu, DType::F32)
    else {
        return;
    };
    let _ = weights.validate(&ModelConfig::tiny());
});

//! A checkpoint blob as the coordinator (restart) and the worker (fetch) decode it, against the
//! tiny run's full layout and its trainable layout.
#![no_main]

use hearth_fuzz::{check_decoded, tiny_layout, tiny_spec};
use hearth_proto::decode_checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = tiny_spec();
    let full = spec.lora.full_layout(&spec.arch).expect("tiny layout");
    for layout in [full, tiny_layout()] {
        if let Ok(tensors) = decode_checkpoint(data, &layout) {
            check_decoded(&tensors, &layout);
        }
    }
});

//! A training or validation shard blob as the worker and the coordinator decode it.
#![no_main]

use hearth_model::data::Shard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(shard) = Shard::from_bytes(data, 1 << 20) {
        let _ = shard.into_sequences();
    }
});

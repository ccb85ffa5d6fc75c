//! The adapter-delta codec: an `EncodedDelta` decoded against the tiny run's layout. The layout id
//! (a blake3 hash the fuzzer cannot forge) is set to the expected one half the time so the payload
//! checks are reached; every decoded tensor must fit the layout and be finite.
#![no_main]

use hearth_fuzz::{check_decoded, tiny_layout};
use hearth_proto::{decode_bounded, decode_delta, layout_id, EncodedDelta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((flag, rest)) = data.split_first() else {
        return;
    };
    let Ok(mut delta) = decode_bounded::<EncodedDelta>(rest, 64 << 20) else {
        return;
    };
    let layout = tiny_layout();
    if flag & 1 == 0 {
        delta.layout = layout_id(&layout);
    }
    if let Ok(tensors) = decode_delta(&delta, &layout) {
        check_decoded(&tensors, &layout);
    }
});

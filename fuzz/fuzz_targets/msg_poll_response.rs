//! `PollResponse` as a worker receives it: bounded decode, round trip, then the checkpoint id a
//! worker derives from a state answer.
#![no_main]

use hearth_fuzz::wire_round_trip;
use hearth_proto::PollResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(PollResponse::State {
        latest: Some(m), ..
    }) = wire_round_trip::<PollResponse>(data)
    {
        let _ = m.id();
    }
});

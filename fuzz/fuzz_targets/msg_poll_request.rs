//! `PollRequest` from the network: bounded decode and a stable round trip.
#![no_main]

use hearth_fuzz::wire_round_trip;
use hearth_proto::PollRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire_round_trip::<PollRequest>(data);
});

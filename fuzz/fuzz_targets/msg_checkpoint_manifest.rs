//! `CheckpointManifest` from the network: bounded decode and a stable round trip.
#![no_main]

use hearth_fuzz::wire_round_trip;
use hearth_proto::CheckpointManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire_round_trip::<CheckpointManifest>(data);
});

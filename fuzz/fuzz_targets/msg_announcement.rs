//! `Announcement` gossip: bounded decode and a stable round trip.
#![no_main]

use hearth_fuzz::wire_round_trip;
use hearth_proto::Announcement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(Announcement::CheckpointReady(m)) = wire_round_trip::<Announcement>(data) {
        let _ = m.id();
    }
});

//! `JoinResponse` as a worker receives it: bounded decode, round trip, then what the worker does
//! with an accepted answer (validate the run spec and derive the adapter layout).
#![no_main]

use hearth_fuzz::wire_round_trip;
use hearth_proto::JoinResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(JoinResponse::Accepted { spec, latest, .. }) = wire_round_trip::<JoinResponse>(data)
    {
        if spec.validate().is_ok() {
            let _ = spec.adapter_layout();
            let _ = spec.spec_id();
            let _ = spec.to_toml();
        }
        if let Some(m) = latest {
            let _ = m.id();
        }
    }
});

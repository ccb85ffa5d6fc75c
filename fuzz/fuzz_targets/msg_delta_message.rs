//! `DeltaMessage` payloads: bounded decode and round trip, then signed with a fixed key (so the
//! fuzzer gets past the signature) and run through the coordinator's checks 1–4 with its claimed
//! base checkpoint registered, as a worker of the tiny run would submit it.
#![no_main]

use hearth_coordinator::verify::Verifier;
use hearth_fuzz::{check_decoded, sign_delta_payload, tiny_layout, tiny_spec, wire_round_trip};
use hearth_proto::DeltaMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(msg) = wire_round_trip::<DeltaMessage>(data) else {
        return;
    };
    let layout = tiny_layout();
    let mut verifier = Verifier::new(tiny_spec(), layout.clone());
    if let Some(base) = msg.base_checkpoint {
        verifier.checkpoint_committed(msg.base_round, base);
    }
    let envelope = sign_delta_payload(data);
    let Ok((signer, msg, payload_id)) = verifier.check_envelope(&envelope, None, |_| Ok(())) else {
        return;
    };
    if let Ok(v) = verifier.check_content(signer, msg, payload_id, envelope.len()) {
        check_decoded(&v.tensors, &layout);
        assert!(v.tokens > 0);
    }
});

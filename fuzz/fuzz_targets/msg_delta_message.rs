//! `DeltaMessage` payloads: bounded decode and round trip, then signed with a fixed key (so the
//! fuzzer gets past the signature) and run through the coordinator's production ingest
//! (`Ingest::check`: checks 1–5, norm bound, screen) with its claimed base checkpoint registered
//! and a reference set, as a worker of the tiny run would submit it.
#![no_main]

use hearth_coordinator::ingest::Ingest;
use hearth_coordinator::screen::Reference;
use hearth_fuzz::{check_decoded, sign_delta_payload, tiny_layout, tiny_spec, wire_round_trip};
use hearth_proto::DeltaMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(msg) = wire_round_trip::<DeltaMessage>(data) else {
        return;
    };
    let layout = tiny_layout();
    let mut ingest = Ingest::new(tiny_spec(), layout.clone(), 1);
    if let Some(base) = msg.base_checkpoint {
        ingest.checkpoint_committed(msg.base_round, base);
    }
    ingest.round_opened(None);
    let dims: usize = layout.iter().map(|l| l.shape.iter().product::<usize>()).sum();
    if let Some(r) = Reference::from_gradient(msg.base_round.saturating_add(1), &vec![1.0; dims]) {
        ingest.set_reference(r);
    }
    let envelope = sign_delta_payload(data);
    if let Ok(a) = ingest.check(&envelope, None, |_| Ok(())) {
        check_decoded(&a.delta.tensors, &layout);
        assert!(a.delta.tokens > 0);
        assert_eq!(a.flat.len(), dims);
        assert!(a.score.is_some_and(|s| s.z.is_finite()));
    }
});

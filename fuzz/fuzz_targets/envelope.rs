//! Raw bytes of a gossiped or directly submitted delta: the signed envelope and the coordinator's
//! first gate (size, envelope decode, signature, sender, admission, run, staleness, replay).
#![no_main]

use hearth_coordinator::verify::Verifier;
use hearth_fuzz::{tiny_layout, tiny_spec};
use hearth_proto::{Domain, SignedEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = SignedEnvelope::from_bytes(data, 64 << 20) {
        for d in [
            Domain::Delta,
            Domain::Announce,
            Domain::Join,
            Domain::Checkpoint,
        ] {
            let _ = env.verify(d);
        }
        let _ = env.payload_id();
        assert_eq!(
            SignedEnvelope::from_bytes(&env.to_bytes(), 64 << 20).ok(),
            Some(env)
        );
    }
    let verifier = Verifier::new(tiny_spec(), tiny_layout());
    let _ = verifier.check_envelope(data, None, |_| Ok(()));
});

//! Raw bytes of a gossiped or directly submitted delta: the signed envelope and the coordinator's
//! production ingest (`Ingest::check`: rate limit, size, envelope decode, signature, sender,
//! admission, run, staleness, replay, content, norm bound, screen).
#![no_main]

use hearth_coordinator::ingest::Ingest;
use hearth_fuzz::{tiny_layout, tiny_spec};
use hearth_proto::{ContentId, Domain, SignedEnvelope};
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
    let mut ingest = Ingest::new(tiny_spec(), tiny_layout(), 1);
    ingest.checkpoint_committed(0, ContentId::of(b"checkpoint 0"));
    ingest.round_opened(None);
    let _ = ingest.check(data, None, |_| Ok(()));
});

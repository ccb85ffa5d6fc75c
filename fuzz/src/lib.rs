//! Shared properties of the fuzz targets.
//!
//! Every decoder of untrusted bytes must return an error or a value; it must never panic, abort,
//! overflow or allocate past its limit (libFuzzer's `-rss_limit_mb` turns an allocation bomb into
//! a crash). Where a decoder has an encoder, a decoded value must also survive a round trip.

use hearth_proto::{Domain, RunSpec, SignedEnvelope, TensorLayout, Wire};

/// Decodes `data` as `T`; a value must re-encode to bytes that decode and re-encode identically,
/// and the canonical encoding is never longer than the input (so never over `T::MAX_BYTES`).
pub fn wire_round_trip<T: Wire>(data: &[u8]) -> Option<T> {
    let value = T::from_bytes(data).ok()?;
    let bytes = value.to_bytes();
    assert!(
        bytes.len() <= data.len(),
        "canonical encoding ({} bytes) longer than the accepted input ({} bytes)",
        bytes.len(),
        data.len()
    );
    let again = T::from_bytes(&bytes).expect("a re-encoded value decodes");
    assert_eq!(again.to_bytes(), bytes, "encode/decode is not stable");
    Some(value)
}

/// The tiny preset's run spec: the spec the committed corpus (real deltas, checkpoints) was made with.
pub fn tiny_spec() -> RunSpec {
    RunSpec::tiny()
}

/// The tiny preset's trainable adapter layout.
pub fn tiny_layout() -> Vec<TensorLayout> {
    tiny_spec()
        .adapter_layout()
        .expect("the tiny preset has a valid layout")
}

/// A fixed ed25519 key for targets that must get past the signature to reach deeper checks.
pub fn fuzz_keypair() -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).expect("32-byte ed25519 seed")
}

/// Signs `payload` as a delta with [`fuzz_keypair`] and returns the encoded envelope.
pub fn sign_delta_payload(payload: &[u8]) -> Vec<u8> {
    SignedEnvelope::sign(&fuzz_keypair(), Domain::Delta, payload.to_vec())
        .expect("ed25519 signing")
        .to_bytes()
}

/// Checks what a decoded delta message promises its consumer: a decoded tensor list matches the
/// layout exactly and holds only finite values.
pub fn check_decoded(tensors: &[hearth_proto::NamedTensor], layout: &[TensorLayout]) {
    assert_eq!(tensors.len(), layout.len());
    for (t, l) in tensors.iter().zip(layout) {
        assert_eq!(t.name, l.name);
        assert_eq!(t.shape, l.shape);
        assert_eq!(Some(t.data.len()), l.numel());
        assert!(
            t.data.iter().all(|v| v.is_finite()),
            "{} has a non-finite value",
            t.name
        );
    }
}

//! Deterministic fuzzing: random and mutated inputs to every decoder never panic.

mod common;

use common::gaussian_tensors;
use hearth_proto::codec::{decode, encode, CodecSpec, EncodedDelta, Residual};
use hearth_proto::*;
use libp2p_identity::Keypair;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CASES: usize = 10_000;

fn random_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = match rng.random_range(0..4) {
        0 => rng.random_range(0..16),
        1 => rng.random_range(0..128),
        2 => rng.random_range(0..1024),
        _ => rng.random_range(0..8192),
    };
    (0..len).map(|_| rng.random()).collect()
}

/// Flips bits, overwrites bytes with extreme values, truncates, extends or splices.
fn mutate(rng: &mut ChaCha8Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[i] ^= 1 << rng.random_range(0..8),
            1 => b[i] = [0x00, 0xff, 0x7f, 0x80, 0xfb, 0xfc, 0xfd][rng.random_range(0..7)],
            2 => b.truncate(i),
            3 => {
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
            4 => {
                let j = rng.random_range(0..b.len());
                b.swap(i, j);
            }
            _ => b[i] = rng.random(),
        }
    }
    b
}

/// Decodes `bytes` as every message type, opening envelopes and decoding deltas all the way.
fn decode_all(bytes: &[u8], layout: &[TensorLayout]) -> usize {
    let mut ok = 0;
    ok += usize::from(JoinRequest::from_bytes(bytes).is_ok());
    ok += usize::from(JoinResponse::from_bytes(bytes).is_ok());
    ok += usize::from(Announcement::from_bytes(bytes).is_ok());
    ok += usize::from(DeltaRef::from_bytes(bytes).is_ok());
    ok += usize::from(DeltaAck::from_bytes(bytes).is_ok());
    ok += usize::from(CheckpointManifest::from_bytes(bytes).is_ok());
    ok += usize::from(BlobRequest::from_bytes(bytes).is_ok());
    if let Ok(resp) = BlobResponse::from_bytes(bytes) {
        ok += 1;
        let _ = resp.check_answers(&BlobRequest {
            cid: ContentId::default(),
            offset: 0,
            max_len: 64,
        });
    }
    if let Ok(msg) = DeltaMessage::from_bytes(bytes) {
        ok += 1;
        ok += usize::from(decode(&msg.delta, layout).is_ok());
    }
    if let Ok(delta) = decode_bounded::<EncodedDelta>(bytes, 1 << 20) {
        ok += 1;
        ok += usize::from(decode(&delta, layout).is_ok());
    }
    if let Ok(env) = SignedEnvelope::from_bytes(bytes, 1 << 20) {
        ok += 1;
        if let Ok((_, msg)) = env.open::<DeltaMessage>(Domain::Delta, 1 << 20) {
            ok += 1;
            let _ = decode(&msg.delta, layout);
        }
    }
    ok
}

fn layout() -> Vec<TensorLayout> {
    vec![
        TensorLayout::new("a.lora_B.weight", vec![64, 8]),
        TensorLayout::new("b.lora_B.weight", vec![4100]),
    ]
}

fn valid_encodings(layout: &[TensorLayout]) -> Vec<Vec<u8>> {
    let ts = gaussian_tensors(layout, 11, 0.1);
    let kp = Keypair::ed25519_from_bytes([4u8; 32]).unwrap();
    let mut out = Vec::new();
    for codec in [
        CodecSpec::F32,
        CodecSpec::F16,
        CodecSpec::Int8,
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 1,
        },
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 2,
        },
        CodecSpec::TopK {
            density: 0.5,
            bits: 4,
        },
    ] {
        let delta = encode(&codec, &ts, &mut Residual::new()).unwrap();
        let msg = DeltaMessage {
            run_id: "fuzz".into(),
            round: 3,
            base_round: 2,
            base_checkpoint: Some(ContentId::of(b"c")),
            tokens_trained: 4096,
            steps: 10,
            train_loss: 1.5,
            delta: delta.clone(),
        };
        out.push(hearth_proto::encode(&delta));
        out.push(msg.to_bytes());
        out.push(
            SignedEnvelope::seal(&kp, Domain::Delta, &msg)
                .unwrap()
                .to_bytes(),
        );
    }
    let manifest = CheckpointManifest {
        round: 3,
        parent: None,
        adapter: ContentId::of(b"a"),
        adapter_bytes: 10,
        outer_state: Some(ContentId::of(b"o")),
        eval_loss: Some(1.0),
        train_loss: None,
        created_unix_ms: 5,
    };
    out.push(manifest.to_bytes());
    out.push(Announcement::CheckpointReady(manifest.clone()).to_bytes());
    out.push(
        JoinRequest {
            protocol_version: PROTOCOL_VERSION,
            run_id: "fuzz".into(),
            name: "n".into(),
            device: "cpu".into(),
            threads: 2,
            memory_bytes: 1 << 30,
            token: None,
        }
        .to_bytes(),
    );
    out.push(
        JoinResponse::Accepted {
            spec: RunSpec::default(),
            lease: ShardLease {
                shard_indices: vec![1],
            },
            latest: Some(manifest),
            round: RoundInfo {
                round: 3,
                base_checkpoint: None,
                opened_unix_ms: 1,
                deadline_unix_ms: 2,
            },
            last_verdict: None,
        }
        .to_bytes(),
    );
    out.push(
        BlobResponse::Chunk {
            cid: ContentId::default(),
            total_len: 9,
            offset: 0,
            data: vec![1; 9],
        }
        .to_bytes(),
    );
    out.push(
        BlobRequest {
            cid: ContentId::default(),
            offset: 0,
            max_len: 64,
        }
        .to_bytes(),
    );
    out.push(DeltaAck::Rejected { reason: "r".into() }.to_bytes());
    out.push(
        DeltaRef {
            run_id: "r".into(),
            round: 1,
            cid: ContentId::default(),
            size: 1,
        }
        .to_bytes(),
    );
    out
}

#[test]
fn ten_thousand_random_byte_strings_never_panic() {
    let layout = layout();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut decoded = 0;
    for _ in 0..CASES {
        decoded += decode_all(&random_bytes(&mut rng), &layout);
    }
    println!("random inputs: {CASES} byte strings, {decoded} decodes succeeded at some layer");
}

#[test]
fn ten_thousand_mutated_valid_encodings_never_panic_or_verify() {
    let layout = layout();
    let seeds = valid_encodings(&layout);
    for s in &seeds {
        assert!(decode_all(s, &layout) >= 1);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0xfeed);
    let mut decoded = 0;
    let mut forged_envelopes = 0;
    for i in 0..CASES {
        let src = &seeds[i % seeds.len()];
        let m = mutate(&mut rng, src);
        decoded += decode_all(&m, &layout);
        if m != *src {
            if let Ok(env) = SignedEnvelope::from_bytes(&m, 1 << 20) {
                let original = SignedEnvelope::from_bytes(src, 1 << 20).ok();
                if env.verify(Domain::Delta).is_ok() && original.as_ref() != Some(&env) {
                    forged_envelopes += 1;
                }
            }
        }
    }
    println!(
        "mutated inputs: {CASES} mutations of {} seeds, {decoded} decodes succeeded",
        seeds.len()
    );
    assert_eq!(forged_envelopes, 0, "a mutated envelope verified");
}

#[test]
fn mutated_delta_payloads_never_panic_and_decoded_values_stay_finite() {
    let layout = layout();
    let ts = gaussian_tensors(&layout, 12, 0.1);
    let mut rng = ChaCha8Rng::seed_from_u64(0xde17a);
    let mut accepted = 0;
    let codecs = [
        CodecSpec::Int8,
        CodecSpec::F16,
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 2,
        },
        CodecSpec::TopK {
            density: 0.5,
            bits: 8,
        },
    ];
    for i in 0..CASES {
        let codec = codecs[i % codecs.len()];
        let mut delta = encode(&codec, &ts, &mut Residual::new()).unwrap();
        let t = rng.random_range(0..delta.tensors.len());
        // Mutate in place only (length-preserving) so the structure checks pass and the value checks are exercised.
        let payload = &mut delta.tensors[t];
        for _ in 0..rng.random_range(1..4) {
            let j = rng.random_range(0..payload.len());
            payload[j] ^= 1 << rng.random_range(0..8);
        }
        if let Ok(out) = decode(&delta, &layout) {
            accepted += 1;
            assert!(out.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
        }
    }
    println!(
        "length-preserving payload mutations: {accepted} of {CASES} still decode (values finite)"
    );
}

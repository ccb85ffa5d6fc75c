//! Round trips and limits of every wire message.

mod common;

use common::{gaussian_tensors, smollm_layout};
use hearth_proto::codec::{encode as encode_delta, CodecSpec, Residual};
use hearth_proto::*;
use libp2p_identity::Keypair;

fn round_info() -> RoundInfo {
    RoundInfo {
        round: 12,
        base_checkpoint: Some(ContentId::of(b"ckpt 11")),
        opened_unix_ms: 1_780_000_000_000,
        deadline_unix_ms: 1_780_000_600_000,
    }
}

fn manifest() -> CheckpointManifest {
    CheckpointManifest {
        round: 11,
        parent: Some(ContentId::of(b"ckpt 10")),
        adapter: ContentId::of(b"adapter"),
        adapter_bytes: 737_280,
        outer_state: None,
        eval_loss: Some(2.25),
        train_loss: Some(2.5),
        created_unix_ms: 1_780_000_000_000,
    }
}

fn delta_message() -> DeltaMessage {
    let layout = smollm_layout(false);
    let ts = gaussian_tensors(&layout, 9, 1e-3);
    DeltaMessage {
        run_id: "smollm2".into(),
        round: 12,
        base_round: 11,
        base_checkpoint: Some(manifest().id()),
        tokens_trained: 102_400,
        steps: 100,
        train_loss: 2.4,
        // SparseLoCo's sparse codec: the 100× case of DESIGN.md's "under 10 KB".
        delta: encode_delta(
            &CodecSpec::TopK {
                density: 1.0 / 64.0,
                bits: 2,
            },
            &ts,
            &mut Residual::new(),
        )
        .unwrap(),
    }
}

fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(v: &T) -> usize {
    let b = v.to_bytes();
    assert!(b.len() <= T::MAX_BYTES, "{} bytes over the limit", b.len());
    assert_eq!(&T::from_bytes(&b).unwrap(), v);
    // One byte short always fails; one extra byte always fails.
    assert!(T::from_bytes(&b[..b.len() - 1]).is_err());
    let mut longer = b.clone();
    longer.push(0);
    assert!(T::from_bytes(&longer).is_err());
    b.len()
}

#[test]
fn join_messages_round_trip() {
    let req = JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: "smollm2".into(),
        name: "alice's 3060".into(),
        device: "cuda:0".into(),
        threads: 8,
        memory_bytes: 12 << 30,
        token: Some("let me in".into()),
    };
    round_trip(&req);
    let accepted = JoinResponse::Accepted {
        spec: RunSpec::smollm2_135m("m.gguf", Some(ContentId::of(b"m")), 100),
        lease: ShardLease {
            shard_indices: vec![3, 7],
        },
        latest: Some(manifest()),
        round: round_info(),
        last_verdict: Some(DeltaVerdict {
            round: 4,
            text: "aggregated with screen weight 0.83: credit 850 tokens".into(),
        }),
    };
    round_trip(&accepted);
    round_trip(&JoinResponse::Rejected {
        reason: "banned".into(),
    });
}

#[test]
fn poll_messages_round_trip() {
    round_trip(&PollRequest {
        protocol_version: PROTOCOL_VERSION,
    });
    let state = PollResponse::State {
        latest: Some(manifest()),
        round: round_info(),
        last_verdict: Some(DeltaVerdict {
            round: 4,
            text: "x".repeat(DeltaVerdict::MAX_TEXT),
        }),
    };
    round_trip(&state);
    round_trip(&PollResponse::NotJoined);
    round_trip(&PollResponse::Banned {
        reason: "three strikes".into(),
    });
}

#[test]
fn announcements_round_trip() {
    round_trip(&Announcement::RoundOpened(round_info()));
    round_trip(&Announcement::RoundClosed {
        round: 12,
        accepted: 9,
        rejected: 2,
    });
    round_trip(&Announcement::CheckpointReady(manifest()));
}

#[test]
fn delta_message_round_trips_inside_a_signed_envelope_and_fits_inline() {
    let msg = delta_message();
    let size = round_trip(&msg);
    let kp = Keypair::ed25519_from_bytes([9u8; 32]).unwrap();
    let env = SignedEnvelope::seal(&kp, Domain::Delta, &msg).unwrap();
    let wire = env.to_bytes();
    println!(
        "SmolLM2 delta message {size} bytes, signed envelope {} bytes",
        wire.len()
    );
    assert!(
        wire.len() < 10_000,
        "a 100x SmolLM2 rank-8 delta should be under 10 KB, got {}",
        wire.len()
    );
    assert!(wire.len() <= NetSpec::default().inline_delta_limit);
    // Dense 4-bit on the same rank-8 q,v adapter still travels inline.
    let ts = gaussian_tensors(&smollm_layout(false), 9, 1e-3);
    let dense4 = CodecSpec::TopK {
        density: 1.0,
        bits: 4,
    };
    let dense = DeltaMessage {
        delta: encode_delta(&dense4, &ts, &mut Residual::new()).unwrap(),
        ..msg.clone()
    };
    let dense_wire = SignedEnvelope::seal(&kp, Domain::Delta, &dense)
        .unwrap()
        .to_bytes();
    assert!(
        dense_wire.len() <= NetSpec::default().inline_delta_limit,
        "dense 4-bit delta of {} bytes",
        dense_wire.len()
    );
    let back = SignedEnvelope::from_bytes(&wire, NetSpec::default().max_transmit_size).unwrap();
    let (peer, opened): (_, DeltaMessage) =
        back.open(Domain::Delta, DeltaMessage::MAX_BYTES).unwrap();
    assert_eq!(peer, kp.public().to_peer_id());
    assert_eq!(opened, msg);
    assert!(back
        .open::<DeltaMessage>(Domain::Announce, DeltaMessage::MAX_BYTES)
        .is_err());
}

#[test]
fn small_messages_round_trip() {
    round_trip(&DeltaRef {
        run_id: "r".into(),
        round: 1,
        cid: ContentId::of(b"d"),
        size: 1 << 20,
    });
    round_trip(&DeltaAck::Accepted { last_verdict: None });
    round_trip(&DeltaAck::Accepted {
        last_verdict: Some(DeltaVerdict {
            round: 9,
            text: "unpaid".into(),
        }),
    });
    round_trip(&DeltaAck::Rejected {
        reason: "stale: base round 3, current 9".into(),
    });
    round_trip(&manifest());
    round_trip(&BlobRequest {
        cid: ContentId::of(b"b"),
        offset: 1 << 33,
        max_len: 1 << 20,
    });
    round_trip(&BlobResponse::NotFound {
        cid: ContentId::of(b"b"),
    });
    round_trip(&BlobResponse::Chunk {
        cid: ContentId::of(b"b"),
        total_len: 10,
        offset: 4,
        data: vec![1, 2, 3],
    });
}

#[test]
fn checkpoint_id_changes_with_any_field() {
    let m = manifest();
    let mut other = m.clone();
    other.eval_loss = Some(2.26);
    assert_ne!(m.id(), other.id());
    assert_eq!(m.id(), manifest().id());
}

#[test]
fn blob_response_at_the_size_limit_decodes_and_over_it_does_not() {
    let cid = ContentId::of(b"big");
    let full = BlobResponse::Chunk {
        cid,
        total_len: 1 << 30,
        offset: 0,
        data: vec![7; MAX_BLOB_CHUNK as usize],
    };
    let b = full.to_bytes();
    assert!(BlobResponse::from_bytes(&b).is_ok());
    let over = BlobResponse::Chunk {
        cid,
        total_len: 1 << 30,
        offset: 0,
        data: vec![7; MAX_BLOB_CHUNK as usize + 200],
    };
    assert!(matches!(
        BlobResponse::from_bytes(&over.to_bytes()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn blob_response_must_answer_its_request() {
    let cid = ContentId::of(b"blob");
    let req = BlobRequest {
        cid,
        offset: 8,
        max_len: 4,
    };
    let chunk = |c, total_len, offset, n| BlobResponse::Chunk {
        cid: c,
        total_len,
        offset,
        data: vec![0; n],
    };
    chunk(cid, 12, 8, 4).check_answers(&req).unwrap();
    chunk(cid, 10, 8, 2).check_answers(&req).unwrap();
    BlobResponse::NotFound { cid }.check_answers(&req).unwrap();
    assert!(matches!(
        chunk(ContentId::of(b"x"), 12, 8, 4).check_answers(&req),
        Err(BlobError::WrongCid { .. })
    ));
    assert_eq!(
        chunk(cid, 12, 0, 4).check_answers(&req),
        Err(BlobError::WrongOffset { got: 0, want: 8 })
    );
    assert_eq!(
        chunk(cid, 100, 8, 5).check_answers(&req),
        Err(BlobError::TooLong { len: 5, max: 4 })
    );
    assert!(matches!(
        chunk(cid, 10, 8, 4).check_answers(&req),
        Err(BlobError::PastEnd { .. })
    ));
    assert!(matches!(
        chunk(cid, 100, 8, 0).check_answers(&req),
        Err(BlobError::Empty { .. })
    ));
    let end = BlobRequest {
        cid,
        offset: u64::MAX,
        max_len: 4,
    };
    assert!(matches!(
        chunk(cid, u64::MAX, u64::MAX, 1).check_answers(&end),
        Err(BlobError::PastEnd { .. })
    ));
}

#[test]
fn every_signed_delta_of_a_run_fits_its_max_delta_bytes() {
    // The request limit of both sides is sized from `max_delta_bytes`, so a delta too large for a
    // gossip frame can still be submitted directly: it must never be an underestimate.
    let key = Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
    let mut spec = RunSpec::smollm2_135m("m.gguf", None, 0);
    spec.lora.targets = LORA_TARGETS.iter().map(|t| t.to_string()).collect();
    for codec in [
        CodecSpec::F32,
        CodecSpec::Int8,
        CodecSpec::default(),
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 2,
        },
    ] {
        spec.aggregate.codec = codec;
        let layout = spec.adapter_layout().unwrap();
        let ts = gaussian_tensors(&layout, 3, 1e-3);
        let msg = DeltaMessage {
            delta: encode_delta(&codec, &ts, &mut Residual::new()).unwrap(),
            run_id: spec.run_id.clone(),
            ..delta_message()
        };
        let bytes = SignedEnvelope::seal(&key, Domain::Delta, &msg)
            .unwrap()
            .to_bytes();
        let bound = spec.max_delta_bytes().unwrap();
        assert!(bytes.len() <= bound, "{codec:?}: {} > {bound}", bytes.len());
        assert!(
            bound - bytes.len() <= 8192,
            "{codec:?}: bound {bound} is loose for {}",
            bytes.len()
        );
    }
    // All seven projections at f32 exceed the default 1 MiB request limit: the case that stalled.
    spec.aggregate.codec = CodecSpec::F32;
    assert!(spec.max_delta_bytes().unwrap() > 1 << 20);
}

//! Shard binary format: round trips, canonical bytes, content ids, and rejection of garbage.

use hearth_model::data::{DataError, Shard, ShardFormatError};
use hearth_model::Sequence;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MAX: usize = 1 << 20;

fn random_shard(rng: &mut ChaCha8Rng, max_token: u32) -> Shard {
    let seq_len = rng.random_range(2..20);
    let n = rng.random_range(1..6);
    let sequences = (0..n)
        .map(|_| Sequence {
            tokens: (0..seq_len)
                .map(|_| rng.random_range(0..=max_token))
                .collect(),
            loss_mask: (0..seq_len).map(|_| rng.random_bool(0.5)).collect(),
        })
        .collect();
    Shard::new(seq_len, sequences).unwrap()
}

fn format_err(bytes: &[u8]) -> ShardFormatError {
    match Shard::from_bytes(bytes, MAX) {
        Err(DataError::Shard(e)) => e,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn layout_is_exact_for_a_small_shard() {
    let shard = Shard::new(
        3,
        vec![
            Sequence {
                tokens: vec![1, 2, 300],
                loss_mask: vec![false, true, true],
            },
            Sequence {
                tokens: vec![4, 5, 6],
                loss_mask: vec![true, false, true],
            },
        ],
    )
    .unwrap();
    let bytes = shard.to_bytes();
    let mut want = b"HSHD".to_vec();
    want.extend([1, 2, 0, 0]); // version 1, u16 tokens (300 > 255), reserved
    want.extend(3u32.to_le_bytes());
    want.extend(2u32.to_le_bytes());
    for t in [1u16, 2, 300, 4, 5, 6] {
        want.extend(t.to_le_bytes());
    }
    // mask bits 0..6 = 0 1 1 1 0 1 → 0b0010_1110
    want.push(0b0010_1110);
    assert_eq!(bytes, want);
    assert_eq!(Shard::from_bytes(&bytes, MAX).unwrap(), shard);
    assert_eq!(shard.cid(), *blake3::hash(&bytes).as_bytes());
    assert_eq!(shard.cid_hex(), blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(shard.cid_hex().len(), 64);
    assert_eq!(shard.target_count(), 2 + 1);
    assert_eq!(shard.max_token(), 300);
}

#[test]
fn round_trips_at_every_token_width() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (max_token, width) in [(255u32, 1u8), (65_535, 2), (49_151, 2), (u32::MAX, 4)] {
        for _ in 0..50 {
            let shard = random_shard(&mut rng, max_token);
            let bytes = shard.to_bytes();
            let w = bytes[5];
            assert!(w <= width, "width {w} for max token {max_token}");
            let back = Shard::from_bytes(&bytes, bytes.len()).unwrap();
            assert_eq!(back, shard);
            assert_eq!(back.to_bytes(), bytes);
            assert_eq!(back.cid(), shard.cid());
        }
    }
    // 49,152-token vocabulary (SmolLM2): 2 bytes per token plus 1 bit of mask.
    let shard = Shard::new(
        256,
        vec![Sequence {
            tokens: (0..256).map(|i| 49_151 - i).collect(),
            loss_mask: vec![true; 256],
        }],
    )
    .unwrap();
    assert_eq!(shard.to_bytes().len(), 16 + 512 + 32);
}

#[test]
fn new_rejects_inconsistent_sequences() {
    let ok = Sequence {
        tokens: vec![1, 2],
        loss_mask: vec![true, true],
    };
    let short_mask = Sequence {
        tokens: vec![1, 2],
        loss_mask: vec![true],
    };
    let err = Shard::new(2, vec![ok.clone(), short_mask]).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::SequenceLength {
                index: 1,
                tokens: 2,
                mask: 1,
                seq_len: 2
            }
        ),
        "{err}"
    );
    assert!(matches!(
        Shard::new(2, vec![]),
        Err(DataError::Shard(ShardFormatError::Empty))
    ));
    assert!(Shard::new(1, vec![ok]).is_err());
}

#[test]
fn each_malformation_is_named() {
    let shard = Shard::new(
        3,
        vec![Sequence {
            tokens: vec![1, 2, 3],
            loss_mask: vec![true, false, true],
        }],
    )
    .unwrap();
    let good = shard.to_bytes();
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    assert_eq!(
        Shard::from_bytes(&good, 5).unwrap_err().to_string(),
        format!(
            "invalid shard: {} bytes, over the limit of 5 bytes",
            good.len()
        )
    );
    assert_eq!(
        format_err(&good[..10]),
        ShardFormatError::TruncatedHeader {
            len: 10,
            header: 16
        }
    );
    assert_eq!(
        format_err(&with(0, b'X')),
        ShardFormatError::BadMagic { found: *b"XSHD" }
    );
    assert_eq!(
        format_err(&with(4, 2)),
        ShardFormatError::UnsupportedVersion { version: 2 }
    );
    assert_eq!(
        format_err(&with(5, 3)),
        ShardFormatError::BadTokenWidth { width: 3 }
    );
    assert_eq!(
        format_err(&with(6, 1)),
        ShardFormatError::Reserved { found: [1, 0] }
    );
    assert_eq!(
        format_err(&with(8, 1)),
        ShardFormatError::BadSeqLen {
            seq_len: 1,
            max: 1 << 20
        }
    );
    let mut huge = good.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        format_err(&huge),
        ShardFormatError::BadSeqLen { .. }
    ));
    let mut zero = good.clone();
    zero[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(format_err(&zero), ShardFormatError::Empty);
    let mut many = good.clone();
    many[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        format_err(&many),
        ShardFormatError::LengthMismatch { .. }
    ));
    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(
        format_err(&extra),
        ShardFormatError::LengthMismatch {
            len: good.len() + 1,
            expected: good.len() as u64
        }
    );
    // Same tokens stored as u16: decodable in principle, but not canonical.
    let mut wide = good[..16].to_vec();
    wide[5] = 2;
    for t in [1u16, 2, 3] {
        wide.extend(t.to_le_bytes());
    }
    wide.push(*good.last().unwrap());
    assert_eq!(
        format_err(&wide),
        ShardFormatError::NonCanonicalWidth {
            width: 2,
            max_token: 3
        }
    );
    let last = good.len() - 1;
    assert_eq!(
        format_err(&with(last, 0b1000_0101)),
        ShardFormatError::MaskPadding { last: 0b1000_0101 }
    );
}

#[test]
fn ten_thousand_random_and_mutated_inputs_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let seeds: Vec<Vec<u8>> = (0..20)
        .map(|i| random_shard(&mut rng, [200, 60_000, 5_000_000][i % 3]).to_bytes())
        .collect();
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for i in 0..10_000 {
        let bytes: Vec<u8> = match i % 4 {
            // Pure noise, sometimes with a valid magic and version.
            0 => {
                let len = rng.random_range(0..200);
                let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if rng.random_bool(0.5) && b.len() >= 5 {
                    b[..5].copy_from_slice(b"HSHD\x01");
                }
                b
            }
            // Bit flips in a valid shard.
            1 | 2 => {
                let mut b = seeds[rng.random_range(0..seeds.len())].clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                b
            }
            // Truncation or extension of a valid shard.
            _ => {
                let mut b = seeds[rng.random_range(0..seeds.len())].clone();
                let cut = rng.random_range(0..b.len() + 8);
                b.resize(cut, rng.random());
                b
            }
        };
        match Shard::from_bytes(&bytes, 4096) {
            Ok(shard) => {
                accepted += 1;
                // Whatever decodes is canonical: re-encoding gives the same bytes.
                assert_eq!(shard.to_bytes(), bytes, "input {i}");
            }
            Err(_) => rejected += 1,
        }
    }
    println!("fuzz: {accepted} accepted (all canonical), {rejected} rejected");
    assert_eq!(accepted + rejected, 10_000);
    // Mask and token flips decode fine; header damage does not.
    assert!(
        accepted > 1000 && rejected > 5000,
        "{accepted} / {rejected}"
    );
}

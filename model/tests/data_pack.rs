//! Packing: exact layout on a hand-made case, and invariants on random inputs.

use hearth_model::data::{pack, DataError, EncodedExample, PackConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEP: u32 = 2;
const PAD: u32 = 0;

fn ex(tokens: &[u32], mask: &[bool]) -> EncodedExample {
    EncodedExample {
        tokens: tokens.to_vec(),
        loss_mask: mask.to_vec(),
    }
}

#[test]
fn next_fit_layout_with_split_of_a_long_example() {
    let cfg = PackConfig {
        seq_len: 8,
        separator: SEP,
        pad: PAD,
    };
    let a = ex(&[10, 11, 12], &[true; 3]);
    // A chat-like example ending in a non-target token: its separator is not a target.
    let b = ex(&[20, 21, 22, 23], &[false, true, true, false]);
    let c = ex(&[30, 31, 32, 33, 34, 35, 36, 37, 38, 39], &[true; 10]);
    let d = ex(&[40, 41], &[false, true]);
    let (seqs, stats) = pack(&[a, b, c, d], &cfg).unwrap();
    let tokens: Vec<Vec<u32>> = seqs.iter().map(|s| s.tokens.clone()).collect();
    assert_eq!(
        tokens,
        vec![
            vec![10, 11, 12, SEP, PAD, PAD, PAD, PAD],
            vec![20, 21, 22, 23, SEP, PAD, PAD, PAD],
            vec![30, 31, 32, 33, 34, 35, 36, 37],
            vec![38, 39, SEP, 40, 41, SEP, PAD, PAD],
        ]
    );
    let masks: Vec<Vec<bool>> = seqs.iter().map(|s| s.loss_mask.clone()).collect();
    let (t, f) = (true, false);
    assert_eq!(
        masks,
        vec![
            vec![t, t, t, t, f, f, f, f],
            vec![f, t, t, f, f, f, f, f],
            vec![t, t, t, t, t, t, t, t],
            vec![t, t, t, f, t, t, f, f],
        ]
    );
    assert_eq!(stats.sequences, 4);
    assert_eq!(stats.examples, 4);
    assert_eq!(stats.split_examples, 1);
    assert_eq!(stats.tokens, 4 + 5 + 11 + 3);
    // Padding per sequence: 4, 3, 0, 2.
    assert_eq!(stats.padding, 9);
    // Scored positions exclude position 0 of each sequence.
    assert_eq!(stats.targets, 3 + 2 + 7 + 4);
    assert!((stats.fill() - 23.0 / 32.0).abs() < 1e-12);
}

#[test]
fn seq_len_out_of_range_is_an_error() {
    for seq_len in [0, 1, (1 << 20) + 1] {
        let cfg = PackConfig {
            seq_len,
            separator: SEP,
            pad: PAD,
        };
        let err = pack(&[ex(&[1], &[true])], &cfg).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::InvalidParameter {
                    name: "seq_len",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn random_packings_keep_every_token_in_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for round in 0..300 {
        let seq_len = rng.random_range(2..40);
        let n = rng.random_range(0..30);
        let examples: Vec<EncodedExample> = (0..n)
            .map(|_| {
                let len = rng.random_range(1..90);
                let tokens = (0..len).map(|_| rng.random_range(3..1000)).collect();
                let loss_mask = (0..len).map(|_| rng.random_bool(0.5)).collect();
                EncodedExample { tokens, loss_mask }
            })
            .collect();
        let cfg = PackConfig {
            seq_len,
            separator: SEP,
            pad: PAD,
        };
        let (seqs, stats) = pack(&examples, &cfg).unwrap();
        let (again, _) = pack(&examples, &cfg).unwrap();
        assert_eq!(seqs, again, "round {round}: not deterministic");
        assert!(seqs
            .iter()
            .all(|s| s.tokens.len() == seq_len && s.loss_mask.len() == seq_len));
        // Dropping padding (PAD never occurs in the data) gives back examples + separators.
        let mut want = Vec::new();
        for e in &examples {
            want.extend(e.tokens.iter().zip(&e.loss_mask).map(|(t, m)| (*t, *m)));
            want.push((SEP, *e.loss_mask.last().unwrap()));
        }
        let got: Vec<(u32, bool)> = seqs
            .iter()
            .flat_map(|s| s.tokens.iter().copied().zip(s.loss_mask.iter().copied()))
            .filter(|(t, _)| *t != PAD)
            .collect();
        assert_eq!(got, want, "round {round}");
        assert!(seqs
            .iter()
            .flat_map(|s| s.tokens.iter().zip(&s.loss_mask))
            .all(|(t, m)| *t != PAD || !*m));
        assert_eq!(stats.tokens, want.len());
        assert_eq!(stats.tokens + stats.padding, seqs.len() * seq_len);
        let splits = examples
            .iter()
            .filter(|e| e.tokens.len() + 1 > seq_len)
            .count();
        assert_eq!(stats.split_examples, splits);
        // An example that fits (with its separator) never straddles two sequences.
        let owner: Vec<usize> = seqs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.tokens.iter().filter(|t| **t != PAD).map(move |_| i))
            .collect();
        let mut at = 0;
        for e in &examples {
            let len = e.tokens.len() + 1;
            if len <= seq_len {
                assert_eq!(
                    owner[at],
                    owner[at + len - 1],
                    "round {round}: example split"
                );
            }
            at += len;
        }
        // No padding inside a sequence is followed by data.
        for s in &seqs {
            if let Some(first_pad) = s.tokens.iter().position(|t| *t == PAD) {
                assert!(s.tokens[first_pad..].iter().all(|t| *t == PAD));
            }
        }
    }
}

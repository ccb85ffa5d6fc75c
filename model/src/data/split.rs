//! Deterministic held-out split (by example, before packing) and round-robin sharding.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Sequence;

use super::shard::Shard;
use super::DataError;

/// Shuffles `items` with a ChaCha8 stream seeded by `seed`, then takes the first
/// `round(n * fraction)` as held-out (at least one when `fraction > 0`) and the rest, in shuffled
/// order, as training. Returns `(train, holdout)`. Training must keep at least one example.
pub fn holdout_split<T>(
    mut items: Vec<T>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>), DataError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(DataError::InvalidParameter {
            name: "holdout_fraction",
            value: fraction.to_string(),
            reason: "must be in [0, 1)",
        });
    }
    let n = items.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
    let mut k = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && k == 0 {
        k = 1;
    }
    if k >= n {
        return Err(DataError::InvalidParameter {
            name: "holdout_fraction",
            value: fraction.to_string(),
            reason: "leaves no training example",
        });
    }
    let train = items.split_off(k);
    Ok((train, items))
}

/// Deals sequences round-robin into `n_shards` shards (sizes differ by at most one).
pub fn shard_sequences(
    sequences: Vec<Sequence>,
    seq_len: usize,
    n_shards: usize,
) -> Result<Vec<Shard>, DataError> {
    if n_shards == 0 {
        return Err(DataError::InvalidParameter {
            name: "n_shards",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    if sequences.len() < n_shards {
        return Err(DataError::NotEnoughSequences {
            sequences: sequences.len(),
            shards: n_shards,
        });
    }
    let mut buckets: Vec<Vec<Sequence>> = (0..n_shards).map(|_| Vec::new()).collect();
    for (i, seq) in sequences.into_iter().enumerate() {
        if let Some(bucket) = buckets.get_mut(i % n_shards) {
            bucket.push(seq);
        }
    }
    buckets
        .into_iter()
        .map(|seqs| Shard::new(seq_len, seqs))
        .collect()
}

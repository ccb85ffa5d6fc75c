//! Aggregation of accepted adapter deltas: weighted mean and the robust alternatives.

/// How accepted deltas are combined: the run spec's own enum (one type for the wire, run.toml and
/// the engine).
pub use hearth_proto::Aggregator;

use rayon::prelude::*;

/// Staleness weight `1/√(1+τ)` (FedBuff), the run spec's one definition.
pub fn staleness_weight(staleness: u64) -> f32 {
    hearth_proto::AggregateSpec::staleness_weight(u32::try_from(staleness).unwrap_or(u32::MAX))
}

/// Combine `deltas` (all the same length) with non-negative `weights` (same count as deltas).
///
/// Returns `None` when there is nothing to aggregate or the weights sum to zero.
pub fn aggregate(agg: Aggregator, deltas: &[&[f32]], weights: &[f32]) -> Option<Vec<f32>> {
    combine(agg, deltas, weights, false)
}

/// [`aggregate`] for sparse deltas: a coordinate's mean, median, trimmed mean or clipped center
/// is taken over the deltas that sent it (a non-zero value there), and a coordinate no delta
/// sent stays 0. With top-k codecs the workers' index sets differ, so the plain mean would
/// divide a value one worker sent by every worker (SparseLoCo's aggregation, arXiv:2508.15706).
pub fn aggregate_over_senders(
    agg: Aggregator,
    deltas: &[&[f32]],
    weights: &[f32],
) -> Option<Vec<f32>> {
    combine(agg, deltas, weights, true)
}

fn combine(
    agg: Aggregator,
    deltas: &[&[f32]],
    weights: &[f32],
    over_senders: bool,
) -> Option<Vec<f32>> {
    let n = deltas.len();
    if n == 0 || weights.len() != n {
        return None;
    }
    let dim = deltas[0].len();
    if deltas.iter().any(|d| d.len() != dim) {
        return None;
    }
    let total: f32 = weights.iter().map(|w| w.max(0.0)).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    Some(match agg {
        Aggregator::WeightedMean => weighted_mean(deltas, weights, total, over_senders),
        Aggregator::TrimmedMean { trim_fraction } => {
            coordinate_wise(deltas, over_senders, plain, |col| {
                trimmed_mean(col, trim_fraction)
            })
        }
        Aggregator::CoordinateMedian => coordinate_wise(deltas, over_senders, plain, median),
        Aggregator::CenteredClip { tau, iters } => {
            // Start from the weighted coordinate median: with τ far below the deltas' spread the
            // iterations move the center little, so an unweighted start would let deltas the screen
            // weighted down (partial work, `lazy`) pull it as far as full ones (measured: final loss
            // +2 to +4.4 % with 2 of 5 lazy workers, docs/RELIABILITY.md table 7).
            let mut v = if weights.iter().all(|w| *w == weights[0]) {
                coordinate_wise(deltas, over_senders, plain, median)
            } else {
                let share: Vec<f32> = weights.iter().map(|w| w.max(0.0) / total).collect();
                let weighted = |i: usize, x: f32| (x, share[i]);
                coordinate_wise(deltas, over_senders, weighted, weighted_median)
            };
            for _ in 0..iters {
                clip_step(&mut v, deltas, weights, total, tau, over_senders);
            }
            v
        }
    })
}

/// Coordinates a worker thread takes at a time in the passes over coordinates (64 KiB of f32: the
/// block of the output and of one delta stay in cache while every delta is added to it).
const SPAN: usize = 16 * 1024;

/// One iteration of centered clipping: `v += Σ wᵢ·min(1, τ/‖dᵢ − v‖)·(dᵢ − v)` (over the deltas
/// that sent a coordinate, renormalised, for sparse deltas). The distances are taken per delta,
/// the step per block of coordinates, both on rayon's threads; each coordinate adds the deltas in
/// order, so the result does not depend on the thread count.
fn clip_step(
    v: &mut [f32],
    deltas: &[&[f32]],
    weights: &[f32],
    total: f32,
    tau: f32,
    over_senders: bool,
) {
    // Whether value `x` counts for its coordinate.
    let sent = |x: f32| !over_senders || x != 0.0;
    let center: &[f32] = v;
    let factors: Vec<f32> = deltas
        .par_iter()
        .zip(weights)
        .map(|(d, w)| {
            let norm = d
                .iter()
                .zip(center)
                .filter(|(x, _)| sent(**x))
                .map(|(x, c)| (x - c) * (x - c))
                .sum::<f32>()
                .sqrt();
            let scale = if norm > tau && norm > 0.0 {
                tau / norm
            } else {
                1.0
            };
            w.max(0.0) / total * scale
        })
        .collect();
    let shares: Vec<f32> = weights.iter().map(|w| w.max(0.0) / total).collect();
    v.par_chunks_mut(SPAN).enumerate().for_each(|(b, c)| {
        let start = b * SPAN;
        let mut step = vec![0.0f32; c.len()];
        // Weight share of the deltas that sent each coordinate (sparse deltas only).
        let mut share = vec![0.0f32; if over_senders { c.len() } else { 0 }];
        for ((d, f), w) in deltas.iter().zip(&factors).zip(&shares) {
            let d = &d[start..start + c.len()];
            for ((s, x), c) in step.iter_mut().zip(d).zip(c.iter()) {
                if sent(*x) {
                    *s += f * (x - c);
                }
            }
            for (h, x) in share.iter_mut().zip(d) {
                if *x != 0.0 {
                    *h += w;
                }
            }
        }
        if over_senders {
            for ((c, s), h) in c.iter_mut().zip(step).zip(share) {
                if h > 0.0 {
                    *c += s / h;
                }
            }
        } else {
            for (c, s) in c.iter_mut().zip(step) {
                *c += s;
            }
        }
    });
}

fn weighted_mean(deltas: &[&[f32]], weights: &[f32], total: f32, over_senders: bool) -> Vec<f32> {
    let dim = deltas[0].len();
    let mut out = vec![0.0f32; dim];
    let shares: Vec<f32> = weights.iter().map(|w| w.max(0.0) / total).collect();
    out.par_chunks_mut(SPAN).enumerate().for_each(|(b, o)| {
        let start = b * SPAN;
        // Weight share of the deltas that sent each coordinate.
        let mut share = vec![0.0f32; if over_senders { o.len() } else { 0 }];
        for (d, w) in deltas.iter().zip(&shares) {
            let d = &d[start..start + o.len()];
            for (o, x) in o.iter_mut().zip(d) {
                *o += w * x;
            }
            for (h, x) in share.iter_mut().zip(d) {
                if *x != 0.0 {
                    *h += w;
                }
            }
        }
        for (o, h) in o.iter_mut().zip(share) {
            if h > 0.0 {
                *o /= h;
            }
        }
    });
    out
}

/// Coordinates gathered at a time: one block of every delta stays in cache while its columns
/// are reduced (gathering one column at a time across a thousand deltas misses cache on every value).
const BLOCK: usize = 256;

/// One value of a coordinate's column, as [`coordinate_wise`] gathers it.
trait Cell: Copy + Default {
    /// The delta's value at the coordinate.
    fn value(&self) -> f32;
}

impl Cell for f32 {
    fn value(&self) -> f32 {
        *self
    }
}

/// A value with its delta's weight share.
impl Cell for (f32, f32) {
    fn value(&self) -> f32 {
        self.0
    }
}

/// The value alone, for the unweighted reductions.
fn plain(_: usize, x: f32) -> f32 {
    x
}

/// Apply `f` to each coordinate's column of cells (`cell(i, x)` for delta `i`'s value `x`, in
/// delta order; `f` may reorder it); with `over_senders`, to the cells of non-zero values only,
/// and a column with none is 0.
fn coordinate_wise<T: Cell + Send>(
    deltas: &[&[f32]],
    over_senders: bool,
    cell: impl Fn(usize, f32) -> T + Sync,
    f: impl Fn(&mut [T]) -> f32 + Sync,
) -> Vec<f32> {
    let n = deltas.len();
    let dim = deltas[0].len();
    let mut out = vec![0.0f32; dim];
    // Blocks of coordinates on rayon's threads, each with its own column-major buffer: column j
    // of the block is block[j * n..(j + 1) * n].
    out.par_chunks_mut(BLOCK).enumerate().for_each_init(
        || vec![T::default(); BLOCK * n],
        |block, (b, o)| {
            let (start, width) = (b * BLOCK, o.len());
            for (i, d) in deltas.iter().enumerate() {
                for (j, &x) in d[start..start + width].iter().enumerate() {
                    block[j * n + i] = cell(i, x);
                }
            }
            for (o, col) in o.iter_mut().zip(block[..width * n].chunks_exact_mut(n)) {
                *o = if !over_senders {
                    f(col)
                } else {
                    // Move the values that were sent to the front.
                    let mut kept = 0;
                    for i in 0..col.len() {
                        if col[i].value() != 0.0 {
                            col.swap(kept, i);
                            kept += 1;
                        }
                    }
                    if kept == 0 {
                        0.0
                    } else {
                        f(&mut col[..kept])
                    }
                };
            }
        },
    );
    out
}

/// Lower weighted median of `(value, weight)` pairs: the least value at which the weight at or
/// below it reaches half the total; by repeated selection (expected O(n)), 0 for no pairs.
fn weighted_median(col: &mut [(f32, f32)]) -> f32 {
    let mut half = 0.5 * col.iter().map(|p| p.1).sum::<f32>();
    let mut rest = col;
    loop {
        let n = rest.len();
        if n == 0 {
            return 0.0;
        }
        let (left, mid, right) =
            std::mem::take(&mut rest).select_nth_unstable_by(n / 2, |a, b| a.0.total_cmp(&b.0));
        let below: f32 = left.iter().map(|p| p.1).sum();
        if below >= half && !left.is_empty() {
            rest = left;
        } else if below + mid.1 >= half || right.is_empty() {
            return mid.0;
        } else {
            half -= below + mid.1;
            rest = right;
        }
    }
}

/// Median by selection (O(n) per column instead of a sort).
fn median(col: &mut [f32]) -> f32 {
    let n = col.len();
    let (left, mid, _) = col.select_nth_unstable_by(n / 2, f32::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        let below = left.iter().copied().max_by(f32::total_cmp).unwrap_or(mid);
        0.5 * (below + mid)
    }
}

/// Mean after dropping the `trim_fraction` largest and smallest values.
fn trimmed_mean(col: &mut [f32], trim_fraction: f32) -> f32 {
    col.sort_unstable_by(f32::total_cmp);
    let k = ((col.len() as f32) * trim_fraction.clamp(0.0, 0.49)).floor() as usize;
    let kept = &col[k..col.len() - k];
    kept.iter().sum::<f32>() / kept.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deltas longer than a few blocks, some values zero (sent by some deltas only).
    fn long_rows() -> Vec<Vec<f32>> {
        let dim = 2 * SPAN + 37;
        (0..5u32)
            .map(|i| {
                (0..dim as u32)
                    .map(|j| {
                        let h = (i * 7919 + j * 104_729) % 1000;
                        if h % 7 == i {
                            0.0
                        } else {
                            h as f32 / 500.0 - 1.0
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The parallel passes give, coordinate by coordinate, what a plain serial loop gives, on
    /// one thread or several, for deltas spanning several blocks.
    #[test]
    fn blocked_parallel_passes_match_a_serial_loop_on_any_thread_count() {
        let rows = long_rows();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let weights = [1.0f32, 2.0, 0.5, 1.5, 1.0];
        let total: f32 = weights.iter().sum();
        let dim = rows[0].len();
        let col = |j: usize| rows.iter().map(|r| r[j]).collect::<Vec<f32>>();
        // Weighted mean, dense and over senders.
        let mean: Vec<f32> = (0..dim)
            .map(|j| {
                col(j)
                    .iter()
                    .zip(&weights)
                    .fold(0.0, |acc, (x, w)| acc + w / total * x)
            })
            .collect();
        let senders: Vec<f32> = (0..dim)
            .map(|j| {
                let (s, h) =
                    col(j)
                        .iter()
                        .zip(&weights)
                        .fold((0.0f32, 0.0f32), |(s, h), (x, w)| {
                            (
                                s + w / total * x,
                                h + if *x != 0.0 { w / total } else { 0.0 },
                            )
                        });
                if h > 0.0 {
                    s / h
                } else {
                    s
                }
            })
            .collect();
        let median: Vec<f32> = (0..dim)
            .map(|j| {
                let mut c = col(j);
                c.sort_by(f32::total_cmp);
                c[c.len() / 2]
            })
            .collect();
        // Centered clipping from the median, equal weights, one serial loop per iteration.
        let mut clip = median.clone();
        for _ in 0..2 {
            let scales: Vec<f32> = rows
                .iter()
                .map(|r| {
                    let d = r
                        .iter()
                        .zip(&clip)
                        .map(|(x, c)| (x - c) * (x - c))
                        .sum::<f32>()
                        .sqrt();
                    if d > 0.5 {
                        0.5 / d
                    } else {
                        1.0
                    }
                })
                .collect();
            for (j, c) in clip.iter_mut().enumerate() {
                let mut step = 0.0f32;
                for (r, s) in rows.iter().zip(&scales) {
                    step += 0.2 * s * (r[j] - *c);
                }
                *c += step;
            }
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let got = aggregate(Aggregator::WeightedMean, &refs, &weights).unwrap();
                assert_eq!(got, mean, "{threads} threads");
                let got =
                    aggregate_over_senders(Aggregator::WeightedMean, &refs, &weights).unwrap();
                assert_eq!(got, senders, "{threads} threads");
                let got = aggregate(Aggregator::CoordinateMedian, &refs, &[1.0; 5]).unwrap();
                assert_eq!(got, median, "{threads} threads");
                let agg = Aggregator::CenteredClip { tau: 0.5, iters: 2 };
                let got = aggregate(agg, &refs, &[1.0; 5]).unwrap();
                assert_eq!(got, clip, "{threads} threads");
            });
        }
    }

    #[test]
    fn weighted_mean_uses_weights() {
        let a = [1.0, 0.0];
        let b = [3.0, 4.0];
        let m = aggregate(Aggregator::WeightedMean, &[&a, &b], &[1.0, 3.0]).unwrap();
        assert_eq!(m, vec![2.5, 3.0]);
    }

    #[test]
    fn median_and_trimmed_mean_ignore_an_outlier() {
        let rows: Vec<Vec<f32>> = vec![vec![1.0], vec![2.0], vec![3.0], vec![1000.0]];
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let w = [1.0; 4];
        assert_eq!(
            aggregate(Aggregator::CoordinateMedian, &refs, &w).unwrap(),
            vec![2.5]
        );
        let t = aggregate(
            Aggregator::TrimmedMean {
                trim_fraction: 0.25,
            },
            &refs,
            &w,
        )
        .unwrap();
        assert_eq!(t, vec![2.5]);
        let mean = aggregate(Aggregator::WeightedMean, &refs, &w).unwrap();
        assert!(mean[0] > 200.0);
    }

    #[test]
    fn centered_clip_bounds_a_scaled_attacker() {
        let honest = [0.1f32, -0.2, 0.05];
        let attacker: Vec<f32> = honest.iter().map(|x| x * -100.0).collect();
        let rows: Vec<&[f32]> = vec![&honest, &honest, &honest, &honest, &attacker];
        let out = aggregate(
            Aggregator::CenteredClip { tau: 0.1, iters: 3 },
            &rows,
            &[1.0; 5],
        )
        .unwrap();
        let err: f32 = out.iter().zip(&honest).map(|(a, b)| (a - b).abs()).sum();
        assert!(err < 0.07, "centered clipping drifted by {err}");
        let mean = aggregate(Aggregator::WeightedMean, &rows, &[1.0; 5]).unwrap();
        let mean_err: f32 = mean.iter().zip(&honest).map(|(a, b)| (a - b).abs()).sum();
        assert!(mean_err > 5.0);
    }

    /// Deltas the screen weighted down (here two `lazy` ones at a fifth of the weight, a quarter
    /// of the size) do not drag centered clipping's center: it starts from the weighted median.
    #[test]
    fn centered_clip_starts_from_the_weighted_median() {
        let rows: Vec<Vec<f32>> = [1.0f32, 1.2, 0.8, 0.2, 0.25]
            .iter()
            .map(|x| vec![*x, -*x])
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let clip = Aggregator::CenteredClip {
            tau: 0.01,
            iters: 3,
        };
        let weighted = aggregate(clip, &refs, &[1.0, 1.0, 1.0, 0.2, 0.2]).unwrap();
        assert!((weighted[0] - 1.0).abs() < 0.02, "{weighted:?}");
        assert!((weighted[1] + 1.0).abs() < 0.02, "{weighted:?}");
        // Equal weights: the plain median, 0.8, as before.
        let equal = aggregate(clip, &refs, &[1.0; 5]).unwrap();
        assert!((equal[0] - 0.8).abs() < 0.02, "{equal:?}");
    }

    /// The selection-based weighted median equals the least value whose cumulative weight in a
    /// sorted column reaches half, over the senders only for sparse deltas.
    #[test]
    fn weighted_median_matches_sorting() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f32 / (1u64 << 31) as f32
        };
        for n in [1usize, 2, 3, 8, 33] {
            for _ in 0..20 {
                let mut col: Vec<(f32, f32)> = (0..n).map(|_| (next() - 0.5, next())).collect();
                let mut sorted = col.clone();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                let half = 0.5 * sorted.iter().map(|p| p.1).sum::<f32>();
                let mut acc = 0.0;
                let want = sorted
                    .iter()
                    .find(|p| {
                        acc += p.1;
                        acc >= half
                    })
                    .map_or(sorted[n - 1].0, |p| p.0);
                assert_eq!(weighted_median(&mut col), want, "n {n}");
            }
        }
        assert_eq!(weighted_median(&mut []), 0.0);
        // Sparse: coordinate 1 is sent by the light delta only, coordinate 0 by both.
        let a = [1.0f32, 0.0];
        let b = [3.0f32, 5.0];
        let w = [0.75f32, 0.25];
        let out = coordinate_wise(&[&a, &b], true, |i, x| (x, w[i]), weighted_median);
        assert_eq!(out, vec![1.0, 5.0]);
    }

    /// The blocked, selection-based median equals a sorted column's median, for odd and even
    /// counts and dimensions that do not fill the last block.
    #[test]
    fn blocked_median_matches_sorting_each_column() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        for (n, dim) in [(1, 3), (4, BLOCK + 5), (7, 2 * BLOCK + 1), (10, 300)] {
            let rows: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect();
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let got = aggregate(Aggregator::CoordinateMedian, &refs, &vec![1.0; n]).unwrap();
            let trimmed = aggregate(
                Aggregator::TrimmedMean { trim_fraction: 0.2 },
                &refs,
                &vec![1.0; n],
            )
            .unwrap();
            assert_eq!(got.len(), dim);
            for j in 0..dim {
                let mut col: Vec<f32> = rows.iter().map(|r| r[j]).collect();
                col.sort_by(f32::total_cmp);
                let want = if n % 2 == 1 {
                    col[n / 2]
                } else {
                    0.5 * (col[n / 2 - 1] + col[n / 2])
                };
                assert_eq!(got[j], want, "n {n} coordinate {j}");
                let k = ((n as f32) * 0.2).floor() as usize;
                let kept = &col[k..n - k];
                let mean = kept.iter().sum::<f32>() / kept.len() as f32;
                assert_eq!(trimmed[j], mean, "trimmed n {n} coordinate {j}");
            }
        }
    }

    #[test]
    fn sparse_aggregation_takes_the_mean_over_senders() {
        // Two top-k deltas with different index sets: coordinate 0 sent by both, 1 only by
        // the first, 2 only by the second, 3 by neither.
        let a = [2.0f32, 4.0, 0.0, 0.0];
        let b = [4.0f32, 0.0, -6.0, 0.0];
        let w = [1.0f32, 1.0];
        let over = aggregate_over_senders(Aggregator::WeightedMean, &[&a, &b], &w).unwrap();
        assert_eq!(over, vec![3.0, 4.0, -6.0, 0.0]);
        // The plain mean halves what only one worker sent.
        let plain = aggregate(Aggregator::WeightedMean, &[&a, &b], &w).unwrap();
        assert_eq!(plain, vec![3.0, 2.0, -3.0, 0.0]);
        // Weights count among the senders only.
        let over =
            aggregate_over_senders(Aggregator::WeightedMean, &[&a, &b], &[3.0, 1.0]).unwrap();
        assert_eq!(over, vec![2.5, 4.0, -6.0, 0.0]);
        // The robust aggregators too: a median over the senders, not over zeros.
        let c = [3.0f32, 0.0, 0.0, 5.0];
        let rows: [&[f32]; 3] = [&a, &b, &c];
        let med = aggregate_over_senders(Aggregator::CoordinateMedian, &rows, &[1.0; 3]).unwrap();
        assert_eq!(med, vec![3.0, 4.0, -6.0, 5.0]);
        let clip = Aggregator::CenteredClip {
            tau: 100.0,
            iters: 3,
        };
        let cc = aggregate_over_senders(clip, &rows, &[1.0; 3]).unwrap();
        for (x, want) in cc.iter().zip([3.0f32, 4.0, -6.0, 5.0]) {
            assert!((x - want).abs() < 1e-5, "{cc:?}");
        }
        // Dense deltas: the same as the plain aggregate.
        let d1 = [1.0f32, -2.0, 3.0];
        let d2 = [3.0f32, 2.0, 1.0];
        for agg in [Aggregator::WeightedMean, clip, Aggregator::CoordinateMedian] {
            assert_eq!(
                aggregate_over_senders(agg, &[&d1, &d2], &[1.0, 2.0]),
                aggregate(agg, &[&d1, &d2], &[1.0, 2.0])
            );
        }
    }

    #[test]
    fn staleness_weights() {
        assert_eq!(staleness_weight(0), 1.0);
        assert!((staleness_weight(3) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn empty_or_zero_weight_is_none() {
        assert!(aggregate(Aggregator::WeightedMean, &[], &[]).is_none());
        assert!(aggregate(Aggregator::WeightedMean, &[&[1.0]], &[0.0]).is_none());
    }
}

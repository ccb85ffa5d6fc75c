//! The statistical screen: every delta that passed checks 1–5 is scored against one reference
//! direction per round, copies are caught by their sketches, work is weighed against the round's
//! median, and evidence against a peer accumulates across rounds before it can be banned.
//! Pure: no I/O, no clock. docs/RELIABILITY.md explains the null distribution and thresholds.
//!
//! - Alignment (FLTrust, Cao et al. 2021, with its server update replaced by the gradient of the
//!   coordinator's own reference batch): `z = cos(Δ, −g)·√d`. A delta that carries no information
//!   about the task (noise, or anything independent of `g`) has `cos ≈ N(0, 1/d)`, so `z ≈ N(0, 1)`;
//!   it passes `z ≥ Z_PASS` with probability 1e-3.
//! - Weight: `min(1, z/Z_FULL) · min(1, progress/median)^WORK_POWER`, where progress is the delta's
//!   step along `−g` per claimed token. A scaled-down copy (free-rider) or a delta of a fraction of
//!   the claimed steps (lazy) gets at most the share of the work it shows: progress is concave in
//!   steps (the first quarter of a round's steps moves about 26 % of the way, measured), so the
//!   ratio is raised to `WORK_POWER` > 1. Below `WORK_FLOOR` of the median size it is turned down.
//! - Copies: a delta whose cosine with an earlier delta of the open round, or with the last
//!   checkpoint's change, is at least `COPY_COSINE` is a copy (Templar flags ≥ 0.4 top-k index
//!   overlap; cosine works for every codec). Cosines are estimated from 1,024-bucket count sketches
//!   (Charikar et al. 2002): a comparison costs 1,024 multiplies whatever the adapter's size (each
//!   delta is compared with every earlier one of the round: 0.5 M comparisons for 1,000 deltas).
//! - Evidence: a CUSUM of the log-likelihood ratio (Page 1954; Wald's SPRT restarted at 0) between
//!   "honest: fails at most `FAIL_HONEST` of the time" and "adversarial: fails `FAIL_BAD` of the
//!   time". A ban needs `BAN_EVIDENCE` = ln 10⁶: an honest peer within its assumed failure rate
//!   crosses it with probability ≤ 10⁻⁶ per excursion. Each pass takes 6.9 off; each failure adds 3.0,
//!   so five failures in a row ban and one bad round costs only that delta.

use std::collections::VecDeque;

use libp2p_identity::PeerId;

/// One-sided z of p = 10⁻³ under the null: the least alignment a delta needs to pass.
pub const Z_PASS: f64 = 3.09;
/// Alignment at which a delta gets its full weight (twice the pass mark).
pub const Z_FULL: f64 = 6.18;
/// Cosine at or above which a delta is a copy of an earlier one or of the last checkpoint's change.
pub const COPY_COSINE: f64 = 0.97;
/// Share of the round's median size per token below which a delta is turned down as a free ride.
pub const WORK_FLOOR: f64 = 0.1;
/// Power on a delta's progress ratio: steps early in a round move further than later ones, so a
/// linear weight would pay partial work (`lazy`) slightly more than its share (measured 25.5–26.5 %
/// of the weight for 25 % of the steps); 0.26^1.25 = 0.19. An honest delta at 0.8 of the median
/// keeps 0.76.
pub const WORK_POWER: f64 = 1.25;
/// Assumed worst failure rate of an honest peer (measured: 0, docs/RELIABILITY.md).
pub const FAIL_HONEST: f64 = 0.05;
/// Failure rate of an adversary under the alternative hypothesis.
pub const FAIL_BAD: f64 = 0.999;
/// Evidence (natural log of the likelihood ratio) at which a peer is banned: ln 10⁶.
pub const BAN_EVIDENCE: f64 = 13.815_510_557_964_274;
/// Buckets of a count sketch.
pub const SKETCH_BUCKETS: usize = 1024;
/// Recent passing deltas whose progress forms the median when a round has fewer than three.
const PROGRESS_WINDOW: usize = 32;
/// Deltas in a peer's record (Stouffer's combined z).
pub const RECORD_WINDOW: usize = 8;
/// Earlier deltas a peer needs before a weak delta of it counts as a failure, not inconclusive.
pub const RECORD_MIN: usize = 4;

/// The round's reference: the unit descent direction `−g/‖g‖` of the coordinator's batch.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Round it was computed for.
    pub round: u64,
    unit: Vec<f32>,
}

impl Reference {
    /// From the gradient `g` of the loss (not its negation); `None` when it is zero or not finite.
    pub fn from_gradient(round: u64, g: &[f32]) -> Option<Self> {
        let norm = norm(g);
        (norm.is_finite() && norm > 0.0).then(|| Self {
            round,
            unit: g.iter().map(|x| (-f64::from(*x) / norm) as f32).collect(),
        })
    }

    /// Dimension.
    pub fn len(&self) -> usize {
        self.unit.len()
    }

    /// Whether it has no coordinates.
    pub fn is_empty(&self) -> bool {
        self.unit.is_empty()
    }
}

/// A delta's alignment and progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Cosine with the descent direction.
    pub cosine: f64,
    /// `cosine · √d`: N(0, 1) for a delta that carries no information about the task.
    pub z: f64,
    /// Step along the descent direction per claimed token.
    pub progress: f64,
    /// Length of the delta per claimed token.
    pub size: f64,
    /// The peer's record: Stouffer's `Σz/√n` over its last deltas, this one included.
    pub record: f64,
    /// How many earlier deltas of the peer the record holds.
    pub earlier: usize,
    /// Highest sketched cosine with an earlier delta of the open round (0 when it is the first).
    pub nearest: f64,
}

/// What the screen found in one delta.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Aligned with the task, no copy.
    Pass(Score),
    /// Not aligned: significantly against the task (`z ≤ −Z_PASS`), or not aligned with no
    /// record that makes up for it (`RECORD_MIN` or more earlier deltas).
    Misaligned(Score),
    /// A copy of the last checkpoint's change.
    CopiesCheckpoint {
        /// Estimated cosine.
        cosine: f64,
    },
    /// A copy of an earlier delta of the open round.
    CopiesPeer {
        /// Whose delta it copies.
        peer: PeerId,
        /// Estimated cosine.
        cosine: f64,
    },
    /// Less than `WORK_FLOOR` of the round's median size per claimed token.
    FreeRide {
        /// Its size per claimed token as a fraction of the median.
        share: f64,
    },
}

impl Finding {
    /// Whether the delta failed the screen.
    pub fn failed(&self) -> bool {
        !matches!(self, Finding::Pass(_))
    }

    /// One line for the volunteer's log: the score and the threshold.
    pub fn explain(&self) -> String {
        match self {
            Finding::Pass(s) => format!("alignment z {:.1} (pass ≥ {Z_PASS})", s.z),
            Finding::Misaligned(s) if s.z <= -Z_PASS => format!(
                "alignment with the round's reference gradient z = {:.2} (cosine {:.2e}), against \
                 the task (p < 10⁻³ for a random direction), and the sender's record over its last \
                 deltas z = {:.2}, below {Z_PASS}",
                s.z, s.cosine, s.record
            ),
            Finding::Misaligned(s) => format!(
                "the sender's record over its last {} deltas is z = {:.2}, below {Z_PASS} \
                 (this one: z = {:.2}, cosine {:.2e}): indistinguishable from a random direction \
                 (p > 10⁻³)",
                s.earlier + 1,
                s.record,
                s.z,
                s.cosine
            ),
            Finding::CopiesCheckpoint { cosine } => format!(
                "cosine {cosine:.3} with the last checkpoint's change (copy at ≥ {COPY_COSINE})"
            ),
            Finding::CopiesPeer { peer, cosine } => format!(
                "cosine {cosine:.3} with the delta {peer} sent earlier this round (copy at ≥ {COPY_COSINE})"
            ),
            Finding::FreeRide { share } => format!(
                "its size per claimed token is {:.1} % of the round's median (at least {:.0} % needed): \
                 far less work than it claims",
                share * 100.0,
                WORK_FLOOR * 100.0
            ),
        }
    }
}

/// A seeded count sketch: coordinate i goes to bucket h(i) with sign s(i).
#[derive(Debug, Clone)]
struct Sketcher {
    /// Bucket (low 10 bits) and sign (bit 15) per coordinate.
    slots: Vec<u16>,
}

impl Sketcher {
    fn new(dims: usize, seed: u64) -> Self {
        let mut s = seed;
        let slots = (0..dims)
            .map(|_| {
                // splitmix64
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                ((z as usize % SKETCH_BUCKETS) as u16) | (((z >> 63) as u16) << 15)
            })
            .collect();
        Self { slots }
    }

    /// The unit-normalised sketch of `v` (zero when `v` is zero).
    fn sketch(&self, v: &[f32]) -> Vec<f32> {
        // Branch-free: the sign flips the value's sign bit, and the 10-bit bucket indexes a
        // 1,024-slot array without a bounds check (a zero adds ±0, which changes no sum).
        let mut out = [0f32; SKETCH_BUCKETS];
        for (x, slot) in v.iter().zip(&self.slots) {
            let signed = f32::from_bits(x.to_bits() ^ (u32::from(slot >> 15) << 31));
            out[usize::from(slot & 0x3FF)] += signed;
        }
        let n = norm(&out);
        let scale = if n > 0.0 { 1.0 / n } else { 0.0 };
        out.iter().map(|x| (f64::from(*x) * scale) as f32).collect()
    }
}

/// The screen's state for one run: the round's reference, recent sketches and progress.
#[derive(Debug, Clone)]
pub struct Screen {
    dims: usize,
    sketcher: Sketcher,
    reference: Option<Reference>,
    /// Sketch of the last checkpoint's change.
    last_change: Option<Vec<f32>>,
    /// Sketches of the deltas that passed in the open round.
    round: Vec<(PeerId, Vec<f32>)>,
    /// Progress of recent passing deltas.
    progress: VecDeque<f64>,
    /// Alignment of recent deltas (the signal of rounds with fewer than three).
    signal: VecDeque<f64>,
    /// Size per claimed token of recent deltas (the median of rounds with fewer than three).
    sizes: VecDeque<f64>,
    /// Each peer's last alignment scores.
    records: std::collections::HashMap<PeerId, VecDeque<f64>>,
}

impl Screen {
    /// A screen for adapters of `dims` values; `seed` keeps the sketch private to this coordinator.
    pub fn new(dims: usize, seed: u64) -> Self {
        Self {
            dims,
            sketcher: Sketcher::new(dims, seed),
            reference: None,
            last_change: None,
            round: Vec::new(),
            progress: VecDeque::new(),
            signal: VecDeque::new(),
            sizes: VecDeque::new(),
            records: std::collections::HashMap::new(),
        }
    }

    /// The reference for the open round, if computed.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }

    /// Set the round's reference (ignored unless it has the adapter's dimension).
    pub fn set_reference(&mut self, r: Reference) {
        if r.len() == self.dims {
            self.reference = Some(r);
        }
    }

    /// A checkpoint was committed with this change of the adapter; a new round opens and needs
    /// its own reference.
    pub fn round_opened(&mut self, change: Option<&[f32]>) {
        self.round.clear();
        self.reference = None;
        if let Some(c) = change.filter(|c| c.len() == self.dims && norm(c) > 0.0) {
            self.last_change = Some(self.sketcher.sketch(c));
        }
    }

    /// The round carried over: its deltas stay pending and keep their sketches.
    pub fn forget(&mut self, peer: &PeerId) {
        self.round.retain(|(p, _)| p != peer);
    }

    /// Score a delta (flattened in layout order) that claims `tokens` of training. `None` when
    /// there is no reference yet or the dimension is wrong.
    pub fn score(&self, delta: &[f32], tokens: u64) -> Option<Score> {
        let r = self.reference.as_ref()?;
        if delta.len() != r.unit.len() {
            return None;
        }
        let (dot, n) = dot_and_norm(delta, &r.unit);
        let cosine = if n > 0.0 { dot / n } else { 0.0 };
        let z = cosine * (r.unit.len() as f64).sqrt();
        Some(Score {
            cosine,
            z,
            progress: dot / tokens.max(1) as f64,
            size: n / tokens.max(1) as f64,
            record: z,
            earlier: 0,
            nearest: 0.0,
        })
    }

    /// Screen one delta of `peer` on arrival: score it, add it to the peer's record, and check
    /// it for a copy. The alignment verdict waits for the round's close ([`Screen::judge`]), where
    /// the round's own scores show whether the reference carried a signal.
    pub fn check(&mut self, peer: PeerId, delta: &[f32], tokens: u64) -> Option<Finding> {
        let mut score = self.score(delta, tokens)?;
        let sketch = self.sketcher.sketch(delta);
        if let Some(c) = &self.last_change {
            let cosine = sketch_dot(&sketch, c);
            if cosine >= COPY_COSINE {
                return Some(Finding::CopiesCheckpoint { cosine });
            }
        }
        let copied = self
            .round
            .iter()
            .map(|(p, s)| (*p, sketch_dot(&sketch, s)))
            .filter(|(p, _)| *p != peer)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((original, cosine)) = copied {
            if cosine >= COPY_COSINE {
                return Some(Finding::CopiesPeer {
                    peer: original,
                    cosine,
                });
            }
            score.nearest = cosine;
        }
        self.round.push((peer, sketch));
        Some(Finding::Pass(score))
    }

    /// The round's verdicts for its scored deltas, in order. When the round's median alignment
    /// (of recent deltas, if it has fewer than three) is below `Z_PASS`, its reference carried no
    /// signal (a batch that happened to point elsewhere, or converged training, where honest
    /// deltas are mostly noise too): the screen abstains, every delta keeps weight 1 and no record
    /// changes. Otherwise each score joins its peer's record (Stouffer's `Σz/√n` over its last
    /// `RECORD_WINDOW` judged deltas), and:
    /// - a record below `Z_PASS` fails the delta when it is against the task (`z ≤ −Z_PASS`) or
    ///   the record holds `RECORD_MIN` earlier deltas; a newer peer's delta is held back;
    /// - with a record at or above `Z_PASS`, the delta gets the weight
    ///   `min(1, max(0, z)/Z_FULL) · min(1, progress/median)^WORK_POWER` (0 for one that points the wrong way:
    ///   no harm done, no failure: one delta of an honest worker can, late in training), and a
    ///   delta smaller than `WORK_FLOOR` of the round's median size per claimed token (a scaled-down
    ///   copy) is unpaid as a free ride. Size, not progress: late in training an honest delta of
    ///   normal size can make little progress along a reference that is mostly noise. The median
    ///   size is the recent window's, this round included (the round's largest delta in the first
    ///   judged round), never the round's alone: a round that closes on a majority of small
    ///   deltas would otherwise pay them.
    pub fn judge(&mut self, scored: &[(PeerId, Score)]) -> Judgement {
        let zs: Vec<f64> = scored.iter().map(|(_, s)| s.z).collect();
        let signal = if zs.len() >= 3 {
            median(zs.clone())
        } else {
            median(
                self.signal
                    .iter()
                    .copied()
                    .chain(zs.iter().copied())
                    .collect(),
            )
        };
        for z in &zs {
            self.signal.push_back(*z);
        }
        while self.signal.len() > PROGRESS_WINDOW {
            self.signal.pop_front();
        }
        let strong = signal.is_some_and(|m| m >= Z_PASS);
        if !strong {
            return Judgement {
                signal,
                strong,
                verdicts: vec![Verdict::Weight(1.0); scored.len()],
            };
        }
        let scores: Vec<Score> = scored
            .iter()
            .map(|(peer, s)| {
                let history = self.records.entry(*peer).or_default();
                let mut s = *s;
                s.earlier = history.len();
                history.push_back(s.z);
                while history.len() > RECORD_WINDOW {
                    history.pop_front();
                }
                s.record = history.iter().sum::<f64>() / (history.len() as f64).sqrt();
                s
            })
            .collect();
        let own_sizes: Vec<f64> = scores.iter().map(|s| s.size).collect();
        // The size a delta is measured against: the median over the recent window, this round
        // included, so that a round which closes on a majority of scaled-down copies cannot make
        // them the norm; but never more than the round's largest delta (honest deltas of one round
        // are of a similar size), so that a round in which every delta shrank together, as they do
        // when training converges, is paid (SmolLM2, 30 rounds: all three honest deltas of rounds
        // 16-19 were 3-7 % of the window's median at a held-out loss of 0.0005 and went unpaid).
        // In the run's first judged round, which has no window yet, the round's largest delta.
        let round_max = own_sizes
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .max_by(f64::total_cmp);
        let size_median = if self.sizes.is_empty() {
            round_max
        } else {
            median(
                self.sizes
                    .iter()
                    .copied()
                    .chain(own_sizes.iter().copied())
                    .collect(),
            )
            .map(|m| round_max.map_or(m, |r| m.min(r)))
        };
        for x in own_sizes {
            self.sizes.push_back(x);
        }
        while self.sizes.len() > PROGRESS_WINDOW {
            self.sizes.pop_front();
        }
        let aligned: Vec<f64> = scores
            .iter()
            .filter(|s| s.record >= Z_PASS && s.z >= Z_PASS)
            .map(|s| s.progress)
            .collect();
        let work_median = if aligned.len() >= 3 {
            median(aligned.clone())
        } else {
            median(
                self.progress
                    .iter()
                    .copied()
                    .chain(aligned.iter().copied())
                    .collect(),
            )
        };
        let verdicts = scores
            .iter()
            .map(|s| {
                if s.record < Z_PASS {
                    return if s.z <= -Z_PASS || s.earlier >= RECORD_MIN {
                        Verdict::Fail(Finding::Misaligned(*s))
                    } else {
                        Verdict::HeldBack(*s)
                    };
                }
                let align = (s.z / Z_FULL).clamp(0.0, 1.0);
                let work = match work_median {
                    Some(m) if m > 0.0 => (s.progress / m).clamp(0.0, 1.0).powf(WORK_POWER),
                    _ => 1.0,
                };
                let size = match size_median {
                    Some(m) if m > 0.0 => s.size / m,
                    _ => 1.0,
                };
                if size < WORK_FLOOR {
                    Verdict::Unpaid { share: size }
                } else {
                    Verdict::Weight(align * work)
                }
            })
            .collect();
        for p in aligned {
            self.progress.push_back(p);
        }
        while self.progress.len() > PROGRESS_WINDOW {
            self.progress.pop_front();
        }
        Judgement {
            signal,
            strong,
            verdicts,
        }
    }
}

/// What the screen decides for one delta when its round closes.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Aggregated with this factor on its weight and credit.
    Weight(f64),
    /// Not significant on its own and no record yet: weight 0, no credit, no evidence.
    HeldBack(Score),
    /// Far less work than it claims (under `WORK_FLOOR` of the round's median size per token):
    /// weight 0 and no credit, but no evidence either, since an honest worker whose shard has
    /// converged can send such a delta too (one did at 6 % in a 30-round SmolLM2 run).
    Unpaid {
        /// Its size per claimed token as a share of the round's median.
        share: f64,
    },
    /// Turned down, with the finding (evidence against its sender).
    Fail(Finding),
}

/// A closing round's verdicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The median alignment the decision was based on.
    pub signal: Option<f64>,
    /// Whether the reference carried a signal (otherwise the screen abstained).
    pub strong: bool,
    /// One per scored delta, in order.
    pub verdicts: Vec<Verdict>,
}

/// The CUSUM evidence after one more screened delta (`failed` or passed), starting from `prev`.
pub fn update_evidence(prev: f64, failed: bool) -> f64 {
    let step = if failed {
        (FAIL_BAD / FAIL_HONEST).ln()
    } else {
        ((1.0 - FAIL_BAD) / (1.0 - FAIL_HONEST)).ln()
    };
    (prev.max(0.0) + step).max(0.0)
}

fn norm(v: &[f32]) -> f64 {
    dot_and_norm(v, v).1
}

/// `(a · b, ‖a‖)` in one pass over `a`, in f64 over four partial sums each.
fn dot_and_norm(a: &[f32], b: &[f32]) -> (f64, f64) {
    const LANES: usize = 4;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut ab, mut aa) = ([0f64; LANES], [0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (mut tail_ab, mut tail_aa) = (0.0, 0.0);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail_ab += f64::from(*x) * f64::from(*y);
        tail_aa += f64::from(*x) * f64::from(*x);
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            let p = f64::from(x[i]);
            ab[i] += p * f64::from(y[i]);
            aa[i] += p * p;
        }
    }
    (
        ab.iter().sum::<f64>() + tail_ab,
        (aa.iter().sum::<f64>() + tail_aa).sqrt(),
    )
}

/// Cosine of two unit sketches, in f32 over sixteen partial sums: 1,024 terms of magnitude at
/// most 1 lose no more than ~1e-5, far below the copy mark, and a round's copy check compares
/// each delta with every earlier one.
fn sketch_dot(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    f64::from(acc.iter().sum::<f32>() + tail)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Deterministic N(0, 1) values for the tests of the screen and of ingest.
#[cfg(test)]
pub(crate) fn test_gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests;

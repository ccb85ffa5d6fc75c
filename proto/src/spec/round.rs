//! How a run trains and closes its rounds: data, inner training, aggregation and the outer step,
//! verification, admission and the network settings every peer shares.

use serde::{Deserialize, Serialize};

use crate::cid::ContentId;
use crate::codec::CodecSpec;
use crate::tagged::tagged_enum;

/// One content-addressed shard of packed training sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// blake3 of the shard file.
    pub cid: ContentId,
    /// Packed sequences in the shard.
    pub sequences: u64,
    /// Tokens in the shard.
    pub tokens: u64,
}

/// The training data of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetManifest {
    /// Tokens per packed sequence.
    pub seq_len: usize,
    /// Shards, leased to workers by index.
    pub shards: Vec<ShardInfo>,
}

impl Default for DatasetManifest {
    fn default() -> Self {
        Self {
            seq_len: 128,
            shards: Vec::new(),
        }
    }
}

/// Worker-side (inner) training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// AdamW steps per round (H).
    pub local_steps: u32,
    /// A round's training also stops after this many seconds, so slow devices still contribute.
    pub time_budget_secs: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps.
    pub warmup_steps: u32,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f32,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            local_steps: 50,
            time_budget_secs: 600,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-3,
            warmup_steps: 10,
            weight_decay: 0.0,
            grad_clip: 1.0,
        }
    }
}

tagged_enum! {
    /// How accepted deltas are combined.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Aggregator {
        /// Mean weighted by tokens × staleness weight.
        WeightedMean,
        /// Per-coordinate mean after dropping `trim_fraction` of values at each end.
        TrimmedMean {
            /// Fraction dropped at each end, in [0, 0.5).
            trim_fraction: f32
        },
        /// Per-coordinate median.
        CoordinateMedian,
        /// Centered clipping (Karimireddy et al. 2012.10333).
        CenteredClip {
            /// Clipping radius: the L2 norm (in the adapter's own units) above which a delta's
            /// difference from the current center is scaled down to it.
            tau: f32,
            /// Clipping iterations.
            iters: u32
        },
    }
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::CenteredClip { tau: 1.0, iters: 3 }
    }
}

tagged_enum! {
    /// How the coordinator applies the aggregated delta to the checkpoint.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum OuterOptimizer {
        /// Nesterov momentum SGD on the averaged delta (DiLoCo).
        Nesterov {
            /// Outer learning rate.
            lr: f32,
            /// Momentum.
            momentum: f32
        },
        /// `checkpoint += lr · mean delta`.
        Average {
            /// Outer learning rate.
            lr: f32
        },
    }
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        OuterOptimizer::Nesterov {
            lr: 0.7,
            momentum: 0.9,
        }
    }
}

/// Round closing, aggregation and compression settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSpec {
    /// Robust aggregator.
    pub aggregator: Aggregator,
    /// Outer optimizer.
    pub outer: OuterOptimizer,
    /// Close the round (after `grace_secs`) once this many deltas are accepted.
    pub target_deltas: u32,
    /// Fewest deltas worth aggregating at the deadline.
    pub min_deltas: u32,
    /// Wait after `target_deltas` for late arrivals.
    pub grace_secs: u64,
    /// Hard round deadline.
    pub deadline_secs: u64,
    /// Accept deltas built on checkpoints up to this many rounds old.
    pub max_staleness: u32,
    /// Delta codec every worker uses.
    pub codec: CodecSpec,
    /// Workers train from the checkpoint plus their own unsent error-feedback residual, so local
    /// training does not re-learn what is still waiting to be sent (off: train from the checkpoint).
    pub local_error_feedback: bool,
    /// With a sparse codec (top-k below density 1), each coordinate is averaged over the deltas
    /// that sent it, not over all of them (SparseLoCo, arXiv:2508.15706): a value one worker
    /// sent is not divided by the workers that did not. Dense codecs are unaffected.
    pub mean_over_senders: bool,
    /// Each round, before a worker adds its new delta, its error-feedback residual is scaled by
    /// this factor, in `[0, 1]`: 1 (the default) keeps plain error feedback; SparseLoCo
    /// (arXiv:2508.15706) decays it (β = 0.95) so that, with the outer step a plain average at
    /// lr 1, the decayed buffer plays the part of the outer momentum.
    pub error_feedback_decay: f32,
    /// A density schedule: rounds `1..=dense_rounds` send a sparse top-k codec densely (density
    /// 1, the same bits), later rounds at its density: dense low-bit rounds first, while updates
    /// are large and error feedback has nothing banked, then sparse ones. 0 (the default) keeps
    /// one codec for the whole run. See [`AggregateSpec::codec_for`].
    pub dense_rounds: u32,
}

impl Default for AggregateSpec {
    fn default() -> Self {
        Self {
            aggregator: Aggregator::default(),
            outer: OuterOptimizer::default(),
            target_deltas: 4,
            min_deltas: 1,
            grace_secs: 5,
            deadline_secs: 900,
            max_staleness: 2,
            codec: CodecSpec::default(),
            local_error_feedback: false,
            mean_over_senders: true,
            error_feedback_decay: 1.0,
            dense_rounds: 0,
        }
    }
}

impl AggregateSpec {
    /// The codec of the deltas for `round` (rounds count from 1): the run's codec, or, in the
    /// first [`AggregateSpec::dense_rounds`] rounds, a sparse top-k codec at density 1.
    pub fn codec_for(&self, round: u64) -> CodecSpec {
        match self.codec {
            CodecSpec::TopK { bits, .. }
                if self.codec.is_sparse() && round <= u64::from(self.dense_rounds) =>
            {
                CodecSpec::TopK { density: 1.0, bits }
            }
            c => c,
        }
    }

    /// Whether `round`'s sparse coordinates are averaged over their senders: with
    /// [`AggregateSpec::mean_over_senders`] on, in the rounds whose codec is sparse.
    pub fn mean_over_senders_in(&self, round: u64) -> bool {
        self.mean_over_senders && self.codec_for(round).is_sparse()
    }

    /// Every codec the run's deltas may use.
    pub fn codecs(&self) -> Vec<CodecSpec> {
        let mut all = vec![self.codec];
        let first = self.codec_for(1);
        if first != self.codec {
            all.push(first);
        }
        all
    }

    /// FedBuff staleness weight `1/√(1+τ)`.
    pub fn staleness_weight(staleness: u32) -> f32 {
        1.0 / (1.0 + staleness as f32).sqrt()
    }
}

/// How many times its learning rate AdamW moves one value in one step, at most, for the derived
/// norm cap ([`VerifySpec::norm_abs_cap`]). The update `m̂/(√v̂+ε)` is about 1 in size while a
/// gradient's sign holds and at most `(1−β1)/√(1−β2)` ≈ 3.2 after a sudden spike (Kingma & Ba
/// 2015, §2.1); 4 leaves room for the decoupled weight decay and the codec's rounding.
pub const ADAM_REACH: f32 = 4.0;

impl VerifySpec {
    /// The absolute norm cap for a delta of `dims` trained values under `spec`'s training
    /// settings (`None`: no cap). With local error feedback a sparse codec's delta also carries
    /// what earlier rounds left unsent, up to about `1/density` rounds of it.
    pub fn norm_cap(
        &self,
        train: &TrainSpec,
        aggregate: &AggregateSpec,
        dims: usize,
    ) -> Option<f32> {
        if self.norm_abs_cap > 0.0 {
            return Some(self.norm_abs_cap);
        }
        if self.norm_abs_cap < 0.0 {
            return None;
        }
        let mut cap = ADAM_REACH * train.lr * train.local_steps as f32 * (dims as f32).sqrt();
        if aggregate.local_error_feedback {
            if let CodecSpec::TopK { density, .. } = aggregate.codec {
                cap /= density.max(f32::MIN_POSITIVE);
            }
        }
        Some(cap)
    }
}

/// Delta verification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySpec {
    /// Scale a delta whose norm exceeds this multiple of the median recent norm down to that
    /// bound (0 turns it off); only the absolute cap rejects.
    pub norm_kappa: f32,
    /// Absolute cap on a delta's L2 norm: a positive value is the cap itself; 0 (the default)
    /// derives it from the run's training settings, [`ADAM_REACH`] × lr × local steps × √(trained
    /// values), the farthest AdamW can move the adapter in a round; a negative value turns it off.
    pub norm_abs_cap: f32,
    /// Rejections after which a peer is banned.
    pub ban_after_rejects: u32,
    /// Tolerated relative rise of held-out loss before a merged update is discarded.
    pub eval_tolerance: f32,
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            norm_kappa: 5.0,
            norm_abs_cap: 0.0,
            ban_after_rejects: 3,
            eval_tolerance: 0.02,
        }
    }
}

tagged_enum! {
    /// Who may join a run.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub enum Admission {
        /// Anyone.
        #[default]
        Open,
        /// Only these peer ids (base58).
        Allowlist {
            /// Allowed peer ids.
            peers: Vec<String>
        },
        /// Anyone presenting the token whose blake3 is given.
        Token {
            /// blake3 of the token text.
            token_blake3: ContentId
        },
    }
}

impl Admission {
    /// Whether `peer` presenting `token` may join (token hashes compared in constant time).
    pub fn admits(&self, peer: &libp2p_identity::PeerId, token: Option<&str>) -> bool {
        match self {
            Admission::Open => true,
            Admission::Allowlist { peers } => {
                let me = peer.to_base58();
                peers.contains(&me)
            }
            Admission::Token { token_blake3 } => {
                token.is_some_and(|t| token_blake3.matches(t.as_bytes()))
            }
        }
    }
}

/// Largest `net.max_transmit_size` a run may set: a worker builds its node before it knows the
/// run, so it prepares for gossip frames of this size (16 MiB, the size of a blob response) and
/// holds each run to its own limit once it has joined.
pub const MAX_TRANSMIT_SIZE: usize = 16 << 20;

/// Network settings every peer of the run shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSpec {
    /// gossipsub `max_transmit_size` in bytes (1 KiB ..= [`MAX_TRANSMIT_SIZE`]).
    pub max_transmit_size: usize,
    /// Encoded signed deltas up to this size travel inline by gossip; larger ones by content id.
    pub inline_delta_limit: usize,
    /// Bytes per blob request-response chunk.
    pub blob_chunk_size: u32,
}

impl Default for NetSpec {
    fn default() -> Self {
        Self {
            max_transmit_size: 262_144,
            inline_delta_limit: 131_072,
            blob_chunk_size: 262_144,
        }
    }
}

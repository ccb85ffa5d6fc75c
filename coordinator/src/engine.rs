//! The coordinator's round engine: accepted deltas in, aggregated checkpoints out.
//!
//! Data flows one way: verified deltas → [`Engine::accept`] → [`Engine::close`] (aggregate, outer
//! step) → the caller evaluates, gates, stores and publishes. No network and no disk in here.

use hearth_proto::{NamedTensor, TensorLayout};
use libp2p_identity::PeerId;

use crate::aggregate::{aggregate, aggregate_over_senders, staleness_weight, Aggregator};
use crate::outer::{Outer, OuterState, OuterStep};
use crate::screen::Score;
use crate::verify::VerifiedDelta;

/// A delta waiting for its round to close.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its sender.
    pub peer: PeerId,
    /// The delta, flattened in layout order.
    pub flat: Vec<f32>,
    /// Aggregation weight: tokens × staleness weight (× the screen's factor once the round closes).
    pub weight: f32,
    /// Tokens trained.
    pub tokens: u64,
    /// Training loss it reported.
    pub train_loss: f32,
    /// The screen's score (none when the round had no reference).
    pub score: Option<Score>,
}

/// The result of closing a round.
#[derive(Debug, Clone)]
pub struct Closed {
    /// Proposed new parameters (before the held-out gate).
    pub params: Vec<NamedTensor>,
    /// Proposed new outer state.
    pub outer_state: OuterState,
    /// Tokens behind the update.
    pub tokens: u64,
    /// Token-weighted mean training loss the workers reported.
    pub train_loss: Option<f32>,
    /// L2 norm of the aggregated delta.
    pub update_norm: f32,
}

/// The trainable adapter, its outer-optimizer state and the deltas pending for this round.
#[derive(Debug, Clone)]
pub struct Engine {
    layout: Vec<TensorLayout>,
    params: Vec<NamedTensor>,
    outer_state: OuterState,
    outer: Outer,
    aggregator: Aggregator,
    /// Sparse deltas: each coordinate's mean is over the deltas that sent it.
    over_senders: bool,
    pending: Vec<Pending>,
}

/// Concatenate tensors in order.
pub fn flatten(tensors: &[NamedTensor]) -> Vec<f32> {
    // Sized up front and copied a tensor at a time (a `flat_map` collect grows and pushes one
    // value at a time).
    let mut flat = Vec::with_capacity(tensors.iter().map(|t| t.data.len()).sum());
    for t in tensors {
        flat.extend_from_slice(&t.data);
    }
    flat
}

/// Split a flat vector back into tensors of `layout` (lengths must add up).
pub fn unflatten(layout: &[TensorLayout], flat: &[f32]) -> Vec<NamedTensor> {
    let mut at = 0;
    layout
        .iter()
        .map(|l| {
            let n: usize = l.shape.iter().product();
            let data = flat
                .get(at..at + n)
                .map(<[f32]>::to_vec)
                .unwrap_or_else(|| vec![0.0; n]);
            at += n;
            NamedTensor {
                name: l.name.clone(),
                shape: l.shape.clone(),
                data,
            }
        })
        .collect()
}

impl Engine {
    /// An engine starting from `params` (in `layout` order).
    pub fn new(
        layout: Vec<TensorLayout>,
        params: Vec<NamedTensor>,
        outer_state: OuterState,
        outer: Outer,
        aggregator: Aggregator,
    ) -> Self {
        Self {
            layout,
            params,
            outer_state,
            outer,
            aggregator,
            over_senders: false,
            pending: Vec::new(),
        }
    }

    /// Average each coordinate over the deltas that sent it (sparse codecs, see
    /// [`aggregate_over_senders`]).
    pub fn set_mean_over_senders(&mut self, on: bool) {
        self.over_senders = on;
    }

    /// Current (committed) parameters.
    pub fn params(&self) -> &[NamedTensor] {
        &self.params
    }

    /// Current outer-optimizer state.
    pub fn outer_state(&self) -> &OuterState {
        &self.outer_state
    }

    /// Deltas accepted so far this round.
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Add a verified delta to the round in progress.
    pub fn accept(&mut self, d: VerifiedDelta) {
        let flat = flatten(&d.tensors);
        self.accept_scored(d, flat, None);
    }

    /// Add a verified delta, already flattened, with its screen score.
    pub fn accept_scored(&mut self, d: VerifiedDelta, flat: Vec<f32>, score: Option<Score>) {
        let weight = d.tokens as f32 * staleness_weight(d.staleness);
        self.pending.push(Pending {
            peer: d.peer,
            flat,
            weight,
            tokens: d.tokens,
            train_loss: d.train_loss,
            score,
        });
    }

    /// Scale each pending delta's weight by its factor (in pending order); a factor of 0 drops
    /// the delta. Returns the dropped deltas' peers.
    pub fn scale_weights(&mut self, factors: &[f64]) -> Vec<PeerId> {
        let mut dropped = Vec::new();
        for (p, f) in self.pending.iter_mut().zip(factors) {
            p.weight *= *f as f32;
            if *f <= 0.0 {
                dropped.push(p.peer);
            }
        }
        self.pending.retain(|p| p.weight > 0.0);
        dropped
    }

    /// Drop the pending deltas of `peer` (e.g. it was banned mid-round).
    pub fn drop_peer(&mut self, peer: &PeerId) {
        self.pending.retain(|p| p.peer != *peer);
    }

    /// Aggregate the pending deltas and apply the outer step to a copy of the parameters.
    /// Returns `None` when nothing is pending. The pending list is emptied.
    pub fn close(&mut self) -> Option<Closed> {
        let pending = std::mem::take(&mut self.pending);
        let rows: Vec<&[f32]> = pending.iter().map(|p| p.flat.as_slice()).collect();
        let weights: Vec<f32> = pending.iter().map(|p| p.weight).collect();
        let delta = if self.over_senders {
            aggregate_over_senders(self.aggregator, &rows, &weights)?
        } else {
            aggregate(self.aggregator, &rows, &weights)?
        };
        let update_norm = delta.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut flat = flatten(&self.params);
        let mut outer_state = self.outer_state.clone();
        self.outer.step(&mut flat, &delta, &mut outer_state);
        let tokens: u64 = pending.iter().map(|p| p.tokens).sum();
        let train_loss = (tokens > 0).then(|| {
            pending
                .iter()
                .map(|p| p.train_loss * p.tokens as f32)
                .sum::<f32>()
                / tokens as f32
        });
        Some(Closed {
            params: unflatten(&self.layout, &flat),
            outer_state,
            tokens,
            train_loss,
            update_norm,
        })
    }

    /// Make a closed round's parameters the committed ones.
    pub fn commit(&mut self, closed: &Closed) {
        self.params = closed.params.clone();
        self.outer_state = closed.outer_state.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::ContentId;

    fn layout() -> Vec<TensorLayout> {
        vec![
            TensorLayout {
                name: "a".into(),
                shape: vec![2, 1],
            },
            TensorLayout {
                name: "b".into(),
                shape: vec![1],
            },
        ]
    }

    fn peer(seed: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    fn delta(peer: PeerId, vals: [f32; 3], tokens: u64, staleness: u64) -> VerifiedDelta {
        VerifiedDelta {
            peer,
            payload_id: ContentId::of(
                &vals
                    .map(f32::to_bits)
                    .iter()
                    .flat_map(|b| b.to_le_bytes())
                    .collect::<Vec<_>>(),
            ),
            base_round: 0,
            staleness,
            tensors: unflatten(&layout(), &vals),
            tokens,
            train_loss: 1.0,
            wire_bytes: 12,
        }
    }

    #[test]
    fn weighted_average_with_staleness_and_plain_outer_step() {
        let zeros = unflatten(&layout(), &[0.0; 3]);
        let mut e = Engine::new(
            layout(),
            zeros,
            OuterState::default(),
            Outer::Average { lr: 1.0 },
            Aggregator::WeightedMean,
        );
        let (p1, p2) = (peer(1), peer(2));
        e.accept(delta(p1, [1.0, 0.0, 2.0], 100, 0));
        e.accept(delta(p2, [3.0, 4.0, 2.0], 100, 3)); // weight 100 / 2 = 50
        let closed = e.close().unwrap();
        let flat = flatten(&closed.params);
        let w = [100.0f32, 50.0];
        let expect0 = (1.0 * w[0] + 3.0 * w[1]) / 150.0;
        assert!((flat[0] - expect0).abs() < 1e-6);
        assert!((flat[2] - 2.0).abs() < 1e-6);
        assert_eq!(closed.tokens, 200);
        assert!(e.pending().is_empty());
        assert!(
            flatten(e.params()).iter().all(|x| *x == 0.0),
            "nothing committed before commit()"
        );
        e.commit(&closed);
        assert_eq!(flatten(e.params()), flat);
        assert!(e.close().is_none());
    }
}

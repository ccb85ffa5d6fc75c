//! Verification of untrusted deltas, cheapest checks first. Every rejection has a reason label.

use std::collections::{HashMap, HashSet};

use hearth_proto::{
    decode_delta, layout_id, ContentId, DeltaMessage, Domain, NamedTensor, RunSpec, SignedEnvelope,
    TensorLayout, Wire,
};
use libp2p_identity::PeerId;

/// Why a delta was rejected; `label()` is the `reason` label of `hearth_deltas_total`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// Larger than the transport limit.
    #[error("delta of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Bytes that do not decode as a signed envelope or delta message.
    #[error("undecodable: {0}")]
    Decode(String),
    /// Bad or forged signature.
    #[error("bad signature: {0}")]
    Signature(String),
    /// The gossip source and the envelope signer differ.
    #[error("sender {sender} relayed a delta signed by {signer}")]
    SenderMismatch {
        /// Who sent it.
        sender: String,
        /// Who signed it.
        signer: String,
    },
    /// Peer not admitted to this run.
    #[error("peer {0} is not admitted")]
    NotAdmitted(String),
    /// Peer is banned.
    #[error("peer {0} is banned")]
    Banned(String),
    /// Another run's delta.
    #[error("run id {got:?}, expected {want:?}")]
    RunId {
        /// The delta's run id.
        got: String,
        /// Ours.
        want: String,
    },
    /// Built on a checkpoint we do not know or too old.
    #[error("base round {base} with checkpoint {checkpoint:?} is not a recent checkpoint (latest round {latest})")]
    Stale {
        /// Its base round.
        base: u64,
        /// Its base checkpoint id.
        checkpoint: Option<ContentId>,
        /// Our latest committed round.
        latest: u64,
    },
    /// This peer already sent a delta this round.
    #[error("peer {0} already sent a delta this round")]
    DuplicatePeer(String),
    /// The same payload was seen before (replay).
    #[error("payload {0} was already received")]
    Replay(ContentId),
    /// Names, shapes, indices or values do not fit the run's adapter.
    #[error("structure: {0}")]
    Structure(String),
    /// Values are not finite.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// The delta's norm is out of bounds.
    #[error("norm {0}")]
    Norm(String),
    /// Not aligned with the round's reference gradient (the statistical screen).
    #[error("screen: {0}")]
    Screen(String),
    /// A copy of another peer's delta of the open round or of the last checkpoint's change.
    #[error("copy: {0}")]
    Copy(String),
    /// Shows far less work than it claims (a scaled-down or tiny delta).
    #[error("free ride: {0}")]
    FreeRide(String),
    /// Too many submissions from this peer.
    #[error("rate limit: {0}")]
    RateLimited(String),
    /// Reported figures make no sense (tokens, steps, loss).
    #[error("implausible report: {0}")]
    Report(String),
}

impl Reject {
    /// Whether this rejection is a strike towards an automatic ban: a delta no honest worker can
    /// produce. Lateness and gossip echoes never count; the screen's findings count as statistical
    /// evidence instead ([`Reject::is_screen`]).
    pub fn counts_towards_ban(&self) -> bool {
        matches!(
            self,
            Reject::Decode(_)
                | Reject::Signature(_)
                | Reject::SenderMismatch { .. }
                | Reject::Structure(_)
                | Reject::NonFinite(_)
                | Reject::Norm(_)
                | Reject::Report(_)
        )
    }

    /// Whether this is a finding of the statistical screen (evidence, not a strike).
    pub fn is_screen(&self) -> bool {
        matches!(
            self,
            Reject::Screen(_) | Reject::Copy(_) | Reject::FreeRide(_)
        )
    }

    /// Short metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::TooLarge(_) => "too_large",
            Reject::Decode(_) => "decode",
            Reject::Signature(_) | Reject::SenderMismatch { .. } => "signature",
            Reject::NotAdmitted(_) => "not_admitted",
            Reject::Banned(_) => "banned",
            Reject::RunId { .. } => "run_id",
            Reject::Stale { .. } => "stale",
            Reject::DuplicatePeer(_) => "duplicate_peer",
            Reject::Replay(_) => "replay",
            Reject::Structure(_) => "structure",
            Reject::NonFinite(_) => "non_finite",
            Reject::Norm(_) => "norm",
            Reject::Screen(_) => "screen",
            Reject::Copy(_) => "copy",
            Reject::FreeRide(_) => "free_ride",
            Reject::RateLimited(_) => "rate_limit",
            Reject::Report(_) => "report",
        }
    }
}

/// A delta that passed every check: decoded, attributed, weighted.
#[derive(Debug, Clone)]
pub struct VerifiedDelta {
    /// Signer (the volunteer's identity).
    pub peer: PeerId,
    /// blake3 of the envelope payload.
    pub payload_id: ContentId,
    /// Checkpoint round it was built on.
    pub base_round: u64,
    /// Rounds between its base and our latest checkpoint.
    pub staleness: u64,
    /// Decoded tensors, in layout order.
    pub tensors: Vec<NamedTensor>,
    /// Tokens it trained on.
    pub tokens: u64,
    /// Its mean training loss.
    pub train_loss: f32,
    /// Size on the wire.
    pub wire_bytes: usize,
}

/// Checks a signed delta envelope against the run and the coordinator's recent history.
#[derive(Debug)]
pub struct Verifier {
    spec: RunSpec,
    layout: Vec<TensorLayout>,
    layout_id: ContentId,
    /// Committed checkpoints by round (recent ones).
    checkpoints: HashMap<u64, ContentId>,
    latest_round: u64,
    /// Peers that sent a delta in the round in progress.
    senders: HashSet<PeerId>,
    /// Payload ids seen (replay protection), kept for the whole run.
    seen: HashSet<ContentId>,
}

impl Verifier {
    /// A verifier for `spec` with the trainable `layout`.
    pub fn new(spec: RunSpec, layout: Vec<TensorLayout>) -> Self {
        let layout_id = layout_id(&layout);
        Self {
            spec,
            layout,
            layout_id,
            checkpoints: HashMap::new(),
            latest_round: 0,
            senders: HashSet::new(),
            seen: HashSet::new(),
        }
    }

    /// The trainable adapter layout.
    pub fn layout(&self) -> &[TensorLayout] {
        &self.layout
    }

    /// Record a committed checkpoint (the latest one sets the staleness reference).
    pub fn checkpoint_committed(&mut self, round: u64, id: ContentId) {
        self.checkpoints.insert(round, id);
        if round >= self.latest_round {
            self.latest_round = round;
        }
        let keep = u64::from(self.spec.aggregate.max_staleness);
        let oldest = self.latest_round.saturating_sub(keep);
        self.checkpoints.retain(|r, _| *r >= oldest);
    }

    /// A new round opened: every peer may send again.
    pub fn round_opened(&mut self) {
        self.senders.clear();
    }

    /// Forget that `peer` sent this round (its delta was dropped later, e.g. by the norm bound).
    pub fn forget_sender(&mut self, peer: &PeerId) {
        self.senders.remove(peer);
    }

    /// Checks 1–3: size, envelope signature, sender, run id, staleness, one per peer, replay.
    /// Cheap enough for gossip validation. Returns the signer, the message and the payload id.
    pub fn check_envelope(
        &self,
        bytes: &[u8],
        sender: Option<PeerId>,
        admitted: impl Fn(&PeerId) -> Result<(), Reject>,
    ) -> Result<(PeerId, DeltaMessage, ContentId), Reject> {
        let limit = self
            .spec
            .net
            .max_transmit_size
            .max(DeltaMessage::MAX_BYTES.min(64 << 20));
        if bytes.len() > limit {
            return Err(Reject::TooLarge(bytes.len()));
        }
        let env =
            SignedEnvelope::from_bytes(bytes, limit).map_err(|e| Reject::Decode(e.to_string()))?;
        let signer = env
            .verify(Domain::Delta)
            .map_err(|e| Reject::Signature(e.to_string()))?;
        if let Some(sender) = sender {
            if sender != signer {
                return Err(Reject::SenderMismatch {
                    sender: sender.to_base58(),
                    signer: signer.to_base58(),
                });
            }
        }
        admitted(&signer)?;
        let msg =
            DeltaMessage::from_bytes(&env.payload).map_err(|e| Reject::Decode(e.to_string()))?;
        if msg.run_id != self.spec.run_id {
            return Err(Reject::RunId {
                got: msg.run_id,
                want: self.spec.run_id.clone(),
            });
        }
        let stale = Reject::Stale {
            base: msg.base_round,
            checkpoint: msg.base_checkpoint,
            latest: self.latest_round,
        };
        match (self.checkpoints.get(&msg.base_round), msg.base_checkpoint) {
            (Some(known), Some(claimed)) if *known == claimed => {}
            _ => return Err(stale),
        }
        if self.latest_round.saturating_sub(msg.base_round)
            > u64::from(self.spec.aggregate.max_staleness)
        {
            return Err(stale);
        }
        if self.senders.contains(&signer) {
            return Err(Reject::DuplicatePeer(signer.to_base58()));
        }
        let payload_id = env.payload_id();
        if self.seen.contains(&payload_id) {
            return Err(Reject::Replay(payload_id));
        }
        Ok((signer, msg, payload_id))
    }

    /// Check 4: structure and values. Records the sender and payload on success.
    pub fn check_content(
        &mut self,
        signer: PeerId,
        msg: DeltaMessage,
        payload_id: ContentId,
        wire_bytes: usize,
    ) -> Result<VerifiedDelta, Reject> {
        if msg.delta.layout != self.layout_id {
            return Err(Reject::Structure(format!(
                "layout {} is not the run's adapter layout {}",
                msg.delta.layout, self.layout_id
            )));
        }
        let codec = self.spec.aggregate.codec_for(msg.round);
        if msg.delta.codec != codec {
            return Err(Reject::Structure(format!(
                "codec {} is not the run's codec for round {}, {}",
                msg.delta.codec.label(),
                msg.round,
                codec.label()
            )));
        }
        let tensors = decode_delta(&msg.delta, &self.layout).map_err(|e| match e {
            hearth_proto::CodecError::NonFinite { .. } => Reject::NonFinite(e.to_string()),
            e => Reject::Structure(e.to_string()),
        })?;
        if let Some(bad) = tensors
            .iter()
            .find(|t| t.data.iter().any(|v| !v.is_finite()))
        {
            return Err(Reject::NonFinite(bad.name.clone()));
        }
        if !msg.train_loss.is_finite() || msg.train_loss < 0.0 {
            return Err(Reject::Report(format!("train loss {}", msg.train_loss)));
        }
        let seq = self.spec.data.seq_len as u64;
        let max_tokens = u64::from(msg.steps.max(1))
            * (self.spec.train.batch_size * self.spec.train.grad_accum.max(1)) as u64
            * seq;
        if msg.tokens_trained == 0 || msg.tokens_trained > max_tokens {
            return Err(Reject::Report(format!(
                "{} tokens in {} steps (at most {max_tokens})",
                msg.tokens_trained, msg.steps
            )));
        }
        self.senders.insert(signer);
        self.seen.insert(payload_id);
        Ok(VerifiedDelta {
            peer: signer,
            payload_id,
            base_round: msg.base_round,
            staleness: self.latest_round.saturating_sub(msg.base_round),
            tensors,
            tokens: msg.tokens_trained,
            train_loss: msg.train_loss,
            wire_bytes,
        })
    }
}

//! Ingest: one delta in, one verdict out. The rate limit, checks 1–5 (`verify.rs`), the norm
//! bound, the statistical screen (`screen.rs`), strikes, evidence, weights and ban decisions, with
//! no network, no disk and no clock: the service does the I/O around it.
//!
//! Data flows one way: bytes → [`Ingest::check`] → [`Accepted`] (to the engine) or [`Rejection`]
//! → [`Ingest::judge`] (ledger, maybe a ban); at close, [`Ingest::weigh`] gives each pending
//! delta its weight.

use std::collections::{HashMap, HashSet, VecDeque};

use hearth_proto::{ContentId, RunSpec, TensorLayout, VerifySpec};
use libp2p_identity::PeerId;

use crate::engine::{flatten, Pending};
use crate::ledger::Ledger;
use crate::screen::{Finding, Reference, Score, Screen, Verdict, BAN_EVIDENCE};
use crate::verify::{Reject, VerifiedDelta, Verifier};

/// Deltas one peer may submit while one round is open. An honest worker sends at most three
/// (its delta by gossip and directly, and a late one built on an older checkpoint), so this only
/// stops floods. Counting per round, not per second, never stalls honest workers however short
/// rounds are (a window of 10 per 10 s did, in sub-second tiny-preset rounds).
pub const RATE_LIMIT: u32 = 6;
/// How many recent accepted norms the norm bound looks at.
pub const NORM_WINDOW: usize = 64;

/// The open round's bookkeeping, reset in one place when a round opens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundState {
    /// Deltas received from each peer since the round (or its carry-over) opened: the rate limit.
    pub submissions: HashMap<PeerId, u32>,
    /// Peers that sent a delta, accepted or not.
    pub responders: HashSet<PeerId>,
    /// Deltas rejected this round.
    pub rejected: u32,
    /// Bytes of the deltas received this round.
    pub bytes: u64,
}

impl RoundState {
    /// A new round opens: everything starts again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The round is reopened with its deltas carried over: only the rate limit starts again.
    pub fn carry_over(&mut self) {
        self.submissions.clear();
    }
}

/// A delta that passed: verified, flattened, scored.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The verified delta (scaled down when it was clipped).
    pub delta: VerifiedDelta,
    /// Its values in layout order.
    pub flat: Vec<f32>,
    /// The screen's score (none when the round has no reference yet); judged at close.
    pub score: Option<Score>,
    /// Set when its norm was over κ × the recent median and it was scaled down to that bound.
    pub clipped: Option<Clipped>,
}

/// A delta's norm scaled down to the relative norm bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clipped {
    /// Its norm as sent.
    pub norm: f32,
    /// κ × the median of recently accepted norms: its norm as kept.
    pub bound: f32,
}

/// A delta turned down, and whose it was (when known).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The signer, or the sender when the signature could not be checked.
    pub peer: Option<PeerId>,
    /// Why.
    pub reason: Reject,
}

/// The screen's verdicts on a closing round's pending deltas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weighing {
    /// Factor per pending delta, in order (0 drops it).
    pub factors: Vec<f64>,
    /// Held back: not significant on their own, and no record yet.
    pub held_back: Vec<PeerId>,
    /// Unpaid: far less work than claimed (a free ride, or a converged shard), with the
    /// explanation: weight 0, no credit, no evidence.
    pub unpaid: Vec<(PeerId, String)>,
    /// Turned down (misaligned, or a free ride), with the reason: evidence against the peer.
    pub failed: Vec<Rejection>,
    /// Passed the screen in a round whose reference carried a signal: evidence for the peer.
    pub passed: Vec<PeerId>,
    /// The round's median alignment, and whether the screen judged (or abstained).
    pub signal: Option<f64>,
    /// Whether the screen judged this round (its reference carried a signal).
    pub judged: bool,
}

/// Checks, screen and evidence for the deltas of one run.
#[derive(Debug)]
pub struct Ingest {
    verifier: Verifier,
    screen: Screen,
    verify: VerifySpec,
    /// The absolute norm cap of this run ([`VerifySpec::norm_cap`]).
    norm_cap: Option<f32>,
    /// Norms accepted in earlier rounds (as kept): what the relative bound looks at.
    norms: VecDeque<f32>,
    /// Norms accepted in the open round; they join `norms` when the next round opens.
    open_norms: Vec<f32>,
    /// The open round.
    pub round: RoundState,
}

impl Ingest {
    /// Ingest for `spec` with the trainable `layout`; `seed` keeps the screen's sketches private.
    pub fn new(spec: RunSpec, layout: Vec<TensorLayout>, seed: u64) -> Self {
        let dims = layout
            .iter()
            .map(|l| l.shape.iter().product::<usize>())
            .sum();
        Self {
            verify: spec.verify.clone(),
            norm_cap: spec.verify.norm_cap(&spec.train, &spec.aggregate, dims),
            verifier: Verifier::new(spec, layout),
            screen: Screen::new(dims, seed),
            norms: VecDeque::new(),
            open_norms: Vec::new(),
            round: RoundState::default(),
        }
    }

    /// A checkpoint was committed (deltas may build on it).
    pub fn checkpoint_committed(&mut self, round: u64, id: ContentId) {
        self.verifier.checkpoint_committed(round, id);
    }

    /// A new round opens after a checkpoint that changed the adapter by `change` (none when the
    /// round was gated). Its reference must be set again.
    pub fn round_opened(&mut self, change: Option<&[f32]>) {
        self.norms.extend(self.open_norms.drain(..));
        while self.norms.len() > NORM_WINDOW {
            self.norms.pop_front();
        }
        self.round.reset();
        self.verifier.round_opened();
        self.screen.round_opened(change);
    }

    /// The round reopens with its deltas carried over.
    pub fn carry_over(&mut self) {
        self.round.carry_over();
    }

    /// The open round's reference gradient is ready.
    pub fn set_reference(&mut self, r: Reference) {
        self.screen.set_reference(r);
    }

    /// Whether the open round has its reference.
    pub fn has_reference(&self) -> bool {
        self.screen.reference().is_some()
    }

    /// A peer was banned: forget its sketch in the open round.
    pub fn forget(&mut self, peer: &PeerId) {
        self.screen.forget(peer);
    }

    /// The rate limit, checks 1–5, the norm bound and the screen, for one delta from `sender`
    /// (none for a journal replay). `admitted` says whether a signer may send.
    // A rejection is moved once per delta and is the common case under a flood; boxing it would
    // only add an allocation there.
    #[allow(clippy::result_large_err)]
    pub fn check(
        &mut self,
        bytes: &[u8],
        sender: Option<PeerId>,
        admitted: impl Fn(&PeerId) -> Result<(), Reject>,
    ) -> Result<Accepted, Rejection> {
        self.round.bytes += bytes.len() as u64;
        let result = self.check_inner(bytes, sender, admitted);
        let responder = match &result {
            Ok(a) => Some(a.delta.peer),
            Err(r) => r.peer,
        };
        self.round.responders.extend(responder);
        if result.is_err() {
            self.round.rejected += 1;
        }
        result
    }

    #[allow(clippy::result_large_err)]
    fn check_inner(
        &mut self,
        bytes: &[u8],
        sender: Option<PeerId>,
        admitted: impl Fn(&PeerId) -> Result<(), Reject>,
    ) -> Result<Accepted, Rejection> {
        if let Some(p) = sender {
            let sent = self.round.submissions.entry(p).or_default();
            if *sent >= RATE_LIMIT {
                return Err(Rejection {
                    peer: Some(p),
                    reason: Reject::RateLimited(format!(
                        "more than {RATE_LIMIT} deltas in one round"
                    )),
                });
            }
            *sent += 1;
        }
        let (signer, msg, payload_id) = self
            .verifier
            .check_envelope(bytes, sender, admitted)
            .map_err(|reason| Rejection {
                peer: sender,
                reason,
            })?;
        let rejected = |reason| Rejection {
            peer: Some(signer),
            reason,
        };
        let v = self
            .verifier
            .check_content(signer, msg, payload_id, bytes.len())
            .map_err(rejected)?;
        let mut v = v;
        let clipped = match self.norm_bound(&v) {
            Ok(clip) => clip,
            Err(r) => {
                self.verifier.forget_sender(&signer);
                return Err(rejected(r));
            }
        };
        if let Some(c) = clipped {
            let factor = c.bound / c.norm;
            for t in &mut v.tensors {
                t.data.iter_mut().for_each(|x| *x *= factor);
            }
        }
        let flat = flatten(&v.tensors);
        let finding = self.screen.check(v.peer, &flat, v.tokens);
        let reason = match &finding {
            None | Some(Finding::Pass(_)) => None,
            Some(f @ Finding::Misaligned(_)) => Some(Reject::Screen(f.explain())),
            Some(f @ (Finding::CopiesCheckpoint { .. } | Finding::CopiesPeer { .. })) => {
                Some(Reject::Copy(f.explain()))
            }
            Some(f @ Finding::FreeRide { .. }) => Some(Reject::FreeRide(f.explain())),
        };
        if let Some(r) = reason {
            self.verifier.forget_sender(&signer);
            return Err(rejected(r));
        }
        let score = match finding {
            Some(Finding::Pass(s)) => Some(s),
            _ => None,
        };
        Ok(Accepted {
            delta: v,
            flat,
            score,
            clipped,
        })
    }

    /// Norm bound. Over the absolute cap (farther than AdamW can move the adapter in a round):
    /// rejected, a delta no honest worker can send. Over κ × the median of the norms accepted in
    /// earlier rounds only: scaled down to that bound and kept. The open round's own arrivals never
    /// set the bound: two scaled-down free rides that arrived first in a round once scaled the
    /// honest deltas after them down to 5 % of their norm (table 7, `free-ride` at 2 of 5). An honest worker whose shard still has something
    /// to learn when the others' have converged goes there (SmolLM2, 30 rounds: 5.6 × the median
    /// at a held-out loss of 0.0003), so it costs neither the delta nor a strike; a scaled attack
    /// under the cap adds at most κ × a typical norm.
    fn norm_bound(&mut self, v: &VerifiedDelta) -> Result<Option<Clipped>, Reject> {
        let norm = v
            .tensors
            .iter()
            .map(|t| t.l2_norm().powi(2))
            .sum::<f64>()
            .sqrt() as f32;
        let cap = self.norm_cap;
        let mut sorted: Vec<f32> = self.norms.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied();
        let kappa = self.verify.norm_kappa;
        if let Some(c) = cap.filter(|c| norm > *c) {
            return Err(Reject::Norm(format!(
                "{norm:.4} exceeds the cap of {c:.4} (farther than AdamW moves the adapter in a round)"
            )));
        }
        let bound = median
            .filter(|m| sorted.len() >= 3 && kappa > 0.0 && *m > 0.0)
            .map(|m| kappa * m);
        let clipped = bound
            .filter(|b| norm > *b)
            .map(|bound| Clipped { norm, bound });
        self.open_norms.push(clipped.map_or(norm, |c| c.bound));
        Ok(clipped)
    }

    /// Record a rejection of a known peer's delta in the ledger: strikes for deltas no honest
    /// worker can send, evidence for the screen's findings. Returns the reason for a ban when
    /// one is due (the caller applies it).
    pub fn judge(&self, ledger: &mut Ledger, who: &str, r: &Reject, now: u64) -> Option<String> {
        ledger.rejected(who, r.label(), now);
        if ledger.is_banned(who) {
            return None;
        }
        if r.is_screen() {
            let evidence = ledger.screened(who, true, now);
            (evidence >= BAN_EVIDENCE).then(|| {
                format!(
                    "the screen failed its deltas until the evidence reached {evidence:.1} \
                     (ban at ln 10⁶ = {BAN_EVIDENCE:.1}; p < 10⁻⁶ for an honest worker); last: {r}"
                )
            })
        } else if r.counts_towards_ban() {
            let strikes = ledger.strike(who);
            let limit = u64::from(self.verify.ban_after_rejects);
            (limit > 0 && strikes >= limit)
                .then(|| format!("{strikes} deltas no honest worker can send; last: {r}"))
        } else {
            None
        }
    }

    /// Record a passing delta of a known peer: its evidence falls.
    pub fn passed(&self, ledger: &mut Ledger, who: &str, now: u64) {
        ledger.screened(who, false, now);
    }

    /// The screen's verdicts for a closing round's pending deltas ([`Screen::judge`]).
    pub fn weigh(&mut self, pending: &[Pending]) -> Weighing {
        let scored: Vec<(usize, Score)> = pending
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.score.map(|s| (i, s)))
            .collect();
        let with_peers: Vec<(PeerId, Score)> = scored
            .iter()
            .filter_map(|(i, s)| pending.get(*i).map(|p| (p.peer, *s)))
            .collect();
        let judgement = self.screen.judge(&with_peers);
        let mut out = Weighing {
            factors: vec![1.0; pending.len()],
            signal: judgement.signal,
            judged: judgement.strong,
            ..Weighing::default()
        };
        for ((i, _), verdict) in scored.iter().zip(judgement.verdicts) {
            let (Some(f), Some(p)) = (out.factors.get_mut(*i), pending.get(*i)) else {
                continue;
            };
            match verdict {
                Verdict::Weight(w) => {
                    *f = w;
                    if judgement.strong {
                        out.passed.push(p.peer);
                    }
                }
                Verdict::HeldBack(_) => {
                    *f = 0.0;
                    out.held_back.push(p.peer);
                }
                Verdict::Unpaid { share } => {
                    *f = 0.0;
                    out.unpaid
                        .push((p.peer, Finding::FreeRide { share }.explain()));
                }
                Verdict::Fail(finding) => {
                    // At the close only misalignment fails; small deltas are unpaid.
                    *f = 0.0;
                    out.failed.push(Rejection {
                        peer: Some(p.peer),
                        reason: Reject::Screen(finding.explain()),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::engine::unflatten;
    use hearth_proto::{
        encode_delta, CodecSpec, DeltaMessage, Domain, NamedTensor, Residual, SignedEnvelope,
    };
    use libp2p_identity::Keypair;

    const D: usize = 768;

    fn layout() -> Vec<TensorLayout> {
        vec![
            TensorLayout {
                name: "a".into(),
                shape: vec![64, 8],
            },
            TensorLayout {
                name: "b".into(),
                shape: vec![32, 8],
            },
        ]
    }

    fn spec() -> RunSpec {
        let mut s = RunSpec {
            run_id: "test-run".into(),
            ..RunSpec::default()
        };
        s.aggregate.codec = CodecSpec::F32;
        s
    }

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    use crate::screen::test_gaussian as gaussian;

    /// The task's descent direction, scaled to the size of a delta.
    fn task() -> Vec<f32> {
        gaussian(D, 1).iter().map(|x| x * 0.01).collect()
    }

    /// An honest delta: the task direction plus its own noise (z ≈ 19).
    fn honest(seed: u64) -> Vec<f32> {
        task()
            .iter()
            .zip(gaussian(D, 100 + seed))
            .map(|(t, n)| t + 0.01 * n)
            .collect()
    }

    struct Msg {
        flat: Vec<f32>,
        run_id: String,
        base_round: u64,
        base: ContentId,
        tokens: u64,
        layout: Vec<TensorLayout>,
    }

    fn msg(flat: Vec<f32>) -> Msg {
        Msg {
            flat,
            run_id: "test-run".into(),
            base_round: 0,
            base: ContentId::of(b"checkpoint 0"),
            tokens: 1000,
            layout: layout(),
        }
    }

    fn seal(k: &Keypair, m: Msg) -> Vec<u8> {
        let tensors: Vec<NamedTensor> = unflatten(&m.layout, &m.flat);
        let delta = encode_delta(&CodecSpec::F32, &tensors, &mut Residual::new()).unwrap();
        let msg = DeltaMessage {
            run_id: m.run_id,
            round: 1,
            base_round: m.base_round,
            base_checkpoint: Some(m.base),
            tokens_trained: m.tokens,
            steps: 10,
            train_loss: 2.0,
            delta,
        };
        SignedEnvelope::seal(k, Domain::Delta, &msg)
            .unwrap()
            .to_bytes()
    }

    fn ingest() -> Ingest {
        let mut i = Ingest::new(spec(), layout(), 9);
        i.checkpoint_committed(0, ContentId::of(b"checkpoint 0"));
        i.round_opened(None);
        let g: Vec<f32> = task().iter().map(|x| -x).collect();
        i.set_reference(Reference::from_gradient(1, &g).unwrap());
        i
    }

    fn open(_: &PeerId) -> Result<(), Reject> {
        Ok(())
    }

    fn label(r: Result<Accepted, Rejection>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(r) => r.reason.label(),
        }
    }

    /// With a density schedule a delta must use its round's codec: dense in the first
    /// `dense_rounds` rounds, sparse after; the other one is turned down as malformed.
    #[test]
    fn a_density_schedule_takes_each_rounds_own_codec() {
        let sparse = CodecSpec::TopK {
            density: 0.25,
            bits: 8,
        };
        let dense = CodecSpec::TopK {
            density: 1.0,
            bits: 8,
        };
        let mut s = spec();
        s.aggregate.codec = sparse;
        s.aggregate.dense_rounds = 1;
        let sealed = |seed: u8, codec: CodecSpec, round: u64| {
            let tensors = unflatten(&layout(), &honest(u64::from(seed)));
            let msg = DeltaMessage {
                run_id: "test-run".into(),
                round,
                base_round: 0,
                base_checkpoint: Some(ContentId::of(b"checkpoint 0")),
                tokens_trained: 1000,
                steps: 10,
                train_loss: 2.0,
                delta: encode_delta(&codec, &tensors, &mut Residual::new()).unwrap(),
            };
            SignedEnvelope::seal(&key(seed), Domain::Delta, &msg)
                .unwrap()
                .to_bytes()
        };
        let mut i = Ingest::new(s, layout(), 9);
        i.checkpoint_committed(0, ContentId::of(b"checkpoint 0"));
        i.round_opened(None);
        let verdicts: Vec<&str> = [(1, dense, 1), (2, sparse, 1), (3, sparse, 2), (4, dense, 2)]
            .into_iter()
            .map(|(seed, codec, round)| label(i.check(&sealed(seed, codec, round), None, open)))
            .collect();
        assert_eq!(verdicts, ["ok", "structure", "ok", "structure"]);
    }

    #[test]
    fn each_check_turns_down_its_own_kind_of_delta() {
        // (what, expected label): each case runs on a fresh ingest after three honest deltas
        // from other peers (so the norm bound and the free-ride median have history).
        type Case = (
            &'static str,
            &'static str,
            fn(&mut Ingest) -> Result<Accepted, Rejection>,
        );
        let cases: Vec<Case> = vec![
            ("honest", "ok", |i| {
                i.check(
                    &seal(&key(9), msg(honest(9))),
                    Some(key(9).public().to_peer_id()),
                    open,
                )
            }),
            ("rate limit", "rate_limit", |i| {
                let p = key(9).public().to_peer_id();
                for _ in 0..RATE_LIMIT {
                    let _ = i.check(b"junk", Some(p), open);
                }
                i.check(&seal(&key(9), msg(honest(9))), Some(p), open)
            }),
            ("undecodable", "decode", |i| {
                i.check(b"not an envelope", None, open)
            }),
            ("forged signature", "signature", |i| {
                let mut env =
                    SignedEnvelope::from_bytes(&seal(&key(9), msg(honest(9))), 1 << 20).unwrap();
                env.signature[0] ^= 0x55;
                i.check(&env.to_bytes(), None, open)
            }),
            ("relayed by another peer", "signature", |i| {
                i.check(
                    &seal(&key(9), msg(honest(9))),
                    Some(key(8).public().to_peer_id()),
                    open,
                )
            }),
            ("banned", "banned", |i| {
                i.check(&seal(&key(9), msg(honest(9))), None, |p| {
                    Err(Reject::Banned(p.to_base58()))
                })
            }),
            ("another run", "run_id", |i| {
                let mut m = msg(honest(9));
                m.run_id = "other".into();
                i.check(&seal(&key(9), m), None, open)
            }),
            ("unknown base", "stale", |i| {
                let mut m = msg(honest(9));
                m.base = ContentId::of(b"made up");
                i.check(&seal(&key(9), m), None, open)
            }),
            ("second delta this round", "duplicate_peer", |i| {
                let _ = i.check(&seal(&key(1), msg(honest(11))), None, open);
                i.check(&seal(&key(1), msg(honest(12))), None, open)
            }),
            ("replayed next round", "replay", |i| {
                let bytes = seal(&key(9), msg(honest(9)));
                let _ = i.check(&bytes, None, open);
                i.round_opened(None);
                i.set_reference(
                    Reference::from_gradient(2, &task().iter().map(|x| -x).collect::<Vec<_>>())
                        .unwrap(),
                );
                i.check(&bytes, None, open)
            }),
            ("wrong layout", "structure", |i| {
                let mut m = msg(honest(9)[..512].to_vec());
                m.layout.pop();
                i.check(&seal(&key(9), m), None, open)
            }),
            ("no tokens", "report", |i| {
                let mut m = msg(honest(9));
                m.tokens = 0;
                i.check(&seal(&key(9), m), None, open)
            }),
            ("too large", "norm", |i| {
                let big: Vec<f32> = honest(9).iter().map(|x| x * 1000.0).collect();
                i.check(&seal(&key(9), msg(big)), None, open)
            }),
            ("a copy of an earlier delta", "copy", |i| {
                let copy: Vec<f32> = honest(1)
                    .iter()
                    .zip(gaussian(D, 5))
                    .map(|(x, n)| x + 0.0005 * n)
                    .collect();
                i.check(&seal(&key(9), msg(copy)), None, open)
            }),
        ];
        for (what, want, case) in cases {
            let mut i = ingest();
            for p in 1..=3u8 {
                let r = i.check(&seal(&key(p), msg(honest(u64::from(p)))), None, open);
                assert_eq!(label(r), "ok", "history delta {p}");
            }
            let got = label(case(&mut i));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_delta_over_kappa_times_the_median_is_scaled_down_not_rejected() {
        let mut i = ingest();
        for p in 1..=3u8 {
            let r = i.check(&seal(&key(p), msg(honest(u64::from(p)))), None, open);
            assert!(r.unwrap().clipped.is_none(), "history delta {p}");
        }
        // The bound comes from earlier rounds' norms only.
        let norm = |x: &[f32]| x.iter().map(|v| v * v).sum::<f32>().sqrt();
        let big_first: Vec<f32> = honest(10).iter().map(|x| x * 8.0).collect();
        let same_round = i.check(&seal(&key(8), msg(big_first.clone())), None, open);
        assert!(
            same_round.unwrap().clipped.is_none(),
            "no bound in the first round"
        );
        i.round_opened(None);
        let mut norms: Vec<f32> = (1..=3).map(|p| norm(&honest(p))).collect();
        norms.push(norm(&big_first));
        norms.sort_by(f32::total_cmp);
        // The upper median of the four norms.
        let bound = i.verify.norm_kappa * norms[2];
        let big: Vec<f32> = honest(9).iter().map(|x| x * 8.0).collect();
        assert!(norm(&big) > bound && i.norm_cap.is_some_and(|c| norm(&big) < c));
        let a = i
            .check(&seal(&key(9), msg(big.clone())), None, open)
            .expect("kept, not rejected");
        let c = a.clipped.expect("clipped");
        assert!((c.norm - norm(&big)).abs() < 1e-3 * c.norm, "{c:?}");
        assert!((c.bound - bound).abs() < 1e-3 * bound, "{c:?} vs {bound}");
        assert!(
            (norm(&a.flat) - bound).abs() < 1e-3 * bound,
            "kept at the bound"
        );
        let cos =
            a.flat.iter().zip(&big).map(|(x, y)| x * y).sum::<f32>() / (norm(&a.flat) * norm(&big));
        assert!(cos > 0.9999, "same direction: {cos}");
    }

    #[test]
    fn small_deltas_that_arrive_first_do_not_scale_down_the_honest_deltas_of_their_round() {
        let mut i = ingest();
        // The run's first round: two free rides at 1/100 arrive first, then honest deltas (the
        // bound used to come from the open round's own norms: the free rides' median).
        for p in 4..=5u8 {
            let tiny: Vec<f32> = honest(u64::from(p)).iter().map(|x| x * 0.01).collect();
            i.check(&seal(&key(p), msg(tiny)), None, open).unwrap();
        }
        for p in 6..=8u8 {
            let a = i
                .check(&seal(&key(p), msg(honest(u64::from(p)))), None, open)
                .unwrap();
            assert!(
                a.clipped.is_none(),
                "honest delta {p} scaled: {:?}",
                a.clipped
            );
        }
    }

    #[test]
    fn round_state_counts_and_resets_in_one_place() {
        let mut i = ingest();
        let p = key(1).public().to_peer_id();
        let bytes = seal(&key(1), msg(honest(1)));
        assert!(i.check(&bytes, Some(p), open).is_ok());
        assert!(i
            .check(b"junk", Some(key(2).public().to_peer_id()), open)
            .is_err());
        assert_eq!(i.round.rejected, 1);
        assert_eq!(
            i.round.responders.len(),
            2,
            "a direct sender of junk responded too"
        );
        assert_eq!(i.round.bytes, bytes.len() as u64 + 4);
        assert_eq!(i.round.submissions.get(&p), Some(&1));
        i.carry_over();
        assert!(i.round.submissions.is_empty());
        assert_eq!(i.round.rejected, 1, "a carry-over keeps the round's counts");
        i.round_opened(None);
        assert_eq!(i.round, RoundState::default());
        assert!(!i.has_reference(), "a new round needs its own reference");
    }

    #[test]
    fn strikes_ban_after_three_and_screen_evidence_after_five_in_a_row() {
        let i = ingest();
        let mut ledger = Ledger::default();
        ledger.joined("a", "a", "cpu", 0);
        let decode = Reject::Decode("x".into());
        assert!(i.judge(&mut ledger, "a", &decode, 1).is_none());
        assert!(i.judge(&mut ledger, "a", &decode, 2).is_none());
        let ban = i.judge(&mut ledger, "a", &decode, 3).unwrap();
        assert!(ban.contains("3 deltas"), "{ban}");
        // Lateness never counts.
        ledger.joined("b", "b", "cpu", 0);
        for t in 0..10 {
            assert!(i
                .judge(&mut ledger, "b", &Reject::RateLimited("x".into()), t)
                .is_none());
        }
        assert_eq!(ledger.peers["b"].strikes, 0);
        // Screen failures: four, two passes, four more: no ban; a fifth in a row: banned.
        let screen = Reject::Screen("z = -9".into());
        for t in 0..4 {
            assert!(i.judge(&mut ledger, "b", &screen, t).is_none());
        }
        i.passed(&mut ledger, "b", 5);
        i.passed(&mut ledger, "b", 6);
        assert_eq!(ledger.peers["b"].evidence, 0.0);
        for t in 0..4 {
            assert!(i.judge(&mut ledger, "b", &screen, t).is_none());
        }
        let ban = i.judge(&mut ledger, "b", &screen, 9).unwrap();
        assert!(ban.contains("ln 10⁶"), "{ban}");
        assert_eq!(ledger.peers["b"].rejected["screen"], 9);
    }

    #[test]
    fn at_close_the_screen_fails_misaligned_pays_free_rides_nothing_holds_back_new_noise_and_scales_lazy_work(
    ) {
        let mut i = ingest();
        let mut engine = crate::engine::Engine::new(
            layout(),
            unflatten(&layout(), &[0.0; D]),
            Default::default(),
            crate::outer::Outer::Average { lr: 1.0 },
            crate::aggregate::Aggregator::WeightedMean,
        );
        let mut send = |i: &mut Ingest, k: u8, flat: Vec<f32>| {
            let a = i.check(&seal(&key(k), msg(flat)), None, open).unwrap();
            engine.accept_scored(a.delta, a.flat, a.score);
        };
        for p in 1..=3u8 {
            send(&mut i, p, honest(u64::from(p)));
        }
        // lazy: a quarter of the work, full tokens claimed
        let lazy: Vec<f32> = task()
            .iter()
            .zip(gaussian(D, 40))
            .map(|(t, n)| 0.25 * t + 0.005 * n)
            .collect();
        send(&mut i, 4, lazy);
        let noise: Vec<f32> = gaussian(D, 41).iter().map(|x| x * 0.01).collect();
        send(&mut i, 5, noise);
        let flipped: Vec<f32> = honest(6).iter().map(|x| -x).collect();
        send(&mut i, 6, flipped);
        let tiny: Vec<f32> = honest(7).iter().map(|x| x * 0.01).collect();
        send(&mut i, 7, tiny);
        let w = i.weigh(engine.pending());
        assert!(w.judged, "{w:?}");
        assert_eq!(w.factors.len(), 7);
        for f in &w.factors[..3] {
            assert!(*f > 0.8, "honest factor {f}");
        }
        assert!(
            w.factors[3] > 0.1 && w.factors[3] < 0.35,
            "lazy factor {}",
            w.factors[3]
        );
        assert_eq!(&w.factors[4..], &[0.0, 0.0, 0.0]);
        assert_eq!(w.held_back, vec![key(5).public().to_peer_id()]);
        let failed: Vec<(PeerId, &str)> = w
            .failed
            .iter()
            .map(|r| (r.peer.unwrap(), r.reason.label()))
            .collect();
        assert_eq!(failed, vec![(key(6).public().to_peer_id(), "screen")]);
        // The free ride earns nothing but is not held against its sender.
        assert_eq!(w.unpaid.len(), 1);
        assert_eq!(w.unpaid[0].0, key(7).public().to_peer_id());
        assert!(w.unpaid[0].1.contains("far less work"), "{:?}", w.unpaid);
        assert_eq!(w.passed.len(), 4);
    }
}

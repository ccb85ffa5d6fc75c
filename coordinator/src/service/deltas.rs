//! The ingest side: each delta through verification, the screen's verdicts at close, the
//! round's reference gradient and the journal of accepted deltas.

use std::time::Instant;

use anyhow::{anyhow, Result};
use hearth_net::PeerId;
use tracing::{debug, error, info, warn};

use super::admission::admitted;
use super::{now_ms, Service};
use crate::ingest::Rejection;
use crate::screen::Reference;
use crate::store::CommitError;
use crate::verify::Reject;

impl Service {
    /// The verification pipeline for one delta ([`Ingest`]); counts, logs and records every
    /// outcome. Network bytes are counted where they arrive, not here (a journal replay is not
    /// received again).
    pub(super) async fn process_delta(
        &mut self,
        bytes: &[u8],
        sender: Option<PeerId>,
    ) -> Result<(), Reject> {
        let started = Instant::now();
        self.ensure_reference().await;
        let result = {
            let (ledger, cfg, joined) = (&self.state.ledger, &self.cfg, &self.joined);
            self.ingest
                .check(bytes, sender, |p| admitted(ledger, cfg, joined, p))
        };
        self.metrics
            .verify_seconds
            .observe(started.elapsed().as_secs_f64());
        let now = now_ms();
        match result {
            Ok(a) => {
                let v = &a.delta;
                self.metrics.delta("accepted", "ok");
                info!(round = self.round.number, peer = %v.peer, tokens = v.tokens, staleness = v.staleness,
                      train_loss = v.train_loss, bytes = v.wire_bytes,
                      z = a.score.map(|s| s.z), nearest = a.score.map(|s| s.nearest),
                      size = a.score.map(|s| s.size), "delta accepted");
                if let Some(c) = a.clipped {
                    info!(peer = %v.peer, norm = c.norm, bound = c.bound,
                          "delta scaled down to κ × the median recent norm");
                }
                if let Err(e) = self.journal_accepted(bytes) {
                    self.metrics.storage_errors.inc();
                    error!("{}: delta accepted but not journaled (lost if the coordinator dies this round): {e:#}", e.fault());
                }
                self.engine.accept_scored(a.delta, a.flat, a.score);
                Ok(())
            }
            Err(rejection) => {
                let r = rejection.reason.clone();
                self.reject(rejection, now).await;
                Err(r)
            }
        }
    }

    /// Count, log and record a rejection; strikes and screen evidence can ban the peer.
    pub(super) async fn reject(&mut self, rejection: Rejection, now: u64) {
        let Rejection { peer, reason: r } = rejection;
        self.metrics.delta("rejected", r.label());
        let who = peer
            .map(|p| p.to_base58())
            .unwrap_or_else(|| "unknown".into());
        warn!(peer = %who, reason = r.label(), "delta rejected: {r}");
        self.recent_rejections
            .push_back((now, who.clone(), r.to_string()));
        while self.recent_rejections.len() > 50 {
            self.recent_rejections.pop_front();
        }
        // A peer that never joined gets no ledger record (only the metrics count its
        // rejection): records are per volunteer, and a flood of fresh identities must not
        // grow the state file.
        let known = self.state.ledger.peers.contains_key(&who);
        let Some(p) = peer.filter(|_| known) else {
            return;
        };
        if let Some(reason) = self.ingest.judge(&mut self.state.ledger, &who, &r, now) {
            warn!(peer = %who, "banned: {reason}");
            self.apply_ban(p, &reason, now).await;
        }
    }

    /// The screen's verdicts on the round's pending deltas (alignment and work shown): weights,
    /// credit, held-back deltas, and rejections that are evidence against their senders.
    pub(super) async fn weigh_pending(&mut self, now: u64) {
        let w = self.ingest.weigh(self.engine.pending());
        if !w.judged && !w.factors.is_empty() {
            self.metrics.screen_abstained.inc();
            info!(signal = ?w.signal,
                  "screen abstained: the round's median alignment is below 3.09, so its reference carried no signal");
        }
        let credits: Vec<(PeerId, u64, f64)> = self
            .engine
            .pending()
            .iter()
            .zip(&w.factors)
            .filter(|(_, f)| **f > 0.0)
            .map(|(p, f)| (p.peer, (p.tokens as f64 * f).round() as u64, *f))
            .collect();
        self.engine.scale_weights(&w.factors);
        for (peer, tokens, weight) in credits {
            self.metrics.tokens_trained.inc_by(tokens);
            self.state.ledger.accepted(&peer.to_base58(), tokens, now);
            if weight < 1.0 {
                info!(%peer, weight, credit = tokens, "delta down-weighted by the screen");
            }
            self.verdict(
                peer,
                format!("aggregated with screen weight {weight:.2}: credit {tokens} tokens"),
            );
        }
        for peer in w.held_back {
            self.metrics.delta("held_back", "inconclusive");
            info!(%peer,
                  "delta held back: not significant on its own and the sender has no record yet (weight 0, no credit)");
            self.verdict(
                peer,
                "held back: not significant on its own and no record yet (weight 0, no credit; not held against you)".into(),
            );
            let id = peer.to_base58();
            if self.state.ledger.peers.contains_key(&id) {
                self.state.ledger.held_back(&id, now);
            }
        }
        for (peer, why) in w.unpaid {
            self.metrics.delta("held_back", "free_ride");
            info!(%peer,
                  "delta unpaid, a free ride: {why} (weight 0, no credit; not held against the worker)");
            self.verdict(
                peer,
                format!("unpaid: {why} (weight 0, no credit; not held against you)"),
            );
            let id = peer.to_base58();
            if self.state.ledger.peers.contains_key(&id) {
                self.state.ledger.held_back(&id, now);
            }
        }
        for peer in w.passed {
            let id = peer.to_base58();
            if self.state.ledger.peers.contains_key(&id) {
                self.ingest.passed(&mut self.state.ledger, &id, now);
            }
        }
        for rejection in w.failed {
            if let Some(peer) = rejection.peer {
                self.verdict(
                    peer,
                    format!("rejected at the round's close: {}", rejection.reason),
                );
            }
            self.ingest.round.rejected += 1;
            self.reject(rejection, now).await;
        }
    }

    /// Remember the verdict on `peer`'s delta of the closing round (sent on its next join).
    pub(super) fn verdict(&mut self, peer: PeerId, mut text: String) {
        if text.len() > hearth_proto::DeltaVerdict::MAX_TEXT {
            let mut end = hearth_proto::DeltaVerdict::MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let round = self.round.number;
        self.verdicts
            .insert(peer, hearth_proto::DeltaVerdict { round, text });
    }

    /// Start computing the open round's reference gradient on a blocking thread.
    pub(super) fn start_reference(&mut self) {
        let n = self.reference_pool.len();
        if n == 0 {
            return;
        }
        let round = self.round.number;
        let size = self.cfg.coordinator.reference_sequences.max(1);
        let first = (round as usize).wrapping_mul(size);
        let data: Vec<_> = (0..size.min(n))
            .filter_map(|j| self.reference_pool.get((first + j) % n).cloned())
            .collect();
        let params = self.engine.params().to_vec();
        let ev = self.evaluator.clone();
        let task = tokio::task::spawn_blocking(move || {
            ev.lock()
                .map_err(|_| anyhow!("evaluator poisoned"))?
                .gradient(&params, &data)
                .map_err(anyhow::Error::from)
        });
        self.reference_task = Some((round, task));
    }

    /// Wait for the open round's reference gradient if it is still being computed.
    pub(super) async fn ensure_reference(&mut self) {
        let Some((round, task)) = self.reference_task.take() else {
            return;
        };
        let started = Instant::now();
        match task.await {
            Ok(Ok((loss, g))) => match Reference::from_gradient(round, &g) {
                Some(r) => {
                    debug!(round, loss, seconds = started.elapsed().as_secs_f64(), "reference gradient ready");
                    self.ingest.set_reference(r);
                }
                None => warn!(round, "the reference gradient is zero or not finite; this round's deltas are not screened"),
            },
            Ok(Err(e)) => warn!(round, "reference gradient failed; this round's deltas are not screened: {e:#}"),
            Err(e) => warn!(round, "reference gradient task failed: {e}"),
        }
    }

    /// Record an accepted delta's bytes so a restarted coordinator can restore the round.
    pub(super) fn journal_accepted(&self, bytes: &[u8]) -> Result<(), CommitError> {
        crate::journal::append(&self.store, &self.data_dir, self.round.number, bytes)?;
        Ok(())
    }

    /// Re-verify and re-accept the deltas journaled for the round in progress (after a restart).
    pub(super) async fn restore_journal(&mut self) -> Result<()> {
        let cids = crate::journal::read(&self.data_dir, self.round.number);
        crate::journal::remove(&self.data_dir, self.round.number);
        let mut restored = 0;
        for cid in cids {
            match self.store.get(&cid) {
                Ok(bytes) => {
                    if self.process_delta(&bytes, None).await.is_ok() {
                        restored += 1;
                    }
                }
                Err(e) => warn!(%cid, "journaled delta unreadable: {e}"),
            }
        }
        info!(
            round = self.round.number,
            restored, "restored the accepted deltas of the round in progress"
        );
        Ok(())
    }
}

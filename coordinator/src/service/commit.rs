//! A round's close and commit: aggregate, gate on held-out loss, store the checkpoint, and
//! halt while the data dir refuses the write.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use hearth_proto::{encode, Announcement, CheckpointManifest, ContentId, NamedTensor};
use tracing::{debug, error, info, warn};

use super::{now_ms, policy_of, Service};
use crate::engine::Closed;
use crate::outer::OuterState;
use crate::round::Round;
use crate::state::{CheckpointRecord, RoundRecord};
use crate::store::{write_atomic, CommitError};

/// While halted by a storage error, how often the commit is retried, in ms.
const STORAGE_RETRY_MS: u64 = 5_000;

/// A closed round's result, waiting to be written to the data dir.
pub(super) struct PendingCommit {
    /// Round number (0 = the initial checkpoint).
    pub(super) round: u64,
    /// Adapter parameters to store.
    pub(super) params: Vec<NamedTensor>,
    /// Outer optimizer state to store.
    pub(super) outer: OuterState,
    /// Held-out loss of `params`.
    pub(super) eval_loss: Option<f32>,
    /// Workers' mean training loss.
    pub(super) train_loss: Option<f32>,
    /// The round's record (none for checkpoint 0).
    pub(super) record: Option<RoundRecord>,
    /// How the adapter changed from the previous checkpoint (the screen's copy check).
    pub(super) change: Option<Vec<f32>>,
}

/// Rounds are halted: a closed round could not be committed to the data dir.
pub(super) struct Halted {
    /// `disk full` or `storage error` (shown as the phase `halted: ...`).
    pub(super) fault: &'static str,
    /// The round result retried every [`STORAGE_RETRY_MS`].
    pub(super) pending: PendingCommit,
    /// When to retry next.
    pub(super) retry_at_ms: u64,
}

impl Service {
    pub(super) async fn close_round(&mut self, now: u64) -> Result<()> {
        let number = self.round.number;
        let started = Instant::now();
        self.weigh_pending(now).await;
        let accepted = self.engine.pending().len() as u32;
        let before = crate::engine::flatten(self.engine.params());
        let Some(closed) = self.engine.close() else {
            // Every delta of the round was turned down: the round still ends, with the weights
            // unchanged, so that workers get a new round to train in instead of waiting for one.
            return self.close_empty_round(number, now).await;
        };
        let Closed {
            params,
            outer_state,
            tokens,
            train_loss,
            update_norm,
            ..
        } = closed.clone();
        let loss = self.eval(params.clone()).await? as f32;
        let prev = self.state.latest_eval_loss();
        let tol = self.cfg.run.verify.eval_tolerance;
        let gated = prev.is_some_and(|p| !loss.is_finite() || loss > p * (1.0 + tol));
        let (outcome, note, eval_loss) = if gated {
            let p = prev.unwrap_or(f32::NAN);
            let why = format!(
                "held-out loss {loss:.4} is worse than {p:.4} by more than {:.1} %",
                tol * 100.0
            );
            warn!("update gated: {why}; keeping the previous weights");
            self.metrics.gated_rounds.inc();
            ("gated", Some(why), prev)
        } else {
            self.engine.commit(&closed);
            ("committed", None, Some(loss))
        };
        let (params, outer_state) = if gated {
            (
                self.engine.params().to_vec(),
                self.engine.outer_state().clone(),
            )
        } else {
            (params, outer_state)
        };
        let change = (!gated).then(|| {
            crate::engine::flatten(&params)
                .iter()
                .zip(&before)
                .map(|(a, b)| a - b)
                .collect()
        });
        self.metrics
            .aggregate_seconds
            .observe(started.elapsed().as_secs_f64());
        let seconds = now.saturating_sub(self.round.opened_unix_ms) as f64 / 1000.0;
        let record = RoundRecord {
            round: number,
            accepted,
            rejected: self.ingest.round.rejected,
            tokens,
            train_loss,
            eval_loss,
            outcome: outcome.into(),
            note,
            seconds,
            bytes_received: self.ingest.round.bytes,
            closed_unix_ms: now_ms(),
        };
        // `round` stays on this line (and on "delta accepted"): hearth-bench-swarm reads it.
        info!(
            round = number,
            accepted,
            rejected = self.ingest.round.rejected,
            eval_loss = ?eval_loss,
            train_loss = ?train_loss,
            update_norm,
            outcome,
            "round closed"
        );
        self.finish_round(PendingCommit {
            round: number,
            params,
            outer: outer_state,
            eval_loss,
            train_loss,
            record: Some(record),
            change,
        })
        .await;
        Ok(())
    }

    /// Close a round none of whose deltas survived the screen: its checkpoint keeps the weights.
    pub(super) async fn close_empty_round(&mut self, number: u64, now: u64) -> Result<()> {
        let why = "no delta of the round passed the screen; the weights are unchanged".to_string();
        warn!("{why}");
        let eval_loss = self.state.latest_eval_loss();
        let record = RoundRecord {
            round: number,
            accepted: 0,
            rejected: self.ingest.round.rejected,
            tokens: 0,
            train_loss: None,
            eval_loss,
            outcome: "empty".into(),
            note: Some(why),
            seconds: now.saturating_sub(self.round.opened_unix_ms) as f64 / 1000.0,
            bytes_received: self.ingest.round.bytes,
            closed_unix_ms: now_ms(),
        };
        self.finish_round(PendingCommit {
            round: number,
            params: self.engine.params().to_vec(),
            outer: self.engine.outer_state().clone(),
            eval_loss,
            train_loss: None,
            record: Some(record),
            change: None,
        })
        .await;
        Ok(())
    }

    /// Commit a closed round and open the next one. When the data dir refuses the write (disk
    /// full, I/O error) nothing of the round is committed: rounds halt, the error is logged and
    /// counted, committed checkpoints keep being served, and the commit is retried every
    /// [`STORAGE_RETRY_MS`] so the run resumes by itself once space is freed.
    pub(super) async fn finish_round(&mut self, pending: PendingCommit) {
        let number = pending.round;
        if let Err(e) = self.commit_checkpoint(&pending).await {
            self.metrics.storage_errors.inc();
            self.metrics.halted.set(1);
            let fault = e.fault();
            if self.halted.is_none() && pending.record.is_some() {
                error!(
                committed_round = self.state.committed_round,
                    "halted: {fault}: round {number} cannot be committed: {e:#}; no new round opens \
                     until it is written (retrying every {} s); committed checkpoints stay served",
                    STORAGE_RETRY_MS / 1000
                );
            } else {
                debug!("commit retry failed: {e:#}");
            }
            self.halted = Some(Halted {
                fault,
                pending,
                retry_at_ms: now_ms().saturating_add(STORAGE_RETRY_MS),
            });
            return;
        }
        if self.halted.take().is_some() {
            info!("storage writable again: round {number} committed; resuming");
        }
        self.metrics.halted.set(0);
        let Some(record) = pending.record else {
            return;
        };
        crate::journal::remove(&self.data_dir, number);
        self.metrics.round_seconds.observe(record.seconds);
        if let Some(l) = pending.eval_loss {
            self.metrics.eval_loss.set(f64::from(l));
        }
        if let Some(l) = pending.train_loss {
            self.metrics.train_loss.set(f64::from(l));
        }
        self.announce(Announcement::RoundClosed {
            round: number,
            accepted: record.accepted,
            rejected: record.rejected,
        });
        if let Some(rec) = self.state.latest() {
            self.announce(Announcement::CheckpointReady(rec.manifest.clone()));
        }
        self.round = Round::open(number + 1, now_ms(), policy_of(&self.cfg.run));
        self.ingest.round_opened(pending.change.as_deref());
        self.engine.set_mean_over_senders(
            self.cfg
                .run
                .aggregate
                .mean_over_senders_in(self.round.number),
        );
        self.start_reference();
        self.metrics.round.set(self.round.number as i64);
        if self.stop_after == 0 || self.state.committed_round < self.stop_after {
            self.announce(Announcement::RoundOpened(self.round_info()));
        }
    }

    /// Store the checkpoint blobs and PEFT directory, then commit the state file. On error
    /// nothing is committed: in-memory state is unchanged and no uncommitted PEFT directory stays
    /// behind for HTTP or `export` to serve.
    pub(super) async fn commit_checkpoint(&mut self, c: &PendingCommit) -> Result<(), CommitError> {
        let round = c.round;
        let adapter_bytes = hearth_proto::encode_checkpoint(&c.params)?;
        let adapter = self.store.put(&adapter_bytes)?;
        let outer_state = Some(self.store.put(&encode(&c.outer))?);
        let manifest = CheckpointManifest {
            round,
            parent: self.state.latest().map(|c| c.id),
            adapter,
            adapter_bytes: adapter_bytes.len() as u64,
            outer_state,
            eval_loss: c.eval_loss,
            train_loss: c.train_loss,
            created_unix_ms: now_ms(),
        };
        let id = self.store.put(&encode(&manifest))?;

        // PEFT directory for this round: written beside, then renamed into place.
        let dir = self.data_dir.join("checkpoints").join(round.to_string());
        let tmp = self
            .data_dir
            .join("checkpoints")
            .join(format!(".{round}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = self.write_peft_dir(c, &manifest, id, &tmp, &dir).await {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }

        // Fault injection for the crash tests: die after the checkpoint's files are written and
        // before the state file commits it.
        if std::env::var("HEARTH_TEST_CRASH_AT_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            == Some(round)
        {
            warn!(
                round,
                "HEARTH_TEST_CRASH_AT_CHECKPOINT: aborting mid-commit"
            );
            std::process::abort();
        }
        let mut next = self.state.clone();
        next.rounds.extend(c.record.clone());
        next.checkpoints.push(CheckpointRecord { manifest, id });
        next.committed_round = round;
        if let Err(e) = next.save(&self.data_dir) {
            // Not committed: the directory must not be served or exported as round `round`.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        self.state = next;
        self.public.insert(adapter);
        self.ingest.checkpoint_committed(round, id);
        Ok(())
    }

    /// Export the PEFT adapter and manifest.json of round `c.round` into `tmp`, then move it to `dir`.
    pub(super) async fn write_peft_dir(
        &self,
        c: &PendingCommit,
        manifest: &CheckpointManifest,
        id: ContentId,
        tmp: &Path,
        dir: &Path,
    ) -> Result<(), CommitError> {
        let ev = self.evaluator.clone();
        let (p, t) = (c.params.clone(), tmp.to_path_buf());
        tokio::task::spawn_blocking(move || {
            ev.lock()
                .map_err(|_| CommitError::Task("evaluator poisoned".into()))?
                .export(&p, &t)
                .map_err(CommitError::from)
        })
        .await
        .map_err(|e| CommitError::Task(e.to_string()))??;
        let manifest_json = serde_json::json!({
            "round": c.round,
            "id": id.to_hex(),
            "parent": manifest.parent.map(|c| c.to_hex()),
            "adapter_blob": manifest.adapter.to_hex(),
            "eval_loss": c.eval_loss,
            "train_loss": c.train_loss,
            "created_unix_ms": manifest.created_unix_ms,
            "run_id": self.cfg.run.run_id,
            "base_model": self.cfg.run.base.name,
        });
        write_atomic(
            &tmp.join("manifest.json"),
            serde_json::to_string_pretty(&manifest_json)?.as_bytes(),
        )?;
        let _ = std::fs::remove_dir_all(dir);
        // A directory moved into place, not a file write (files go through hearth_proto::fsutil).
        std::fs::rename(tmp, dir).map_err(|source| CommitError::Move {
            path: dir.to_path_buf(),
            source,
        })
    }
}

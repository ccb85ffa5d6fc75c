//! One round of a joined worker: train on a checkpoint, take the delta, compress, sign and hand
//! it in (with the test-only attacks applied), and account for it.

use std::ops::ControlFlow;

use anyhow::{anyhow, Result};
use hearth_model::TrainReport;
use hearth_net::PeerId;
use hearth_proto::{
    encode_delta, CheckpointManifest, ContentId, DeltaAck, DeltaMessage, Domain, NamedTensor,
    Residual, RunSpec, SignedEnvelope, TensorLayout,
};
use tracing::{info, info_span, warn, Instrument};

use super::setup::{hello, run_net_config, start_node};
use super::{JoinOptions, Worker};
use crate::attack::{tamper_envelope, tamper_message, tamper_values, Attack};
use crate::client::{banned, CoordinatorClient, Submitted};
use crate::memory::human_bytes;
use crate::metrics::{SubmitOutcome, WorkerState};
use crate::progress::training_message;
use crate::trainer::{Trained, TrainerHandle};

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoundOutcome {
    /// A delta was handed in (whatever the coordinator made of it).
    Submitted,
    /// Stopped during the round: its partial work is not sent.
    Stopped,
    /// The run moved on too far while we trained: the delta would be too stale to count.
    Abandoned,
}

/// What carries over from round to round: the error-feedback residual, and the attacks' memory.
#[derive(Default)]
pub(super) struct Carry {
    residual: Residual,
    /// The replay attack's first signed delta.
    replayed: Option<Vec<u8>>,
    /// The free-rider attack's memory: the last base checkpoint it saw, and by round.
    previous_base: Option<(u64, Vec<NamedTensor>)>,
    /// The copycat attack's second identity, joined on first use.
    sybil: Option<(CoordinatorClient, hearth_net::Keypair)>,
}

/// `new - old`, tensor by tensor.
fn difference(new: &[NamedTensor], old: &[NamedTensor]) -> Vec<NamedTensor> {
    new.iter()
        .zip(old)
        .map(|(a, b)| NamedTensor {
            name: a.name.clone(),
            shape: a.shape.clone(),
            data: a.data.iter().zip(&b.data).map(|(x, y)| x - y).collect(),
        })
        .collect()
}

impl Worker {
    /// Train one round on checkpoint `m` and hand in its delta.
    pub(super) async fn run_round(
        &mut self,
        spec: &RunSpec,
        layout: &[TensorLayout],
        trainer: &TrainerHandle,
        m: &CheckpointManifest,
        carry: &mut Carry,
    ) -> Result<RoundOutcome> {
        self.set_state(WorkerState::Fetching, "fetching");
        let cache_dir = self.opts.cache_dir.clone();
        let fetched = self
            .client
            .checkpoint(m, spec, layout, &cache_dir, &self.opts.progress)
            .await;
        let mut params = match fetched {
            Ok(p) => p,
            Err(e) => {
                // A banned peer's blob requests are refused: ask the coordinator why, so that
                // a ban is reported as one (the poll answer says so) and not as a missing blob.
                self.client.poll().await?;
                return Err(e);
            }
        };
        // Once per round, before the residual is used: SparseLoCo's decayed error feedback.
        carry.residual.decay(spec.aggregate.error_feedback_decay);
        if spec.aggregate.local_error_feedback {
            add_residual(&mut params, &carry.residual);
        }
        let round_no = self
            .latest_rx
            .borrow()
            .round
            .as_ref()
            .map(|r| r.round)
            .unwrap_or(m.round + 1);
        let span = info_span!("round", round = round_no);
        self.train_and_hand_in(spec, trainer, m, carry, params, round_no)
            .instrument(span)
            .await
    }

    /// Train round `round_no` from `params` (checkpoint `m`, with the residual added) and hand in
    /// its delta.
    async fn train_and_hand_in(
        &mut self,
        spec: &RunSpec,
        trainer: &TrainerHandle,
        m: &CheckpointManifest,
        carry: &mut Carry,
        params: Vec<NamedTensor>,
        round_no: u64,
    ) -> Result<RoundOutcome> {
        info!(base = m.round, "training");
        let trained = self.train(spec, trainer, &params, round_no).await?;
        self.metrics.round_trained(round_no, &trained.report);
        self.set_state(WorkerState::Submitting, "submitting");
        let report = &trained.report;
        if report.steps == 0 || self.control.stopping() {
            info!("stopped during round {round_no}; its partial work is not sent");
            return Ok(RoundOutcome::Stopped);
        }
        // A long pause may have let the run move past what the coordinator still accepts.
        let newest = self
            .latest_rx
            .borrow()
            .round
            .as_ref()
            .map(|r| r.round)
            .unwrap_or(0);
        if newest > round_no + u64::from(spec.aggregate.max_staleness) {
            warn!(
                "round {round_no} abandoned: the run is at round {newest} now (more than {} rounds later)",
                spec.aggregate.max_staleness
            );
            return Ok(RoundOutcome::Abandoned);
        }
        let mut delta = difference(&trained.params, &params);
        if self.opts.attack == Some(Attack::FreeRide) {
            let change = carry
                .previous_base
                .as_ref()
                .filter(|(r, _)| *r < m.round)
                .map(|(_, prev)| difference(&params, prev));
            crate::attack::free_ride(&mut delta, change.as_deref());
        }
        carry.previous_base = Some((m.round, params));
        let honest_delta = (self.opts.attack == Some(Attack::Copycat)).then(|| delta.clone());
        if let Some(a) = self.opts.attack.filter(|a| *a != Attack::Copycat) {
            tamper_values(a, &mut delta, round_no);
            if a == Attack::WrongShape {
                delta.pop();
            }
        }
        let msg = DeltaMessage {
            run_id: spec.run_id.clone(),
            round: round_no,
            base_round: m.round,
            base_checkpoint: Some(m.id()),
            tokens_trained: report.tokens as u64,
            steps: report.steps as u32,
            train_loss: report.mean_loss as f32,
            delta: encode_delta(
                &spec.aggregate.codec_for(round_no),
                &delta,
                &mut carry.residual,
            )?,
        };
        let (msg, bytes) = self.seal(msg, spec, carry)?;
        let size = bytes.len();
        let (kind, outcome, verdict) = self.hand_in(bytes, spec).await?;
        if let Some(mut copy) = honest_delta {
            // The copy goes in after the original, as a copier's would.
            tamper_values(Attack::Copycat, &mut copy, round_no);
            let coordinator = self.coordinator;
            let outcome =
                copycat_submit(&mut carry.sybil, &self.opts, spec, coordinator, &msg, &copy).await;
            info!("copycat: the copy under a second identity was {outcome}");
        }
        self.metrics.submitted(size, kind);
        self.set_state(WorkerState::Waiting, "waiting");
        self.done += 1;
        let credit = match kind {
            SubmitOutcome::Failed | SubmitOutcome::Rejected => 0,
            _ => report.tokens as u64,
        };
        self.control.round_done(credit, verdict);
        self.log_round(round_no, &outcome, report, size);
        Ok(RoundOutcome::Submitted)
    }

    /// Run the local steps from `params`, with a progress bar; the lazy attack stops early and
    /// claims the whole round.
    async fn train(
        &mut self,
        spec: &RunSpec,
        trainer: &TrainerHandle,
        params: &[NamedTensor],
        round_no: u64,
    ) -> Result<Trained> {
        self.set_state(WorkerState::Training, "training");
        self.control.start_round(round_no);
        let bar = self
            .opts
            .progress
            .training(round_no, u64::from(spec.train.local_steps));
        let lazy_steps = (self.opts.attack == Some(Attack::Lazy)).then(|| {
            ((f64::from(spec.train.local_steps) * crate::attack::LAZY_FRACTION).ceil() as usize)
                .max(1)
        });
        let mut trained = {
            let mut observe = self.metrics.step_observer();
            let control = self.control.clone();
            let bar = bar.clone();
            trainer
                .train(params.to_vec(), move |info| {
                    observe(info);
                    control.step_done(info.step as u64);
                    bar.set_position(info.step as u64);
                    let rate = if info.seconds > 0.0 {
                        info.tokens as f64 / info.seconds
                    } else {
                        0.0
                    };
                    bar.set_message(training_message(info.loss, rate));
                    if lazy_steps.is_some_and(|n| info.step >= n) {
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                })
                .await?
        };
        if let Some(done) = lazy_steps.filter(|_| trained.report.steps > 0) {
            // Claim every assigned step (and its tokens) for a quarter of the work.
            let scale = f64::from(spec.train.local_steps) / done.min(trained.report.steps) as f64;
            trained.report.tokens = (trained.report.tokens as f64 * scale) as usize;
            trained.report.steps = spec.train.local_steps as usize;
        }
        bar.finish_and_clear();
        Ok(trained)
    }

    /// Sign `msg` (tampered with by the attacks that forge messages or envelopes); the replay
    /// attack sends its first round's bytes again every round.
    fn seal(
        &self,
        mut msg: DeltaMessage,
        spec: &RunSpec,
        carry: &mut Carry,
    ) -> Result<(DeltaMessage, Vec<u8>)> {
        if let Some(a) = self.opts.attack {
            tamper_message(a, &mut msg, spec.aggregate.max_staleness);
        }
        let mut env = SignedEnvelope::seal(&self.key, Domain::Delta, &msg)?;
        if let Some(a) = self.opts.attack {
            tamper_envelope(a, &mut env);
        }
        let mut bytes = env.to_bytes();
        if self.opts.attack == Some(Attack::Replay) {
            match &carry.replayed {
                Some(first) => bytes = Vec::clone(first),
                None => carry.replayed = Some(bytes.clone()),
            }
        }
        Ok((msg, bytes))
    }

    /// Hand in the signed delta: how it went, in words, and the verdict (`None`: unknown). A ban
    /// ends the session.
    async fn hand_in(
        &mut self,
        bytes: Vec<u8>,
        spec: &RunSpec,
    ) -> Result<(SubmitOutcome, String, Option<bool>)> {
        Ok(match self.client.submit(bytes, &spec.net).await {
            Ok(Submitted::Gossiped) => (SubmitOutcome::Gossip, "sent by gossip".to_string(), None),
            Ok(Submitted::Answered(DeltaAck::Accepted { last_verdict })) => {
                self.client.report_verdict(last_verdict);
                (SubmitOutcome::Accepted, "accepted".to_string(), Some(true))
            }
            Ok(Submitted::Answered(DeltaAck::Banned { reason })) => {
                return Err(banned(&reason, &self.client.peer_id()));
            }
            Ok(Submitted::Answered(DeltaAck::Rejected { reason })) => (
                SubmitOutcome::Rejected,
                format!("rejected ({reason})"),
                Some(false),
            ),
            Err(e) => (SubmitOutcome::Failed, format!("not delivered: {e}"), None),
        })
    }

    /// The round's one-line account, on the terminal (with progress bars) or in the log.
    fn log_round(&self, round_no: u64, outcome: &str, report: &TrainReport, size: usize) {
        let line = round_summary(round_no, outcome, report, size, &self.control.status());
        if self.opts.progress.bars() {
            self.opts.progress.println(&line);
        } else {
            info!(
                steps = report.steps,
                loss = format!("{:.4}", report.mean_loss),
                tokens_per_s = format!("{:.0}", report.tokens_per_second),
                bytes = size,
                "{line}"
            );
        }
    }
}

/// The copycat attack: join a second identity (derived from the first) once, then send `copy`
/// signed by it. Returns what happened, for the log.
async fn copycat_submit(
    sybil: &mut Option<(CoordinatorClient, hearth_net::Keypair)>,
    opts: &JoinOptions,
    spec: &RunSpec,
    coordinator: PeerId,
    base: &DeltaMessage,
    copy: &[NamedTensor],
) -> String {
    let attempt = async {
        if sybil.is_none() {
            let me = hearth_net::load_or_create_identity(&opts.identity)?;
            let seed = ContentId::of(
                &[b"sybil".as_slice(), &me.public().to_peer_id().to_bytes()].concat(),
            );
            let key = hearth_net::Keypair::ed25519_from_bytes(*seed.as_bytes())
                .map_err(|e| anyhow!("sybil identity: {e}"))?;
            let mut sopts = opts.clone();
            sopts.name = format!("{}-sybil", opts.name);
            let cfg = run_net_config(&key, spec, opts, false, Vec::new());
            let mut node = start_node(cfg, opts, coordinator, hello(&sopts))?;
            node.client.join().await?;
            *sybil = Some((node.client, key));
        }
        let (client, key) = sybil.as_mut().ok_or_else(|| anyhow!("no sybil"))?;
        let mut msg = base.clone();
        msg.delta = encode_delta(
            &spec.aggregate.codec_for(msg.round),
            copy,
            &mut Residual::new(),
        )?;
        let env = SignedEnvelope::seal(key, Domain::Delta, &msg)?;
        Ok::<_, anyhow::Error>(match client.submit(env.to_bytes(), &spec.net).await? {
            Submitted::Answered(DeltaAck::Accepted { .. }) => "accepted".to_string(),
            Submitted::Answered(DeltaAck::Rejected { reason } | DeltaAck::Banned { reason }) => {
                format!("rejected ({reason})")
            }
            Submitted::Gossiped => "sent by gossip".to_string(),
        })
    };
    attempt.await.unwrap_or_else(|e| format!("not sent: {e:#}"))
}

/// A one-line account of a round, for the terminal and the log.
fn round_summary(
    round: u64,
    outcome: &str,
    report: &hearth_model::TrainReport,
    bytes: usize,
    status: &crate::control::Status,
) -> String {
    format!(
        "round {round}: delta {outcome} · {} steps · loss {:.4} · {:.0} tok/s · {} sent · {} tokens delivered ({} accepted, {} rejected; the credit follows the coordinator's verdicts)",
        report.steps,
        report.mean_loss,
        report.tokens_per_second,
        human_bytes(bytes as u64),
        status.credit_tokens,
        status.accepted,
        status.rejected
    )
}

/// Adds the error-feedback residual to the checkpoint's values (local error feedback): training
/// then starts where this worker's own updates, sent and unsent, have taken it. The delta is still
/// taken against these values and `encode` adds the residual once, so nothing is counted twice.
fn add_residual(params: &mut [NamedTensor], residual: &Residual) {
    for p in params.iter_mut() {
        if let Some(r) = residual.get(&p.name).filter(|r| r.len() == p.data.len()) {
            for (a, b) in p.data.iter_mut().zip(r) {
                *a += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::CodecSpec;

    fn tensor(name: &str, data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![data.len()],
            data,
        }
    }

    #[test]
    fn local_error_feedback_starts_from_checkpoint_plus_residual_and_counts_it_once() {
        // One top-k round leaves everything but the largest value in the residual.
        let mut residual = Residual::new();
        let first = vec![tensor("b", vec![4.0, 1.0, -2.0, 0.5])];
        encode_delta(
            &CodecSpec::TopK {
                density: 0.25,
                bits: 1,
            },
            &first,
            &mut residual,
        )
        .unwrap();
        assert_eq!(residual.get("b").unwrap(), &[0.0, 1.0, -2.0, 0.5]);

        let mut params = vec![
            tensor("b", vec![10.0, 10.0, 10.0, 10.0]),
            tensor("other", vec![1.0]),
        ];
        add_residual(&mut params, &residual);
        assert_eq!(params[0].data, vec![10.0, 11.0, 8.0, 10.5]);
        assert_eq!(
            params[1].data,
            vec![1.0],
            "a tensor without a residual is unchanged"
        );

        // A residual of the wrong length (layout changed) is ignored, not added.
        let mut short = vec![tensor("b", vec![0.0; 3])];
        add_residual(&mut short, &residual);
        assert_eq!(short[0].data, vec![0.0; 3]);
    }
}

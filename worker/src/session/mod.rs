//! `hearth-worker join`: join a run, then train, compress, sign and send a delta every round.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use hearth_net::{Multiaddr, PeerId};
use hearth_proto::CheckpointManifest;
use tokio::sync::watch;
use tracing::info;

use crate::attack::Attack;
use crate::client::{CoordinatorClient, Joined, Polled};
use crate::control::Control;
use crate::device::DeviceChoice;
use crate::metrics::{WorkerMetrics, WorkerState};
use crate::progress::Progress;
use pump::Latest;
use round::{Carry, RoundOutcome};

mod pump;
mod round;
mod setup;
mod signals;

pub use setup::{run_memory, run_model_config};

/// How often a worker waiting for a checkpoint asks the coordinator directly.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How long a leaving worker waits for the checkpoint its last delta went into.
const LAST_CHECKPOINT_WAIT: Duration = Duration::from_secs(60);

/// What `join` needs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Coordinator multiaddr with `/p2p/<peer id>`.
    pub coordinator: Multiaddr,
    /// Cache directory (model, shards, checkpoints).
    pub cache_dir: PathBuf,
    /// Identity key file.
    pub identity: PathBuf,
    /// Display name.
    pub name: String,
    /// The training device.
    pub device: DeviceChoice,
    /// CPU threads for training.
    pub threads: usize,
    /// Cap on sequences per micro-batch (`--max-batch`).
    pub max_batch: Option<usize>,
    /// How the frozen base weights are held (`--dtype`) and activation checkpointing.
    pub footprint: crate::memory::Footprint,
    /// Memory the worker may use (`--max-memory`); default: what the system has available.
    pub max_memory: Option<u64>,
    /// Serve the control endpoint (POST /pause, POST /resume, GET /status) on this address.
    pub control_addr: Option<String>,
    /// Pause, hours, stop and status, shared with the signal handlers and the endpoint.
    pub control: Control,
    /// Terminal progress.
    pub progress: Progress,
    /// Leave after contributing to this many rounds.
    pub rounds: Option<u64>,
    /// Join token for closed runs.
    pub token: Option<String>,
    /// Subscribe to the deltas topic and relay others' deltas.
    pub relay: bool,
    /// Listen addresses (for relayed and hole-punched connections).
    pub listen: Vec<Multiaddr>,
    /// Serve Prometheus metrics on this address (`--metrics`).
    pub metrics: Option<String>,
    /// Misbehave this way (testing the coordinator's defences only).
    pub attack: Option<Attack>,
    /// Pre-shared key of a private swarm (`--swarm-key`): pnet over TCP, QUIC off.
    pub swarm_key: Option<hearth_net::SwarmKey>,
}

/// A joined worker's state across rounds.
struct Worker {
    opts: JoinOptions,
    client: CoordinatorClient,
    key: hearth_net::Keypair,
    coordinator: PeerId,
    metrics: WorkerMetrics,
    control: Control,
    latest_tx: watch::Sender<Latest>,
    latest_rx: watch::Receiver<Latest>,
    /// Rounds contributed to.
    done: u64,
    /// The checkpoint the next round trains on.
    checkpoint: Option<CheckpointManifest>,
}

/// Join the run at `opts.coordinator` and contribute until `opts.rounds` or ctrl-c.
pub async fn join(opts: JoinOptions) -> Result<()> {
    let coordinator = setup::coordinator_peer(&opts)?;
    let key = hearth_net::load_or_create_identity(&opts.identity)?;
    let me = key.public().to_peer_id();
    let control = opts.control.clone();
    info!(peer_id = %me, name = %opts.name, device = %opts.device, threads = opts.threads, "starting");
    let metrics = WorkerMetrics::new()?;
    if let Some(addr) = &opts.metrics {
        let bound = crate::metrics::serve(addr, metrics.clone()).await?;
        info!("metrics on http://{bound}/metrics");
    }
    if let Some(addr) = &opts.control_addr {
        let bound = crate::control::serve(addr, control.clone()).await?;
        info!("control on http://{bound} (POST /pause, POST /resume, GET /status)");
    }
    crate::control::listen_for_signals(control.clone())?;
    let mut stop_rx = signals::spawn_interrupt_handler(control.clone())?;

    let node = setup::start_node(
        setup::node_config(&key, &opts),
        &opts,
        coordinator,
        setup::hello(&opts),
    )?;
    let mut client = node.client;
    let joined = tokio::select! {
        r = client.enter_run() => r,
        _ = stop_rx.wait_for(|stop| *stop) => Err(anyhow!("interrupted before joining")),
    };
    let joined = match joined.and_then(|j| setup::check_memory(&opts, &j.spec).map(|()| j)) {
        Ok(j) => j,
        Err(e) => {
            client.net().shutdown().await;
            return Err(e);
        }
    };
    let mut w = Worker {
        opts,
        client,
        key,
        coordinator,
        metrics,
        control,
        latest_tx: node.latest_tx,
        latest_rx: node.latest_rx,
        done: 0,
        checkpoint: None,
    };
    tokio::select! {
        r = w.rounds(joined) => r?,
        _ = stop_rx.wait_for(|stop| *stop) => {}
    }
    w.leave().await;
    Ok(())
}

impl Worker {
    fn set_state(&self, state: WorkerState, name: &str) {
        self.metrics.set_state(state);
        self.control.set_state(name);
    }

    /// Get ready for the run `joined` describes, then train round after round until told to stop.
    async fn rounds(&mut self, joined: Joined) -> Result<()> {
        self.checkpoint = joined.latest;
        let round = joined.round;
        self.latest_tx.send_modify(|l| l.round = Some(round));
        let spec = joined.spec;
        info!(run = %spec.run_id, shards = ?joined.shards, "joined {}", spec.name);
        self.set_state(WorkerState::Fetching, "fetching");

        let layout = spec.adapter_layout()?;
        let trainer = setup::start_trainer(
            &mut self.client,
            &self.opts,
            &self.control,
            &spec,
            &joined.shards,
        )
        .await?;
        let mut carry = Carry::default();
        loop {
            if self.opts.rounds.is_some_and(|r| self.done >= r) {
                break;
            }
            let m = match self.checkpoint.clone() {
                Some(m) => m,
                None => {
                    self.checkpoint = self.client.poll().await?.latest;
                    if self.checkpoint.is_none() {
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                    continue;
                }
            };
            // Paused or outside the hours: stay connected, start no round until allowed. The
            // checkpoint may have moved on meanwhile: take the newest.
            if !self.control.may_train() {
                self.set_state(WorkerState::Waiting, "waiting");
                if !self.control.wait_until_allowed().await {
                    break;
                }
                if let Some(c) = self.newer_than(m.round) {
                    self.checkpoint = Some(c);
                    continue;
                }
            }
            match self
                .run_round(&spec, &layout, &trainer, &m, &mut carry)
                .await?
            {
                RoundOutcome::Submitted => {}
                RoundOutcome::Stopped => break,
                RoundOutcome::Abandoned => {
                    self.checkpoint = self.latest_rx.borrow().checkpoint.clone().or(Some(m));
                    continue;
                }
            }
            let last = self.opts.rounds.is_some_and(|r| self.done >= r);
            let next = self.next_checkpoint(&m, last).await?;
            if last {
                self.checkpoint = next.or(Some(m));
                break;
            }
            self.checkpoint = next;
        }
        Ok(())
    }

    /// The newest announced checkpoint, if it is newer than round `round`.
    fn newer_than(&self, round: u64) -> Option<CheckpointManifest> {
        self.latest_rx
            .borrow()
            .checkpoint
            .clone()
            .filter(|c| c.round > round)
    }

    /// Wait for a checkpoint newer than `m`: gossip usually brings it; poll the coordinator
    /// otherwise. After the last round (`last`), wait a bounded time only: to report the
    /// checkpoint we end on.
    async fn next_checkpoint(
        &mut self,
        m: &CheckpointManifest,
        last: bool,
    ) -> Result<Option<CheckpointManifest>> {
        let give_up = tokio::time::Instant::now() + LAST_CHECKPOINT_WAIT;
        loop {
            if last && tokio::time::Instant::now() >= give_up {
                return Ok(None);
            }
            if let Some(c) = self.newer_than(m.round) {
                return Ok(Some(c));
            }
            // Wake on news, on a lost connection (poll at once: the poll redials, so a
            // restarted coordinator is found within the redial backoff, not the poll
            // interval) or when the poll interval passes.
            let mut conn = self.client.connection();
            let woke = tokio::select! {
                r = self.latest_rx.changed() => Some(r),
                _ = conn.wait_for(|c| !*c) => None,
                _ = tokio::time::sleep(POLL_INTERVAL) => None,
            };
            match woke {
                Some(Ok(())) => {}
                Some(Err(_)) => return Err(anyhow!("the network task stopped")),
                None => {
                    let polled = if last {
                        match tokio::time::timeout(POLL_INTERVAL, self.client.poll()).await {
                            Ok(r) => r,
                            Err(_) => continue,
                        }
                    } else {
                        self.client.poll().await
                    };
                    let Polled { latest, round } = polled?;
                    self.latest_tx.send_modify(|l| {
                        if l.round.as_ref().is_none_or(|r| r.round <= round.round) {
                            l.round = Some(round);
                        }
                        if let Some(c) = latest {
                            if l.checkpoint.as_ref().is_none_or(|x| x.round < c.round) {
                                l.checkpoint = Some(c);
                            }
                        }
                    });
                }
            }
        }
    }

    /// Leave: print the summary (the newest checkpoint we know of, which gossip may have brought
    /// while we trained) and shut the node down.
    async fn leave(self) {
        self.set_state(WorkerState::Stopped, "stopped");
        let newest = self.latest_rx.borrow().checkpoint.clone();
        let end = match (newest, self.checkpoint) {
            (Some(n), Some(c)) => Some(if n.round > c.round { n } else { c }),
            (n, c) => n.or(c),
        };
        let end = end.as_ref();
        let st = self.control.status();
        let done = self.done;
        let summary = format!(
            "left the swarm after {done} round(s): {} tokens delivered, {} accepted, {} rejected (credit: the coordinator's ledger); last checkpoint {}",
            st.credit_tokens,
            st.accepted,
            st.rejected,
            end.map_or("none".to_string(), |c| format!("round {}", c.round))
        );
        // The final summary shows even with --quiet.
        warn_or_info(&self.opts.progress, &summary);
        println!(
            "{}",
            serde_json::json!({
                "event": "left",
                "peer_id": self.client.peer_id().to_base58(),
                "rounds": done,
                "tokens": st.credit_tokens,
                "accepted": st.accepted,
                "rejected": st.rejected,
                "checkpoint_round": end.map(|c| c.round),
                "checkpoint": end.map(|c| c.id().to_hex()),
            })
        );
        self.client.net().shutdown().await;
    }
}

/// Print the final summary: on the terminal always, in the log as well.
fn warn_or_info(progress: &Progress, line: &str) {
    info!(target: "hearth_worker::summary", "{line}");
    if !tracing::enabled!(tracing::Level::INFO) {
        progress.println(line);
    }
}

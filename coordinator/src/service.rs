//! `hearth-coordinator run`: the network event loop around the round engine.
//!
//! Data flows one way: network → verify → aggregate → evaluate/gate → store → publish.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use hearth_model::data::Shard;
use hearth_net::{Client, Event, Multiaddr, NetConfig, PeerId, Protocol, Role, Topic, Validation};
use hearth_proto::{
    decode_bounded, encode, Admission, Announcement, BlobRequest, BlobResponse, CheckpointManifest,
    ContentId, DeltaAck, JoinRequest, JoinResponse, NamedTensor, PollRequest, PollResponse,
    RoundInfo, RunSpec, ShardLease, Wire, PROTOCOL_VERSION,
};
use tracing::{debug, error, info, warn};

use crate::config::RunConfig;
use crate::engine::{Closed, Engine};
use crate::evaluator::Evaluator;
use crate::ingest::{Ingest, Rejection};
use crate::metrics::Metrics;
use crate::outer::OuterState;
use crate::round::{Decision, Round, RoundPolicy};
use crate::screen::Reference;
use crate::state::{CheckpointRecord, RoundRecord, State};
use crate::status::{Snapshot, WorkerView};
use crate::store::{write_atomic, BlobStore, CommitError};
use crate::verify::Reject;

/// Largest validation shard read from the store.
const MAX_SHARD_BYTES: usize = 1 << 30;
/// Sequences of each train shard kept for reference batches.
const REFERENCE_POOL_PER_SHARD: usize = 64;
/// How long a banned peer's requests are still answered (with the reason of its ban) before the
/// network refuses it, in ms: long enough for its worker to hear why and stop.
const BAN_NOTICE_MS: u64 = 15_000;
/// While halted by a storage error, how often the commit is retried, in ms.
const STORAGE_RETRY_MS: u64 = 5_000;

/// The bans file `hearth-coordinator ban` appends to; the running coordinator applies it.
pub fn bans_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bans.txt")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Up to [`REFERENCE_POOL_PER_SHARD`] sequences of every train shard, interleaved so that any
/// window of the pool spans the shards. A shard that cannot be read is left out (logged).
fn reference_pool(store: &BlobStore, spec: &RunSpec) -> Vec<hearth_model::Sequence> {
    let per_shard: Vec<Vec<hearth_model::Sequence>> = spec
        .data
        .shards
        .iter()
        .enumerate()
        .filter_map(|(i, info)| {
            let read = store
                .get(&info.cid)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(Shard::from_bytes(&b, MAX_SHARD_BYTES)?.into_sequences()));
            match read {
                Ok(seqs) => Some(seqs.into_iter().take(REFERENCE_POOL_PER_SHARD).collect()),
                Err(e) => {
                    warn!(
                        shard = i,
                        "train shard not used for reference batches: {e:#}"
                    );
                    None
                }
            }
        })
        .collect();
    (0..REFERENCE_POOL_PER_SHARD)
        .flat_map(|j| per_shard.iter().filter_map(move |s| s.get(j).cloned()))
        .collect()
}

/// Whether `peer` may send deltas: not banned, and joined unless the run is open to all.
fn admitted(
    ledger: &crate::ledger::Ledger,
    cfg: &RunConfig,
    joined: &HashMap<PeerId, u64>,
    peer: &PeerId,
) -> Result<(), Reject> {
    let id = peer.to_base58();
    if ledger.is_banned(&id) {
        return Err(Reject::Banned(id));
    }
    match cfg.run.admission {
        Admission::Open => Ok(()),
        _ if joined.contains_key(peer) => Ok(()),
        _ => Err(Reject::NotAdmitted(id)),
    }
}

/// A seed for the screen's sketches that peers cannot predict.
fn sketch_seed() -> u64 {
    let nonce = format!("{:?}/{}", SystemTime::now(), std::process::id());
    let h = ContentId::of(nonce.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// Options of `run` that are not in run.toml.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Listen addresses overriding run.toml.
    pub listen: Vec<Multiaddr>,
    /// HTTP bind address overriding run.toml (`None` keeps it; `Some("")` disables HTTP).
    pub http: Option<String>,
    /// Stop after this many committed rounds (overrides run.toml when set).
    pub rounds: Option<u64>,
    /// Write the dialable multiaddr here once listening (used by `demo` and tests).
    pub addr_file: Option<PathBuf>,
    /// Pre-shared key of a private swarm (`--swarm-key`): pnet over TCP, QUIC off.
    pub swarm_key: Option<hearth_net::SwarmKey>,
}

fn policy_of(spec: &RunSpec) -> RoundPolicy {
    RoundPolicy {
        target_deltas: spec.aggregate.target_deltas.max(1) as usize,
        min_deltas: spec.aggregate.min_deltas as usize,
        grace_ms: spec.aggregate.grace_secs.saturating_mul(1000),
        deadline_ms: spec.aggregate.deadline_secs.saturating_mul(1000),
    }
}

/// A closed round's result, waiting to be written to the data dir.
struct PendingCommit {
    /// Round number (0 = the initial checkpoint).
    round: u64,
    /// Adapter parameters to store.
    params: Vec<NamedTensor>,
    /// Outer optimizer state to store.
    outer: OuterState,
    /// Held-out loss of `params`.
    eval_loss: Option<f32>,
    /// Workers' mean training loss.
    train_loss: Option<f32>,
    /// The round's record (none for checkpoint 0).
    record: Option<RoundRecord>,
    /// How the adapter changed from the previous checkpoint (the screen's copy check).
    change: Option<Vec<f32>>,
}

/// Rounds are halted: a closed round could not be committed to the data dir.
struct Halted {
    /// `disk full` or `storage error` (shown as the phase `halted: ...`).
    fault: &'static str,
    /// The round result retried every [`STORAGE_RETRY_MS`].
    pending: PendingCommit,
    /// When to retry next.
    retry_at_ms: u64,
}

/// The reference gradient of a round, computed on a blocking thread.
type ReferenceTask = (u64, tokio::task::JoinHandle<Result<(f64, Vec<f32>)>>);

/// The running coordinator.
pub struct Service {
    cfg: RunConfig,
    data_dir: PathBuf,
    store: Arc<BlobStore>,
    state: State,
    /// Checks, screen, strikes and evidence (no I/O).
    ingest: Ingest,
    engine: Engine,
    round: Round,
    evaluator: Arc<Mutex<Evaluator>>,
    net: Client,
    peer_id: PeerId,
    /// Blobs any admitted peer may fetch (model, train shards, checkpoints). Never the validation shard.
    public: HashSet<ContentId>,
    /// Peers that joined and are connected, with their last join time.
    joined: HashMap<PeerId, u64>,
    /// Each peer's last close-time verdict, sent back on its next join or poll.
    verdicts: HashMap<PeerId, hearth_proto::DeltaVerdict>,
    connected: HashSet<PeerId>,
    metrics: Metrics,
    snapshot: Arc<RwLock<Snapshot>>,
    recent_rejections: VecDeque<(u64, String, String)>,
    stop_after: u64,
    /// Train-shard sequences the round's reference batch is drawn from.
    reference_pool: Vec<hearth_model::Sequence>,
    /// The open round's reference gradient, while it is computed.
    reference_task: Option<ReferenceTask>,
    bans_seen: Option<SystemTime>,
    /// Set while a closed round cannot be committed (disk full): no new round opens.
    halted: Option<Halted>,
    /// Banned peers the network refuses once their notice time has passed (unix ms).
    ban_notices: Vec<(PeerId, u64)>,
}

impl Service {
    /// Load the run, restore state (or create checkpoint 0), start the network.
    pub async fn start(
        config_path: &Path,
        opts: &RunOptions,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<Event>)> {
        let cfg = RunConfig::load(config_path)?;
        if cfg.coordinator.private && opts.swarm_key.is_none() {
            return Err(anyhow!(
                "{}: coordinator.private = true, but no --swarm-key was given; \
                 refusing to open this private run to everyone",
                config_path.display()
            ));
        }
        let data_dir = cfg.data_dir(config_path);
        let store = Arc::new(BlobStore::open(data_dir.join("blobs"))?);
        crate::export::save_spec(&data_dir, &cfg.run)?;
        let mut state = State::load(&data_dir)?;
        let spec = cfg.run.clone();
        let spec_id = spec.spec_id();
        match state.spec_id {
            Some(id) if id != spec_id => {
                return Err(anyhow!(
                "{}: the data dir belongs to run spec {id}, but run.toml now has spec {spec_id}; \
                     use a new data dir for a changed run",
                data_dir.display()
            ))
            }
            _ => state.spec_id = Some(spec_id),
        }

        // Base model: presets are generated; files are served from (and verified in) the blob store.
        let model_file = crate::base_model::base_model_path(&store, &spec.base, &data_dir)?;
        let validation = match cfg.coordinator.validation {
            Some(cid) => {
                let bytes = store
                    .get(&cid)
                    .with_context(|| format!("validation shard {cid}"))?;
                Shard::from_bytes(&bytes, MAX_SHARD_BYTES)
                    .with_context(|| format!("validation shard {cid}"))?
                    .into_sequences()
            }
            None => {
                return Err(anyhow!(
                    "run.toml names no validation shard (coordinator.validation)"
                ))
            }
        };
        info!(
            sequences = validation.len(),
            "loading the base model for evaluation"
        );
        let evaluator = Evaluator::load(
            &spec,
            model_file.as_deref(),
            validation,
            cfg.coordinator.eval_batch,
        )
        .context("loading the base model")?;
        let layout = spec.adapter_layout().context("adapter layout")?;
        let reference_pool = reference_pool(&store, &spec);

        let mut public: HashSet<ContentId> = spec.data.shards.iter().map(|s| s.cid).collect();
        match &spec.base.source {
            hearth_proto::ModelSource::Safetensors { .. } => {
                public.extend(spec.base.files.iter().map(|f| f.blake3));
            }
            _ => public.extend(spec.base.blake3),
        }

        let evaluator = Arc::new(Mutex::new(evaluator));
        let (params, outer_state) = match state.latest() {
            Some(rec) => {
                let m = &rec.manifest;
                let params = hearth_proto::decode_checkpoint(&store.get(&m.adapter)?, &layout)
                    .with_context(|| format!("checkpoint {} adapter", m.round))?;
                let outer: OuterState = match m.outer_state {
                    Some(cid) => {
                        decode_bounded(&store.get(&cid)?, hearth_proto::MAX_CHECKPOINT_BYTES)
                            .with_context(|| format!("checkpoint {} outer state", m.round))?
                    }
                    None => OuterState::default(),
                };
                info!(round = m.round, checkpoint = %rec.id.short(), "resuming from the last committed checkpoint");
                (params, outer)
            }
            None => {
                let ev = evaluator.clone();
                let params = tokio::task::spawn_blocking(move || {
                    ev.lock()
                        .map_err(|_| anyhow!("evaluator poisoned"))?
                        .initial_params()
                        .map_err(anyhow::Error::from)
                })
                .await??;
                (params, OuterState::default())
            }
        };
        for rec in &state.checkpoints {
            public.insert(rec.manifest.adapter);
        }
        let mut ingest = Ingest::new(spec.clone(), layout.clone(), sketch_seed());
        for rec in &state.checkpoints {
            ingest.checkpoint_committed(rec.manifest.round, rec.id);
        }
        let mut engine = Engine::new(
            layout,
            params,
            outer_state,
            spec.aggregate.outer,
            spec.aggregate.aggregator,
        );
        engine.set_mean_over_senders(
            spec.aggregate.mean_over_senders && spec.aggregate.codec.is_sparse(),
        );

        let keypair = hearth_net::load_or_create_identity(&data_dir.join("identity.key"))?;
        let peer_id = keypair.public().to_peer_id();
        let mut net_cfg = NetConfig::new(keypair, spec.run_id.clone(), Role::Coordinator);
        net_cfg.listen = if opts.listen.is_empty() {
            cfg.coordinator
                .listen
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .with_context(|| format!("listen address {a:?}"))
                })
                .collect::<Result<_>>()?
        } else {
            opts.listen.clone()
        };
        if let Some(key) = &opts.swarm_key {
            // pnet wraps TCP only: QUIC addresses are not listened on (nor printed for workers).
            let (quic, tcp): (Vec<_>, Vec<_>) =
                net_cfg.listen.drain(..).partition(hearth_net::is_quic);
            if tcp.is_empty() {
                return Err(anyhow!(
                    "a private swarm (--swarm-key) runs over TCP only, and every listen address \
                     is QUIC: {quic:?}; add a /tcp/ address"
                ));
            }
            for a in &quic {
                info!(addr = %a, "private swarm: not listening on QUIC");
            }
            net_cfg.listen = tcp;
            net_cfg.psk = Some(key.to_bytes());
            info!(
                fingerprint = %key.fingerprint(),
                "private swarm: only peers holding the same swarm key can connect (pnet over TCP, QUIC off)"
            );
        }
        net_cfg.fit_run(
            spec.net.max_transmit_size,
            spec.net.blob_chunk_size as usize,
            spec.max_delta_bytes().unwrap_or(0),
        );
        let (net, events) = hearth_net::spawn(net_cfg)?;

        let metrics = Metrics::new()?;
        let stop_after = opts.rounds.unwrap_or(cfg.coordinator.rounds);
        let round = Round::open(state.committed_round + 1, now_ms(), policy_of(&spec));
        let mut svc = Self {
            cfg,
            data_dir,
            store,
            state,
            ingest,
            engine,
            round,
            evaluator,
            net,
            peer_id,
            public,
            joined: HashMap::new(),
            verdicts: HashMap::new(),
            connected: HashSet::new(),
            metrics,
            snapshot: Arc::new(RwLock::new(Snapshot::default())),
            recent_rejections: VecDeque::new(),
            stop_after,
            reference_pool,
            reference_task: None,
            bans_seen: None,
            halted: None,
            ban_notices: Vec::new(),
        };
        if svc.state.checkpoints.is_empty() {
            let params = svc.engine.params().to_vec();
            let outer = svc.engine.outer_state().clone();
            let loss = svc.eval(params.clone()).await?;
            svc.commit_checkpoint(&PendingCommit {
                round: 0,
                params,
                outer,
                eval_loss: Some(loss as f32),
                train_loss: None,
                record: None,
                change: None,
            })
            .await?;
            info!(
                eval_loss = loss,
                "checkpoint 0 (base model, fresh adapter) committed"
            );
        }
        if let Some(l) = svc.state.latest_eval_loss() {
            svc.metrics.eval_loss.set(f64::from(l));
        }
        svc.metrics.round.set(svc.round.number as i64);
        svc.ingest.round_opened(None);
        svc.start_reference();
        svc.restore_journal().await?;
        svc.refresh_snapshot();
        Ok((svc, events))
    }

    /// Peer id of this coordinator.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Shared status for the HTTP side.
    pub fn snapshot(&self) -> Arc<RwLock<Snapshot>> {
        self.snapshot.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The addresses a worker should dial, with `/p2p/<peer id>` (TCP only in a private swarm,
    /// where QUIC is not listened on).
    pub async fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.net
            .listen_addrs()
            .await
            .into_iter()
            .map(|a| hearth_net::with_peer_id(&a, self.peer_id))
            .collect()
    }

    /// Run until the round limit is reached or ctrl-c.
    pub async fn run(mut self, mut events: tokio::sync::mpsc::Receiver<Event>) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.announce(Announcement::RoundOpened(self.round_info()));
        loop {
            if self.stop_after > 0 && self.state.committed_round >= self.stop_after {
                info!(
                    rounds = self.state.committed_round,
                    "round limit reached; stopping"
                );
                break;
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => return Err(anyhow!("the network event loop stopped")),
                },
                _ = tick.tick() => self.on_tick().await?,
                _ = tokio::signal::ctrl_c() => {
                    info!("interrupted; the last committed round is {}", self.state.committed_round);
                    break;
                }
            }
        }
        // Give the last announcements a moment to leave.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.net.shutdown().await;
        Ok(())
    }

    fn round_info(&self) -> RoundInfo {
        RoundInfo {
            round: self.round.number,
            base_checkpoint: self.state.latest().map(|c| c.id),
            opened_unix_ms: self.round.opened_unix_ms,
            deadline_unix_ms: self.round.deadline_unix_ms,
        }
    }

    fn announce(&self, ann: Announcement) {
        let net = self.net.clone();
        let bytes = encode(&ann);
        self.metrics.bytes_sent.inc_by(bytes.len() as u64);
        tokio::spawn(async move {
            if let Err(e) = net.publish(Topic::Announce, bytes).await {
                debug!("announcement not published: {e}");
            }
        });
    }

    fn live_contributors(&self) -> usize {
        self.joined
            .keys()
            .filter(|p| self.connected.contains(p))
            .count()
    }

    async fn on_tick(&mut self) -> Result<()> {
        self.apply_ban_file().await;
        let now = now_ms();
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.ban_notices.drain(..).partition(|(_, at)| *at <= now);
        self.ban_notices = waiting;
        for (p, _) in due {
            let _ = self.net.ban(p).await;
        }
        if self
            .reference_task
            .as_ref()
            .is_some_and(|(_, t)| t.is_finished())
        {
            self.ensure_reference().await;
        }
        let now = now_ms();
        if let Some(h) = self.halted.take() {
            if now >= h.retry_at_ms {
                self.finish_round(h.pending).await;
            } else {
                self.halted = Some(h);
            }
            self.refresh_snapshot();
            return Ok(());
        }
        let responded = self
            .ingest
            .round
            .responders
            .iter()
            .filter(|p| self.joined.contains_key(p))
            .count();
        let decision = self.round.tick(
            now,
            self.engine.pending().len(),
            responded,
            self.live_contributors(),
        );
        match decision {
            Decision::Wait => {}
            Decision::Extended { deadline_unix_ms } => {
                info!(
                    round = self.round.number,
                    deadline_unix_ms, "too few deltas by the deadline; extended once"
                );
                self.announce(Announcement::RoundOpened(self.round_info()));
            }
            Decision::CarryOver => {
                let carried = self.engine.pending().len();
                info!(
                    round = self.round.number,
                    carried, "too few deltas after the extension; carrying them over"
                );
                self.round = Round::open(self.round.number, now, policy_of(&self.cfg.run));
                self.ingest.carry_over();
                self.announce(Announcement::RoundOpened(self.round_info()));
            }
            Decision::Close => self.close_round(now).await?,
        }
        self.refresh_snapshot();
        Ok(())
    }

    async fn eval(&self, params: Vec<NamedTensor>) -> Result<f64> {
        let ev = self.evaluator.clone();
        tokio::task::spawn_blocking(move || {
            ev.lock()
                .map_err(|_| anyhow!("evaluator poisoned"))?
                .loss(&params)
                .map_err(anyhow::Error::from)
        })
        .await?
    }

    async fn close_round(&mut self, now: u64) -> Result<()> {
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
            warn!(
                round = number,
                "update gated: {why}; keeping the previous weights"
            );
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
    async fn close_empty_round(&mut self, number: u64, now: u64) -> Result<()> {
        let why = "no delta of the round passed the screen; the weights are unchanged".to_string();
        warn!(round = number, "{why}");
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
    async fn finish_round(&mut self, pending: PendingCommit) {
        let number = pending.round;
        if let Err(e) = self.commit_checkpoint(&pending).await {
            self.metrics.storage_errors.inc();
            self.metrics.halted.set(1);
            let fault = e.fault();
            if self.halted.is_none() && pending.record.is_some() {
                error!(
                    round = number,
                    committed_round = self.state.committed_round,
                    "halted: {fault}: round {number} cannot be committed: {e:#}; no new round opens \
                     until it is written (retrying every {} s); committed checkpoints stay served",
                    STORAGE_RETRY_MS / 1000
                );
            } else {
                debug!(round = number, "commit retry failed: {e:#}");
            }
            self.halted = Some(Halted {
                fault,
                pending,
                retry_at_ms: now_ms().saturating_add(STORAGE_RETRY_MS),
            });
            return;
        }
        if self.halted.take().is_some() {
            info!(
                round = number,
                "storage writable again: round {number} committed; resuming"
            );
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
        self.start_reference();
        self.metrics.round.set(self.round.number as i64);
        if self.stop_after == 0 || self.state.committed_round < self.stop_after {
            self.announce(Announcement::RoundOpened(self.round_info()));
        }
    }

    /// Store the checkpoint blobs and PEFT directory, then commit the state file. On error
    /// nothing is committed: in-memory state is unchanged and no uncommitted PEFT directory stays
    /// behind for HTTP or `export` to serve.
    async fn commit_checkpoint(&mut self, c: &PendingCommit) -> Result<(), CommitError> {
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
    async fn write_peft_dir(
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

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::PeerConnected(p) => {
                self.connected.insert(p);
                // A worker the ledger knows (e.g. reconnecting after a coordinator restart) counts
                // as a live contributor again without re-joining.
                let id = p.to_base58();
                if self.state.ledger.peers.get(&id).is_some_and(|r| !r.banned) {
                    self.joined.insert(p, now_ms());
                }
            }
            Event::PeerDisconnected(p) => {
                self.connected.remove(&p);
                if self.joined.remove(&p).is_some() {
                    info!(peer = %p, "worker left");
                }
            }
            Event::Gossip {
                topic: Topic::Deltas,
                message_id,
                propagation_source,
                source,
                data,
            } => {
                self.metrics.bytes_received.inc_by(data.len() as u64);
                let verdict = match self.process_delta(&data, source).await {
                    Ok(()) => Validation::Accept,
                    Err(Reject::DuplicatePeer(_) | Reject::Replay(_)) => Validation::Ignore,
                    Err(_) => Validation::Reject,
                };
                if let Err(e) = self
                    .net
                    .report_validation(message_id, propagation_source, verdict)
                    .await
                {
                    debug!("validation report failed: {e}");
                }
            }
            Event::Gossip {
                topic: Topic::Announce,
                message_id,
                propagation_source,
                source,
                ..
            } => {
                // Only the coordinator announces; anything else on that topic is dropped.
                let verdict = if source == Some(self.peer_id) {
                    Validation::Accept
                } else {
                    Validation::Reject
                };
                let _ = self
                    .net
                    .report_validation(message_id, propagation_source, verdict)
                    .await;
            }
            Event::Request {
                peer,
                protocol,
                data,
                channel,
            } => {
                self.metrics.bytes_received.inc_by(data.len() as u64);
                let reply = match protocol {
                    Protocol::Join => self.on_join(peer, &data),
                    Protocol::Poll => self.on_poll(peer, &data),
                    Protocol::Blob => self.on_blob(peer, &data),
                    Protocol::Delta => {
                        let ack = match self.process_delta(&data, Some(peer)).await {
                            Ok(()) => DeltaAck::Accepted {
                                last_verdict: self.verdicts.get(&peer).cloned(),
                            },
                            Err(r) => match self.ban_reason(&peer) {
                                Some(reason) => DeltaAck::Banned { reason },
                                None => DeltaAck::Rejected {
                                    reason: r.to_string(),
                                },
                            },
                        };
                        encode(&ack)
                    }
                };
                self.metrics.bytes_sent.inc_by(reply.len() as u64);
                if let Err(e) = self.net.respond(channel, reply).await {
                    debug!(%peer, "response not sent: {e}");
                }
                // A banned peer has been told why: the network refuses it once the answer is out.
                if let Some(i) = self.ban_notices.iter().position(|(p, _)| *p == peer) {
                    if matches!(protocol, Protocol::Join | Protocol::Delta | Protocol::Poll) {
                        self.ban_notices.swap_remove(i);
                        let net = self.net.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            let _ = net.ban(peer).await;
                        });
                    }
                }
            }
            Event::InboundFailure {
                peer,
                protocol,
                reason,
            } => {
                debug!(%peer, ?protocol, "inbound request failed: {reason}");
            }
            other => debug!(event = ?other, "network event"),
        }
        self.metrics
            .workers_connected
            .set(self.live_contributors() as i64);
    }

    fn admitted(&self, peer: &PeerId) -> Result<(), Reject> {
        admitted(&self.state.ledger, &self.cfg, &self.joined, peer)
    }

    fn on_join(&mut self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        let rejected = |reason: String| encode(&JoinResponse::Rejected { reason });
        let req = match JoinRequest::from_bytes(data) {
            Ok(r) => r,
            Err(e) => return rejected(format!("malformed join request: {e}")),
        };
        let id = peer.to_base58();
        if req.protocol_version != PROTOCOL_VERSION {
            return rejected(format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                req.protocol_version
            ));
        }
        if req.run_id != self.cfg.run.run_id && !req.run_id.is_empty() {
            return rejected(format!(
                "this coordinator runs {:?}, not {:?}",
                self.cfg.run.run_id, req.run_id
            ));
        }
        if let Some(reason) = self.ban_reason(&peer) {
            return encode(&JoinResponse::Banned { reason });
        }
        if !self.cfg.run.admission.admits(&peer, req.token.as_deref()) {
            warn!(%peer, "join refused by the admission policy");
            return rejected(
                "not admitted: this run needs an allowlisted peer id or a valid join token".into(),
            );
        }
        let now = now_ms();
        self.state.ledger.joined(&id, &req.name, &req.device, now);
        self.joined.insert(peer, now);
        let lease = self.lease_for(&id);
        info!(%peer, name = %req.name, device = %req.device, shards = ?lease, "worker joined");
        encode(&JoinResponse::Accepted {
            spec: self.cfg.run.clone(),
            lease: ShardLease {
                shard_indices: lease,
            },
            latest: self.state.latest().map(|c| c.manifest.clone()),
            round: self.round_info(),
            last_verdict: self.verdicts.get(&peer).cloned(),
        })
    }

    /// A joined worker's poll: the newest checkpoint and round, as a join answers them, with none
    /// of a join's effects (no ledger update, no "worker joined" line).
    fn on_poll(&self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        match PollRequest::from_bytes(data) {
            Ok(req) if req.protocol_version == PROTOCOL_VERSION => {}
            // The join request that follows gets the reason in words.
            Ok(_) => return encode(&PollResponse::NotJoined),
            Err(e) => {
                debug!(%peer, "malformed poll request: {e}");
                return encode(&PollResponse::NotJoined);
            }
        }
        if let Some(reason) = self.ban_reason(&peer) {
            return encode(&PollResponse::Banned { reason });
        }
        if !self.joined.contains_key(&peer) {
            return encode(&PollResponse::NotJoined);
        }
        encode(&PollResponse::State {
            latest: self.state.latest().map(|c| c.manifest.clone()),
            round: self.round_info(),
            last_verdict: self.verdicts.get(&peer).cloned(),
        })
    }

    /// The peer's shard lease: kept across rejoins; new peers get the least-leased shard.
    fn lease_for(&mut self, id: &str) -> Vec<u32> {
        if let Some(l) = self.state.leases.get(id) {
            return l.clone();
        }
        let n = self.cfg.run.data.shards.len();
        if n == 0 {
            return Vec::new();
        }
        let mut load = vec![0usize; n];
        for l in self.state.leases.values() {
            for &i in l {
                if let Some(c) = load.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
        let best = (0..n).min_by_key(|&i| (load[i], i)).unwrap_or(0) as u32;
        self.state.leases.insert(id.to_string(), vec![best]);
        vec![best]
    }

    fn on_blob(&self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        let not_found = |cid| encode(&BlobResponse::NotFound { cid });
        let req = match BlobRequest::from_bytes(data) {
            Ok(r) => r,
            Err(e) => {
                debug!(%peer, "malformed blob request: {e}");
                return not_found(ContentId::of(b""));
            }
        };
        if !self.public.contains(&req.cid) || self.admitted(&peer).is_err() {
            return not_found(req.cid);
        }
        let max = req
            .max_len
            .min(self.cfg.run.net.blob_chunk_size)
            .min(hearth_proto::MAX_BLOB_CHUNK) as usize;
        match self.store.read_range(&req.cid, req.offset, max) {
            Ok((total_len, bytes)) => encode(&BlobResponse::Chunk {
                cid: req.cid,
                total_len,
                offset: req.offset.min(total_len),
                data: bytes,
            }),
            Err(e) => {
                warn!(cid = %req.cid, "blob not served: {e}");
                not_found(req.cid)
            }
        }
    }

    /// The verification pipeline for one delta ([`Ingest`]); counts, logs and records every
    /// outcome. Network bytes are counted where they arrive, not here (a journal replay is not
    /// received again).
    async fn process_delta(&mut self, bytes: &[u8], sender: Option<PeerId>) -> Result<(), Reject> {
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
                      z = a.score.map(|s| s.z), nearest = a.score.map(|s| s.nearest), "delta accepted");
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
    async fn reject(&mut self, rejection: Rejection, now: u64) {
        let Rejection { peer, reason: r } = rejection;
        self.metrics.delta("rejected", r.label());
        let who = peer
            .map(|p| p.to_base58())
            .unwrap_or_else(|| "unknown".into());
        warn!(round = self.round.number, peer = %who, reason = r.label(), "delta rejected: {r}");
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
    async fn weigh_pending(&mut self, now: u64) {
        let w = self.ingest.weigh(self.engine.pending());
        if !w.judged && !w.factors.is_empty() {
            self.metrics.screen_abstained.inc();
            info!(round = self.round.number, signal = ?w.signal,
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
                info!(round = self.round.number, %peer, weight, credit = tokens, "delta down-weighted by the screen");
            }
            self.verdict(
                peer,
                format!("aggregated with screen weight {weight:.2}: credit {tokens} tokens"),
            );
        }
        for peer in w.held_back {
            self.metrics.delta("held_back", "inconclusive");
            info!(round = self.round.number, %peer,
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
            info!(round = self.round.number, %peer,
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
    fn verdict(&mut self, peer: PeerId, mut text: String) {
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
    fn start_reference(&mut self) {
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
    async fn ensure_reference(&mut self) {
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
    fn journal_accepted(&self, bytes: &[u8]) -> Result<(), CommitError> {
        crate::journal::append(&self.store, &self.data_dir, self.round.number, bytes)?;
        Ok(())
    }

    /// Re-verify and re-accept the deltas journaled for the round in progress (after a restart).
    async fn restore_journal(&mut self) -> Result<()> {
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

    /// Why `peer` is banned, if it is.
    fn ban_reason(&self, peer: &PeerId) -> Option<String> {
        let rec = self.state.ledger.peers.get(&peer.to_base58())?;
        rec.banned.then(|| {
            rec.ban_reason
                .clone()
                .unwrap_or_else(|| "banned by the organiser".into())
        })
    }

    /// Ban a peer: ledger, its pending delta, and (after [`BAN_NOTICE_MS`], during which its
    /// requests are answered with the reason) the network.
    async fn apply_ban(&mut self, p: PeerId, reason: &str, now: u64) {
        self.state.ledger.ban(&p.to_base58(), reason, now);
        self.engine.drop_peer(&p);
        self.ingest.forget(&p);
        self.joined.remove(&p);
        self.ban_notices
            .push((p, now.saturating_add(BAN_NOTICE_MS)));
        if let Err(e) = self.state.save(&self.data_dir) {
            self.metrics.storage_errors.inc();
            error!("ban not saved: {e}");
        }
    }

    /// Apply bans added by `hearth-coordinator ban` (the bans file) since the last look.
    async fn apply_ban_file(&mut self) {
        let path = bans_path(&self.data_dir);
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        let modified = meta.modified().ok();
        if modified == self.bans_seen {
            return;
        }
        self.bans_seen = modified;
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.parse::<PeerId>() {
                Ok(p) if !self.state.ledger.is_banned(line) => {
                    warn!(peer = %p, "banned by hand");
                    self.apply_ban(p, "banned by the organiser", now_ms()).await;
                }
                Ok(_) => {}
                Err(e) => warn!(line, "bans file: not a peer id: {e}"),
            }
        }
    }

    fn refresh_snapshot(&self) {
        let now = now_ms();
        let workers = self
            .state
            .ledger
            .peers
            .iter()
            .map(|(id, r)| {
                let connected = id
                    .parse::<PeerId>()
                    .map(|p| self.joined.contains_key(&p))
                    .unwrap_or(false);
                WorkerView::from_record(id, r, connected)
            })
            .collect();
        let snap = Snapshot {
            run_id: self.cfg.run.run_id.clone(),
            run_name: self.cfg.run.name.clone(),
            base_model: self.cfg.run.base.name.clone(),
            peer_id: self.peer_id.to_base58(),
            round: self.round.number,
            committed_round: self.state.committed_round,
            phase: if let Some(h) = &self.halted {
                format!("halted: {}", h.fault)
            } else if self.round.extended {
                "extended".into()
            } else {
                "training".into()
            },
            deadline_unix_ms: self.round.deadline_unix_ms,
            now_unix_ms: now,
            pending_deltas: self.engine.pending().len(),
            workers_connected: self.live_contributors(),
            workers,
            rounds: self.state.rounds.clone(),
            checkpoints: self.state.checkpoints.clone(),
            recent_rejections: self.recent_rejections.iter().cloned().collect(),
        };
        if let Ok(mut s) = self.snapshot.write() {
            *s = snap;
        }
    }
}

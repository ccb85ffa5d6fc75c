//! `hearth-coordinator run`: the network event loop around the round engine.
//!
//! Data flows one way: network → verify → aggregate → evaluate/gate → store → publish.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use hearth_net::{Client, Event, Multiaddr, PeerId, Protocol, Topic, Validation};
use hearth_proto::{encode, Announcement, ContentId, DeltaAck, NamedTensor, RoundInfo, RunSpec};
use tracing::{debug, info, info_span, Instrument};

use crate::config::RunConfig;
use crate::engine::Engine;
use crate::evaluator::Evaluator;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::round::{Decision, Round, RoundPolicy};
use crate::state::State;
use crate::status::{Snapshot, WorkerView};
use crate::store::BlobStore;
use crate::verify::Reject;

mod admission;
mod commit;
mod deltas;
mod start;

use commit::Halted;

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
                    Some(ev) => {
                        let span = self.round_span();
                        self.on_event(ev).instrument(span).await
                    }
                    None => return Err(anyhow!("the network event loop stopped")),
                },
                _ = tick.tick() => {
                    let span = self.round_span();
                    self.on_tick().instrument(span).await?
                }
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

    /// The span of the open round: every line logged while handling an event or a tick says
    /// which round it concerns.
    fn round_span(&self) -> tracing::Span {
        info_span!("round", round = self.round.number)
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
                    deadline_unix_ms,
                    "too few deltas by the deadline; extended once"
                );
                self.announce(Announcement::RoundOpened(self.round_info()));
            }
            Decision::CarryOver => {
                let carried = self.engine.pending().len();
                info!(
                    carried,
                    "too few deltas after the extension; carrying them over"
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
                let span = info_span!("request", %peer, ?protocol);
                self.on_request(peer, protocol, &data, channel)
                    .instrument(span)
                    .await;
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

    /// Answer one request of `peer` (in the span of the request).
    async fn on_request(
        &mut self,
        peer: PeerId,
        protocol: Protocol,
        data: &[u8],
        channel: hearth_net::ResponseToken,
    ) {
        self.metrics.bytes_received.inc_by(data.len() as u64);
        let reply = match protocol {
            Protocol::Join => self.on_join(peer, data),
            Protocol::Poll => self.on_poll(peer, data),
            Protocol::Blob => self.on_blob(peer, data),
            Protocol::Delta => {
                let ack = match self.process_delta(data, Some(peer)).await {
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
            debug!("response not sent: {e}");
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

//! `hearth-worker join`: join a run, then train, compress, sign and send a delta every round.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hearth_model::data::Shard;
use hearth_net::{Client, Event, Multiaddr, NetConfig, PeerId, Protocol, Role, Topic, Validation};
use hearth_proto::{
    encode, encode_delta, Announcement, CheckpointManifest, ContentId, DeltaAck, DeltaMessage,
    Domain, JoinRequest, JoinResponse, ModelSource, NamedTensor, PollRequest, PollResponse,
    Residual, RoundInfo, RunSpec, SignedEnvelope, TensorLayout, Wire, PROTOCOL_VERSION,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::attack::{tamper_envelope, tamper_message, tamper_values, Attack};
use crate::control::Control;
use crate::device::DeviceChoice;
use crate::fetch::{fetch_blob, hash_file};
use crate::memory::{human_bytes, MemoryEstimate};
use crate::metrics::{SubmitOutcome, WorkerMetrics, WorkerState};
use crate::progress::{training_message, Progress};
use crate::redial::{spawn_redialer, Backoff};
use crate::trainer::{TrainerHandle, TrainerSetup};

/// Largest data shard accepted.
const MAX_SHARD_BYTES: usize = 1 << 30;
/// How often a worker waiting for a checkpoint asks the coordinator directly.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How long a worker keeps trying to hand in one delta.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
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

/// What the event pump learned from the network.
#[derive(Debug, Clone, Default)]
struct Latest {
    checkpoint: Option<CheckpointManifest>,
    round: Option<RoundInfo>,
}

/// Forward network events: validate announcements, track the newest checkpoint and round.
fn spawn_event_pump(
    net: Client,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    coordinator: PeerId,
    latest: watch::Sender<Latest>,
    connected: watch::Sender<bool>,
) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Gossip {
                    topic: Topic::Announce,
                    message_id,
                    propagation_source,
                    source,
                    data,
                } => {
                    let ann = (source == Some(coordinator))
                        .then(|| Announcement::from_bytes(&data).ok())
                        .flatten();
                    let verdict = if ann.is_some() {
                        Validation::Accept
                    } else {
                        Validation::Reject
                    };
                    let _ = net
                        .report_validation(message_id, propagation_source, verdict)
                        .await;
                    match ann {
                        Some(Announcement::CheckpointReady(m)) => latest.send_modify(|l| {
                            if l.checkpoint.as_ref().is_none_or(|c| c.round < m.round) {
                                l.checkpoint = Some(m);
                            }
                        }),
                        Some(Announcement::RoundOpened(r)) => latest.send_modify(|l| {
                            if l.round.as_ref().is_none_or(|c| c.round <= r.round) {
                                l.round = Some(r);
                            }
                        }),
                        _ => {}
                    }
                }
                Event::Gossip {
                    topic: Topic::Deltas,
                    message_id,
                    propagation_source,
                    data,
                    ..
                } => {
                    // Relaying workers forward only deltas whose signature checks out.
                    let ok = SignedEnvelope::from_bytes(&data, DeltaMessage::MAX_BYTES)
                        .ok()
                        .is_some_and(|e| e.verify(Domain::Delta).is_ok());
                    let verdict = if ok {
                        Validation::Accept
                    } else {
                        Validation::Reject
                    };
                    let _ = net
                        .report_validation(message_id, propagation_source, verdict)
                        .await;
                }
                Event::PeerConnected(p) if p == coordinator => {
                    let _ = connected.send(true);
                }
                Event::PeerDisconnected(p) if p == coordinator => {
                    warn!("lost the connection to the coordinator");
                    let _ = connected.send(false);
                }
                Event::Request { peer, channel, .. } => {
                    debug!(%peer, "ignoring a request: workers serve nothing");
                    drop(channel);
                }
                other => debug!(event = ?other, "network event"),
            }
        }
    });
}

/// The joined session with the coordinator.
struct Session {
    opts: JoinOptions,
    net: Client,
    coordinator: PeerId,
    key: hearth_net::Keypair,
    connected: watch::Receiver<bool>,
    /// The round of the last close-time verdict printed.
    last_verdict: u64,
}

impl Session {
    /// Prints the coordinator's close-time verdict on our last judged delta, once per round.
    fn report_verdict(&mut self, verdict: Option<hearth_proto::DeltaVerdict>) {
        if let Some(v) = verdict.filter(|v| v.round > self.last_verdict) {
            self.last_verdict = v.round;
            // Untrusted text: printed as data, bounded.
            let text: String = v.text.chars().take(512).collect();
            info!("round {}: our delta was {}", v.round, text.escape_debug());
        }
    }

    /// Waits until connected (the redialer dials; see [`crate::redial`]).
    async fn ensure_connected(&mut self) -> Result<()> {
        self.connected
            .wait_for(|c| *c)
            .await
            .map_err(|_| anyhow!("the network task stopped"))?;
        Ok(())
    }

    /// Send `body` on `protocol` until the coordinator answers, redialing and backing off on
    /// failures; an error for which `give_up` holds is returned instead of retried.
    async fn request_answered(
        &mut self,
        protocol: Protocol,
        body: Vec<u8>,
        give_up: impl Fn(&hearth_net::NetError) -> bool,
    ) -> Result<std::result::Result<Vec<u8>, hearth_net::NetError>> {
        let mut backoff = Backoff::default();
        loop {
            self.ensure_connected().await?;
            match self
                .net
                .request(self.coordinator, protocol, body.clone())
                .await
            {
                Ok(bytes) => return Ok(Ok(bytes)),
                Err(e) if give_up(&e) => return Ok(Err(e)),
                Err(e) => {
                    let delay = backoff.next_delay();
                    info!(
                        "{} request failed ({e}); retrying in {:.1} s",
                        format!("{protocol:?}").to_lowercase(),
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Send a join request.
    async fn join(&mut self) -> Result<(RunSpec, Vec<u32>, Option<CheckpointManifest>, RoundInfo)> {
        let req = JoinRequest {
            protocol_version: PROTOCOL_VERSION,
            run_id: String::new(),
            name: self.opts.name.clone(),
            device: self.opts.device.to_string(),
            threads: self.opts.threads as u32,
            memory_bytes: self.opts.max_memory.unwrap_or(0),
            token: self.opts.token.clone(),
        };
        let bytes = self
            .request_answered(Protocol::Join, encode(&req), |_| false)
            .await??;
        match JoinResponse::from_bytes(&bytes).context("malformed join response")? {
            JoinResponse::Accepted {
                spec,
                lease,
                latest,
                round,
                last_verdict,
            } => {
                self.report_verdict(last_verdict);
                Ok((spec, lease.shard_indices, latest, round))
            }
            JoinResponse::Rejected { reason } => {
                Err(anyhow!("the coordinator refused to admit us: {reason}"))
            }
            JoinResponse::Banned { reason } => {
                Err(banned(&reason, &self.key.public().to_peer_id()))
            }
        }
    }

    /// Ask for the newest checkpoint and round without joining again; join when the coordinator
    /// no longer counts us as joined (it restarted) or does not know the poll request (older).
    async fn poll(&mut self) -> Result<(Option<CheckpointManifest>, RoundInfo)> {
        let req = PollRequest {
            protocol_version: PROTOCOL_VERSION,
        };
        let answer = self
            .request_answered(Protocol::Poll, encode(&req), |e| {
                e.is_unsupported_protocol()
            })
            .await?;
        let response = match answer {
            Ok(bytes) => PollResponse::from_bytes(&bytes).context("malformed poll response")?,
            Err(_) => PollResponse::NotJoined,
        };
        match response {
            PollResponse::State {
                latest,
                round,
                last_verdict,
            } => {
                self.report_verdict(last_verdict);
                Ok((latest, round))
            }
            PollResponse::NotJoined => {
                let (_, _, latest, round) = self.join().await?;
                Ok((latest, round))
            }
            PollResponse::Banned { reason } => {
                Err(banned(&reason, &self.key.public().to_peer_id()))
            }
        }
    }

    /// The base model file (verified), from the local cache or the coordinator.
    async fn model_file(&mut self, spec: &RunSpec) -> Result<Option<PathBuf>> {
        let (ModelSource::Gguf { file_name }
        | ModelSource::Safetensors {
            dir_name: file_name,
        }) = &spec.base.source
        else {
            return Ok(None);
        };
        let cid = spec
            .base
            .blake3
            .ok_or_else(|| anyhow!("the run names model {file_name} without a blake3"))?;
        if let ModelSource::Safetensors { .. } = &spec.base.source {
            // A directory: each listed file fetched and checked by its blake3 into a directory
            // named by the list's id (the spec was validated: plain, unique names).
            let dir = self.opts.cache_dir.join("models").join(cid.to_hex());
            info!(model = %file_name, files = spec.base.files.len(), size = spec.base.size_bytes, "fetching the base model directory");
            for f in &spec.base.files {
                self.fetch(
                    f.blake3,
                    &dir.join(&f.name),
                    spec,
                    &format!("model {file_name}/{}", f.name),
                )
                .await?;
            }
            return Ok(Some(dir));
        }
        // The fetch script's copy, when it is the same file.
        let default = hearth_model::default_model_path();
        if default.is_file() && hash_file(&default) == Some(cid) {
            return Ok(Some(default));
        }
        let dest = self.opts.cache_dir.join("models").join(cid.to_hex());
        if !dest.is_file() {
            info!(model = %file_name, size = spec.base.size_bytes, "fetching the base model from the coordinator");
        }
        self.fetch(cid, &dest, spec, &format!("model {file_name}"))
            .await?;
        Ok(Some(dest))
    }

    async fn fetch(
        &mut self,
        cid: ContentId,
        dest: &std::path::Path,
        spec: &RunSpec,
        label: &str,
    ) -> Result<()> {
        let mut attempts = 0;
        loop {
            self.ensure_connected().await?;
            let mut bar: Option<indicatif::ProgressBar> = None;
            let progress = self.opts.progress.clone();
            let result = fetch_blob(
                &self.net,
                self.coordinator,
                cid,
                dest,
                spec.net.blob_chunk_size,
                |done, total| {
                    let b = bar.get_or_insert_with(|| progress.download(label, total));
                    b.set_position(done);
                },
            )
            .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match result {
                Ok(()) => return Ok(()),
                Err(e @ crate::fetch::FetchError::Network { .. }) if attempts < 5 => {
                    attempts += 1;
                    warn!("download interrupted ({e}); resuming");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn checkpoint_params(
        &mut self,
        m: &CheckpointManifest,
        spec: &RunSpec,
        layout: &[TensorLayout],
    ) -> Result<Vec<NamedTensor>> {
        let dest = self
            .opts
            .cache_dir
            .join("checkpoints")
            .join(m.adapter.to_hex());
        self.fetch(m.adapter, &dest, spec, &format!("checkpoint {}", m.round))
            .await?;
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        hearth_proto::decode_checkpoint(&bytes, layout)
            .with_context(|| format!("checkpoint of round {}", m.round))
    }

    async fn submit(&mut self, bytes: Vec<u8>, spec: &RunSpec) -> Result<Option<DeltaAck>> {
        // Directly to the coordinator first: its answer says whether the delta counted, and why
        // not. Gossip (inline deltas only) is the fallback when there is no direct route.
        if *self.connected.borrow() {
            match self
                .net
                .request(self.coordinator, Protocol::Delta, bytes.clone())
                .await
            {
                Ok(reply) => return Ok(Some(DeltaAck::from_bytes(&reply)?)),
                Err(e) => debug!("direct submission failed ({e}); trying gossip"),
            }
        }
        if bytes.len() <= spec.net.inline_delta_limit.min(spec.net.max_transmit_size) {
            match self.net.publish(Topic::Deltas, bytes.clone()).await {
                Ok(_) => return Ok(None),
                Err(e) => debug!("gossip publish failed ({e}); submitting directly"),
            }
        }
        // A delta loses its value as rounds pass: give up on this one if the coordinator stays
        // unreachable, and carry on with the next checkpoint.
        tokio::time::timeout(SUBMIT_TIMEOUT, async {
            loop {
                self.ensure_connected().await?;
                match self
                    .net
                    .request(self.coordinator, Protocol::Delta, bytes.clone())
                    .await
                {
                    Ok(reply) => return Ok(Some(DeltaAck::from_bytes(&reply)?)),
                    Err(e) => {
                        debug!("direct submission failed ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow!(
                "the coordinator was unreachable for {} s",
                SUBMIT_TIMEOUT.as_secs()
            )
        })?
    }
}

/// The network settings of a node in run `spec` with identity `key`: the run's topics, the
/// swarm key, and request limits sized for the run's largest delta.
fn run_net_config(
    key: &hearth_net::Keypair,
    spec: &RunSpec,
    opts: &JoinOptions,
    subscribe_deltas: bool,
    listen: Vec<Multiaddr>,
) -> NetConfig {
    let mut cfg = NetConfig::new(
        key.clone(),
        spec.run_id.clone(),
        Role::Worker { subscribe_deltas },
    );
    cfg.listen = listen;
    cfg.psk = opts.swarm_key.as_ref().map(hearth_net::SwarmKey::to_bytes);
    cfg.fit_run(
        spec.net.max_transmit_size,
        spec.net.blob_chunk_size as usize,
        spec.max_delta_bytes().unwrap_or(0),
    );
    cfg
}

/// The copycat attack: join a second identity (derived from the first) once, then send `copy`
/// signed by it. Returns what happened, for the log.
async fn copycat_submit(
    sybil: &mut Option<Session>,
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
            let (net, events) =
                hearth_net::spawn(run_net_config(&key, spec, opts, false, Vec::new()))?;
            let (latest_tx, _) = watch::channel(Latest::default());
            let (conn_tx, conn_rx) = watch::channel(false);
            spawn_event_pump(net.clone(), events, coordinator, latest_tx, conn_tx);
            let private = opts.swarm_key.is_some();
            spawn_redialer(
                net.clone(),
                opts.coordinator.clone(),
                conn_rx.clone(),
                private,
            );
            let mut sopts = opts.clone();
            sopts.name = format!("{}-sybil", opts.name);
            let mut s = Session {
                opts: sopts,
                net,
                coordinator,
                key,
                connected: conn_rx,
                last_verdict: 0,
            };
            s.join().await?;
            *sybil = Some(s);
        }
        let s = sybil.as_mut().ok_or_else(|| anyhow!("no sybil"))?;
        let mut msg = base.clone();
        msg.delta = encode_delta(&spec.aggregate.codec, copy, &mut Residual::new())?;
        let env = SignedEnvelope::seal(&s.key, Domain::Delta, &msg)?;
        Ok::<_, anyhow::Error>(match s.submit(env.to_bytes(), spec).await? {
            Some(DeltaAck::Accepted { .. }) => "accepted".to_string(),
            Some(DeltaAck::Rejected { reason } | DeltaAck::Banned { reason }) => {
                format!("rejected ({reason})")
            }
            None => "sent by gossip".to_string(),
        })
    };
    attempt.await.unwrap_or_else(|e| format!("not sent: {e:#}"))
}

/// The error a banned worker stops with: the coordinator's reason and how to appeal.
fn banned(reason: &str, me: &PeerId) -> anyhow::Error {
    tracing::error!("banned by the coordinator: {reason}");
    anyhow!(
        "this worker is banned from the run, so it stops (it will not retry). The coordinator's \
         reason: {reason}. If you think this is a mistake, contact whoever runs this swarm (the \
         organiser who gave you its address) and give them your peer id {me} (`hearth-worker id` \
         prints it); they can lift the ban or explain it."
    )
}

/// The model shape a run trains (the preset's own shape for preset runs).
pub fn run_model_config(spec: &RunSpec) -> hearth_model::ModelConfig {
    match spec.base.source {
        ModelSource::Preset { .. } => hearth_model::ModelConfig::tiny(),
        _ => hearth_model::spec::model_config(&spec.arch),
    }
}

/// Memory needed to train `spec` with `max_batch`, and the micro-batch it implies.
pub fn run_memory(
    spec: &RunSpec,
    max_batch: Option<usize>,
    footprint: crate::memory::Footprint,
) -> Result<(MemoryEstimate, usize)> {
    let lora = hearth_model::spec::lora_config(&spec.lora)?;
    let batch = spec.train.batch_size.max(1);
    let micro = max_batch.map_or(batch, |cap| {
        crate::memory::cap_batch(batch, spec.train.grad_accum, cap).0
    });
    let cfg = run_model_config(spec);
    Ok((
        crate::memory::estimate_with(&cfg, &lora, micro, spec.data.seq_len, footprint)
            .with_model_file(spec.base.size_bytes),
        micro,
    ))
}

/// Refuse (with what to change) when training `spec` does not fit in the memory we may use.
fn check_memory(opts: &JoinOptions, spec: &RunSpec) -> Result<()> {
    let (need, micro) = run_memory(spec, opts.max_batch, opts.footprint)?;
    let (limit, source) = match (opts.max_memory, opts.device.is_cpu()) {
        (Some(m), _) => (m, "--max-memory"),
        (None, true) => match crate::memory::available_memory() {
            Some(m) => (m, "MemAvailable in /proc/meminfo"),
            None => {
                warn!("cannot tell how much memory is free; not checking (set --max-memory)");
                return Ok(());
            }
        },
        (None, false) => {
            info!(need = %need, "GPU memory is not checked before training; set --max-memory to the card's size to check it");
            return Ok(());
        }
    };
    let lora = hearth_model::spec::lora_config(&spec.lora)?;
    if let Some(why) = crate::memory::refusal(
        &run_model_config(spec),
        &lora,
        (micro, spec.data.seq_len),
        spec.base.size_bytes,
        (limit, source),
        opts.footprint,
    ) {
        return Err(anyhow!("not joining: {why}"));
    }
    info!(
        "memory: training needs about {need}; {} available ({source})",
        human_bytes(limit)
    );
    Ok(())
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

/// Join the run at `opts.coordinator` and contribute until `opts.rounds` or ctrl-c.
pub async fn join(opts: JoinOptions) -> Result<()> {
    let coordinator = hearth_net::peer_id_of(&opts.coordinator).ok_or_else(|| {
        anyhow!(
            "the coordinator address must end in /p2p/<peer id>: {}",
            opts.coordinator
        )
    })?;
    if let Some(swarm_key) = &opts.swarm_key {
        if hearth_net::is_quic(&opts.coordinator) {
            return Err(anyhow!(
                "{} is a QUIC address, but a private swarm (--swarm-key) runs over TCP only; \
                 use the coordinator's /tcp/ address",
                opts.coordinator
            ));
        }
        if let Some(a) = opts.listen.iter().find(|a| hearth_net::is_quic(a)) {
            return Err(anyhow!(
                "cannot listen on {a}: a private swarm (--swarm-key) runs over TCP only"
            ));
        }
        info!(fingerprint = %swarm_key.fingerprint(), "private swarm: pnet over TCP with a pre-shared key");
    }
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

    // Ctrl-C (SIGINT): the training thread stops after the step in progress, the partial round is
    // abandoned (nothing half-sent), and the worker leaves with its summary. A second Ctrl-C
    // leaves at once (every file is written atomically, so nothing is left half-written).
    let (stop_tx, mut stop_rx) = watch::channel(false);
    {
        let control = control.clone();
        let mut interrupts = Interrupts::new()?;
        tokio::spawn(async move {
            if interrupts.next().await {
                info!("interrupted: leaving after the current step (Ctrl-C again to quit now)");
                control.request_stop();
                let _ = stop_tx.send(true);
                if interrupts.next().await {
                    eprintln!(
                        "hearth-worker: interrupted twice; quitting without finishing the step"
                    );
                    std::process::exit(130);
                }
            }
        });
    }

    // The run id (topic names) is only known after joining; the first connection uses a
    // provisional node to fetch the spec, then the real node subscribes to the run's topics.
    let spec = {
        let mut cfg = NetConfig::new(
            key.clone(),
            "pending",
            Role::Worker {
                subscribe_deltas: false,
            },
        );
        cfg.listen = Vec::new();
        cfg.psk = opts.swarm_key.as_ref().map(hearth_net::SwarmKey::to_bytes);
        let (net, events) = hearth_net::spawn(cfg)?;
        let (_latest_tx, _) = watch::channel(Latest::default());
        let (conn_tx, conn_rx) = watch::channel(false);
        spawn_event_pump(net.clone(), events, coordinator, _latest_tx, conn_tx);
        let private = opts.swarm_key.is_some();
        spawn_redialer(
            net.clone(),
            opts.coordinator.clone(),
            conn_rx.clone(),
            private,
        );
        let mut s = Session {
            opts: opts.clone(),
            net: net.clone(),
            coordinator,
            key: key.clone(),
            connected: conn_rx,
            last_verdict: 0,
        };
        let spec = tokio::select! {
            r = s.join() => r.map(|(spec, ..)| spec),
            _ = stop_rx.wait_for(|stop| *stop) => Err(anyhow!("interrupted before joining")),
        };
        net.shutdown().await;
        let spec = spec?;
        check_memory(&opts, &spec)?;
        spec
    };

    let (net, events) = hearth_net::spawn(run_net_config(
        &key,
        &spec,
        &opts,
        opts.relay,
        opts.listen.clone(),
    ))?;
    let (latest_tx, mut latest_rx) = watch::channel(Latest::default());
    let (conn_tx, conn_rx) = watch::channel(false);
    spawn_event_pump(net.clone(), events, coordinator, latest_tx.clone(), conn_tx);
    let private = opts.swarm_key.is_some();
    spawn_redialer(
        net.clone(),
        opts.coordinator.clone(),
        conn_rx.clone(),
        private,
    );
    let mut s = Session {
        opts: opts.clone(),
        net: net.clone(),
        coordinator,
        key,
        connected: conn_rx,
        last_verdict: 0,
    };

    let mut done = 0u64;
    let mut checkpoint: Option<CheckpointManifest> = None;
    let progress = opts.progress.clone();
    let rounds = async {
        let (spec, shards, first, round) = s.join().await?;
        checkpoint = first;
        latest_tx.send_modify(|l| l.round = Some(round));
        info!(run = %spec.run_id, shards = ?shards, "joined {}", spec.name);
        metrics.set_state(WorkerState::Fetching);
        control.set_state("fetching");

        let layout = spec.adapter_layout()?;
        let model_file = s.model_file(&spec).await?;
        let mut data = Vec::new();
        for i in &shards {
            let info = spec
                .data
                .shards
                .get(*i as usize)
                .ok_or_else(|| anyhow!("leased shard {i} is not in the run"))?;
            let dest = opts.cache_dir.join("shards").join(info.cid.to_hex());
            s.fetch(info.cid, &dest, &spec, &format!("shard {i}"))
                .await?;
            let bytes = std::fs::read(&dest)?;
            data.extend(Shard::from_bytes(&bytes, MAX_SHARD_BYTES)?.into_sequences());
        }
        if data.is_empty() {
            return Err(anyhow!("the run gave us no training data"));
        }
        let seed = u64::from_le_bytes(
            ContentId::of(&me.to_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let trainer = TrainerHandle::spawn(
            spec.clone(),
            model_file,
            data,
            seed,
            TrainerSetup {
                device: opts.device,
                max_batch: opts.max_batch,
                footprint: opts.footprint,
                control: control.clone(),
            },
        )
        .await?;
        if trainer.micro_batch.0 < spec.train.batch_size {
            info!(
                "--max-batch: {} micro-batches of {} per step (the run's batch is {})",
                trainer.micro_batch.1, trainer.micro_batch.0, spec.train.batch_size
            );
        }
        let mut residual = Residual::new();
        let mut replayed: Option<Vec<u8>> = None;
        // The free-rider attack's memory: the last base checkpoint it saw, and by round.
        let mut previous_base: Option<(u64, Vec<NamedTensor>)> = None;
        // The copycat attack's second identity, joined on first use.
        let mut sybil: Option<Session> = None;
        loop {
            if opts.rounds.is_some_and(|r| done >= r) {
                break;
            }
            let m = match checkpoint.clone() {
                Some(m) => m,
                None => {
                    let (latest, _) = s.poll().await?;
                    checkpoint = latest;
                    if checkpoint.is_none() {
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                    continue;
                }
            };
            // Paused or outside the hours: stay connected, start no round until allowed. The
            // checkpoint may have moved on meanwhile: take the newest.
            if !control.may_train() {
                metrics.set_state(WorkerState::Waiting);
                control.set_state("waiting");
                if !control.wait_until_allowed().await {
                    break;
                }
                if let Some(c) = latest_rx
                    .borrow()
                    .checkpoint
                    .clone()
                    .filter(|c| c.round > m.round)
                {
                    checkpoint = Some(c);
                    continue;
                }
            }
            metrics.set_state(WorkerState::Fetching);
            control.set_state("fetching");
            let mut params = match s.checkpoint_params(&m, &spec, &layout).await {
                Ok(p) => p,
                Err(e) => {
                    // A banned peer's blob requests are refused: ask the coordinator why, so that
                    // a ban is reported as one (the poll answer says so) and not as a missing blob.
                    s.poll().await?;
                    return Err(e);
                }
            };
            if spec.aggregate.local_error_feedback {
                add_residual(&mut params, &residual);
            }
            let round_no = latest_rx
                .borrow()
                .round
                .as_ref()
                .map(|r| r.round)
                .unwrap_or(m.round + 1);
            info!(round = round_no, base = m.round, "training");
            metrics.set_state(WorkerState::Training);
            control.set_state("training");
            control.start_round(round_no);
            let bar = progress.training(round_no, u64::from(spec.train.local_steps));
            let lazy_steps = (opts.attack == Some(Attack::Lazy)).then(|| {
                ((f64::from(spec.train.local_steps) * crate::attack::LAZY_FRACTION).ceil() as usize)
                    .max(1)
            });
            let mut trained = {
                let mut observe = metrics.step_observer();
                let control = control.clone();
                let bar = bar.clone();
                trainer
                    .train(params.clone(), move |info| {
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
                let scale =
                    f64::from(spec.train.local_steps) / done.min(trained.report.steps) as f64;
                trained.report.tokens = (trained.report.tokens as f64 * scale) as usize;
                trained.report.steps = spec.train.local_steps as usize;
            }
            bar.finish_and_clear();
            metrics.round_trained(round_no, &trained.report);
            metrics.set_state(WorkerState::Submitting);
            control.set_state("submitting");
            let report = &trained.report;
            if report.steps == 0 || control.stopping() {
                info!("stopped during round {round_no}; its partial work is not sent");
                break;
            }
            // A long pause may have let the run move past what the coordinator still accepts.
            let newest = latest_rx
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
                checkpoint = latest_rx.borrow().checkpoint.clone().or(Some(m));
                continue;
            }
            let delta: Vec<NamedTensor> = trained
                .params
                .iter()
                .zip(&params)
                .map(|(new, old)| NamedTensor {
                    name: new.name.clone(),
                    shape: new.shape.clone(),
                    data: new.data.iter().zip(&old.data).map(|(a, b)| a - b).collect(),
                })
                .collect();
            let mut delta = delta;
            if opts.attack == Some(Attack::FreeRide) {
                let change: Option<Vec<NamedTensor>> = previous_base
                    .as_ref()
                    .filter(|(r, _)| *r < m.round)
                    .map(|(_, prev)| {
                        params
                            .iter()
                            .zip(prev)
                            .map(|(now, before)| NamedTensor {
                                name: now.name.clone(),
                                shape: now.shape.clone(),
                                data: now
                                    .data
                                    .iter()
                                    .zip(&before.data)
                                    .map(|(a, b)| a - b)
                                    .collect(),
                            })
                            .collect()
                    });
                crate::attack::free_ride(&mut delta, change.as_deref());
            }
            previous_base = Some((m.round, params.clone()));
            let honest_delta = (opts.attack == Some(Attack::Copycat)).then(|| delta.clone());
            if let Some(a) = opts.attack.filter(|a| *a != Attack::Copycat) {
                tamper_values(a, &mut delta, round_no);
                if a == Attack::WrongShape {
                    delta.pop();
                }
            }
            let encoded = encode_delta(&spec.aggregate.codec, &delta, &mut residual)?;
            let msg = DeltaMessage {
                run_id: spec.run_id.clone(),
                round: round_no,
                base_round: m.round,
                base_checkpoint: Some(m.id()),
                tokens_trained: report.tokens as u64,
                steps: report.steps as u32,
                train_loss: report.mean_loss as f32,
                delta: encoded,
            };
            let mut msg = msg;
            if let Some(a) = opts.attack {
                tamper_message(a, &mut msg, spec.aggregate.max_staleness);
            }
            let mut env = SignedEnvelope::seal(&s.key, Domain::Delta, &msg)?;
            if let Some(a) = opts.attack {
                tamper_envelope(a, &mut env);
            }
            let mut bytes = env.to_bytes();
            if opts.attack == Some(Attack::Replay) {
                // Re-send the first round's signed delta every round.
                match &replayed {
                    Some(first) => bytes = Vec::clone(first),
                    None => replayed = Some(bytes.clone()),
                }
            }
            let size = bytes.len();
            let (kind, outcome, verdict) = match s.submit(bytes, &spec).await {
                Ok(None) => (SubmitOutcome::Gossip, "sent by gossip".to_string(), None),
                Ok(Some(DeltaAck::Accepted { last_verdict })) => {
                    s.report_verdict(last_verdict);
                    (SubmitOutcome::Accepted, "accepted".to_string(), Some(true))
                }
                Ok(Some(DeltaAck::Banned { reason })) => {
                    return Err(banned(&reason, &s.key.public().to_peer_id()));
                }
                Ok(Some(DeltaAck::Rejected { reason })) => (
                    SubmitOutcome::Rejected,
                    format!("rejected ({reason})"),
                    Some(false),
                ),
                Err(e) => (SubmitOutcome::Failed, format!("not delivered: {e}"), None),
            };
            if let Some(mut copy) = honest_delta {
                // The copy goes in after the original, as a copier's would.
                tamper_values(Attack::Copycat, &mut copy, round_no);
                let outcome =
                    copycat_submit(&mut sybil, &opts, &spec, coordinator, &msg, &copy).await;
                info!(
                    round = round_no,
                    "copycat: the copy under a second identity was {outcome}"
                );
            }
            metrics.submitted(size, kind);
            metrics.set_state(WorkerState::Waiting);
            control.set_state("waiting");
            done += 1;
            let credit = match kind {
                SubmitOutcome::Failed | SubmitOutcome::Rejected => 0,
                _ => report.tokens as u64,
            };
            control.round_done(credit, verdict);
            let line = round_summary(round_no, &outcome, report, size, &control.status());
            if progress.bars() {
                progress.println(&line);
            } else {
                info!(
                    round = round_no,
                    steps = report.steps,
                    loss = format!("{:.4}", report.mean_loss),
                    tokens_per_s = format!("{:.0}", report.tokens_per_second),
                    bytes = size,
                    "{line}"
                );
            }

            let last = opts.rounds.is_some_and(|r| done >= r);
            // Wait for a newer checkpoint: gossip usually brings it; poll the coordinator otherwise.
            // After the last round, wait a bounded time only: to report the checkpoint we end on.
            let mut next = None;
            let give_up = tokio::time::Instant::now() + LAST_CHECKPOINT_WAIT;
            while next.is_none() {
                if last && tokio::time::Instant::now() >= give_up {
                    break;
                }
                if let Some(c) = latest_rx
                    .borrow()
                    .checkpoint
                    .clone()
                    .filter(|c| c.round > m.round)
                {
                    next = Some(c);
                    break;
                }
                // Wake on news, on a lost connection (poll at once: the poll redials, so a
                // restarted coordinator is found within the redial backoff, not the poll
                // interval) or when the poll interval passes.
                let mut conn = s.connected.clone();
                let woke = tokio::select! {
                    r = latest_rx.changed() => Some(r),
                    _ = conn.wait_for(|c| !*c) => None,
                    _ = tokio::time::sleep(POLL_INTERVAL) => None,
                };
                match woke {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return Err(anyhow!("the network task stopped")),
                    None => {
                        let polled = if last {
                            match tokio::time::timeout(POLL_INTERVAL, s.poll()).await {
                                Ok(r) => r,
                                Err(_) => continue,
                            }
                        } else {
                            s.poll().await
                        };
                        let (latest, round) = polled?;
                        latest_tx.send_modify(|l| {
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
            if last {
                checkpoint = next.or(Some(m));
                break;
            }
            checkpoint = next;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = rounds => r?,
        _ = stop_rx.wait_for(|stop| *stop) => {}
    }
    metrics.set_state(WorkerState::Stopped);
    control.set_state("stopped");
    // Report the newest checkpoint we know of (gossip may have brought one while we trained).
    let newest = latest_rx.borrow().checkpoint.clone();
    let end = match (newest, checkpoint) {
        (Some(n), Some(c)) => Some(if n.round > c.round { n } else { c }),
        (n, c) => n.or(c),
    };
    let end = end.as_ref();
    let st = control.status();
    let summary = format!(
        "left the swarm after {done} round(s): {} tokens delivered, {} accepted, {} rejected (credit: the coordinator's ledger); last checkpoint {}",
        st.credit_tokens,
        st.accepted,
        st.rejected,
        end.map_or("none".to_string(), |c| format!("round {}", c.round))
    );
    // The final summary shows even with --quiet.
    warn_or_info(&progress, &summary);
    println!(
        "{}",
        serde_json::json!({
            "event": "left",
            "peer_id": me.to_base58(),
            "rounds": done,
            "tokens": st.credit_tokens,
            "accepted": st.accepted,
            "rejected": st.rejected,
            "checkpoint_round": end.map(|c| c.round),
            "checkpoint": end.map(|c| c.id().to_hex()),
        })
    );
    net.shutdown().await;
    Ok(())
}

/// Print the final summary: on the terminal always, in the log as well.
fn warn_or_info(progress: &Progress, line: &str) {
    info!(target: "hearth_worker::summary", "{line}");
    if !tracing::enabled!(tracing::Level::INFO) {
        progress.println(line);
    }
}

/// Ctrl-C (SIGINT) deliveries, one stream for the whole session so that each press counts once.
struct Interrupts {
    #[cfg(unix)]
    sigint: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            sigint: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// The next Ctrl-C; `false` if no more can arrive.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.sigint.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
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

//! `Service::start`: load the run, restore or create checkpoint 0, and open the network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use hearth_model::data::Shard;
use hearth_net::{Event, Multiaddr, NetConfig, Role};
use hearth_proto::{decode_bounded, ContentId, NamedTensor, RunSpec, TensorLayout};
use tracing::{info, warn};

use super::commit::PendingCommit;
use super::{now_ms, policy_of, RunOptions, Service};
use crate::config::RunConfig;
use crate::engine::Engine;
use crate::evaluator::Evaluator;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::outer::OuterState;
use crate::round::Round;
use crate::state::State;
use crate::status::Snapshot;
use crate::store::BlobStore;

/// Largest validation shard read from the store.
const MAX_SHARD_BYTES: usize = 1 << 30;
/// Sequences of each train shard kept for reference batches.
const REFERENCE_POOL_PER_SHARD: usize = 64;

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

/// A seed for the screen's sketches that peers cannot predict.
fn sketch_seed() -> u64 {
    let nonce = format!("{:?}/{}", SystemTime::now(), std::process::id());
    let h = ContentId::of(nonce.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The run as loaded from run.toml and its data dir, before anything is computed.
struct Loaded {
    cfg: RunConfig,
    data_dir: PathBuf,
    store: Arc<BlobStore>,
    state: State,
}

/// Read run.toml, open the data dir and check that it belongs to this run spec.
fn load_run(config_path: &Path, opts: &RunOptions) -> Result<Loaded> {
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
    let spec_id = cfg.run.spec_id();
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
    Ok(Loaded {
        cfg,
        data_dir,
        store,
        state,
    })
}

/// The evaluator: the base model (presets are generated; files are served from, and verified
/// in, the blob store) and the validation shard.
fn load_evaluator(run: &Loaded) -> Result<Evaluator> {
    let (cfg, store, spec) = (&run.cfg, &run.store, &run.cfg.run);
    let model_file = crate::base_model::base_model_path(store, &spec.base, &run.data_dir)?;
    let Some(cid) = cfg.coordinator.validation else {
        return Err(anyhow!(
            "run.toml names no validation shard (coordinator.validation)"
        ));
    };
    let bytes = store
        .get(&cid)
        .with_context(|| format!("validation shard {cid}"))?;
    let validation = Shard::from_bytes(&bytes, MAX_SHARD_BYTES)
        .with_context(|| format!("validation shard {cid}"))?
        .into_sequences();
    info!(
        sequences = validation.len(),
        "loading the base model for evaluation"
    );
    Evaluator::load(
        spec,
        model_file.as_deref(),
        validation,
        cfg.coordinator.eval_batch,
    )
    .context("loading the base model")
}

/// Blobs any admitted peer may fetch: the train shards, the base model's files and every
/// committed checkpoint's adapter. Never the validation shard.
fn public_blobs(spec: &RunSpec, state: &State) -> HashSet<ContentId> {
    let mut public: HashSet<ContentId> = spec.data.shards.iter().map(|s| s.cid).collect();
    match &spec.base.source {
        hearth_proto::ModelSource::Safetensors { .. } => {
            public.extend(spec.base.files.iter().map(|f| f.blake3));
        }
        _ => public.extend(spec.base.blake3),
    }
    public.extend(state.checkpoints.iter().map(|rec| rec.manifest.adapter));
    public
}

/// The adapter and outer optimizer state to resume from: the last committed checkpoint's, or a
/// fresh adapter when there is none.
async fn restore_params(
    run: &Loaded,
    layout: &[TensorLayout],
    evaluator: &Arc<Mutex<Evaluator>>,
) -> Result<(Vec<NamedTensor>, OuterState)> {
    let store = &run.store;
    match run.state.latest() {
        Some(rec) => {
            let m = &rec.manifest;
            let params = hearth_proto::decode_checkpoint(&store.get(&m.adapter)?, layout)
                .with_context(|| format!("checkpoint {} adapter", m.round))?;
            let outer: OuterState = match m.outer_state {
                Some(cid) => decode_bounded(&store.get(&cid)?, hearth_proto::MAX_CHECKPOINT_BYTES)
                    .with_context(|| format!("checkpoint {} outer state", m.round))?,
                None => OuterState::default(),
            };
            info!(round = m.round, checkpoint = %rec.id.short(), "resuming from the last committed checkpoint");
            Ok((params, outer))
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
            Ok((params, OuterState::default()))
        }
    }
}

/// The network's configuration: identity, listen addresses (options before run.toml), the
/// private swarm's key (TCP only) and the run's message sizes.
fn net_config(run: &Loaded, opts: &RunOptions) -> Result<NetConfig> {
    let (cfg, spec) = (&run.cfg, &run.cfg.run);
    let keypair = hearth_net::load_or_create_identity(&run.data_dir.join("identity.key"))?;
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
        let (quic, tcp): (Vec<_>, Vec<_>) = net_cfg.listen.drain(..).partition(hearth_net::is_quic);
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
    net_cfg.fit_run(hearth_net::RunLimits {
        max_transmit_size: spec.net.max_transmit_size,
        blob_chunk_size: spec.net.blob_chunk_size as usize,
        max_delta_bytes: spec.max_delta_bytes().unwrap_or(0),
    });
    Ok(net_cfg)
}

impl Service {
    /// Load the run, restore state (or create checkpoint 0), start the network.
    pub async fn start(
        config_path: &Path,
        opts: &RunOptions,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<Event>)> {
        let run = load_run(config_path, opts)?;
        let spec = run.cfg.run.clone();
        let evaluator = Arc::new(Mutex::new(load_evaluator(&run)?));
        let layout = spec.adapter_layout().context("adapter layout")?;
        let reference_pool = reference_pool(&run.store, &spec);
        let public = public_blobs(&spec, &run.state);
        let (params, outer_state) = restore_params(&run, &layout, &evaluator).await?;
        let mut ingest = Ingest::new(spec.clone(), layout.clone(), sketch_seed());
        for rec in &run.state.checkpoints {
            ingest.checkpoint_committed(rec.manifest.round, rec.id);
        }
        let engine = Engine::new(
            layout,
            params,
            outer_state,
            spec.aggregate.outer,
            spec.aggregate.aggregator,
        );

        let net_cfg = net_config(&run, opts)?;
        let peer_id = net_cfg.keypair.public().to_peer_id();
        let (net, events) = hearth_net::spawn(net_cfg)?;

        let Loaded {
            cfg,
            data_dir,
            store,
            state,
        } = run;
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
            metrics: Metrics::new()?,
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
            svc.commit_checkpoint_zero().await?;
        }
        if let Some(l) = svc.state.latest_eval_loss() {
            svc.metrics.eval_loss.set(f64::from(l));
        }
        svc.metrics.round.set(svc.round.number as i64);
        svc.ingest.round_opened(None);
        svc.engine
            .set_mean_over_senders(svc.cfg.run.aggregate.mean_over_senders_in(svc.round.number));
        svc.start_reference();
        svc.restore_journal().await?;
        svc.refresh_snapshot();
        Ok((svc, events))
    }

    /// Evaluate the fresh adapter and commit it as checkpoint 0.
    async fn commit_checkpoint_zero(&mut self) -> Result<()> {
        let params = self.engine.params().to_vec();
        let outer = self.engine.outer_state().clone();
        let loss = self.eval(params.clone()).await?;
        self.commit_checkpoint(&PendingCommit {
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
        Ok(())
    }
}

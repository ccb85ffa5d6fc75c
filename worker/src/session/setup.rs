//! Getting ready to train: the coordinator's address, the network node and its client, the run's
//! spec, a memory check, the base model, the leased shards and the training thread.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use hearth_model::data::Shard;
use hearth_net::{Multiaddr, NetConfig, PeerId, Role};
use hearth_proto::{ContentId, JoinRequest, ModelSource, RunSpec, PROTOCOL_VERSION};
use tokio::sync::watch;
use tracing::{info, warn};

use super::pump::{spawn_event_pump, Latest};
use super::JoinOptions;
use crate::client::{run_limits, CoordinatorClient};
use crate::fetch::hash_file;
use crate::memory::{human_bytes, MemoryEstimate};
use crate::redial::spawn_redialer;
use crate::trainer::{TrainerHandle, TrainerSetup};

/// Largest data shard accepted.
const MAX_SHARD_BYTES: usize = 1 << 30;

/// The coordinator's peer id, from its address; checks the address against the private swarm's
/// TCP-only transport.
pub(super) fn coordinator_peer(opts: &JoinOptions) -> Result<PeerId> {
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
    Ok(coordinator)
}

/// The join request `opts` describes.
pub(super) fn hello(opts: &JoinOptions) -> JoinRequest {
    JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: String::new(),
        name: opts.name.clone(),
        device: opts.device.to_string(),
        threads: opts.threads as u32,
        memory_bytes: opts.max_memory.unwrap_or(0),
        token: opts.token.clone(),
    }
}

/// A running node with its event pump and redialer, and a client of the coordinator over it.
pub(super) struct Node {
    pub(super) client: CoordinatorClient,
    pub(super) latest_tx: watch::Sender<Latest>,
    pub(super) latest_rx: watch::Receiver<Latest>,
}

/// Start a node with `cfg` that keeps a connection to the coordinator, joining as `hello`.
pub(super) fn start_node(
    cfg: NetConfig,
    opts: &JoinOptions,
    coordinator: PeerId,
    hello: JoinRequest,
) -> Result<Node> {
    let me = cfg.keypair.public().to_peer_id();
    let (net, events) = hearth_net::spawn(cfg)?;
    let (latest_tx, latest_rx) = watch::channel(Latest::default());
    let (conn_tx, conn_rx) = watch::channel(false);
    spawn_event_pump(net.clone(), events, coordinator, latest_tx.clone(), conn_tx);
    let private = opts.swarm_key.is_some();
    spawn_redialer(
        net.clone(),
        opts.coordinator.clone(),
        conn_rx.clone(),
        private,
    );
    Ok(Node {
        client: CoordinatorClient::new(net, coordinator, me, conn_rx, hello),
        latest_tx,
        latest_rx,
    })
}

/// Settings of the worker's node before it knows the run: no topic yet (they are named by the
/// run id, learnt by joining), gossip frames up to the largest any run may use (the run's own
/// limit applies once [`CoordinatorClient::enter_run`] subscribes), the swarm key and `opts.listen`.
pub(super) fn node_config(key: &hearth_net::Keypair, opts: &JoinOptions) -> NetConfig {
    let mut cfg = NetConfig::without_run(
        key.clone(),
        Role::Worker {
            subscribe_deltas: opts.relay,
        },
    );
    cfg.listen = opts.listen.clone();
    cfg.psk = opts.swarm_key.as_ref().map(hearth_net::SwarmKey::to_bytes);
    cfg.max_transmit_size = hearth_proto::MAX_TRANSMIT_SIZE;
    cfg
}

/// The network settings of a node in run `spec` with identity `key` (one that joins knowing the
/// run already): the run's topics, the swarm key, and request limits sized for the run.
pub(super) fn run_net_config(
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
    cfg.fit_run(run_limits(spec));
    cfg
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
pub(super) fn check_memory(opts: &JoinOptions, spec: &RunSpec) -> Result<()> {
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

/// The base model file (verified), from the local cache or the coordinator.
pub(super) async fn model_file(
    client: &mut CoordinatorClient,
    opts: &JoinOptions,
    spec: &RunSpec,
) -> Result<Option<PathBuf>> {
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
    let chunk = spec.net.blob_chunk_size;
    if let ModelSource::Safetensors { .. } = &spec.base.source {
        // A directory: each listed file fetched and checked by its blake3 into a directory
        // named by the list's id (the spec was validated: plain, unique names).
        let dir = opts.cache_dir.join("models").join(cid.to_hex());
        info!(model = %file_name, files = spec.base.files.len(), size = spec.base.size_bytes, "fetching the base model directory");
        for f in &spec.base.files {
            let label = format!("model {file_name}/{}", f.name);
            client
                .fetch(f.blake3, &dir.join(&f.name), chunk, &label, &opts.progress)
                .await?;
        }
        return Ok(Some(dir));
    }
    // The fetch script's copy, when it is the same file.
    let default = hearth_model::default_model_path();
    if default.is_file() && hash_file(&default) == Some(cid) {
        return Ok(Some(default));
    }
    let dest = opts.cache_dir.join("models").join(cid.to_hex());
    if !dest.is_file() {
        info!(model = %file_name, size = spec.base.size_bytes, "fetching the base model from the coordinator");
    }
    let label = format!("model {file_name}");
    client
        .fetch(cid, &dest, chunk, &label, &opts.progress)
        .await?;
    Ok(Some(dest))
}

/// Fetch the base model and the leased shards, and start the training thread on them.
pub(super) async fn start_trainer(
    client: &mut CoordinatorClient,
    opts: &JoinOptions,
    control: &crate::control::Control,
    spec: &RunSpec,
    shards: &[u32],
) -> Result<TrainerHandle> {
    let model_file = model_file(client, opts, spec).await?;
    let mut data = Vec::new();
    for i in shards {
        let info = spec
            .data
            .shards
            .get(*i as usize)
            .ok_or_else(|| anyhow!("leased shard {i} is not in the run"))?;
        let dest = opts.cache_dir.join("shards").join(info.cid.to_hex());
        let label = format!("shard {i}");
        client
            .fetch(
                info.cid,
                &dest,
                spec.net.blob_chunk_size,
                &label,
                &opts.progress,
            )
            .await?;
        let bytes = std::fs::read(&dest)?;
        data.extend(Shard::from_bytes(&bytes, MAX_SHARD_BYTES)?.into_sequences());
    }
    if data.is_empty() {
        return Err(anyhow!("the run gave us no training data"));
    }
    let seed = u64::from_le_bytes(
        ContentId::of(&client.peer_id().to_bytes()).as_bytes()[..8]
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
    Ok(trainer)
}

//! `hearth-sim`: light simulated workers for the scale benchmark (table 5) and `tests/scale.rs`.
//!
//! Every simulated peer is a real libp2p node (`hearth-net`) with its own ed25519 identity. It
//! joins with the real `/hearth/join/1` protocol, then each round sends one signed delta, encoded
//! with the run's codec and built on the latest checkpoint, by direct submission
//! (`/hearth/delta/1`), and counts the coordinator's acknowledgement. Peers do not train: one
//! template delta is trained once (on the tiny preset that takes about a second) so the deltas
//! lower the loss and pass the coordinator's loss probe; each peer sends it with its own noise.

mod peer;
mod report;
mod template;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hearth_net::{Keypair, Multiaddr, PeerId};
use hearth_proto::{CheckpointManifest, ContentId};
use tokio::task::JoinSet;

pub use peer::{Outcome, SimPeer};
pub use report::{RoundReport, Summary};
pub use template::Template;

/// What one simulator process does.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Coordinator multiaddr ending in `/p2p/<peer id>`.
    pub coordinator: Multiaddr,
    /// Peers simulated by this process.
    pub peers: usize,
    /// Index of this process's first peer (identities are derived from `seed` and the index).
    pub first_peer: usize,
    /// Rounds each peer contributes to.
    pub rounds: u64,
    /// Seed of identities and noise.
    pub seed: u64,
    /// Peers joining at the same time.
    pub join_concurrency: usize,
    /// How long one delta submission may wait for its acknowledgement.
    pub request_timeout: Duration,
    /// How long to wait for a round's checkpoint after the last acknowledgement.
    pub round_timeout: Duration,
    /// Scratch directory (downloaded shards and checkpoints).
    pub work_dir: std::path::PathBuf,
}

/// Deterministic ed25519 identity of simulated peer `index`.
pub fn identity(seed: u64, index: usize) -> Result<Keypair> {
    let bytes = ContentId::of(format!("hearth-sim/{seed}/{index}").as_bytes());
    Keypair::ed25519_from_bytes(*bytes.as_bytes()).map_err(|e| anyhow!("identity {index}: {e}"))
}

/// Run the simulation; returns the counts and timings.
pub async fn run(opts: SimOptions) -> Result<Summary> {
    let coordinator = hearth_net::peer_id_of(&opts.coordinator)
        .ok_or_else(|| anyhow!("the coordinator address must end in /p2p/<peer id>"))?;
    let started = Instant::now();
    let (mut peers, spec) = join_all(&opts, coordinator).await?;
    let join_secs = started.elapsed().as_secs_f64();
    tracing::info!(peers = peers.len(), join_secs, "all simulated peers joined");

    let lead = peers
        .first()
        .ok_or_else(|| anyhow!("no peers"))?
        .clone_handle();
    let template = Template::train(&lead, &spec, &opts.work_dir)
        .await
        .context("training the template delta")?;
    let mut summary = Summary::new(opts.peers, join_secs, template.raw_bytes());
    let (mut checkpoint, mut round) = lead.poll().await?;
    for _ in 0..opts.rounds {
        let m = checkpoint
            .clone()
            .ok_or_else(|| anyhow!("the coordinator has no checkpoint yet"))?;
        let t0 = Instant::now();
        let mut tasks = JoinSet::new();
        for mut p in peers.drain(..) {
            let (m, t, spec) = (m.clone(), template.clone(), spec.clone());
            let timeout = opts.request_timeout;
            tasks.spawn(async move {
                let out = p.submit(&spec, &m, round.round, &t, timeout).await;
                (p, out, t0.elapsed().as_secs_f64())
            });
        }
        let mut rep = RoundReport::new(round.round);
        while let Some(joined) = tasks.join_next().await {
            let (p, out, at) = joined.map_err(|e| anyhow!("a peer task failed: {e}"))?;
            rep.record(&out, at);
            peers.push(p);
        }
        peers.sort_by_key(|p| p.index);
        let next = wait_checkpoint(&lead, &m, opts.round_timeout).await?;
        rep.close_secs = t0.elapsed().as_secs_f64();
        tracing::info!(
            round = rep.round,
            accepted = rep.accepted,
            rejected = rep.rejected,
            failed = rep.failed,
            close_secs = rep.close_secs,
            "round done"
        );
        summary.rounds.push(rep);
        (checkpoint, round) = next;
    }
    for p in &peers {
        p.shutdown().await;
    }
    Ok(summary)
}

/// Start, connect and join every peer, `join_concurrency` at a time.
async fn join_all(
    opts: &SimOptions,
    coordinator: PeerId,
) -> Result<(Vec<SimPeer>, hearth_proto::RunSpec)> {
    let mut peers = Vec::with_capacity(opts.peers);
    let mut spec: Option<hearth_proto::RunSpec> = None;
    let mut next = 0usize;
    let mut tasks = JoinSet::new();
    while next < opts.peers || !tasks.is_empty() {
        while next < opts.peers && tasks.len() < opts.join_concurrency.max(1) {
            let index = opts.first_peer + next;
            let key = identity(opts.seed, index)?;
            let o = opts.clone();
            tasks.spawn(async move { SimPeer::start(&o, index, key, coordinator).await });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            let (peer, run) = done.map_err(|e| anyhow!("join task failed: {e}"))??;
            if spec.as_ref().is_some_and(|s| s.run_id != run.run_id) {
                return Err(anyhow!(
                    "peer {} joined another run: {}",
                    peer.index,
                    run.run_id
                ));
            }
            spec.get_or_insert(run);
            peers.push(peer);
        }
    }
    peers.sort_by_key(|p| p.index);
    let spec = spec.ok_or_else(|| anyhow!("no peers"))?;
    Ok((peers, spec))
}

/// Poll until a checkpoint newer than `m` is committed.
async fn wait_checkpoint(
    lead: &SimPeer,
    m: &CheckpointManifest,
    timeout: Duration,
) -> Result<(Option<CheckpointManifest>, hearth_proto::RoundInfo)> {
    let end = Instant::now() + timeout;
    let mut polls = 0u64;
    loop {
        if let Some(c) = lead.announced().filter(|c| c.round > m.round) {
            // The next round's details; a coordinator that stopped after its last round is gone.
            let round = match lead.poll().await {
                Ok((_, round)) => round,
                Err(_) => hearth_proto::RoundInfo {
                    round: c.round + 1,
                    base_checkpoint: Some(c.id()),
                    opened_unix_ms: 0,
                    deadline_unix_ms: 0,
                },
            };
            return Ok((Some(c), round));
        }
        polls += 1;
        if polls.is_multiple_of(4) {
            match lead.poll().await {
                Ok((latest, round)) if latest.as_ref().is_some_and(|c| c.round > m.round) => {
                    return Ok((latest, round))
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("poll failed: {e:#}"),
            }
        }
        if Instant::now() > end {
            return Err(anyhow!(
                "no checkpoint after round {} within {} s",
                m.round,
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

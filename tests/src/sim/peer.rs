//! One simulated peer: a real libp2p node that joins and hands in signed deltas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use hearth_net::{Client, Event, Keypair, NetConfig, PeerId, Role, Topic, Validation};
use hearth_proto::{
    encode_delta, Announcement, CheckpointManifest, DeltaAck, DeltaMessage, Domain, JoinRequest,
    Residual, RoundInfo, RunSpec, SignedEnvelope, Wire, PROTOCOL_VERSION,
};
use hearth_worker::client::{CoordinatorClient, SubmitError};

use super::{SimOptions, Template};

/// What became of one delta.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The coordinator acknowledged it as accepted.
    Accepted,
    /// The coordinator explicitly rejected it, with its reason.
    Rejected(String),
    /// No acknowledgement (timeout, connection lost): a lost delta.
    Failed(String),
}

/// A joined simulated peer.
pub struct SimPeer {
    /// Its index among all simulated peers.
    pub index: usize,
    client: CoordinatorClient,
    key: Keypair,
    residual: Residual,
    announced: Arc<Mutex<Option<CheckpointManifest>>>,
}

/// The join request of a simulated peer called `name`.
fn hello(name: String) -> JoinRequest {
    JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: String::new(),
        name,
        device: "sim".into(),
        threads: 1,
        memory_bytes: 0,
        token: None,
    }
}

/// A one-shot client of `coordinator` over `net` (each request tried once: the benchmark counts
/// failures instead of hiding them).
fn client(net: Client, key: &Keypair, coordinator: PeerId, name: String) -> CoordinatorClient {
    CoordinatorClient::one_shot(net, coordinator, key.public().to_peer_id(), hello(name))
}

/// A node that enters the run on joining (as `hearth-worker`'s does), announcements only.
fn node_config(key: Keypair, timeout: Duration) -> NetConfig {
    let mut cfg = NetConfig::without_run(
        key,
        Role::Worker {
            subscribe_deltas: false,
        },
    );
    cfg.listen = Vec::new();
    cfg.request_timeout = timeout;
    cfg.max_transmit_size = hearth_proto::MAX_TRANSMIT_SIZE;
    // Hundreds of simulated peers share one IP: relay reservations would hit the relay's
    // per-IP limit, and light peers are never dialled back anyway.
    cfg.reserve_on_relays = false;
    cfg
}

/// Drain a peer's events: accept the coordinator's announcements, remember the newest checkpoint.
fn spawn_pump(
    net: Client,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    coordinator: PeerId,
    announced: Arc<Mutex<Option<CheckpointManifest>>>,
) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Gossip {
                    message_id,
                    propagation_source,
                    source,
                    data,
                    topic,
                } => {
                    let ann = (topic == Topic::Announce && source == Some(coordinator))
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
                    if let Some(Announcement::CheckpointReady(m)) = ann {
                        if let Ok(mut a) = announced.lock() {
                            if a.as_ref().is_none_or(|c| c.round < m.round) {
                                *a = Some(m);
                            }
                        }
                    }
                }
                Event::Request { channel, .. } => drop(channel),
                _ => {}
            }
        }
    });
}

impl SimPeer {
    /// Start the node, dial the coordinator and join the run; returns the peer and the run.
    pub async fn start(
        opts: &SimOptions,
        index: usize,
        key: Keypair,
        coordinator: PeerId,
    ) -> Result<(Self, RunSpec)> {
        let cfg = node_config(key.clone(), opts.request_timeout);
        let (net, events) = hearth_net::spawn(cfg)?;
        let announced = Arc::new(Mutex::new(None));
        spawn_pump(net.clone(), events, coordinator, announced.clone());
        let mut last = anyhow!("not tried");
        for attempt in 0..5u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
            if let Err(e) = net.dial(opts.coordinator.clone()).await {
                last = anyhow!("peer {index}: dial: {e}");
                continue;
            }
            let mut client = client(net.clone(), &key, coordinator, format!("sim-{index}"));
            match client.enter_run().await {
                Ok(joined) => {
                    let peer = Self {
                        index,
                        client,
                        key,
                        residual: Residual::new(),
                        announced,
                    };
                    return Ok((peer, joined.spec));
                }
                Err(e) => last = e.context(format!("peer {index}")),
            }
        }
        net.shutdown().await;
        Err(last)
    }

    /// A second handle on the same node (for polling), without the residual.
    pub fn clone_handle(&self) -> Self {
        Self {
            index: self.index,
            client: self.client.clone(),
            key: self.key.clone(),
            residual: Residual::new(),
            announced: self.announced.clone(),
        }
    }

    /// The newest checkpoint announced by gossip.
    pub fn announced(&self) -> Option<CheckpointManifest> {
        self.announced.lock().ok().and_then(|a| a.clone())
    }

    /// The network handle (downloads use it).
    pub fn net(&self) -> &Client {
        self.client.net()
    }

    /// The coordinator's peer id.
    pub fn coordinator(&self) -> PeerId {
        self.client.coordinator()
    }

    /// Ask the coordinator for the latest checkpoint and round (a poll, as workers do).
    pub async fn poll(&self) -> Result<(Option<CheckpointManifest>, RoundInfo)> {
        let polled = self.client.clone().poll().await?;
        Ok((polled.latest, polled.round))
    }

    /// Build, sign and hand in this peer's delta for `round` on checkpoint `m`.
    pub async fn submit(
        &mut self,
        spec: &RunSpec,
        m: &CheckpointManifest,
        round: u64,
        template: &Template,
        timeout: Duration,
    ) -> Outcome {
        let bytes = match self.envelope(spec, m, round, template) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("building the delta: {e:#}")),
        };
        // One attempt, no resend: a resend after a lost acknowledgement would come back as a
        // duplicate and hide the loss this benchmark counts.
        let send = self.client.submit_once(bytes);
        match tokio::time::timeout(timeout + Duration::from_secs(5), send).await {
            Ok(Ok(DeltaAck::Accepted { .. })) => Outcome::Accepted,
            Ok(Ok(DeltaAck::Rejected { reason })) => Outcome::Rejected(reason),
            Ok(Ok(DeltaAck::Banned { reason })) => Outcome::Rejected(format!("banned: {reason}")),
            Ok(Err(e @ SubmitError::Malformed(_))) => Outcome::Failed(e.to_string()),
            Ok(Err(SubmitError::Net(e))) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed("timed out".into()),
        }
    }

    fn envelope(
        &mut self,
        spec: &RunSpec,
        m: &CheckpointManifest,
        round: u64,
        template: &Template,
    ) -> Result<Vec<u8>> {
        let delta = template.for_peer(self.index, round);
        let encoded = encode_delta(&spec.aggregate.codec_for(round), &delta, &mut self.residual)?;
        let msg = DeltaMessage {
            run_id: spec.run_id.clone(),
            round,
            base_round: m.round,
            base_checkpoint: Some(m.id()),
            tokens_trained: template.tokens,
            steps: template.steps,
            train_loss: template.train_loss,
            delta: encoded,
        };
        Ok(SignedEnvelope::seal(&self.key, Domain::Delta, &msg)?.to_bytes())
    }

    /// Stop the node.
    pub async fn shutdown(&self) {
        self.client.net().shutdown().await;
    }
}

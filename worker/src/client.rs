//! `CoordinatorClient`: the worker's side of the protocol (join, poll, fetch, checkpoint, submit).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hearth_net::{Client, NetError, PeerId, Protocol, Topic};
use hearth_proto::{
    encode, CheckpointManifest, ContentId, DeltaAck, DeltaVerdict, JoinRequest, JoinResponse,
    NamedTensor, NetSpec, PollRequest, PollResponse, RoundInfo, RunSpec, TensorLayout, Wire,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::fetch::{fetch_blob, FetchError};
use crate::progress::Progress;
use crate::redial::Backoff;

/// How long a worker keeps trying to hand in one delta.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Interrupted downloads resumed before giving up.
const FETCH_RESUMES: u32 = 5;

/// What run `spec` asks of the network: its gossip frame limit, blob chunk and largest delta.
pub fn run_limits(spec: &RunSpec) -> hearth_net::RunLimits {
    hearth_net::RunLimits {
        max_transmit_size: spec.net.max_transmit_size,
        blob_chunk_size: spec.net.blob_chunk_size as usize,
        max_delta_bytes: spec.max_delta_bytes().unwrap_or(0),
    }
}

/// The coordinator admitted us.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The run.
    pub spec: RunSpec,
    /// The train shards leased to us.
    pub shards: Vec<u32>,
    /// The newest committed checkpoint.
    pub latest: Option<CheckpointManifest>,
    /// The open round.
    pub round: RoundInfo,
}

/// The coordinator's answer to a poll (or to the join a poll falls back to).
#[derive(Debug, Clone)]
pub struct Polled {
    /// The newest committed checkpoint.
    pub latest: Option<CheckpointManifest>,
    /// The open round.
    pub round: RoundInfo,
}

/// How a delta was handed in.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Directly, and the coordinator answered.
    Answered(DeltaAck),
    /// Published on the deltas topic: no answer comes.
    Gossiped,
}

/// Why a delta handed in directly got no acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request failed (no route, timeout, connection lost).
    #[error(transparent)]
    Net(#[from] NetError),
    /// The coordinator answered with bytes that are not an acknowledgement.
    #[error("malformed acknowledgement: {0}")]
    Malformed(#[from] hearth_proto::DecodeError),
}

/// A typed connection to the coordinator over a running node. A worker's client waits for the
/// connection (the redialer keeps it; see [`crate::redial`]) and retries until answered; a
/// [one-shot](CoordinatorClient::one_shot) client (the simulator's) tries each request once.
#[derive(Clone)]
pub struct CoordinatorClient {
    net: Client,
    coordinator: PeerId,
    me: PeerId,
    /// Whether the coordinator is connected; `None` for a one-shot client.
    connected: Option<watch::Receiver<bool>>,
    /// Sent on join, and again when a poll finds us no longer joined.
    hello: JoinRequest,
    /// The round of the last close-time verdict printed.
    last_verdict: u64,
}

impl CoordinatorClient {
    /// A client of `coordinator` over `net` (whose own peer id is `me`), joining with `hello`;
    /// `connected` says whether the coordinator is connected.
    pub fn new(
        net: Client,
        coordinator: PeerId,
        me: PeerId,
        connected: watch::Receiver<bool>,
        hello: JoinRequest,
    ) -> Self {
        Self {
            net,
            coordinator,
            me,
            connected: Some(connected),
            hello,
            last_verdict: 0,
        }
    }

    /// A client that sends each request once and returns its failure (no waiting for the
    /// connection, no retries): for callers that count failures instead of hiding them.
    pub fn one_shot(net: Client, coordinator: PeerId, me: PeerId, hello: JoinRequest) -> Self {
        Self {
            net,
            coordinator,
            me,
            connected: None,
            hello,
            last_verdict: 0,
        }
    }

    /// The node this client sends through.
    pub fn net(&self) -> &Client {
        &self.net
    }

    /// Our own peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// The coordinator's peer id.
    pub fn coordinator(&self) -> PeerId {
        self.coordinator
    }

    /// Whether the coordinator is connected, as a watch (always connected for a one-shot client).
    pub fn connection(&self) -> watch::Receiver<bool> {
        match &self.connected {
            Some(c) => c.clone(),
            None => watch::channel(true).1,
        }
    }

    /// Prints the coordinator's close-time verdict on our last judged delta, once per round.
    pub fn report_verdict(&mut self, verdict: Option<DeltaVerdict>) {
        if let Some(v) = verdict.filter(|v| v.round > self.last_verdict) {
            self.last_verdict = v.round;
            // Untrusted text: printed as data, bounded.
            let text: String = v.text.chars().take(512).collect();
            info!("round {}: our delta was {}", v.round, text.escape_debug());
        }
    }

    /// Waits until connected (the redialer dials); at once for a one-shot client.
    pub async fn ensure_connected(&mut self) -> Result<()> {
        if let Some(c) = &mut self.connected {
            c.wait_for(|c| *c)
                .await
                .map_err(|_| anyhow!("the network task stopped"))?;
        }
        Ok(())
    }

    /// Send `body` on `protocol` until the coordinator answers, redialing and backing off on
    /// failures; an error for which `give_up` holds is returned instead of retried.
    async fn request_answered(
        &mut self,
        protocol: Protocol,
        body: Vec<u8>,
        give_up: impl Fn(&NetError) -> bool,
    ) -> Result<std::result::Result<Vec<u8>, NetError>> {
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
                Err(e) if self.connected.is_none() => return Err(e.into()),
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

    /// Ask to be admitted to the run.
    pub async fn join(&mut self) -> Result<Joined> {
        let bytes = self
            .request_answered(Protocol::Join, encode(&self.hello), |_| false)
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
                Ok(Joined {
                    spec,
                    shards: lease.shard_indices,
                    latest,
                    round,
                })
            }
            JoinResponse::Rejected { reason } => {
                Err(anyhow!("the coordinator refused to admit us: {reason}"))
            }
            JoinResponse::Banned { reason } => Err(banned(&reason, &self.me)),
        }
    }

    /// Join the run, then enter it on our node: subscribe to its topics and grow the request and
    /// response limits to its largest delta and blob chunk (a node started without a run).
    pub async fn enter_run(&mut self) -> Result<Joined> {
        let joined = self.join().await?;
        self.net
            .subscribe(joined.spec.run_id.clone(), run_limits(&joined.spec))
            .await
            .with_context(|| format!("entering run {}", joined.spec.run_id))?;
        Ok(joined)
    }

    /// Ask for the newest checkpoint and round without joining again; join when the coordinator
    /// no longer counts us as joined (it restarted) or does not know the poll request (older).
    pub async fn poll(&mut self) -> Result<Polled> {
        let req = PollRequest {
            protocol_version: hearth_proto::PROTOCOL_VERSION,
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
                Ok(Polled { latest, round })
            }
            PollResponse::NotJoined => {
                let j = self.join().await?;
                Ok(Polled {
                    latest: j.latest,
                    round: j.round,
                })
            }
            PollResponse::Banned { reason } => Err(banned(&reason, &self.me)),
        }
    }

    /// Download blob `cid` into `dest` (verified by its hash), resuming interrupted transfers, with
    /// a progress bar named `label`.
    pub async fn fetch(
        &mut self,
        cid: ContentId,
        dest: &Path,
        chunk_size: u32,
        label: &str,
        progress: &Progress,
    ) -> Result<()> {
        let mut attempts = 0;
        loop {
            self.ensure_connected().await?;
            let mut bar: Option<indicatif::ProgressBar> = None;
            let result = fetch_blob(
                &self.net,
                self.coordinator,
                cid,
                dest,
                chunk_size,
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
                Err(e @ FetchError::Network { .. }) if attempts < FETCH_RESUMES => {
                    attempts += 1;
                    warn!("download interrupted ({e}); resuming");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The adapter of checkpoint `m`, fetched into `cache_dir/checkpoints` and decoded.
    pub async fn checkpoint(
        &mut self,
        m: &CheckpointManifest,
        spec: &RunSpec,
        layout: &[TensorLayout],
        cache_dir: &Path,
        progress: &Progress,
    ) -> Result<Vec<NamedTensor>> {
        let dest: PathBuf = cache_dir.join("checkpoints").join(m.adapter.to_hex());
        self.fetch(
            m.adapter,
            &dest,
            spec.net.blob_chunk_size,
            &format!("checkpoint {}", m.round),
            progress,
        )
        .await?;
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        hearth_proto::decode_checkpoint(&bytes, layout)
            .with_context(|| format!("checkpoint of round {}", m.round))
    }

    /// Send a signed delta to the coordinator once and read its acknowledgement.
    pub async fn submit_once(&self, bytes: Vec<u8>) -> Result<DeltaAck, SubmitError> {
        let reply = self
            .net
            .request(self.coordinator, Protocol::Delta, bytes)
            .await?;
        Ok(DeltaAck::from_bytes(&reply)?)
    }

    /// Hand in a signed delta: directly to the coordinator first (its answer says whether the
    /// delta counted, and why not); gossip (inline deltas only) is the fallback when there is no
    /// direct route. Gives up after [`SUBMIT_TIMEOUT`] without a route.
    pub async fn submit(&mut self, bytes: Vec<u8>, net: &NetSpec) -> Result<Submitted> {
        if *self.connection().borrow() {
            match self.submit_once(bytes.clone()).await {
                Ok(ack) => return Ok(Submitted::Answered(ack)),
                Err(SubmitError::Net(e)) => debug!("direct submission failed ({e}); trying gossip"),
                Err(e @ SubmitError::Malformed(_)) => return Err(e.into()),
            }
        }
        if bytes.len() <= net.inline_delta_limit.min(net.max_transmit_size) {
            match self.net.publish(Topic::Deltas, bytes.clone()).await {
                Ok(_) => return Ok(Submitted::Gossiped),
                Err(e) => debug!("gossip publish failed ({e}); submitting directly"),
            }
        }
        // A delta loses its value as rounds pass: give up on this one if the coordinator stays
        // unreachable, and carry on with the next checkpoint.
        tokio::time::timeout(SUBMIT_TIMEOUT, async {
            loop {
                self.ensure_connected().await?;
                match self.submit_once(bytes.clone()).await {
                    Ok(ack) => return Ok(Submitted::Answered(ack)),
                    Err(e @ SubmitError::Malformed(_)) => return Err(e.into()),
                    Err(SubmitError::Net(e)) => {
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

/// The error a banned worker stops with: the coordinator's reason and how to appeal.
pub fn banned(reason: &str, me: &PeerId) -> anyhow::Error {
    tracing::error!("banned by the coordinator: {reason}");
    anyhow!(
        "this worker is banned from the run, so it stops (it will not retry). The coordinator's \
         reason: {reason}. If you think this is a mistake, contact whoever runs this swarm (the \
         organiser who gave you its address) and give them your peer id {me} (`hearth-worker id` \
         prints it); they can lift the ban or explain it."
    )
}

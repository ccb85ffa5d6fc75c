//! The cloneable handle through which the application drives the network.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    codec::BytesCodec,
    config::RunLimits,
    error::NetError,
    event::{MessageId, ResponseToken, Validation},
    protocol::{Protocol, Topic},
};

/// How many times [`Client::publish`] tries while no peer is subscribed yet.
pub const PUBLISH_ATTEMPTS: u32 = 20;
/// Pause between two publish attempts.
pub const PUBLISH_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Why a publish attempt failed, as the event loop reports it.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    /// No peer to send to yet: worth retrying.
    NoPeers(NetError),
    /// Anything else: final.
    Fatal(NetError),
}

/// A request to the event loop, with a oneshot for its answer.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ListenOn(Multiaddr, oneshot::Sender<Result<(), NetError>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId, NetError>>),
    Publish(
        Topic,
        Vec<u8>,
        oneshot::Sender<Result<MessageId, PublishFailure>>,
    ),
    ReportValidation {
        message_id: MessageId,
        propagation_source: PeerId,
        acceptance: Validation,
        reply: oneshot::Sender<bool>,
    },
    Request {
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Respond(
        ResponseToken,
        Vec<u8>,
        oneshot::Sender<Result<(), NetError>>,
    ),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    EstablishedConnections(oneshot::Sender<u32>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Ban(PeerId, oneshot::Sender<()>),
    Unban(PeerId, oneshot::Sender<()>),
    AddExternalAddress(Multiaddr, oneshot::Sender<()>),
    Subscribe(String, RunLimits, oneshot::Sender<Result<(), NetError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running node; cheap to clone. The node stops when every clone is dropped
/// or [`Client::shutdown`] is called.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local_peer_id: PeerId,
    /// The node's request-response codec (its caps and rejection counter are shared).
    pub(crate) codec: BytesCodec,
}

impl Client {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// How many inbound request-response frames were refused for exceeding
    /// `max_request_bytes` / `max_response_bytes` (they never reach the application).
    pub fn rejected_frames(&self) -> u64 {
        self.codec.rejected_frames()
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The addresses the node listens on; waits until at least one is known
    /// (empty only if the node stopped or every listener failed).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.call(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Starts listening on one more address, e.g. a relay's `/p2p-circuit` address
    /// (see [`crate::relay_listen_addr`]) to be reachable through it.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|tx| Command::ListenOn(addr, tx)).await?
    }

    /// Holds a reservation on the relay at `relay_addr` (which must end in `/p2p/<relay>`), so
    /// peers can reach this node through `<relay_addr>/p2p-circuit/p2p/<us>`. The reservation is
    /// confirmed by [`crate::Event::RelayReservation`].
    pub async fn listen_via_relay(&self, relay_addr: Multiaddr) -> Result<(), NetError> {
        let Some(relay) = crate::config::peer_id_of(&relay_addr) else {
            return Err(NetError::Listen {
                addr: relay_addr,
                source: "a relay address must end in /p2p/<relay peer id>".into(),
            });
        };
        self.listen_on(crate::config::relay_listen_addr(&relay_addr, relay))
            .await
    }

    /// Dials `addr` and resolves with the remote peer id once the connection is established.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.call(|tx| Command::Dial(addr, tx)).await?
    }

    /// Publishes `data` on `topic` and returns its content id. Retries for a few seconds
    /// while no peer is subscribed (right after connecting, subscriptions are still being
    /// exchanged); payloads over the run's gossip limit are refused at once.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<MessageId, NetError> {
        let mut attempt = 1;
        loop {
            let payload = data.clone();
            match self.call(|tx| Command::Publish(topic, payload, tx)).await? {
                Ok(id) => return Ok(id),
                Err(PublishFailure::Fatal(e)) => return Err(e),
                Err(PublishFailure::NoPeers(e)) if attempt >= PUBLISH_ATTEMPTS => return Err(e),
                Err(PublishFailure::NoPeers(e)) => {
                    tracing::debug!(?topic, attempt, error = %e, "publish found no peers, retrying");
                    attempt += 1;
                    tokio::time::sleep(PUBLISH_RETRY_DELAY).await;
                }
            }
        }
    }

    /// Reports the application's verdict on a gossip message. Returns whether the message
    /// was still cached (false: it expired or was already reported).
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        propagation_source: PeerId,
        acceptance: Validation,
    ) -> Result<bool, NetError> {
        self.call(|reply| Command::ReportValidation {
            message_id,
            propagation_source,
            acceptance,
            reply,
        })
        .await
    }

    /// Sends a request to a connected peer and waits for its response
    /// (bounded by `request_timeout` and `max_response_bytes`).
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        self.call(|reply| Command::Request {
            peer,
            protocol,
            data,
            reply,
        })
        .await?
    }

    /// Answers an inbound request.
    pub async fn respond(&self, channel: ResponseToken, data: Vec<u8>) -> Result<(), NetError> {
        self.call(|tx| Command::Respond(channel, data, tx)).await?
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.call(Command::ConnectedPeers).await.unwrap_or_default()
    }

    /// Open connections, all peers and directions together.
    pub async fn established_connections(&self) -> u32 {
        self.call(Command::EstablishedConnections)
            .await
            .unwrap_or_default()
    }

    /// Closes every connection to `peer`; returns whether there was one.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, NetError> {
        self.call(|tx| Command::Disconnect(peer, tx)).await
    }

    /// Closes every connection to `peer` and refuses new ones, inbound and outbound;
    /// its gossip is dropped too.
    pub async fn ban(&self, peer: PeerId) -> Result<(), NetError> {
        self.call(|tx| Command::Ban(peer, tx)).await
    }

    /// Lifts a ban.
    pub async fn unban(&self, peer: PeerId) -> Result<(), NetError> {
        self.call(|tx| Command::Unban(peer, tx)).await
    }

    /// Declares an address at which others can reach this node (e.g. the coordinator's
    /// public address); the relay server needs one to accept reservations.
    pub async fn add_external_address(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|tx| Command::AddExternalAddress(addr, tx)).await
    }

    /// Enters run `run_id`: subscribes to its topics (announcements, and deltas where the role
    /// relays them) and grows the request and response caps to `limits`. For a node started
    /// [without a run](crate::NetConfig::without_run), e.g. a worker that learns the run by
    /// joining; the same run again only grows the caps. Fails for another run than the one
    /// entered, or for a run whose gossip frames exceed the node's `max_transmit_size`.
    pub async fn subscribe(
        &self,
        run_id: impl Into<String>,
        limits: RunLimits,
    ) -> Result<(), NetError> {
        let run_id = run_id.into();
        self.call(|tx| Command::Subscribe(run_id, limits, tx))
            .await?
    }

    /// Stops the event loop and closes every connection. Idempotent.
    pub async fn shutdown(&self) {
        if self.call(Command::Shutdown).await.is_err() {
            tracing::debug!("shutdown: event loop already stopped");
        }
    }
}

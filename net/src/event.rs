//! Application-level events and the small types that travel with them.

use std::fmt;

use libp2p::{gossipsub, request_response::ResponseChannel, Multiaddr, PeerId};

use crate::protocol::{Protocol, Topic};

/// Content id of a gossip message: the blake3 hash of its payload (32 bytes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId(pub Vec<u8>);

impl MessageId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id of a payload, as the swarm computes it.
    pub fn of(data: &[u8]) -> Self {
        MessageId(blake3::hash(data).as_bytes().to_vec())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl From<gossipsub::MessageId> for MessageId {
    fn from(id: gossipsub::MessageId) -> Self {
        MessageId(id.0)
    }
}

impl From<MessageId> for gossipsub::MessageId {
    fn from(id: MessageId) -> Self {
        gossipsub::MessageId(id.0)
    }
}

/// The application's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Valid: deliver and forward to the mesh.
    Accept,
    /// Invalid: drop and penalise the propagation source.
    Reject,
    /// Not useful (stale, duplicate): drop without penalty.
    Ignore,
}

impl From<Validation> for gossipsub::MessageAcceptance {
    fn from(v: Validation) -> Self {
        match v {
            Validation::Accept => gossipsub::MessageAcceptance::Accept,
            Validation::Reject => gossipsub::MessageAcceptance::Reject,
            Validation::Ignore => gossipsub::MessageAcceptance::Ignore,
        }
    }
}

/// Where to send the response to an inbound request; hand it to [`crate::Client::respond`].
#[derive(Debug)]
pub struct ResponseToken {
    pub(crate) peer: PeerId,
    pub(crate) protocol: Protocol,
    pub(crate) channel: ResponseChannel<Vec<u8>>,
}

impl ResponseToken {
    /// The requesting peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The protocol the request came in on.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the requester may still receive a response.
    pub fn is_open(&self) -> bool {
        self.channel.is_open()
    }
}

/// The node's reachability as AutoNAT sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatStatus {
    /// Reachable from outside at this address.
    Public(Multiaddr),
    /// Behind a NAT or firewall: use the relay.
    Private,
    /// Not known yet.
    Unknown,
}

/// Something the application must know or act on.
#[derive(Debug)]
pub enum Event {
    /// A listen address became active.
    Listening(Multiaddr),
    /// A listen address went away.
    ListenAddrExpired(Multiaddr),
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// The last connection to a peer was closed.
    PeerDisconnected(PeerId),
    /// A gossip message arrived; the application must call
    /// [`crate::Client::report_validation`] for it (it is not forwarded before that).
    Gossip {
        /// The topic it came in on.
        topic: Topic,
        /// Its content id (blake3 of `data`).
        message_id: MessageId,
        /// The peer that forwarded it to us.
        propagation_source: PeerId,
        /// The peer that signed it (always set: messages are signed and strictly validated).
        source: Option<PeerId>,
        /// The payload.
        data: Vec<u8>,
    },
    /// An inbound request; answer it with [`crate::Client::respond`].
    Request {
        /// The requester.
        peer: PeerId,
        /// The protocol of the request.
        protocol: Protocol,
        /// The request body (at most `max_request_bytes`).
        data: Vec<u8>,
        /// The way back.
        channel: ResponseToken,
    },
    /// An inbound request failed before or after the application saw it
    /// (oversized or malformed frame, timeout, dropped response).
    InboundFailure {
        /// The remote peer.
        peer: PeerId,
        /// The protocol.
        protocol: Protocol,
        /// What went wrong.
        reason: String,
    },
    /// A peer subscribed to one of the run's topics.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer unsubscribed from one of the run's topics.
    Unsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer identified itself.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version string.
        agent_version: String,
        /// The addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
        /// Our address as the peer sees it.
        observed_addr: Multiaddr,
    },
    /// A relay accepted our reservation: we are reachable through its `/p2p-circuit` address.
    RelayReservation {
        /// The relay.
        relay: PeerId,
    },
    /// An external address of ours was confirmed.
    ExternalAddr(Multiaddr),
    /// AutoNAT's view of our reachability changed.
    NatStatusChanged(NatStatus),
    /// A relayed connection to this peer was upgraded to a direct one by hole punching.
    DirectConnectionUpgraded {
        /// The peer.
        peer: PeerId,
    },
}

impl Event {
    /// A one-line description for logs: kind, peer and size, never the payload bytes.
    pub fn summary(&self) -> String {
        match self {
            Event::Gossip {
                topic,
                propagation_source,
                data,
                ..
            } => format!(
                "gossip on {topic:?} from {propagation_source} ({} bytes)",
                data.len()
            ),
            Event::Request {
                peer,
                protocol,
                data,
                ..
            } => format!("{protocol:?} request from {peer} ({} bytes)", data.len()),
            Event::Identified { peer, .. } => format!("identify from {peer}"),
            other => format!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_the_size_never_the_payload() {
        let peer = PeerId::random();
        let e = Event::Gossip {
            topic: crate::protocol::Topic::Deltas,
            message_id: MessageId(vec![7; 32]),
            propagation_source: peer,
            source: Some(peer),
            data: vec![171; 100_000],
        };
        let s = e.summary();
        assert!(s.contains("100000 bytes"), "{s}");
        assert!(!s.contains("171"), "{s}");
        assert!(s.len() < 200, "{s}");
    }
}

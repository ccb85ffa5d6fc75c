//! The error type of every fallible network operation.

use libp2p::{Multiaddr, PeerId};

use crate::protocol::{Protocol, Topic};

/// Errors returned by [`crate::spawn`] and the [`crate::Client`] methods.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot be used (a limit is zero, gossipsub rejected its parameters, ...).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A transport could not be built.
    #[error("cannot build the {transport} transport: {reason}")]
    Transport {
        /// Which transport failed (tcp, quic, relay).
        transport: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address that was refused.
        addr: Multiaddr,
        /// Why it was refused.
        reason: String,
    },
    /// A dial failed or the connection could not be established.
    #[error("dialing {addr} failed: {reason}")]
    Dial {
        /// The address that was dialed.
        addr: Multiaddr,
        /// Why the dial failed.
        reason: String,
    },
    /// A payload is larger than the limit that applies to it.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What was too large (gossip message, request, response).
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Gossipsub refused to publish a message.
    #[error("publishing {len} bytes on {topic:?} failed: {reason}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// Size of the payload.
        len: usize,
        /// Gossipsub's reason.
        reason: String,
    },
    /// Subscribing to a topic failed.
    #[error("subscribing to {topic} failed: {reason}")]
    Subscribe {
        /// The topic string.
        topic: String,
        /// Gossipsub's reason.
        reason: String,
    },
    /// An outbound request failed (dial failure, timeout, closed connection, oversized response, ...).
    #[error("{protocol} request to {peer} failed: {reason}")]
    Request {
        /// The peer that was asked.
        peer: PeerId,
        /// The protocol of the request.
        protocol: Protocol,
        /// Why it failed.
        reason: String,
    },
    /// The response could not be sent because the requester is gone or the request timed out.
    #[error("cannot respond to the {protocol} request from {peer}: the request was dropped (timeout or closed connection)")]
    ResponseDropped {
        /// The requester.
        peer: PeerId,
        /// The protocol of the request.
        protocol: Protocol,
    },
    /// The event loop has stopped, so the command could not be carried out.
    #[error("the network event loop has stopped")]
    Stopped,
}

//! The error type of every fallible network operation.

use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};

use crate::protocol::{Protocol, Topic};

/// The cause of a [`NetError`]: libp2p's or the OS's own error (or a message where there is none),
/// kept so that callers can walk [`std::error::Error::source`] to it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors returned by [`crate::spawn`] and the [`crate::Client`] methods.
///
/// Each message includes its cause's, and the cause is also its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot be used (a limit is zero, gossipsub rejected its parameters, ...).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A transport could not be built.
    #[error("cannot build the {transport} transport: {source}")]
    Transport {
        /// Which transport failed (tcp, quic, relay).
        transport: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// The identity key file could not be read, parsed or written.
    #[error("identity {path}: {source}")]
    Identity {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address that was refused.
        addr: Multiaddr,
        /// Why it was refused.
        #[source]
        source: BoxError,
    },
    /// A dial failed or the connection could not be established.
    #[error("dialing {addr} failed: {source}")]
    Dial {
        /// The address that was dialed.
        addr: Multiaddr,
        /// Why the dial failed.
        #[source]
        source: BoxError,
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
    #[error("publishing {len} bytes on {topic:?} failed: {source}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// Size of the payload.
        len: usize,
        /// Gossipsub's reason.
        #[source]
        source: BoxError,
    },
    /// Subscribing to a topic failed.
    #[error("subscribing to {topic} failed: {source}")]
    Subscribe {
        /// The topic string.
        topic: String,
        /// Gossipsub's reason.
        #[source]
        source: BoxError,
    },
    /// An outbound request failed (dial failure, timeout, closed connection, oversized response, ...).
    #[error("{protocol} request to {peer} failed: {source}")]
    Request {
        /// The peer that was asked.
        peer: PeerId,
        /// The protocol of the request.
        protocol: Protocol,
        /// Why it failed.
        #[source]
        source: BoxError,
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

impl NetError {
    /// Whether a request failed because the peer does not speak its protocol (an older version).
    pub fn is_unsupported_protocol(&self) -> bool {
        use libp2p::request_response::OutboundFailure;
        match self {
            NetError::Request { source, .. } => matches!(
                source.downcast_ref::<OutboundFailure>(),
                Some(OutboundFailure::UnsupportedProtocols)
            ),
            _ => false,
        }
    }
}

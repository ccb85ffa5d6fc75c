//! Configuration of a node and helpers to build its addresses.

use std::time::Duration;

use libp2p::{identity::Keypair, multiaddr::Protocol as AddrPart, Multiaddr, PeerId};

use crate::error::NetError;

/// Default gossipsub `max_transmit_size` for a run (256 KiB).
pub const DEFAULT_MAX_TRANSMIT_SIZE: usize = 262_144;
/// Default cap on a request-response request (1 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Default cap on a request-response response (16 MiB, one blob chunk plus framing).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Default cap on simultaneous connections from one peer: TCP and QUIC, a relayed circuit and a
/// redial in flight fit; a peer opening dozens is denied.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 8;
/// Default cap on established incoming connections (a coordinator serving thousands of workers).
pub const DEFAULT_MAX_INCOMING_CONNECTIONS: u32 = 4096;
/// Default cap on incoming connections still negotiating (bounds handshake memory under a flood).
pub const DEFAULT_MAX_PENDING_INCOMING: u32 = 256;
/// Largest cap the length-prefixed codec can express.
pub const MAX_FRAME_BYTES: usize = u32::MAX as usize;

/// What a node does in the swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Relay server and AutoNAT server; subscribes to both topics.
    Coordinator,
    /// Relay client with DCUtR and AutoNAT; always subscribes to announcements,
    /// to deltas only when it opts in to relaying them.
    Worker {
        /// Subscribe to (and so relay) the deltas topic.
        subscribe_deltas: bool,
    },
}

impl Role {
    /// Whether this role subscribes to the deltas topic.
    pub fn subscribes_deltas(self) -> bool {
        match self {
            Role::Coordinator => true,
            Role::Worker { subscribe_deltas } => subscribe_deltas,
        }
    }
}

/// Everything [`crate::spawn`] needs to start a node.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0` and `/ip4/127.0.0.1/udp/0/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Run id; topics are `hearth/<run_id>/announce` and `hearth/<run_id>/deltas`. `None`: not in
    /// a run yet (a worker before it has joined); [`crate::Client::subscribe`] enters one later.
    pub run_id: Option<String>,
    /// Coordinator or worker.
    pub role: Role,
    /// Gossipsub frame limit; every peer of a run must use the same value. Without a run it is
    /// the largest frame limit of a run this node can [subscribe](crate::Client::subscribe) to.
    pub max_transmit_size: usize,
    /// Largest request accepted (enforced while reading).
    pub max_request_bytes: usize,
    /// Largest response accepted (enforced while reading).
    pub max_response_bytes: usize,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// How long a connection without open streams is kept.
    pub idle_connection_timeout: Duration,
    /// Pre-shared key of a private swarm (pnet, TCP only; QUIC is disabled when set).
    pub psk: Option<[u8; 32]>,
    /// Workers only: hold a reservation on every relay this node dials (a peer whose identify
    /// lists the relay hop protocol, i.e. the coordinator), so a node behind NAT is reachable at
    /// `<relay>/p2p-circuit/p2p/<us>` without asking. On by default.
    pub reserve_on_relays: bool,
    /// Most connections one peer may hold to this node at once (more are denied).
    pub max_connections_per_peer: u32,
    /// Most established incoming connections, all peers together.
    pub max_incoming_connections: u32,
    /// Most incoming connections still in their handshake.
    pub max_pending_incoming: u32,
}

impl NetConfig {
    /// A configuration with the defaults: listen on all IPv4 interfaces on an ephemeral port
    /// (TCP and QUIC), 256 KiB gossip frames, 1 MiB requests, 16 MiB responses, 60 s request
    /// timeout, 1 h idle timeout, no pre-shared key, reservations on dialled relays (workers).
    pub fn new(keypair: Keypair, run_id: impl Into<String>, role: Role) -> Self {
        NetConfig {
            run_id: Some(run_id.into()),
            ..NetConfig::without_run(keypair, role)
        }
    }

    /// The same defaults for a node not in a run yet: it subscribes to no topic until
    /// [`crate::Client::subscribe`] names the run (a worker learns it by joining).
    pub fn without_run(keypair: Keypair, role: Role) -> Self {
        NetConfig {
            keypair,
            listen: default_listen_addrs(0),
            run_id: None,
            role,
            max_transmit_size: DEFAULT_MAX_TRANSMIT_SIZE,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            request_timeout: Duration::from_secs(60),
            idle_connection_timeout: Duration::from_secs(3600),
            psk: None,
            reserve_on_relays: true,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_incoming_connections: DEFAULT_MAX_INCOMING_CONNECTIONS,
            max_pending_incoming: DEFAULT_MAX_PENDING_INCOMING,
        }
    }

    /// Sizes the frame limits for a run (see [`RunLimits::frame_caps`]).
    pub fn fit_run(&mut self, run: RunLimits) {
        self.max_transmit_size = run.max_transmit_size;
        (self.max_request_bytes, self.max_response_bytes) =
            run.frame_caps(self.max_request_bytes, self.max_response_bytes);
    }

    /// Checks the limits; called by [`crate::spawn`].
    pub fn validate(&self) -> Result<(), NetError> {
        for (name, value) in [
            ("max_connections_per_peer", self.max_connections_per_peer),
            ("max_incoming_connections", self.max_incoming_connections),
            ("max_pending_incoming", self.max_pending_incoming),
        ] {
            if value == 0 {
                return Err(NetError::Config(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("max_transmit_size", self.max_transmit_size),
            ("max_request_bytes", self.max_request_bytes),
            ("max_response_bytes", self.max_response_bytes),
        ] {
            if value == 0 || value > MAX_FRAME_BYTES {
                return Err(NetError::Config(format!(
                    "{name} = {value} must be between 1 and {MAX_FRAME_BYTES}"
                )));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(NetError::Config("request_timeout must not be zero".into()));
        }
        match &self.run_id {
            Some(run_id) => check_run(run_id, self.max_transmit_size),
            None => Ok(()),
        }
    }
}

/// Checks a run id (non-empty, no '/') and that its gossip frames leave room for a payload.
pub(crate) fn check_run(run_id: &str, max_transmit_size: usize) -> Result<(), NetError> {
    if run_id.is_empty() || run_id.contains('/') {
        return Err(NetError::Config(format!(
            "run_id {run_id:?} must be non-empty and contain no '/'"
        )));
    }
    let overhead = crate::behaviour::gossip_overhead(run_id);
    if max_transmit_size <= overhead {
        return Err(NetError::Config(format!(
            "max_transmit_size = {max_transmit_size} leaves no room for a payload after {overhead} bytes of envelope"
        )));
    }
    Ok(())
}

/// What a run asks of the network: its gossip frame limit, blob chunk size and largest signed
/// delta. Given to [`NetConfig::fit_run`] before a node starts, or to
/// [`crate::Client::subscribe`] when it enters the run later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// The run's gossipsub frame limit.
    pub max_transmit_size: usize,
    /// Bytes of one blob chunk in a response.
    pub blob_chunk_size: usize,
    /// The largest signed delta (a delta too large for gossip is submitted directly).
    pub max_delta_bytes: usize,
}

impl RunLimits {
    /// Request and response caps for the run, grown from `request` and `response`, never
    /// lowered: requests that can carry a gossip frame or the largest delta, responses that can
    /// carry a blob chunk, each with 4 KiB of framing.
    pub fn frame_caps(&self, request: usize, response: usize) -> (usize, usize) {
        (
            request
                .max(self.max_transmit_size.saturating_add(4096))
                .max(self.max_delta_bytes.saturating_add(4096)),
            response.max(self.blob_chunk_size.saturating_add(4096)),
        )
    }
}

/// Listen addresses on all IPv4 interfaces: `/ip4/0.0.0.0/tcp/<port>` and
/// `/ip4/0.0.0.0/udp/<port>/quic-v1` (port 0 picks a free one).
pub fn default_listen_addrs(port: u16) -> Vec<Multiaddr> {
    let ip = std::net::Ipv4Addr::UNSPECIFIED;
    vec![
        Multiaddr::empty()
            .with(AddrPart::Ip4(ip))
            .with(AddrPart::Tcp(port)),
        Multiaddr::empty()
            .with(AddrPart::Ip4(ip))
            .with(AddrPart::Udp(port))
            .with(AddrPart::QuicV1),
    ]
}

/// Listen addresses on loopback only (TCP and QUIC), for local swarms and tests.
pub fn loopback_listen_addrs(port: u16) -> Vec<Multiaddr> {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    vec![
        Multiaddr::empty()
            .with(AddrPart::Ip4(ip))
            .with(AddrPart::Tcp(port)),
        Multiaddr::empty()
            .with(AddrPart::Ip4(ip))
            .with(AddrPart::Udp(port))
            .with(AddrPart::QuicV1),
    ]
}

/// `addr` ending in `/p2p/<peer>`: replaces a different trailing peer id, keeps an equal one.
pub fn with_peer_id(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(AddrPart::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr.with(AddrPart::P2p(peer))
}

/// The peer id at the end of `addr` (`.../p2p/<peer>`), if any.
pub fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(AddrPart::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// The address to listen on to hold a reservation on `relay`: `<relay_addr>/p2p/<relay>/p2p-circuit`.
pub fn relay_listen_addr(relay_addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    with_peer_id(relay_addr, relay).with(AddrPart::P2pCircuit)
}

/// The address that reaches `target` through `relay`:
/// `<relay_addr>/p2p/<relay>/p2p-circuit/p2p/<target>`.
pub fn relayed_addr(relay_addr: &Multiaddr, relay: PeerId, target: PeerId) -> Multiaddr {
    relay_listen_addr(relay_addr, relay).with(AddrPart::P2p(target))
}

/// The relay of a `/p2p-circuit` listen address (`.../p2p/<relay>/p2p-circuit`), if it is one.
pub fn relay_of_listen_addr(addr: &Multiaddr) -> Option<PeerId> {
    let mut parts = addr.iter().collect::<Vec<_>>();
    if !matches!(parts.pop(), Some(AddrPart::P2pCircuit)) {
        return None;
    }
    match parts.pop() {
        Some(AddrPart::P2p(relay)) => Some(relay),
        _ => None,
    }
}

/// Whether `addr` goes through a relay (contains `/p2p-circuit`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, AddrPart::P2pCircuit))
}

/// Whether `addr` uses QUIC.
pub fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, AddrPart::QuicV1 | AddrPart::Quic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listen_addrs_cover_tcp_and_quic() {
        let addrs = default_listen_addrs(4001);
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(addrs[1].to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1");
        assert!(!is_quic(&addrs[0]));
        assert!(is_quic(&addrs[1]));
    }

    #[test]
    fn peer_id_helpers_append_and_replace() {
        let a = PeerId::random();
        let b = PeerId::random();
        let base: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        let with_a = with_peer_id(&base, a);
        assert_eq!(with_a.to_string(), format!("/ip4/127.0.0.1/tcp/9/p2p/{a}"));
        assert_eq!(with_peer_id(&with_a, a), with_a);
        assert_eq!(peer_id_of(&with_peer_id(&with_a, b)), Some(b));
        assert_eq!(peer_id_of(&base), None);
        assert_eq!(
            relayed_addr(&base, a, b).to_string(),
            format!("/ip4/127.0.0.1/tcp/9/p2p/{a}/p2p-circuit/p2p/{b}")
        );
        assert_eq!(relay_of_listen_addr(&relay_listen_addr(&base, a)), Some(a));
        assert_eq!(relay_of_listen_addr(&relayed_addr(&base, a, b)), None);
        assert_eq!(relay_of_listen_addr(&base), None);
        assert!(is_relayed(&relayed_addr(&base, a, b)));
        assert!(!is_relayed(&with_a));
    }

    #[test]
    fn validate_rejects_bad_limits() {
        let kp = Keypair::generate_ed25519();
        let ok = NetConfig::new(kp, "run", Role::Coordinator);
        assert!(ok.validate().is_ok());
        let mut zero = ok.clone();
        zero.max_request_bytes = 0;
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("max_request_bytes = 0"), "{err}");
        let mut tiny = ok.clone();
        tiny.max_transmit_size = 100;
        assert!(tiny.validate().is_err());
        let mut slash = ok.clone();
        slash.run_id = Some("a/b".into());
        assert!(slash.validate().is_err());
        // No run yet: no topic, so no envelope to fit.
        let mut unjoined = NetConfig::without_run(Keypair::generate_ed25519(), Role::Coordinator);
        unjoined.max_transmit_size = 100;
        assert!(unjoined.validate().is_ok());
    }

    fn limits(
        max_transmit_size: usize,
        blob_chunk_size: usize,
        max_delta_bytes: usize,
    ) -> RunLimits {
        RunLimits {
            max_transmit_size,
            blob_chunk_size,
            max_delta_bytes,
        }
    }

    #[test]
    fn fit_run_grows_frame_limits_to_the_run_and_never_below_defaults() {
        let mut c = NetConfig::new(Keypair::generate_ed25519(), "run", Role::Coordinator);
        c.fit_run(limits(4 << 20, 32 << 20, 1 << 20));
        assert_eq!(c.max_transmit_size, 4 << 20);
        assert_eq!(c.max_request_bytes, (4 << 20) + 4096);
        // A delta larger than a gossip frame still fits a direct request.
        let mut big = NetConfig::new(Keypair::generate_ed25519(), "run", Role::Coordinator);
        big.fit_run(limits(256 << 10, 256 << 10, 5 << 20));
        assert_eq!(big.max_request_bytes, (5 << 20) + 4096);
        assert_eq!(c.max_response_bytes, (32 << 20) + 4096);
        let mut small = NetConfig::new(Keypair::generate_ed25519(), "run", Role::Coordinator);
        small.fit_run(limits(1024, 1024, 1024));
        assert_eq!(small.max_transmit_size, 1024);
        assert_eq!(small.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(small.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    }
}

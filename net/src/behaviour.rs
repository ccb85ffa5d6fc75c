//! The composed libp2p behaviour of a Hearth node.

use std::time::Duration;

use libp2p::{
    allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity::Keypair,
    ping, relay, request_response,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
};

use crate::{
    codec::BytesCodec,
    config::{NetConfig, Role},
    error::NetError,
    protocol::{Protocol, Topic},
};

/// Protocol version announced by identify; peers of other versions are still accepted.
pub const IDENTIFY_PROTOCOL: &str = "/hearth/1.0.0";
/// Heartbeat of gossipsub, short so small swarms form their mesh quickly.
pub const GOSSIP_HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest a relayed circuit may live before it must be re-established (or upgraded by DCUtR).
pub const RELAY_CIRCUIT_DURATION: Duration = Duration::from_secs(15 * 60);
/// Most bytes a relayed circuit may carry in one direction (enough for deltas, not for blobs).
pub const RELAY_CIRCUIT_BYTES: u64 = 16 << 20;

/// Bytes of a signed gossipsub frame that are not payload (source, seqno, signature, topic,
/// protobuf framing), with margin. A payload may be at most `max_transmit_size` minus this.
pub fn gossip_overhead(run_id: &str) -> usize {
    256 + Topic::Deltas
        .name(run_id)
        .len()
        .max(Topic::Announce.name(run_id).len())
}

/// Every protocol a Hearth node speaks. Role-specific parts are toggled off where unused.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Banned peers: their connections are denied and closed.
    pub block_list: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Caps on connections per peer, established incoming and pending incoming ones.
    pub limits: connection_limits::Behaviour,
    /// Signed, manually validated gossip on the announce and deltas topics.
    pub gossipsub: gossipsub::Behaviour,
    /// `/hearth/join/1`.
    pub join: request_response::Behaviour<BytesCodec>,
    /// `/hearth/blob/1`.
    pub blob: request_response::Behaviour<BytesCodec>,
    /// `/hearth/delta/1`.
    pub delta: request_response::Behaviour<BytesCodec>,
    /// `/hearth/poll/1`.
    pub poll: request_response::Behaviour<BytesCodec>,
    /// Exchanges listen and observed addresses.
    pub identify: identify::Behaviour,
    /// Liveness and round-trip times.
    pub ping: ping::Behaviour,
    /// NAT status probes (client side on workers, dial-back server on the coordinator).
    pub autonat: autonat::Behaviour,
    /// Relay server (coordinator only).
    pub relay_server: Toggle<relay::Behaviour>,
    /// Relay client (workers only).
    pub relay_client: Toggle<relay::client::Behaviour>,
    /// Hole punching over relayed connections (workers only).
    pub dcutr: Toggle<dcutr::Behaviour>,
}

impl Behaviour {
    /// The request-response behaviour of `protocol`.
    pub fn rr(&mut self, protocol: Protocol) -> &mut request_response::Behaviour<BytesCodec> {
        match protocol {
            Protocol::Join => &mut self.join,
            Protocol::Blob => &mut self.blob,
            Protocol::Delta => &mut self.delta,
            Protocol::Poll => &mut self.poll,
        }
    }
}

/// Gossipsub message ids are the blake3 hash of the payload (content addressed).
pub fn content_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::new(blake3::hash(data).as_bytes())
}

fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        .max_transmit_size(config.max_transmit_size)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| content_id(&m.data))
        .heartbeat_interval(GOSSIP_HEARTBEAT)
        // Mesh sized for 2-10 peers: every peer grafts everyone it can up to 6.
        .mesh_n(4)
        .mesh_n_low(1)
        .mesh_n_high(6)
        .mesh_outbound_min(0)
        .gossip_lazy(4)
        .history_length(6)
        .history_gossip(3)
        .duplicate_cache_time(Duration::from_secs(300))
        .flood_publish(true)
        .build()
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))
}

fn rr_behaviour(
    config: &NetConfig,
    protocol: Protocol,
    codec: &BytesCodec,
) -> request_response::Behaviour<BytesCodec> {
    request_response::Behaviour::with_codec(
        codec.clone(),
        [(
            protocol.stream_protocol(),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    )
}

fn relay_server_config() -> relay::Config {
    relay::Config {
        // One coordinator serves a whole community: room for every NATed volunteer.
        max_reservations: 1024,
        max_circuits: 256,
        max_circuit_duration: RELAY_CIRCUIT_DURATION,
        max_circuit_bytes: RELAY_CIRCUIT_BYTES,
        ..relay::Config::default()
    }
}

/// Builds the behaviour for `config`'s role, subscribed to no topic yet (the event loop enters
/// the run); `relay_client` is the behaviour half of `relay::client::new` (workers only); every
/// request-response protocol reads through a clone of `codec` (shared caps and counter).
pub fn build(
    keypair: &Keypair,
    config: &NetConfig,
    relay_client: Option<relay::client::Behaviour>,
    codec: &BytesCodec,
) -> Result<Behaviour, NetError> {
    let peer_id = keypair.public().to_peer_id();
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config(config)?,
    )
    .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    let is_coordinator = config.role == Role::Coordinator;
    let autonat_config = autonat::Config {
        // The coordinator only answers probes; workers probe it (and other connected peers).
        use_connected: !is_coordinator,
        ..autonat::Config::default()
    };
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_established_incoming(Some(config.max_incoming_connections))
        .with_max_pending_incoming(Some(config.max_pending_incoming));
    Ok(Behaviour {
        block_list: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        gossipsub,
        join: rr_behaviour(config, Protocol::Join, codec),
        blob: rr_behaviour(config, Protocol::Blob, codec),
        delta: rr_behaviour(config, Protocol::Delta, codec),
        poll: rr_behaviour(config, Protocol::Poll, codec),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
                .with_agent_version(format!("hearth/{}", env!("CARGO_PKG_VERSION"))),
        ),
        ping: ping::Behaviour::new(ping::Config::default()),
        autonat: autonat::Behaviour::new(peer_id, autonat_config),
        relay_server: Toggle::from(
            is_coordinator.then(|| relay::Behaviour::new(peer_id, relay_server_config())),
        ),
        dcutr: Toggle::from((!is_coordinator).then(|| dcutr::Behaviour::new(peer_id))),
        relay_client: Toggle::from(relay_client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_id_is_blake3_of_payload() {
        let id = content_id(b"delta");
        assert_eq!(id.0, blake3::hash(b"delta").as_bytes().to_vec());
        assert_ne!(id, content_id(b"delta2"));
    }

    #[test]
    fn gossipsub_config_uses_run_limit() {
        let mut cfg = NetConfig::new(Keypair::generate_ed25519(), "r", Role::Coordinator);
        cfg.max_transmit_size = 12_345;
        let g = gossipsub_config(&cfg).unwrap();
        assert_eq!(g.max_transmit_size(), 12_345);
        assert!(g.validate_messages());
        assert_eq!(g.heartbeat_interval(), GOSSIP_HEARTBEAT);
    }
}

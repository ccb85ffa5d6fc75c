//! Hearth's libp2p layer, shared by the coordinator and the worker.
//!
//! It moves opaque bytes: gossip on the run's two topics and request-response on three
//! protocols. Message types and their decoding live in `hearth-proto` and the binaries.
//! The design follows rust-libp2p's file-sharing example: a cloneable [`Client`] sends
//! commands to an [`EventLoop`] task that alone owns the swarm, and the application
//! receives [`Event`]s on a channel.
#![forbid(unsafe_code)]

mod behaviour;
mod client;
mod codec;
mod config;
mod error;
mod event;
mod event_loop;
mod identity;
mod protocol;
mod swarm_key;
mod transport;

use libp2p::{relay, swarm, Swarm};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use behaviour::{content_id, gossip_overhead, GOSSIP_HEARTBEAT, IDENTIFY_PROTOCOL};
pub use client::{Client, PUBLISH_ATTEMPTS, PUBLISH_RETRY_DELAY};
pub use codec::{read_frame, write_frame, BytesCodec};
pub use config::{
    default_listen_addrs, is_quic, is_relayed, loopback_listen_addrs, peer_id_of,
    relay_listen_addr, relay_of_listen_addr, relayed_addr, with_peer_id, NetConfig, Role,
    RunLimits, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_TRANSMIT_SIZE,
    MAX_FRAME_BYTES,
};
pub use error::NetError;
pub use event::{Event, MessageId, NatStatus, ResponseToken, Validation};
pub use event_loop::EventLoop;
pub use identity::load_or_create_identity;
pub use libp2p::{identity::Keypair, Multiaddr, PeerId};
pub use protocol::{Protocol, Topic};
pub use swarm_key::{
    SwarmKey, SwarmKeyError, MAX_SWARM_KEY_FILE, SWARM_KEY_ENCODING, SWARM_KEY_HEADER,
};

/// Capacity of the command queue from clients to the event loop.
const COMMAND_BUFFER: usize = 256;
/// Capacity of the event queue to the application; when full, events are dropped (and logged).
pub const EVENT_BUFFER: usize = 4096;

/// Builds the node described by `config`, starts listening and spawns its event loop on
/// the current tokio runtime. Returns the client handle and the stream of events.
pub fn spawn(config: NetConfig) -> Result<(Client, mpsc::Receiver<Event>), NetError> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| NetError::Config(format!("hearth_net::spawn needs a tokio runtime: {e}")))?;
    // QUIC and TCP transports register with the reactor of the current runtime.
    let _guard = runtime.enter();
    let keypair = config.keypair.clone();
    let peer_id = keypair.public().to_peer_id();
    let (relay_transport, relay_behaviour) = match config.role {
        Role::Worker { .. } => {
            let (t, b) = relay::client::new(peer_id);
            (Some(t), Some(b))
        }
        Role::Coordinator => (None, None),
    };
    let transport = transport::build(&keypair, config.psk, relay_transport)?;
    let codec = BytesCodec::new(config.max_request_bytes, config.max_response_bytes);
    let behaviour = behaviour::build(&keypair, &config, relay_behaviour, &codec)?;
    let swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(config.idle_connection_timeout),
    );
    let (command_tx, command_rx) = mpsc::channel(COMMAND_BUFFER);
    let (event_tx, event_rx) = mpsc::channel(EVENT_BUFFER);
    let mut event_loop = EventLoop::new(swarm, &config, codec.clone(), command_rx, event_tx);
    if let Some(run_id) = &config.run_id {
        event_loop.enter_run(run_id, config.max_transmit_size)?;
    }
    event_loop.listen(&config.listen)?;
    let span = tracing::info_span!("net", peer = %peer_id, role = ?config.role);
    runtime.spawn(event_loop.run().instrument(span));
    let run = config.run_id.as_deref().unwrap_or("none yet");
    tracing::info!(peer = %peer_id, run, "network started");
    Ok((
        Client {
            commands: command_tx,
            local_peer_id: peer_id,
            codec,
        },
        event_rx,
    ))
}

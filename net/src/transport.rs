//! The transport stack: TCP (optionally inside a pnet private network) + Noise + Yamux,
//! QUIC, and the relay-client transport for workers.

use std::time::Duration;

use futures::future::Either;
use libp2p::{
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    identity::Keypair,
    noise,
    pnet::{PnetConfig, PreSharedKey},
    quic, relay, tcp, yamux, PeerId, Transport,
};

use crate::error::NetError;

/// Time allowed for the security and multiplexer handshakes of one connection.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated, multiplexed transport as the swarm needs it.
pub type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

fn noise_config(keypair: &Keypair) -> Result<noise::Config, NetError> {
    noise::Config::new(keypair).map_err(|e| NetError::Transport {
        transport: "noise",
        source: e.into(),
    })
}

/// TCP + Noise + Yamux, wrapped in a pnet handshake when `psk` is set.
fn tcp_transport(keypair: &Keypair, psk: Option<[u8; 32]>) -> Result<BoxedTransport, NetError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise_config(keypair)?;
    let transport = match psk {
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(UPGRADE_TIMEOUT)
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        Some(key) => {
            let pnet = PnetConfig::new(PreSharedKey::new(key));
            tcp.and_then(move |socket, _| pnet.handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(UPGRADE_TIMEOUT)
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed()
        }
    };
    Ok(transport)
}

/// QUIC v1 (TLS 1.3 built in).
fn quic_transport(keypair: &Keypair) -> BoxedTransport {
    quic::tokio::Transport::new(quic::Config::new(keypair))
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        .boxed()
}

/// Relay-client transport: circuits through a relay, secured end to end with Noise + Yamux.
fn relay_transport(
    keypair: &Keypair,
    relay: relay::client::Transport,
) -> Result<BoxedTransport, NetError> {
    Ok(relay
        .upgrade(Version::V1Lazy)
        .authenticate(noise_config(keypair)?)
        .multiplex(yamux::Config::default())
        .timeout(UPGRADE_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

fn either(a: BoxedTransport, b: BoxedTransport) -> BoxedTransport {
    a.or_transport(b)
        .map(|out, _| match out {
            Either::Left(o) | Either::Right(o) => o,
        })
        .boxed()
}

/// Builds the node's transport. QUIC is left out when a pre-shared key is set (pnet is TCP only).
pub fn build(
    keypair: &Keypair,
    psk: Option<[u8; 32]>,
    relay: Option<relay::client::Transport>,
) -> Result<BoxedTransport, NetError> {
    let mut transport = tcp_transport(keypair, psk)?;
    if psk.is_none() {
        transport = either(transport, quic_transport(keypair));
    }
    if let Some(relay) = relay {
        transport = either(relay_transport(keypair, relay)?, transport);
    }
    Ok(transport)
}

//! The task that alone owns the swarm: it runs commands from [`crate::Client`]s and turns
//! swarm events into [`Event`]s. It never panics on unexpected events; it logs and carries on.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use libp2p::{
    autonat,
    core::transport::ListenerId,
    dcutr, gossipsub, identify, ping, relay, request_response,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, SwarmEvent,
    },
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    behaviour::{gossip_overhead, Behaviour, BehaviourEvent},
    client::{Command, PublishFailure},
    config::{
        is_quic, is_relayed, peer_id_of, relay_listen_addr, relay_of_listen_addr, NetConfig, Role,
    },
    error::NetError,
    event::{Event, MessageId, NatStatus, ResponseToken, Validation},
    protocol::{Protocol, Topic},
};

type RrEvent = request_response::Event<Vec<u8>, Vec<u8>>;
type DialReply = oneshot::Sender<Result<PeerId, NetError>>;
type RequestReply = oneshot::Sender<Result<Vec<u8>, NetError>>;

/// Owner of the swarm; created and spawned by [`crate::spawn`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    role: Role,
    psk: bool,
    max_gossip_payload: usize,
    max_request_bytes: usize,
    max_response_bytes: usize,
    topics: Vec<(Topic, gossipsub::TopicHash)>,
    listeners: HashSet<ListenerId>,
    listen_addrs: Vec<Multiaddr>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, DialReply)>,
    pending_requests:
        HashMap<(Protocol, request_response::OutboundRequestId), (PeerId, RequestReply)>,
    dropped_events: u64,
    /// Workers: hold a reservation on every relay we dial.
    reserve_on_relays: bool,
    /// Addresses we dialled, per open direct outbound connection (where a relay is reached).
    dialled: HashMap<ConnectionId, Multiaddr>,
    /// Our `/p2p-circuit` listener on each relay (one reservation per relay).
    relay_listeners: HashMap<PeerId, ListenerId>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            role: config.role,
            psk: config.psk.is_some(),
            max_gossip_payload: config
                .max_transmit_size
                .saturating_sub(gossip_overhead(&config.run_id)),
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
            topics: Topic::ALL
                .iter()
                .map(|t| (*t, t.ident(&config.run_id).hash()))
                .collect(),
            listeners: HashSet::new(),
            listen_addrs: Vec::new(),
            listen_waiters: Vec::new(),
            pending_dials: HashMap::new(),
            pending_requests: HashMap::new(),
            dropped_events: 0,
            reserve_on_relays: config.reserve_on_relays
                && matches!(config.role, Role::Worker { .. }),
            dialled: HashMap::new(),
            relay_listeners: HashMap::new(),
        }
    }

    /// Starts the configured listeners; an address no transport supports is an error,
    /// a QUIC address in a private network is skipped with a warning.
    pub(crate) fn listen(&mut self, addrs: &[Multiaddr]) -> Result<(), NetError> {
        for addr in addrs {
            if self.psk && is_quic(addr) {
                tracing::warn!(%addr, "QUIC is disabled in a private network (psk set); not listening");
                continue;
            }
            self.listen_on(addr.clone())?;
        }
        Ok(())
    }

    /// Starts a listener; a second `/p2p-circuit` listener on the same relay is a no-op
    /// (one reservation per relay).
    fn listen_on(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        if self.psk && is_quic(&addr) {
            return Err(NetError::Listen {
                addr,
                source: "QUIC is disabled in a private network (psk set)".into(),
            });
        }
        let relay = relay_of_listen_addr(&addr);
        if relay.is_some_and(|r| self.relay_listeners.contains_key(&r)) {
            tracing::debug!(%addr, "already listening through this relay");
            return Ok(());
        }
        let id = self
            .swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr,
                source: e.into(),
            })?;
        self.listeners.insert(id);
        if let Some(relay) = relay {
            self.relay_listeners.insert(relay, id);
        }
        Ok(())
    }

    /// After identify: if `peer` is a relay (it serves the hop protocol) that we dialled
    /// directly on `connection`, and we hold no reservation on it yet, listen through it.
    fn reserve_on_relay(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        protocols: &[libp2p::StreamProtocol],
    ) {
        if !self.reserve_on_relays
            || self.relay_listeners.contains_key(&peer)
            || !protocols.contains(&relay::HOP_PROTOCOL_NAME)
        {
            return;
        }
        let Some(dialled) = self.dialled.get(&connection) else {
            return;
        };
        let addr = relay_listen_addr(dialled, peer);
        tracing::info!(relay = %peer, %addr, "requesting a relay reservation");
        if let Err(e) = self.listen_on(addr) {
            tracing::warn!(relay = %peer, error = %e, "cannot listen through the relay");
        }
    }

    /// Runs until shutdown or until every [`crate::Client`] is dropped.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
            }
        }
        tracing::info!(
            dropped_events = self.dropped_events,
            "network event loop stopped"
        );
    }

    /// Hands an event to the application without ever blocking the loop: when the
    /// application lags and the queue is full, the event is dropped (a dropped gossip
    /// message is reported as ignored, a dropped request fails on the requester's side).
    fn emit(&mut self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.dropped_events += 1;
                tracing::warn!(
                    dropped = self.dropped_events,
                    event = %event.summary(),
                    "event queue full, dropping event"
                );
                if let Event::Gossip {
                    message_id,
                    propagation_source,
                    ..
                } = event
                {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id.into(),
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::trace!("event receiver dropped; event discarded");
            }
        }
    }

    fn topic_of(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        self.topics.iter().find(|(_, h)| h == hash).map(|(t, _)| *t)
    }

    fn topic_hash(&self, topic: Topic) -> Option<gossipsub::TopicHash> {
        self.topics
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, h)| h.clone())
    }

    fn flush_listen_waiters(&mut self) {
        if self.listen_addrs.is_empty() && !self.listeners.is_empty() {
            return;
        }
        for waiter in self.listen_waiters.drain(..) {
            let _ = waiter.send(self.listen_addrs.clone());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                self.listen_waiters.push(reply);
                self.flush_listen_waiters();
            }
            Command::ListenOn(addr, reply) => {
                let _ = reply.send(self.listen_on(addr));
            }
            Command::Dial(addr, reply) => self.dial(addr, reply),
            Command::Publish(topic, data, reply) => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::ReportValidation {
                message_id,
                propagation_source,
                acceptance,
                reply,
            } => {
                let found = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &message_id.clone().into(),
                        &propagation_source,
                        acceptance.into(),
                    );
                tracing::debug!(%message_id, %propagation_source, ?acceptance, found, "validation reported");
                let _ = reply.send(found);
            }
            Command::Request {
                peer,
                protocol,
                data,
                reply,
            } => {
                if data.len() > self.max_request_bytes {
                    let _ = reply.send(Err(NetError::TooLarge {
                        what: "request",
                        len: data.len(),
                        max: self.max_request_bytes,
                    }));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr(protocol)
                    .send_request(&peer, data);
                self.pending_requests.insert((protocol, id), (peer, reply));
            }
            Command::Respond(token, data, reply) => {
                let _ = reply.send(self.respond(token, data));
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::EstablishedConnections(reply) => {
                let info = self.swarm.network_info();
                let _ = reply.send(info.connection_counters().num_established());
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::Ban(peer, reply) => {
                let behaviour = self.swarm.behaviour_mut();
                behaviour.block_list.block_peer(peer);
                behaviour.gossipsub.blacklist_peer(&peer);
                tracing::info!(%peer, "peer banned");
                let _ = reply.send(());
            }
            Command::Unban(peer, reply) => {
                let behaviour = self.swarm.behaviour_mut();
                behaviour.block_list.unblock_peer(peer);
                behaviour.gossipsub.remove_blacklisted_peer(&peer);
                tracing::info!(%peer, "peer unbanned");
                let _ = reply.send(());
            }
            Command::AddExternalAddress(addr, reply) => {
                self.swarm.add_external_address(addr);
                let _ = reply.send(());
            }
            Command::Shutdown(reply) => {
                // Handled in `run`; answering here keeps the match total.
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: DialReply) {
        if self.psk && is_quic(&addr) {
            let _ = reply.send(Err(NetError::Dial {
                addr,
                source: "QUIC is disabled in a private network (psk set)".into(),
            }));
            return;
        }
        let opts = match peer_id_of(&addr) {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(peer));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial {
                    addr,
                    source: e.into(),
                }));
            }
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<MessageId, PublishFailure> {
        let len = data.len();
        if len > self.max_gossip_payload {
            return Err(PublishFailure::Fatal(NetError::TooLarge {
                what: "gossip message",
                len,
                max: self.max_gossip_payload,
            }));
        }
        let Some(hash) = self.topic_hash(topic) else {
            return Err(PublishFailure::Fatal(NetError::Publish {
                topic,
                len,
                source: "unknown topic".into(),
            }));
        };
        match self.swarm.behaviour_mut().gossipsub.publish(hash, data) {
            Ok(id) => Ok(id.into()),
            Err(e) => {
                let retry = matches!(
                    e,
                    gossipsub::PublishError::NoPeersSubscribedToTopic
                        | gossipsub::PublishError::AllQueuesFull(_)
                );
                let err = NetError::Publish {
                    topic,
                    len,
                    source: e.into(),
                };
                Err(if retry {
                    PublishFailure::NoPeers(err)
                } else {
                    PublishFailure::Fatal(err)
                })
            }
        }
    }

    fn respond(&mut self, token: ResponseToken, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.max_response_bytes {
            return Err(NetError::TooLarge {
                what: "response",
                len: data.len(),
                max: self.max_response_bytes,
            });
        }
        let ResponseToken {
            peer,
            protocol,
            channel,
        } = token;
        self.swarm
            .behaviour_mut()
            .rr(protocol)
            .send_response(channel, data)
            .map_err(|_| NetError::ResponseDropped { peer, protocol })
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let relayed = address
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit));
                if self.role == Role::Coordinator && !relayed {
                    // The relay server only serves reservations once it has an external address.
                    self.swarm.add_external_address(address.clone());
                }
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.flush_listen_waiters();
                self.emit(Event::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
                self.emit(Event::ListenAddrExpired(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                tracing::warn!(?addresses, ?reason, "listener closed");
                self.listeners.remove(&listener_id);
                // A lost reservation is requested again on the next connection to that relay.
                self.relay_listeners.retain(|_, id| *id != listener_id);
                self.listen_addrs.retain(|a| !addresses.contains(a));
                self.flush_listen_waiters();
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection established");
                if endpoint.is_dialer() && !is_relayed(endpoint.get_remote_address()) {
                    self.dialled
                        .insert(connection_id, endpoint.get_remote_address().clone());
                }
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.emit(Event::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                self.dialled.remove(&connection_id);
                if num_established == 0 {
                    self.emit(Event::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial {
                        addr,
                        source: error.into(),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.emit(Event::ExternalAddr(address));
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::BlockList(never) => match never {},
            BehaviourEvent::Gossipsub(e) => self.on_gossip(e),
            BehaviourEvent::Join(e) => self.on_rr(Protocol::Join, e),
            BehaviourEvent::Blob(e) => self.on_rr(Protocol::Blob, e),
            BehaviourEvent::Delta(e) => self.on_rr(Protocol::Delta, e),
            BehaviourEvent::Poll(e) => self.on_rr(Protocol::Poll, e),
            BehaviourEvent::Identify(e) => self.on_identify(e),
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => match result {
                Ok(rtt) => tracing::trace!(%peer, ?rtt, "ping"),
                Err(e) => tracing::debug!(%peer, %e, "ping failed"),
            },
            BehaviourEvent::Autonat(e) => self.on_autonat(e),
            BehaviourEvent::RelayServer(e) => on_relay_server(e),
            BehaviourEvent::RelayClient(e) => self.on_relay_client(e),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punch succeeded: direct connection");
                    self.emit(Event::DirectConnectionUpgraded {
                        peer: remote_peer_id,
                    });
                }
                Err(e) => tracing::debug!(peer = %remote_peer_id, %e, "hole punch failed"),
            },
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => match self.topic_of(&message.topic) {
                Some(topic) => self.emit(Event::Gossip {
                    topic,
                    message_id: message_id.into(),
                    propagation_source,
                    source: message.source,
                    data: message.data,
                }),
                None => {
                    tracing::debug!(topic = %message.topic, %propagation_source, "gossip on a foreign topic ignored");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            Validation::Ignore.into(),
                        );
                }
            },
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                if let Some(topic) = self.topic_of(&topic) {
                    self.emit(Event::Subscribed {
                        peer: peer_id,
                        topic,
                    });
                }
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                if let Some(topic) = self.topic_of(&topic) {
                    self.emit(Event::Unsubscribed {
                        peer: peer_id,
                        topic,
                    });
                }
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::debug!(peer = %peer_id, "peer does not speak gossipsub");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                tracing::warn!(peer = %peer_id, ?failed_messages, "slow gossip peer");
            }
        }
    }

    fn on_rr(&mut self, protocol: Protocol, event: RrEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    tracing::debug!(%peer, %protocol, len = request.len(), "inbound request");
                    self.emit(Event::Request {
                        peer,
                        protocol,
                        data: request,
                        channel: ResponseToken {
                            peer,
                            protocol,
                            channel,
                        },
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => match self.pending_requests.remove(&(protocol, request_id)) {
                    Some((_, reply)) => {
                        let _ = reply.send(Ok(response));
                    }
                    None => tracing::debug!(%peer, %protocol, "response to an unknown request"),
                },
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %protocol, %error, "outbound request failed");
                if let Some((_, reply)) = self.pending_requests.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        protocol,
                        source: error.into(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::warn!(%peer, %protocol, %error, "inbound request failed");
                self.emit(Event::InboundFailure {
                    peer,
                    protocol,
                    reason: error.to_string(),
                });
            }
            request_response::Event::ResponseSent { peer, .. } => {
                tracing::trace!(%peer, %protocol, "response sent");
            }
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received {
                peer_id,
                connection_id,
                info,
            } => {
                self.reserve_on_relay(peer_id, connection_id, &info.protocols);
                // Remember where the peer listens so requests can redial it.
                for addr in &info.listen_addrs {
                    if !(self.psk && is_quic(addr)) {
                        self.swarm.add_peer_address(peer_id, addr.clone());
                    }
                }
                self.emit(Event::Identified {
                    peer: peer_id,
                    agent_version: info.agent_version,
                    listen_addrs: info.listen_addrs,
                    observed_addr: info.observed_addr,
                });
            }
            identify::Event::Error { peer_id, error, .. } => {
                tracing::debug!(peer = %peer_id, %error, "identify failed");
            }
            other => tracing::trace!(?other, "identify"),
        }
    }

    fn on_autonat(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                tracing::info!(?old, ?new, "NAT status changed");
                let status = match new {
                    autonat::NatStatus::Public(addr) => NatStatus::Public(addr),
                    autonat::NatStatus::Private => NatStatus::Private,
                    autonat::NatStatus::Unknown => NatStatus::Unknown,
                };
                self.emit(Event::NatStatusChanged(status));
            }
            other => tracing::trace!(?other, "autonat"),
        }
    }

    fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                if !renewal {
                    self.emit(Event::RelayReservation {
                        relay: relay_peer_id,
                    });
                }
            }
            other => tracing::debug!(?other, "relay client"),
        }
    }
}

fn on_relay_server(event: relay::Event) {
    tracing::debug!(?event, "relay server");
}

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
    codec::BytesCodec,
    config::{
        check_run, is_quic, is_relayed, peer_id_of, relay_listen_addr, relay_of_listen_addr,
        NetConfig, Role, RunLimits,
    },
    error::NetError,
    event::{Event, MessageId, NatStatus, ResponseToken, Validation},
    protocol::{Protocol, Topic},
};

mod swarm_events;

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
    /// The run entered, if any ([`Command::Subscribe`] or the configuration).
    run_id: Option<String>,
    /// The gossipsub frame limit the behaviour was built with (a run may not exceed it).
    gossip_frame_limit: usize,
    /// The run's largest gossip payload (0 before a run is entered).
    max_gossip_payload: usize,
    /// Request-response caps, shared with every protocol's codec.
    codec: BytesCodec,
    /// The run's topics (empty before a run is entered).
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
        codec: BytesCodec,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        EventLoop {
            swarm,
            commands,
            events,
            role: config.role,
            psk: config.psk.is_some(),
            run_id: None,
            gossip_frame_limit: config.max_transmit_size,
            max_gossip_payload: 0,
            codec,
            topics: Vec::new(),
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

    /// Enters run `run_id` whose gossip frames are at most `max_transmit_size`: subscribes to its
    /// topics (deltas only where the role relays them). Entering the run already entered is a
    /// no-op; another run, or frames larger than the behaviour was built for, are refused.
    pub(crate) fn enter_run(
        &mut self,
        run_id: &str,
        max_transmit_size: usize,
    ) -> Result<(), NetError> {
        if let Some(current) = &self.run_id {
            if current == run_id {
                return Ok(());
            }
            return Err(NetError::Config(format!(
                "this node is in run {current:?} already; cannot enter run {run_id:?}"
            )));
        }
        check_run(run_id, max_transmit_size)?;
        if max_transmit_size > self.gossip_frame_limit {
            return Err(NetError::Config(format!(
                "run {run_id:?} sends gossip frames of up to {max_transmit_size} bytes, more than \
                 this node's limit of {} bytes",
                self.gossip_frame_limit
            )));
        }
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        for topic in Topic::ALL {
            if topic == Topic::Deltas && !self.role.subscribes_deltas() {
                continue;
            }
            let ident = topic.ident(run_id);
            gossipsub
                .subscribe(&ident)
                .map_err(|e| NetError::Subscribe {
                    topic: ident.to_string(),
                    source: e.into(),
                })?;
        }
        self.topics = Topic::ALL
            .iter()
            .map(|t| (*t, t.ident(run_id).hash()))
            .collect();
        self.max_gossip_payload = max_transmit_size.saturating_sub(gossip_overhead(run_id));
        self.run_id = Some(run_id.to_string());
        tracing::info!(run = %run_id, max_transmit_size, "entered the run's topics");
        Ok(())
    }

    /// [`Command::Subscribe`]: enters the run, then grows the request-response caps to its own.
    fn subscribe(&mut self, run_id: &str, limits: RunLimits) -> Result<(), NetError> {
        self.enter_run(run_id, limits.max_transmit_size)?;
        let (request, response) = limits.frame_caps(
            self.codec.max_request_bytes(),
            self.codec.max_response_bytes(),
        );
        self.codec.grow_caps(request, response);
        Ok(())
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
                    self.settle(&message_id.into(), &propagation_source, Validation::Ignore);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::trace!("event receiver dropped; event discarded");
            }
        }
    }

    /// Reports our verdict on a gossip message the application never sees.
    fn settle(&mut self, id: &gossipsub::MessageId, source: &PeerId, verdict: Validation) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict.into());
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
                let max = self.codec.max_request_bytes();
                if data.len() > max {
                    let _ = reply.send(Err(NetError::TooLarge {
                        what: "request",
                        len: data.len(),
                        max,
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
            Command::Subscribe(run_id, limits, reply) => {
                let _ = reply.send(self.subscribe(&run_id, limits));
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
        let Some(hash) = self.topic_hash(topic) else {
            return Err(PublishFailure::Fatal(NetError::Publish {
                topic,
                len,
                source: "this node has not entered a run yet (Client::subscribe)".into(),
            }));
        };
        if len > self.max_gossip_payload {
            return Err(PublishFailure::Fatal(NetError::TooLarge {
                what: "gossip message",
                len,
                max: self.max_gossip_payload,
            }));
        }
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
        let max = self.codec.max_response_bytes();
        if data.len() > max {
            return Err(NetError::TooLarge {
                what: "response",
                len: data.len(),
                max,
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
}

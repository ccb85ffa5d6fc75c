//! Swarm events into [`Event`]s: connections, gossip, requests and responses, identify, AutoNAT
//! and the relay.

use super::*;

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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

    pub(super) fn on_behaviour_event(&mut self, event: BehaviourEvent) {
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

    pub(super) fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => match self.topic_of(&message.topic) {
                // Within the node's frame limit but over the run's (a node that entered the run
                // after it started was built for any run's frames): never a peer of this run.
                Some(_) if message.data.len() > self.max_gossip_payload => {
                    tracing::debug!(len = message.data.len(), max = self.max_gossip_payload, %propagation_source, "gossip over the run's limit rejected");
                    self.settle(&message_id, &propagation_source, Validation::Reject);
                }
                Some(topic) => self.emit(Event::Gossip {
                    topic,
                    message_id: message_id.into(),
                    propagation_source,
                    source: message.source,
                    data: message.data,
                }),
                None => {
                    tracing::debug!(topic = %message.topic, %propagation_source, "gossip on a foreign topic ignored");
                    self.settle(&message_id, &propagation_source, Validation::Ignore);
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

    pub(super) fn on_rr(&mut self, protocol: Protocol, event: RrEvent) {
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

    pub(super) fn on_identify(&mut self, event: identify::Event) {
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

    pub(super) fn on_autonat(&mut self, event: autonat::Event) {
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

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
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

//! The event pump: validates the coordinator's announcements, tracks the newest checkpoint and
//! round, and the coordinator's connection.

use hearth_net::{Client, Event, PeerId, Topic, Validation};
use hearth_proto::{
    Announcement, CheckpointManifest, DeltaMessage, Domain, RoundInfo, SignedEnvelope, Wire,
};
use tokio::sync::watch;
use tracing::{debug, warn};

/// What the event pump learned from the network.
#[derive(Debug, Clone, Default)]
pub(super) struct Latest {
    pub(super) checkpoint: Option<CheckpointManifest>,
    pub(super) round: Option<RoundInfo>,
}

/// Forward network events: validate announcements, track the newest checkpoint and round.
pub(super) fn spawn_event_pump(
    net: Client,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    coordinator: PeerId,
    latest: watch::Sender<Latest>,
    connected: watch::Sender<bool>,
) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Gossip {
                    topic: Topic::Announce,
                    message_id,
                    propagation_source,
                    source,
                    data,
                } => {
                    let ann = (source == Some(coordinator))
                        .then(|| Announcement::from_bytes(&data).ok())
                        .flatten();
                    let verdict = if ann.is_some() {
                        Validation::Accept
                    } else {
                        Validation::Reject
                    };
                    let _ = net
                        .report_validation(message_id, propagation_source, verdict)
                        .await;
                    match ann {
                        Some(Announcement::CheckpointReady(m)) => latest.send_modify(|l| {
                            if l.checkpoint.as_ref().is_none_or(|c| c.round < m.round) {
                                l.checkpoint = Some(m);
                            }
                        }),
                        Some(Announcement::RoundOpened(r)) => latest.send_modify(|l| {
                            if l.round.as_ref().is_none_or(|c| c.round <= r.round) {
                                l.round = Some(r);
                            }
                        }),
                        _ => {}
                    }
                }
                Event::Gossip {
                    topic: Topic::Deltas,
                    message_id,
                    propagation_source,
                    data,
                    ..
                } => {
                    // Relaying workers forward only deltas whose signature checks out.
                    let ok = SignedEnvelope::from_bytes(&data, DeltaMessage::MAX_BYTES)
                        .ok()
                        .is_some_and(|e| e.verify(Domain::Delta).is_ok());
                    let verdict = if ok {
                        Validation::Accept
                    } else {
                        Validation::Reject
                    };
                    let _ = net
                        .report_validation(message_id, propagation_source, verdict)
                        .await;
                }
                Event::PeerConnected(p) if p == coordinator => {
                    let _ = connected.send(true);
                }
                Event::PeerDisconnected(p) if p == coordinator => {
                    warn!("lost the connection to the coordinator");
                    let _ = connected.send(false);
                }
                Event::Request { peer, channel, .. } => {
                    debug!(%peer, "ignoring a request: workers serve nothing");
                    drop(channel);
                }
                other => debug!(event = ?other, "network event"),
            }
        }
    });
}

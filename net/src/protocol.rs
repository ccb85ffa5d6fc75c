//! Names of the request-response protocols and gossipsub topics of a run.

use std::fmt;

use libp2p::{gossipsub::IdentTopic, StreamProtocol};

/// A request-response protocol spoken between coordinator and workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/hearth/join/1`: hello with capabilities and token, answered with run spec and shard lease.
    Join,
    /// `/hearth/blob/1`: content-addressed chunks of models, shards and checkpoints.
    Blob,
    /// `/hearth/delta/1`: direct delta submission when gossip has no route.
    Delta,
    /// `/hearth/poll/1`: a joined worker asks for the newest checkpoint and round.
    Poll,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 4] = [
        Protocol::Join,
        Protocol::Blob,
        Protocol::Delta,
        Protocol::Poll,
    ];

    /// The protocol name negotiated by multistream-select.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Join => "/hearth/join/1",
            Protocol::Blob => "/hearth/blob/1",
            Protocol::Delta => "/hearth/delta/1",
            Protocol::Poll => "/hearth/poll/1",
        }
    }

    /// The protocol as a libp2p [`StreamProtocol`].
    pub fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.name())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A gossipsub topic of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `hearth/<run_id>/announce`: round opened/closed, checkpoint ready.
    Announce,
    /// `hearth/<run_id>/deltas`: signed adapter deltas (or their content ids).
    Deltas,
}

impl Topic {
    /// Both topics.
    pub const ALL: [Topic; 2] = [Topic::Announce, Topic::Deltas];

    /// The topic string for a run, e.g. `hearth/demo/deltas`.
    pub fn name(self, run_id: &str) -> String {
        match self {
            Topic::Announce => format!("hearth/{run_id}/announce"),
            Topic::Deltas => format!("hearth/{run_id}/deltas"),
        }
    }

    /// The gossipsub topic for a run.
    pub fn ident(self, run_id: &str) -> IdentTopic {
        IdentTopic::new(self.name(run_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(Protocol::Join.name(), "/hearth/join/1");
        assert_eq!(Protocol::Blob.stream_protocol().as_ref(), "/hearth/blob/1");
        assert_eq!(Protocol::Delta.to_string(), "/hearth/delta/1");
        assert_eq!(Protocol::Poll.name(), "/hearth/poll/1");
        assert_eq!(Topic::Announce.name("r1"), "hearth/r1/announce");
        assert_eq!(Topic::Deltas.name("r1"), "hearth/r1/deltas");
        assert_ne!(
            Topic::Deltas.ident("a").hash(),
            Topic::Deltas.ident("b").hash()
        );
    }
}

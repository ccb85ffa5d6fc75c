//! Counts and timings of a simulation, printed as one JSON line.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Outcome;

/// One round as this simulator saw it.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    /// The round number the deltas were sent for.
    pub round: u64,
    /// Deltas sent.
    pub sent: u64,
    /// Acknowledged as accepted.
    pub accepted: u64,
    /// Explicitly rejected.
    pub rejected: u64,
    /// Not acknowledged (lost).
    pub failed: u64,
    /// Rejection and failure reasons (first words) with counts.
    pub reasons: BTreeMap<String, u64>,
    /// Seconds from the first send to the last acknowledgement.
    pub ack_secs: f64,
    /// Seconds from the first send to the round's checkpoint.
    pub close_secs: f64,
}

/// The first few words of a reason, so counts group by kind rather than by peer id.
fn kind(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason);
    head.split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

impl RoundReport {
    /// An empty report for `round`.
    pub fn new(round: u64) -> Self {
        Self {
            round,
            ..Self::default()
        }
    }

    /// Count one delta's outcome, acknowledged `at` seconds after the round's first send.
    pub fn record(&mut self, out: &Outcome, at: f64) {
        self.sent += 1;
        match out {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Rejected(r) => {
                self.rejected += 1;
                *self
                    .reasons
                    .entry(format!("rejected: {}", kind(r)))
                    .or_default() += 1;
            }
            Outcome::Failed(r) => {
                self.failed += 1;
                *self
                    .reasons
                    .entry(format!("lost: {}", kind(r)))
                    .or_default() += 1;
            }
        }
        self.ack_secs = self.ack_secs.max(at);
    }

    /// Lost = sent − acknowledged − explicitly rejected.
    pub fn lost(&self) -> u64 {
        self.sent - self.accepted - self.rejected
    }

    fn to_json(&self) -> Value {
        json!({
            "round": self.round,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "lost": self.lost(),
            "reasons": self.reasons,
            "ack_secs": self.ack_secs,
            "close_secs": self.close_secs,
        })
    }
}

/// The whole simulation.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Peers simulated.
    pub peers: usize,
    /// Seconds until every peer had joined.
    pub join_secs: f64,
    /// Raw f32 bytes of one delta.
    pub raw_delta_bytes: usize,
    /// Per round.
    pub rounds: Vec<RoundReport>,
}

impl Summary {
    /// A summary with no rounds yet.
    pub fn new(peers: usize, join_secs: f64, raw_delta_bytes: usize) -> Self {
        Self {
            peers,
            join_secs,
            raw_delta_bytes,
            rounds: Vec::new(),
        }
    }

    /// Totals over every round: (sent, accepted, rejected, lost).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.rounds.iter().fold((0, 0, 0, 0), |(s, a, r, l), x| {
            (s + x.sent, a + x.accepted, r + x.rejected, l + x.lost())
        })
    }

    /// One JSON object with totals and per-round figures.
    pub fn to_json(&self) -> Value {
        let (sent, accepted, rejected, lost) = self.totals();
        json!({
            "event": "sim_summary",
            "peers": self.peers,
            "join_secs": self.join_secs,
            "raw_delta_bytes": self.raw_delta_bytes,
            "sent": sent,
            "accepted": accepted,
            "rejected": rejected,
            "lost": lost,
            "rounds": self.rounds.iter().map(RoundReport::to_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_sent_minus_acknowledged_minus_rejected() {
        let mut r = RoundReport::new(3);
        r.record(&Outcome::Accepted, 0.5);
        r.record(&Outcome::Rejected("loss probe: loss 1 → 2".into()), 1.0);
        r.record(&Outcome::Failed("timed out".into()), 2.0);
        assert_eq!((r.sent, r.accepted, r.rejected, r.lost()), (3, 1, 1, 1));
        assert_eq!(r.reasons["rejected: loss probe"], 1);
        assert_eq!(r.ack_secs, 2.0);
        let mut s = Summary::new(3, 0.1, 12);
        s.rounds.push(r);
        assert_eq!(s.to_json()["lost"], 1);
    }
}

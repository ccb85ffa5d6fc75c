//! Per-peer accounting: who contributed what, what was rejected and why, credit, bans.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Half-life of the recent-average credit (BOINC's RAC uses one week; our rounds are minutes).
pub const RECENT_CREDIT_HALF_LIFE_MS: f64 = 24.0 * 3600.0 * 1000.0;

/// One peer's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerRecord {
    /// Display name the volunteer chose.
    pub name: String,
    /// Device it reported (cpu, cuda:0, ...).
    pub device: String,
    /// Deltas aggregated (accepted and weighed when their round closed).
    pub accepted: u64,
    /// Deltas rejected, by reason label.
    pub rejected: BTreeMap<String, u64>,
    /// Credit: tokens of aggregated deltas, each times its screen weight (free rides earn none).
    pub tokens: u64,
    /// Exponentially decaying average of credit per day (BOINC-style recent average credit).
    pub recent_credit: f64,
    /// When the recent credit was last updated.
    pub recent_credit_unix_ms: u64,
    /// First join.
    pub joined_unix_ms: u64,
    /// Last message or join.
    pub last_seen_unix_ms: u64,
    /// Rejections that are evidence of a bad delta (they lead to a ban).
    pub strikes: u64,
    /// Deltas held back with weight 0: not significant on their own, and no record yet.
    pub held_back: u64,
    /// The screen's evidence against this peer (CUSUM log-likelihood ratio; a ban at ln 10⁶).
    pub evidence: f64,
    /// Banned (by hand or after repeated rejects).
    pub banned: bool,
    /// Why it was banned.
    pub ban_reason: Option<String>,
}

impl PeerRecord {
    /// Total rejections over all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn decay_to(&mut self, now: u64) {
        let dt = now.saturating_sub(self.recent_credit_unix_ms) as f64;
        self.recent_credit *= (-(dt / RECENT_CREDIT_HALF_LIFE_MS) * std::f64::consts::LN_2).exp();
        self.recent_credit_unix_ms = now;
    }
}

/// All peers by base58 peer id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ledger {
    /// Records by peer id.
    pub peers: BTreeMap<String, PeerRecord>,
}

impl Ledger {
    fn entry(&mut self, peer: &str, now: u64) -> &mut PeerRecord {
        let rec = self
            .peers
            .entry(peer.to_string())
            .or_insert_with(|| PeerRecord {
                joined_unix_ms: now,
                recent_credit_unix_ms: now,
                ..Default::default()
            });
        rec.last_seen_unix_ms = rec.last_seen_unix_ms.max(now);
        rec
    }

    /// A peer joined (or re-joined) with a name and device.
    pub fn joined(&mut self, peer: &str, name: &str, device: &str, now: u64) {
        let rec = self.entry(peer, now);
        rec.name = name.chars().filter(|c| !c.is_control()).take(64).collect();
        rec.device = device
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
    }

    /// A delta was aggregated, earning `tokens` of credit (its tokens times its weight).
    pub fn accepted(&mut self, peer: &str, tokens: u64, now: u64) {
        let rec = self.entry(peer, now);
        rec.accepted += 1;
        rec.tokens += tokens;
        rec.decay_to(now);
        rec.recent_credit += tokens as f64;
    }

    /// A delta was rejected for `reason`; returns the peer's total rejections.
    pub fn rejected(&mut self, peer: &str, reason: &str, now: u64) -> u64 {
        let rec = self.entry(peer, now);
        *rec.rejected.entry(reason.to_string()).or_default() += 1;
        rec.rejected_total()
    }

    /// Count a bad delta against a peer; returns its strikes.
    pub fn strike(&mut self, peer: &str) -> u64 {
        let rec = self.peers.entry(peer.to_string()).or_default();
        rec.strikes += 1;
        rec.strikes
    }

    /// A delta was held back (inconclusive, weight 0, no credit).
    pub fn held_back(&mut self, peer: &str, now: u64) {
        self.entry(peer, now).held_back += 1;
    }

    /// The screen passed or failed one of the peer's deltas; returns the peer's evidence.
    pub fn screened(&mut self, peer: &str, failed: bool, now: u64) -> f64 {
        let rec = self.entry(peer, now);
        rec.evidence = crate::screen::update_evidence(rec.evidence, failed);
        rec.evidence
    }

    /// Ban a peer.
    pub fn ban(&mut self, peer: &str, reason: &str, now: u64) {
        let rec = self.entry(peer, now);
        rec.banned = true;
        rec.ban_reason = Some(reason.to_string());
    }

    /// Whether a peer is banned.
    pub fn is_banned(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|r| r.banned)
    }

    /// Peers by credit, highest first.
    pub fn leaderboard(&self) -> Vec<(&String, &PeerRecord)> {
        let mut v: Vec<_> = self.peers.iter().collect();
        v.sort_by(|a, b| b.1.tokens.cmp(&a.1.tokens).then(a.0.cmp(b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_rejections_bans_and_ranking() {
        let mut l = Ledger::default();
        l.joined("a", "alice\u{7}", "cpu", 0);
        l.accepted("a", 100, 0);
        l.accepted("b", 300, 0);
        assert_eq!(l.rejected("a", "norm", 5), 1);
        assert_eq!(l.rejected("a", "norm", 6), 2);
        assert_eq!(l.rejected("a", "decode", 7), 3);
        let a = &l.peers["a"];
        assert_eq!(a.name, "alice", "control characters dropped");
        assert_eq!((a.accepted, a.tokens, a.rejected["norm"]), (1, 100, 2));
        assert_eq!(l.leaderboard()[0].0, "b");
        l.ban("a", "manual", 8);
        assert!(l.is_banned("a") && !l.is_banned("b"));
    }

    #[test]
    fn recent_credit_halves_after_a_half_life() {
        let mut l = Ledger::default();
        l.accepted("a", 1000, 0);
        l.accepted("a", 0, RECENT_CREDIT_HALF_LIFE_MS as u64);
        assert!((l.peers["a"].recent_credit - 500.0).abs() < 1e-6);
    }
}

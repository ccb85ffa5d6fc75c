//! The swarm's status as the JSON API, the dashboard and `status` see it.

use serde::{Deserialize, Serialize};

use crate::ledger::PeerRecord;
use crate::state::{CheckpointRecord, RoundRecord};

/// One worker row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Peer id (base58).
    pub peer_id: String,
    /// Display name.
    pub name: String,
    /// Device it reported.
    pub device: String,
    /// Joined and connected now.
    pub connected: bool,
    /// Last seen, ms since the epoch.
    pub last_seen_unix_ms: u64,
    /// Tokens trained in accepted deltas (credit).
    pub tokens: u64,
    /// Deltas accepted.
    pub accepted: u64,
    /// Deltas rejected.
    pub rejected: u64,
    /// Recent average credit.
    pub recent_credit: f64,
    /// Banned.
    pub banned: bool,
}

impl WorkerView {
    /// Build a row from a ledger record.
    pub fn from_record(id: &str, r: &PeerRecord, connected: bool) -> Self {
        Self {
            peer_id: id.to_string(),
            name: r.name.clone(),
            device: r.device.clone(),
            connected,
            last_seen_unix_ms: r.last_seen_unix_ms,
            tokens: r.tokens,
            accepted: r.accepted,
            rejected: r.rejected_total(),
            recent_credit: r.recent_credit,
            banned: r.banned,
        }
    }
}

/// Everything the HTTP side shows, refreshed by the service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub run_name: String,
    /// Base model name.
    pub base_model: String,
    /// Coordinator peer id.
    pub peer_id: String,
    /// Round in progress.
    pub round: u64,
    /// Last committed round.
    pub committed_round: u64,
    /// Phase of the round in progress.
    pub phase: String,
    /// Deadline of the round in progress.
    pub deadline_unix_ms: u64,
    /// When this snapshot was taken.
    pub now_unix_ms: u64,
    /// Deltas accepted so far this round.
    pub pending_deltas: usize,
    /// Workers joined and connected.
    pub workers_connected: usize,
    /// Every worker ever seen.
    pub workers: Vec<WorkerView>,
    /// Closed rounds.
    pub rounds: Vec<RoundRecord>,
    /// Committed checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Latest rejections: (time, peer, reason).
    pub recent_rejections: Vec<(u64, String, String)>,
}

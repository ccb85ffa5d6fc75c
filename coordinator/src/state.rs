//! The coordinator's durable state: committed rounds, checkpoints, round history, ledger, leases.
//!
//! Written atomically after every round transition; on restart the coordinator resumes from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_proto::{CheckpointManifest, ContentId};
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::store::{read_json, write_json, StoreError};

/// Largest state file read.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Its manifest.
    pub manifest: CheckpointManifest,
    /// The manifest's content id (what deltas name as their base).
    pub id: ContentId,
}

/// What happened in a closed round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: u64,
    /// Deltas accepted.
    pub accepted: u32,
    /// Deltas rejected.
    pub rejected: u32,
    /// Tokens behind the update.
    pub tokens: u64,
    /// Token-weighted mean of the workers' training loss.
    pub train_loss: Option<f32>,
    /// Held-out loss of the checkpoint the round committed.
    pub eval_loss: Option<f32>,
    /// `committed`, `gated` (held-out loss got worse: previous weights kept) or `carried`.
    pub outcome: String,
    /// Why, for gated rounds.
    pub note: Option<String>,
    /// Seconds from opening to closing.
    pub seconds: f64,
    /// Delta bytes received this round.
    pub bytes_received: u64,
    /// When it closed.
    pub closed_unix_ms: u64,
}

/// Everything that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Id of the run spec this state belongs to.
    pub spec_id: Option<ContentId>,
    /// Last committed round (0 = the initial checkpoint).
    pub committed_round: u64,
    /// Every committed checkpoint, oldest first.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Every closed round, oldest first.
    pub rounds: Vec<RoundRecord>,
    /// Per-peer accounting and bans.
    pub ledger: Ledger,
    /// Shard indices leased to each peer.
    pub leases: BTreeMap<String, Vec<u32>>,
}

impl State {
    /// `state.json` in the data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("state.json")
    }

    /// Load the state (a fresh one when none was written yet).
    pub fn load(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(read_json(&Self::path(data_dir), MAX_STATE_BYTES)?.unwrap_or_default())
    }

    /// Write it atomically: this is the commit point of a round.
    pub fn save(&self, data_dir: &Path) -> Result<(), StoreError> {
        write_json(&Self::path(data_dir), self)
    }

    /// The latest committed checkpoint.
    pub fn latest(&self) -> Option<&CheckpointRecord> {
        self.checkpoints.last()
    }

    /// Held-out loss of the latest committed checkpoint.
    pub fn latest_eval_loss(&self) -> Option<f32> {
        self.latest().and_then(|c| c.manifest.eval_loss)
    }
}

//! The swarm's status as the JSON API, the dashboard and `status` see it.
//!
//! The service refreshes a [`Snapshot`]; the view types below ([`StatusView`], [`LeaderRow`],
//! [`RejectionView`], [`CheckpointView`]) are what the HTTP API serves and what
//! `hearth-coordinator status` reads back, so both sides share one definition.

use std::cmp::Ordering;

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

/// Files of a round's checkpoint directory that may be downloaded.
pub const CHECKPOINT_FILES: &[&str] = &[
    "adapter_model.safetensors",
    "adapter_config.json",
    "manifest.json",
];

/// How many recent closed rounds the swarm's tokens/s averages over.
pub const THROUGHPUT_ROUNDS: usize = 5;

/// Most worker rows one `/api/workers` page returns.
pub const MAX_WORKER_PAGE: usize = 1000;

/// A rejected delta, newest first in [`StatusView::recent_rejections`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectionView {
    /// When it was rejected, ms since the epoch.
    pub time_unix_ms: u64,
    /// Sender's peer id (`unknown` when the envelope did not say). Not named `peer_id`, so that
    /// the coordinator's own `peer_id` stays the only such key in `/api/status`.
    pub peer: String,
    /// Sender's display name, when the ledger knows it.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// One row of the contribution leaderboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderRow {
    /// 1-based rank.
    pub rank: usize,
    /// Display name.
    pub name: String,
    /// Peer id.
    pub peer_id: String,
    /// Tokens trained in accepted deltas.
    pub tokens: u64,
    /// Deltas accepted.
    pub accepted: u64,
    /// Share of all credited tokens, 0..=1.
    pub share: f64,
    /// Recent average credit.
    pub recent_credit: f64,
}

/// The latest committed checkpoint with its download links.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Round that produced it.
    pub round: u64,
    /// Manifest content id (hex).
    pub id: String,
    /// Held-out loss.
    pub eval_loss: Option<f32>,
    /// Mean worker training loss.
    pub train_loss: Option<f32>,
    /// Creation time, ms since the epoch.
    pub created_unix_ms: u64,
    /// Download paths of the PEFT files, relative to the API root.
    pub files: Vec<String>,
}

/// What `/api/status` serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusView {
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
    /// Deadline of the round in progress, ms since the epoch.
    pub deadline_unix_ms: u64,
    /// When the snapshot was taken, ms since the epoch.
    pub now_unix_ms: u64,
    /// Milliseconds left until the deadline (0 once passed).
    pub time_left_ms: u64,
    /// Deltas accepted so far this round.
    pub pending_deltas: usize,
    /// Workers joined and connected.
    pub workers_connected: usize,
    /// Workers ever seen.
    pub workers_known: usize,
    /// Rounds closed so far.
    pub rounds_closed: usize,
    /// Tokens trained per second by the swarm over the last few rounds.
    pub tokens_per_second: f64,
    /// Tokens trained in all closed rounds.
    pub tokens_total: u64,
    /// Held-out loss of the latest checkpoint.
    pub eval_loss: Option<f32>,
    /// Held-out loss of checkpoint 0 (the base model with a fresh adapter).
    pub base_eval_loss: Option<f32>,
    /// Mean worker training loss of the last closed round.
    pub train_loss: Option<f32>,
    /// Manifest id (hex) of the latest checkpoint.
    pub latest_checkpoint: Option<String>,
    /// Round of the latest checkpoint.
    pub latest_checkpoint_round: Option<u64>,
    /// Latest rejections, newest first.
    pub recent_rejections: Vec<RejectionView>,
}

/// Orders of `/api/workers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerSort {
    /// By peer id (the ledger's order).
    #[default]
    Peer,
    /// Most tokens first.
    Tokens,
    /// By display name.
    Name,
    /// Most recently seen first.
    LastSeen,
}

/// Query of `/api/workers`: order and page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerQuery {
    /// Order.
    pub sort: WorkerSort,
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return (capped at [`MAX_WORKER_PAGE`]; 0 means the cap).
    pub limit: usize,
}

fn by_credit(a: &WorkerView, b: &WorkerView) -> Ordering {
    b.tokens
        .cmp(&a.tokens)
        .then(b.accepted.cmp(&a.accepted))
        .then_with(|| a.peer_id.cmp(&b.peer_id))
}

impl Snapshot {
    /// Milliseconds until the round's deadline (0 once passed).
    pub fn time_left_ms(&self) -> u64 {
        self.deadline_unix_ms.saturating_sub(self.now_unix_ms)
    }

    /// Tokens per second of the swarm: tokens over seconds of the last [`THROUGHPUT_ROUNDS`]
    /// closed rounds (0 before the first round closes).
    pub fn tokens_per_second(&self) -> f64 {
        let start = self.rounds.len().saturating_sub(THROUGHPUT_ROUNDS);
        let recent = self.rounds.get(start..).unwrap_or_default();
        let tokens: u64 = recent.iter().map(|r| r.tokens).sum();
        let seconds: f64 = recent
            .iter()
            .map(|r| r.seconds)
            .filter(|s| s.is_finite() && *s > 0.0)
            .sum();
        if seconds > 0.0 {
            tokens as f64 / seconds
        } else {
            0.0
        }
    }

    /// Display name of a peer, empty when unknown.
    fn name_of(&self, peer_id: &str) -> String {
        self.workers
            .iter()
            .find(|w| w.peer_id == peer_id)
            .map(|w| w.name.clone())
            .unwrap_or_default()
    }

    /// Latest rejections, newest first, with the sender's name.
    pub fn rejections(&self) -> Vec<RejectionView> {
        self.recent_rejections
            .iter()
            .rev()
            .map(|(t, peer, reason)| RejectionView {
                time_unix_ms: *t,
                peer: peer.clone(),
                name: self.name_of(peer),
                reason: reason.clone(),
            })
            .collect()
    }

    /// The `n` biggest contributors by tokens (ties: more accepted deltas, then peer id);
    /// peers with no credit are left out.
    pub fn leaderboard(&self, n: usize) -> Vec<LeaderRow> {
        let total: u64 = self.workers.iter().map(|w| w.tokens).sum();
        let mut rows: Vec<&WorkerView> = self.workers.iter().filter(|w| w.tokens > 0).collect();
        rows.sort_by(|a, b| by_credit(a, b));
        rows.into_iter()
            .take(n)
            .enumerate()
            .map(|(i, w)| LeaderRow {
                rank: i + 1,
                name: w.name.clone(),
                peer_id: w.peer_id.clone(),
                tokens: w.tokens,
                accepted: w.accepted,
                share: if total > 0 {
                    w.tokens as f64 / total as f64
                } else {
                    0.0
                },
                recent_credit: w.recent_credit,
            })
            .collect()
    }

    /// One page of worker rows in the asked order.
    pub fn workers_page(&self, q: &WorkerQuery) -> Vec<WorkerView> {
        let mut rows: Vec<&WorkerView> = self.workers.iter().collect();
        match q.sort {
            WorkerSort::Peer => rows.sort_by(|a, b| a.peer_id.cmp(&b.peer_id)),
            WorkerSort::Tokens => rows.sort_by(|a, b| by_credit(a, b)),
            WorkerSort::Name => {
                rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.peer_id.cmp(&b.peer_id)))
            }
            WorkerSort::LastSeen => rows.sort_by(|a, b| {
                b.last_seen_unix_ms
                    .cmp(&a.last_seen_unix_ms)
                    .then_with(|| a.peer_id.cmp(&b.peer_id))
            }),
        }
        let limit = if q.limit == 0 {
            MAX_WORKER_PAGE
        } else {
            q.limit.min(MAX_WORKER_PAGE)
        };
        rows.into_iter()
            .skip(q.offset)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The latest committed checkpoint and its download links.
    pub fn latest_checkpoint(&self) -> Option<CheckpointView> {
        self.checkpoints.last().map(|c| CheckpointView {
            round: c.manifest.round,
            id: c.id.to_hex(),
            eval_loss: c.manifest.eval_loss,
            train_loss: c.manifest.train_loss,
            created_unix_ms: c.manifest.created_unix_ms,
            files: CHECKPOINT_FILES
                .iter()
                .map(|f| format!("/api/checkpoints/{}/{f}", c.manifest.round))
                .collect(),
        })
    }

    /// The `/api/status` view.
    pub fn status_view(&self) -> StatusView {
        let latest = self.checkpoints.last();
        StatusView {
            run_id: self.run_id.clone(),
            run_name: self.run_name.clone(),
            base_model: self.base_model.clone(),
            peer_id: self.peer_id.clone(),
            round: self.round,
            committed_round: self.committed_round,
            phase: self.phase.clone(),
            deadline_unix_ms: self.deadline_unix_ms,
            now_unix_ms: self.now_unix_ms,
            time_left_ms: self.time_left_ms(),
            pending_deltas: self.pending_deltas,
            workers_connected: self.workers_connected,
            workers_known: self.workers.len(),
            rounds_closed: self.rounds.len(),
            tokens_per_second: self.tokens_per_second(),
            tokens_total: self.rounds.iter().map(|r| r.tokens).sum(),
            eval_loss: latest.and_then(|c| c.manifest.eval_loss),
            base_eval_loss: self.checkpoints.first().and_then(|c| c.manifest.eval_loss),
            train_loss: self.rounds.last().and_then(|r| r.train_loss),
            latest_checkpoint: latest.map(|c| c.id.to_hex()),
            latest_checkpoint_round: latest.map(|c| c.manifest.round),
            recent_rejections: self.rejections(),
        }
    }
}

/// Synthetic snapshots for the HTTP and CLI tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use hearth_proto::{CheckpointManifest, ContentId};

    use super::*;

    /// A snapshot with `workers` workers (worker i has i·100 tokens) and `rounds` closed rounds
    /// of 1000 tokens in 10 s each, held-out loss 3.0 falling by 0.1 per round.
    pub(crate) fn sample(workers: usize, rounds: u64) -> Snapshot {
        let checkpoint = |round: u64| {
            let manifest = CheckpointManifest {
                round,
                parent: None,
                adapter: ContentId::of(&round.to_le_bytes()),
                adapter_bytes: 10,
                outer_state: None,
                eval_loss: Some(3.0 - 0.1 * round as f32),
                train_loss: (round > 0).then_some(3.2 - 0.1 * round as f32),
                created_unix_ms: 1_000 + round,
            };
            CheckpointRecord {
                id: manifest.id(),
                manifest,
            }
        };
        Snapshot {
            run_id: "run-x".into(),
            run_name: "Sample run".into(),
            base_model: "tiny".into(),
            peer_id: "12D3KooWCoordinator".into(),
            round: rounds + 1,
            committed_round: rounds,
            phase: "training".into(),
            deadline_unix_ms: 50_000,
            now_unix_ms: 20_000,
            pending_deltas: 1,
            workers_connected: workers,
            workers: (0..workers)
                .map(|i| WorkerView {
                    peer_id: format!("12D3KooWpeer{i:04}"),
                    name: format!("worker-{i:04}"),
                    device: "cpu".into(),
                    connected: true,
                    last_seen_unix_ms: 10_000 + i as u64,
                    tokens: i as u64 * 100,
                    accepted: i as u64,
                    rejected: u64::from(i % 3 == 0),
                    recent_credit: i as f64,
                    banned: false,
                })
                .collect(),
            rounds: (1..=rounds)
                .map(|r| RoundRecord {
                    round: r,
                    accepted: 2,
                    rejected: 0,
                    tokens: 1000,
                    train_loss: Some(3.2 - 0.1 * r as f32),
                    eval_loss: Some(3.0 - 0.1 * r as f32),
                    outcome: "committed".into(),
                    note: None,
                    seconds: 10.0,
                    bytes_received: 100,
                    closed_unix_ms: 1_000 + r,
                })
                .collect(),
            checkpoints: (0..=rounds).map(checkpoint).collect(),
            recent_rejections: vec![
                (100, "12D3KooWpeer0003".into(), "norm: too big".into()),
                (200, "12D3KooWstranger".into(), "signature: forged".into()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::sample;
    use super::*;

    #[test]
    fn throughput_averages_the_last_rounds() {
        let mut s = sample(2, 7);
        // Seven rounds of 1000 tokens in 10 s; make an old one slow: it must not count.
        s.rounds[0].seconds = 1000.0;
        assert_eq!(s.tokens_per_second(), 100.0);
        s.rounds[6].tokens = 6000;
        // Last five: 4 × 1000 + 6000 tokens over 50 s.
        assert_eq!(s.tokens_per_second(), 200.0);
        assert_eq!(sample(0, 0).tokens_per_second(), 0.0);
    }

    #[test]
    fn time_left_saturates() {
        let mut s = sample(0, 0);
        assert_eq!(s.time_left_ms(), 30_000);
        s.now_unix_ms = 60_000;
        assert_eq!(s.time_left_ms(), 0);
    }

    #[test]
    fn leaderboard_ranks_by_tokens_and_skips_zero_credit() {
        let s = sample(5, 1);
        let lb = s.leaderboard(3);
        let names: Vec<&str> = lb.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["worker-0004", "worker-0003", "worker-0002"]);
        assert_eq!(lb[0].rank, 1);
        // 400 of 100+200+300+400 tokens.
        assert!((lb[0].share - 0.4).abs() < 1e-12);
        assert_eq!(s.leaderboard(100).len(), 4, "worker-0000 has no tokens");
    }

    #[test]
    fn rejections_are_newest_first_with_names() {
        let r = sample(5, 1).rejections();
        assert_eq!(r[0].time_unix_ms, 200);
        assert_eq!(r[0].name, "");
        assert_eq!(r[1].name, "worker-0003");
        assert_eq!(r[1].reason, "norm: too big");
    }

    #[test]
    fn worker_pages_sort_and_cap() {
        let s = sample(1500, 1);
        let all = s.workers_page(&WorkerQuery::default());
        assert_eq!(all.len(), MAX_WORKER_PAGE);
        let q = WorkerQuery {
            sort: WorkerSort::Tokens,
            offset: 10,
            limit: 5,
        };
        let page = s.workers_page(&q);
        assert_eq!(page.len(), 5);
        assert_eq!(page[0].name, "worker-1489");
        let q = WorkerQuery {
            sort: WorkerSort::LastSeen,
            offset: 1499,
            limit: 10,
        };
        let last = s.workers_page(&q);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].name, "worker-0000");
        let past_end = WorkerQuery { offset: 5000, ..q };
        assert!(s.workers_page(&past_end).is_empty());
    }

    #[test]
    fn status_view_carries_losses_and_checkpoint() {
        let v = sample(3, 4).status_view();
        assert_eq!(v.round, 5);
        assert_eq!(v.workers_known, 3);
        assert_eq!(v.rounds_closed, 4);
        assert_eq!(v.tokens_total, 4000);
        assert_eq!(v.base_eval_loss, Some(3.0));
        assert!((v.eval_loss.unwrap_or_default() - 2.6).abs() < 1e-6);
        assert_eq!(v.latest_checkpoint_round, Some(4));
        assert_eq!(v.time_left_ms, 30_000);
        let c = sample(0, 2).latest_checkpoint().expect("a checkpoint");
        assert_eq!(c.round, 2);
        assert_eq!(
            c.files[0],
            "/api/checkpoints/2/adapter_model.safetensors".to_string()
        );
        assert!(Snapshot::default().latest_checkpoint().is_none());
    }
}

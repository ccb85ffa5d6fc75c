//! Who may take part: joins, polls, blob requests, shard leases and bans.

use std::collections::HashMap;

use hearth_net::PeerId;
use hearth_proto::{
    encode, Admission, BlobRequest, BlobResponse, ContentId, JoinRequest, JoinResponse,
    PollRequest, PollResponse, ShardLease, Wire, PROTOCOL_VERSION,
};
use tracing::{debug, error, info, warn};

use super::{bans_path, now_ms, Service};
use crate::config::RunConfig;
use crate::verify::Reject;

/// How long a banned peer's requests are still answered (with the reason of its ban) before the
/// network refuses it, in ms: long enough for its worker to hear why and stop.
const BAN_NOTICE_MS: u64 = 15_000;

/// Whether `peer` may send deltas: not banned, and joined unless the run is open to all.
pub(super) fn admitted(
    ledger: &crate::ledger::Ledger,
    cfg: &RunConfig,
    joined: &HashMap<PeerId, u64>,
    peer: &PeerId,
) -> Result<(), Reject> {
    let id = peer.to_base58();
    if ledger.is_banned(&id) {
        return Err(Reject::Banned(id));
    }
    match cfg.run.admission {
        Admission::Open => Ok(()),
        _ if joined.contains_key(peer) => Ok(()),
        _ => Err(Reject::NotAdmitted(id)),
    }
}

impl Service {
    /// Whether `peer` may send deltas (see [`admitted`]).
    pub(super) fn admitted(&self, peer: &PeerId) -> Result<(), Reject> {
        admitted(&self.state.ledger, &self.cfg, &self.joined, peer)
    }

    pub(super) fn on_join(&mut self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        let rejected = |reason: String| encode(&JoinResponse::Rejected { reason });
        let req = match JoinRequest::from_bytes(data) {
            Ok(r) => r,
            Err(e) => return rejected(format!("malformed join request: {e}")),
        };
        let id = peer.to_base58();
        if req.protocol_version != PROTOCOL_VERSION {
            return rejected(format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                req.protocol_version
            ));
        }
        if req.run_id != self.cfg.run.run_id && !req.run_id.is_empty() {
            return rejected(format!(
                "this coordinator runs {:?}, not {:?}",
                self.cfg.run.run_id, req.run_id
            ));
        }
        if let Some(reason) = self.ban_reason(&peer) {
            return encode(&JoinResponse::Banned { reason });
        }
        if !self.cfg.run.admission.admits(&peer, req.token.as_deref()) {
            warn!("join refused by the admission policy");
            return rejected(
                "not admitted: this run needs an allowlisted peer id or a valid join token".into(),
            );
        }
        let now = now_ms();
        self.state.ledger.joined(&id, &req.name, &req.device, now);
        self.joined.insert(peer, now);
        let lease = self.lease_for(&id);
        info!(name = %req.name, device = %req.device, shards = ?lease, "worker joined");
        encode(&JoinResponse::Accepted {
            spec: self.cfg.run.clone(),
            lease: ShardLease {
                shard_indices: lease,
            },
            latest: self.state.latest().map(|c| c.manifest.clone()),
            round: self.round_info(),
            last_verdict: self.verdicts.get(&peer).cloned(),
        })
    }

    /// A joined worker's poll: the newest checkpoint and round, as a join answers them, with none
    /// of a join's effects (no ledger update, no "worker joined" line).
    pub(super) fn on_poll(&self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        match PollRequest::from_bytes(data) {
            Ok(req) if req.protocol_version == PROTOCOL_VERSION => {}
            // The join request that follows gets the reason in words.
            Ok(_) => return encode(&PollResponse::NotJoined),
            Err(e) => {
                debug!("malformed poll request: {e}");
                return encode(&PollResponse::NotJoined);
            }
        }
        if let Some(reason) = self.ban_reason(&peer) {
            return encode(&PollResponse::Banned { reason });
        }
        if !self.joined.contains_key(&peer) {
            return encode(&PollResponse::NotJoined);
        }
        encode(&PollResponse::State {
            latest: self.state.latest().map(|c| c.manifest.clone()),
            round: self.round_info(),
            last_verdict: self.verdicts.get(&peer).cloned(),
        })
    }

    /// The peer's shard lease: kept across rejoins; new peers get the least-leased shard.
    pub(super) fn lease_for(&mut self, id: &str) -> Vec<u32> {
        if let Some(l) = self.state.leases.get(id) {
            return l.clone();
        }
        let n = self.cfg.run.data.shards.len();
        if n == 0 {
            return Vec::new();
        }
        let mut load = vec![0usize; n];
        for l in self.state.leases.values() {
            for &i in l {
                if let Some(c) = load.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
        let best = (0..n).min_by_key(|&i| (load[i], i)).unwrap_or(0) as u32;
        self.state.leases.insert(id.to_string(), vec![best]);
        vec![best]
    }

    pub(super) fn on_blob(&self, peer: PeerId, data: &[u8]) -> Vec<u8> {
        let not_found = |cid| encode(&BlobResponse::NotFound { cid });
        let req = match BlobRequest::from_bytes(data) {
            Ok(r) => r,
            Err(e) => {
                debug!("malformed blob request: {e}");
                return not_found(ContentId::of(b""));
            }
        };
        if !self.public.contains(&req.cid) || self.admitted(&peer).is_err() {
            return not_found(req.cid);
        }
        let max = req
            .max_len
            .min(self.cfg.run.net.blob_chunk_size)
            .min(hearth_proto::MAX_BLOB_CHUNK) as usize;
        match self.store.read_range(&req.cid, req.offset, max) {
            Ok((total_len, bytes)) => encode(&BlobResponse::Chunk {
                cid: req.cid,
                total_len,
                offset: req.offset.min(total_len),
                data: bytes,
            }),
            Err(e) => {
                warn!(cid = %req.cid, "blob not served: {e}");
                not_found(req.cid)
            }
        }
    }

    /// Why `peer` is banned, if it is.
    pub(super) fn ban_reason(&self, peer: &PeerId) -> Option<String> {
        let rec = self.state.ledger.peers.get(&peer.to_base58())?;
        rec.banned.then(|| {
            rec.ban_reason
                .clone()
                .unwrap_or_else(|| "banned by the organiser".into())
        })
    }

    /// Ban a peer: ledger, its pending delta, and (after [`BAN_NOTICE_MS`], during which its
    /// requests are answered with the reason) the network.
    pub(super) async fn apply_ban(&mut self, p: PeerId, reason: &str, now: u64) {
        self.state.ledger.ban(&p.to_base58(), reason, now);
        self.engine.drop_peer(&p);
        self.ingest.forget(&p);
        self.joined.remove(&p);
        self.ban_notices
            .push((p, now.saturating_add(BAN_NOTICE_MS)));
        if let Err(e) = self.state.save(&self.data_dir) {
            self.metrics.storage_errors.inc();
            error!("ban not saved: {e}");
        }
    }

    /// Apply bans added by `hearth-coordinator ban` (the bans file) since the last look.
    pub(super) async fn apply_ban_file(&mut self) {
        let path = bans_path(&self.data_dir);
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        let modified = meta.modified().ok();
        if modified == self.bans_seen {
            return;
        }
        self.bans_seen = modified;
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.parse::<PeerId>() {
                Ok(p) if !self.state.ledger.is_banned(line) => {
                    warn!(peer = %p, "banned by hand");
                    self.apply_ban(p, "banned by the organiser", now_ms()).await;
                }
                Ok(_) => {}
                Err(e) => warn!(line, "bans file: not a peer id: {e}"),
            }
        }
    }
}

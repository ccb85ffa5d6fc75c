//! Wire messages of the join, poll, announce, delta and blob protocols, with their decode limits.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cid::ContentId;
use crate::codec::EncodedDelta;
use crate::decode::{decode_bounded, encode, DecodeError};
use crate::spec::RunSpec;

/// Largest data chunk of a blob response (4 MiB).
pub const MAX_BLOB_CHUNK: u32 = 4 << 20;

/// A message type with a fixed upper bound on its encoded size.
pub trait Wire: Serialize + DeserializeOwned {
    /// Largest encoding accepted by [`Wire::from_bytes`].
    const MAX_BYTES: usize;

    /// bincode encoding.
    fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Bounded decode of untrusted bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_bounded(bytes, Self::MAX_BYTES)
    }
}

/// A worker asks to join a run (`/hearth/join/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// [`crate::PROTOCOL_VERSION`] of the worker.
    pub protocol_version: u32,
    /// Run the worker wants to join.
    pub run_id: String,
    /// Volunteer's display name.
    pub name: String,
    /// Device label, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// Threads the worker will use.
    pub threads: u32,
    /// Memory cap in bytes.
    pub memory_bytes: u64,
    /// Join token for token-admission runs.
    pub token: Option<String>,
}

impl Wire for JoinRequest {
    const MAX_BYTES: usize = 4096;
}

/// Shards a worker trains on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShardLease {
    /// Indices into the run's `data.shards`.
    pub shard_indices: Vec<u32>,
}

/// State of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundInfo {
    /// Round number (0 = first).
    pub round: u64,
    /// Checkpoint this round's deltas must build on (None = the base model with a zero adapter).
    pub base_checkpoint: Option<ContentId>,
    /// Opening time, Unix milliseconds.
    pub opened_unix_ms: u64,
    /// Deadline, Unix milliseconds.
    pub deadline_unix_ms: u64,
}

/// The coordinator's answer to a join request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum JoinResponse {
    /// Admitted.
    Accepted {
        /// Run spec.
        spec: RunSpec,
        /// Assigned shards.
        lease: ShardLease,
        /// Latest checkpoint, if any.
        latest: Option<CheckpointManifest>,
        /// The open round.
        round: RoundInfo,
        /// What became of this peer's last judged delta, when its round closed (weight, held
        /// back, unpaid or rejected): the verdicts a worker otherwise never sees.
        last_verdict: Option<DeltaVerdict>,
    },
    /// Refused.
    Rejected {
        /// Why.
        reason: String,
    },
    /// This peer id is banned from the run: the worker should stop, not retry.
    Banned {
        /// Why, with the evidence.
        reason: String,
    },
}

/// The close-time verdict on one of a peer's deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaVerdict {
    /// The round that judged it.
    pub round: u64,
    /// What happened, in words (at most [`DeltaVerdict::MAX_TEXT`] bytes).
    pub text: String,
}

impl DeltaVerdict {
    /// Longest verdict text the coordinator sends.
    pub const MAX_TEXT: usize = 512;
}

impl Wire for JoinResponse {
    const MAX_BYTES: usize = 4 << 20;
}

/// A joined worker asks for the newest checkpoint and round (`/hearth/poll/1`); unlike a join,
/// it changes nothing on the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollRequest {
    /// [`crate::PROTOCOL_VERSION`] of the worker.
    pub protocol_version: u32,
}

impl Wire for PollRequest {
    const MAX_BYTES: usize = 64;
}

/// The coordinator's answer to a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum PollResponse {
    /// The run's current state, as a join would answer it.
    State {
        /// Latest checkpoint, if any.
        latest: Option<CheckpointManifest>,
        /// The open round.
        round: RoundInfo,
        /// What became of this peer's last judged delta (see [`JoinResponse::Accepted`]).
        last_verdict: Option<DeltaVerdict>,
    },
    /// The coordinator does not count this peer as joined (it restarted, or the peer never
    /// joined, or speaks another protocol version): send a join request.
    NotJoined,
    /// This peer id is banned from the run: the worker should stop, not retry.
    Banned {
        /// Why, with the evidence.
        reason: String,
    },
}

impl Wire for PollResponse {
    const MAX_BYTES: usize = 16 << 10;
}

/// A merged adapter checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointManifest {
    /// Round that produced it.
    pub round: u64,
    /// Previous checkpoint.
    pub parent: Option<ContentId>,
    /// Blob of the adapter safetensors.
    pub adapter: ContentId,
    /// Size of that blob.
    pub adapter_bytes: u64,
    /// Blob of the outer optimizer state.
    pub outer_state: Option<ContentId>,
    /// Held-out loss.
    pub eval_loss: Option<f32>,
    /// Mean training loss reported by workers.
    pub train_loss: Option<f32>,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
}

impl CheckpointManifest {
    /// Content id of the manifest's encoding; deltas name their base checkpoint by it.
    pub fn id(&self) -> ContentId {
        ContentId::of(&encode(self))
    }
}

impl Wire for CheckpointManifest {
    const MAX_BYTES: usize = 1024;
}

/// Gossip on `hearth/<run>/announce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Announcement {
    /// A new round is open.
    RoundOpened(RoundInfo),
    /// A round closed.
    RoundClosed {
        /// Round number.
        round: u64,
        /// Deltas aggregated.
        accepted: u32,
        /// Deltas rejected.
        rejected: u32,
    },
    /// A new checkpoint can be fetched.
    CheckpointReady(CheckpointManifest),
}

impl Wire for Announcement {
    const MAX_BYTES: usize = 4096;
}

/// A worker's compressed adapter delta; travels inside a [`crate::SignedEnvelope`] under `Domain::Delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaMessage {
    /// Run id.
    pub run_id: String,
    /// Round the delta is submitted to.
    pub round: u64,
    /// Round of the checkpoint it was trained from.
    pub base_round: u64,
    /// Id of that checkpoint (None = zero adapter).
    pub base_checkpoint: Option<ContentId>,
    /// Tokens trained this round.
    pub tokens_trained: u64,
    /// Optimizer steps taken.
    pub steps: u32,
    /// Mean training loss over the steps.
    pub train_loss: f32,
    /// The compressed delta.
    pub delta: EncodedDelta,
}

impl Wire for DeltaMessage {
    const MAX_BYTES: usize = 64 << 20;
}

/// Announces a delta too large to gossip inline; the bytes are pulled by blob request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    /// Run id.
    pub run_id: String,
    /// Round.
    pub round: u64,
    /// blake3 of the encoded signed envelope.
    pub cid: ContentId,
    /// Its size in bytes.
    pub size: u64,
}

impl Wire for DeltaRef {
    const MAX_BYTES: usize = 1024;
}

/// Answer to a direct delta submission (`/hearth/delta/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaAck {
    /// Accepted for aggregation (its weight is decided when the round closes).
    Accepted {
        /// The close-time verdict on this peer's previous judged delta, if any.
        last_verdict: Option<DeltaVerdict>,
    },
    /// Rejected.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Rejected, and the sender is banned from the run: the worker should stop, not retry.
    Banned {
        /// Why, with the evidence.
        reason: String,
    },
}

impl Wire for DeltaAck {
    const MAX_BYTES: usize = 4096;
}

/// Asks for a byte range of a blob (`/hearth/blob/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// Blob id.
    pub cid: ContentId,
    /// First byte wanted.
    pub offset: u64,
    /// Most bytes wanted (the server caps it at [`MAX_BLOB_CHUNK`]).
    pub max_len: u32,
}

impl Wire for BlobRequest {
    const MAX_BYTES: usize = 128;
}

/// A blob range, or word that the blob is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// Bytes `offset..offset + data.len()` of a blob of `total_len` bytes.
    Chunk {
        /// Blob id.
        cid: ContentId,
        /// Whole blob size.
        total_len: u64,
        /// Offset of `data`.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The server does not have the blob.
    NotFound {
        /// Blob id.
        cid: ContentId,
    },
}

impl Wire for BlobResponse {
    const MAX_BYTES: usize = MAX_BLOB_CHUNK as usize + 128;
}

/// Why a blob response does not answer its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Different blob.
    #[error("response for blob {got}, requested {want}")]
    WrongCid {
        /// Blob in the response.
        got: ContentId,
        /// Blob requested.
        want: ContentId,
    },
    /// Different offset.
    #[error("response at offset {got}, requested {want}")]
    WrongOffset {
        /// Offset in the response.
        got: u64,
        /// Offset requested.
        want: u64,
    },
    /// More data than asked for or than allowed.
    #[error("chunk of {len} bytes exceeds the {max} requested")]
    TooLong {
        /// Data length.
        len: usize,
        /// Allowed length.
        max: u32,
    },
    /// The range ends past the blob.
    #[error("chunk {offset}+{len} runs past blob end {total_len}")]
    PastEnd {
        /// Offset.
        offset: u64,
        /// Data length.
        len: usize,
        /// Blob size.
        total_len: u64,
    },
    /// Empty chunk before the end of the blob.
    #[error("empty chunk at {offset} of {total_len}")]
    Empty {
        /// Offset.
        offset: u64,
        /// Blob size.
        total_len: u64,
    },
}

impl BlobResponse {
    /// Checks that a `Chunk` answers `req`: same blob and offset, at most `max_len` bytes, inside the blob,
    /// and non-empty unless the offset is the end. `NotFound` must name the requested blob.
    pub fn check_answers(&self, req: &BlobRequest) -> Result<(), BlobError> {
        match self {
            BlobResponse::NotFound { cid } if *cid != req.cid => Err(BlobError::WrongCid {
                got: *cid,
                want: req.cid,
            }),
            BlobResponse::NotFound { .. } => Ok(()),
            BlobResponse::Chunk {
                cid,
                total_len,
                offset,
                data,
            } => {
                if *cid != req.cid {
                    return Err(BlobError::WrongCid {
                        got: *cid,
                        want: req.cid,
                    });
                }
                if *offset != req.offset {
                    return Err(BlobError::WrongOffset {
                        got: *offset,
                        want: req.offset,
                    });
                }
                let max = req.max_len.min(MAX_BLOB_CHUNK);
                if data.len() > max as usize {
                    return Err(BlobError::TooLong {
                        len: data.len(),
                        max,
                    });
                }
                let end = offset.checked_add(data.len() as u64);
                if end.is_none_or(|e| e > *total_len) {
                    return Err(BlobError::PastEnd {
                        offset: *offset,
                        len: data.len(),
                        total_len: *total_len,
                    });
                }
                if data.is_empty() && *offset < *total_len && max > 0 {
                    return Err(BlobError::Empty {
                        offset: *offset,
                        total_len: *total_len,
                    });
                }
                Ok(())
            }
        }
    }
}

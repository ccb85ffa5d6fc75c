//! hearth-proto: wire messages, signed envelopes, content ids, run spec and the adapter-delta codec.
//!
//! No network I/O lives here, and the only file I/O is [`fsutil`]'s atomic writer, which every
//! crate shares. Every decoder of untrusted bytes is bounded and returns errors instead of panicking.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bits;
pub mod checkpoint;
pub mod cid;
pub mod codec;
pub mod decode;
pub mod envelope;
pub mod fsutil;
pub mod layout;
pub mod messages;
pub mod spec;
mod tagged;

/// Version of the wire protocol; a join request with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

pub use checkpoint::{decode_checkpoint, encode_checkpoint, CheckpointError, MAX_CHECKPOINT_BYTES};
pub use cid::{CidError, ContentId};
pub use codec::{
    decode as decode_delta, encode as encode_delta, kept_per_chunk, payload_len, CodecError,
    CodecSpec, EncodedDelta, NamedTensor, Residual, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE,
};
pub use decode::{decode_bounded, encode, DecodeError, MAX_DECODE_BYTES};
pub use envelope::{signing_digest, Domain, EnvelopeError, SignedEnvelope};
pub use layout::{layout_id, total_numel, TensorLayout};
pub use messages::{
    Announcement, BlobError, BlobRequest, BlobResponse, CheckpointManifest, DeltaAck, DeltaMessage,
    DeltaRef, DeltaVerdict, JoinRequest, JoinResponse, PollRequest, PollResponse, RoundInfo,
    ShardLease, Wire, MAX_BLOB_CHUNK,
};
pub use spec::{
    lora_tensor_name, Admission, AggregateSpec, Aggregator, BaseModel, DatasetManifest, LoraSpec,
    ModelArch, ModelFile, ModelSource, NetSpec, OuterOptimizer, RunSpec, ShardInfo, SpecError,
    TrainSpec, VerifySpec, LORA_TARGETS, MAX_MODEL_FILES, MAX_TRANSMIT_SIZE,
};

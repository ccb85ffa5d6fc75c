//! Datasets: reading JSONL and plain text, chat-template rendering, tokenization with loss masks,
//! packing into fixed-length sequences, held-out split and content-addressed shards.

pub mod byte_tokenizer;
pub mod encode;
pub mod error;
pub mod example;
pub mod jsonl;
pub mod limits;
pub mod pack;
pub mod plain;
pub mod prepare;
pub mod shard;
pub mod source;
pub mod split;
pub mod template;

pub use byte_tokenizer::byte_level_tokenizer;
pub use encode::{
    encode_chat, encode_prompt, encode_record, encode_text, special_id, EncodedExample,
};
pub use error::{DataError, ShardFormatError};
pub use example::{Example, Message, Record};
pub use limits::DatasetLimits;
pub use pack::{pack, PackConfig, PackStats};
pub use prepare::{prepare_dataset, prepare_with, DatasetStats, PrepareOptions, PreparedDataset};
pub use shard::{Cid, Shard};
pub use source::{read_dataset, Format};
pub use split::{holdout_split, shard_sequences};
pub use template::ChatTemplate;

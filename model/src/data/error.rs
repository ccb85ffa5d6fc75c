//! The error type of dataset reading, encoding, packing and shard decoding.

use std::path::PathBuf;

/// Everything that can go wrong while turning a dataset file into shards, or decoding a shard.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Reading a line of a dataset stream failed.
    #[error("line {line}: read failed: {source}")]
    ReadLine {
        /// 1-based line number.
        line: usize,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The dataset file is larger than the configured limit.
    #[error("{path} is {size} bytes, over the limit of {limit} bytes")]
    FileTooLarge {
        /// The file that is too large.
        path: PathBuf,
        /// Its size in bytes (at least; reading stopped at the limit).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The file extension names no supported format.
    #[error("{path}: unknown dataset format (expected .jsonl, .ndjson, .txt, .text or .md)")]
    UnknownFormat {
        /// The offending path.
        path: PathBuf,
    },
    /// A JSONL line is longer than the configured limit.
    #[error("line {line}: longer than the limit of {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A line is not valid UTF-8.
    #[error("line {line}: not valid UTF-8 ({message})")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
        /// Where decoding failed.
        message: String,
    },
    /// A JSONL line is not valid JSON.
    #[error("line {line}: invalid JSON: {message}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parser's message (with column).
        message: String,
    },
    /// A JSONL line is valid JSON but not an object.
    #[error("line {line}: expected a JSON object, found {found}")]
    NotAnObject {
        /// 1-based line number.
        line: usize,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A JSONL object has none of the recognised field sets.
    #[error("line {line}: no recognised fields (expected `text`, `instruction`+`output`, `instruction`+`response` or `messages`), found keys [{keys}]")]
    UnrecognisedRow {
        /// 1-based line number.
        line: usize,
        /// The keys that were present, comma separated.
        keys: String,
    },
    /// A required field is absent.
    #[error("line {line}: missing field `{field}`")]
    MissingField {
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("line {line}: field `{field}` must be {expected}, found {found}")]
    FieldType {
        /// 1-based line number.
        line: usize,
        /// The field's name (with index for message fields, e.g. `messages[2].role`).
        field: String,
        /// The expected JSON type.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A field that must carry text is empty or only whitespace.
    #[error("line {line}: field `{field}` is empty")]
    EmptyField {
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: String,
    },
    /// A chat has more messages than the configured limit.
    #[error("line {line}: {count} messages, over the limit of {limit}")]
    TooManyMessages {
        /// 1-based line number.
        line: usize,
        /// Messages in the row.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A chat contains no assistant message with content, so it has nothing to train on.
    #[error("line {line}: chat has no non-empty `assistant` message to train on")]
    NoAssistant {
        /// 1-based line number.
        line: usize,
    },
    /// The dataset has more examples than the configured limit.
    #[error("dataset has more than {limit} examples")]
    TooManyExamples {
        /// The configured limit.
        limit: usize,
    },
    /// The dataset contains no examples.
    #[error("{path}: dataset is empty")]
    EmptyDataset {
        /// The dataset file.
        path: PathBuf,
    },
    /// The chat template does not compile.
    #[error("chat template does not compile: {message}")]
    TemplateSyntax {
        /// minijinja's message.
        message: String,
    },
    /// Rendering the chat template failed.
    #[error("line {line}: chat template failed to render: {message}")]
    TemplateRender {
        /// 1-based line number of the example (0 when not from a file).
        line: usize,
        /// minijinja's message.
        message: String,
    },
    /// Rendering a conversation prefix did not give a prefix of the full rendering, so assistant
    /// spans cannot be located.
    #[error("line {line}: chat template is not incremental: rendering of the first {messages} messages is not a prefix of the next rendering")]
    TemplateNotIncremental {
        /// 1-based line number of the example (0 when not from a file).
        line: usize,
        /// Number of messages in the prefix.
        messages: usize,
    },
    /// A special token named by the template is not in the tokenizer's vocabulary.
    #[error("special token {token:?} is not in the tokenizer vocabulary")]
    UnknownSpecialToken {
        /// The token's text.
        token: String,
    },
    /// The tokenizer failed.
    #[error("line {line}: tokenizer failed: {message}")]
    Tokenize {
        /// 1-based line number of the example (0 when not from a file).
        line: usize,
        /// The tokenizer's message.
        message: String,
    },
    /// A packing or preparation parameter is out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// What the valid range is.
        reason: &'static str,
    },
    /// There are fewer packed sequences than shards requested.
    #[error("{sequences} training sequences cannot fill {shards} shards")]
    NotEnoughSequences {
        /// Packed training sequences.
        sequences: usize,
        /// Shards requested.
        shards: usize,
    },
    /// A sequence handed to a shard has the wrong length.
    #[error("sequence {index} has {tokens} tokens and {mask} mask flags, expected {seq_len}")]
    SequenceLength {
        /// Index of the sequence in the shard.
        index: usize,
        /// Its token count.
        tokens: usize,
        /// Its mask length.
        mask: usize,
        /// The shard's sequence length.
        seq_len: usize,
    },
    /// Shard bytes are invalid.
    #[error("invalid shard: {0}")]
    Shard(#[from] ShardFormatError),
}

/// Why shard bytes were rejected by [`crate::data::Shard::from_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardFormatError {
    /// The input is larger than the caller's limit.
    #[error("{len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The input is shorter than the fixed header.
    #[error("{len} bytes, shorter than the {header}-byte header")]
    TruncatedHeader {
        /// Input length.
        len: usize,
        /// Header length.
        header: usize,
    },
    /// The magic bytes are wrong.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The format version is not supported.
    #[error("unsupported version {version}")]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The token width byte is not 1, 2 or 4.
    #[error("token width {width} (expected 1, 2 or 4)")]
    BadTokenWidth {
        /// The width byte.
        width: u8,
    },
    /// Reserved header bytes are not zero.
    #[error("reserved header bytes {found:02x?} are not zero")]
    Reserved {
        /// The reserved bytes.
        found: [u8; 2],
    },
    /// The sequence length is zero or above the maximum.
    #[error("sequence length {seq_len} outside 1..={max}")]
    BadSeqLen {
        /// Declared sequence length.
        seq_len: u32,
        /// The format's maximum.
        max: u32,
    },
    /// The shard declares no sequences.
    #[error("shard declares 0 sequences")]
    Empty,
    /// The body length does not match the header.
    #[error("{len} bytes, header implies {expected}")]
    LengthMismatch {
        /// Input length.
        len: usize,
        /// Length implied by the header (saturated on overflow).
        expected: u64,
    },
    /// Tokens were stored wider than needed, so the bytes are not the canonical encoding.
    #[error("token width {width} but the largest token {max_token} fits in fewer bytes")]
    NonCanonicalWidth {
        /// Declared width.
        width: u8,
        /// Largest token present.
        max_token: u32,
    },
    /// Padding bits after the last mask bit are set.
    #[error("padding bits of the mask are not zero (last byte {last:#04x})")]
    MaskPadding {
        /// The last mask byte.
        last: u8,
    },
}

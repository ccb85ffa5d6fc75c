//! The crate's error type: every failure names the offending file, tensor, key or value.

use std::path::PathBuf;

/// Errors from loading, running, training and exporting models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is larger than the limit for its kind.
    #[error("{path}: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The file concerned.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A GGUF file is malformed or misses a key or tensor.
    #[error("gguf {path}: {msg}")]
    Gguf {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The model uses something Hearth does not implement (named), so it refuses rather than
    /// compute a different model.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A model configuration is invalid or inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A weight tensor is missing or has the wrong shape.
    #[error("weight {name}: {msg}")]
    Weight {
        /// The tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An adapter tensor or adapter file does not match the model's LoRA layout.
    #[error("adapter: {0}")]
    Adapter(String),
    /// JSON could not be parsed or written.
    #[error("{path}: invalid json: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Input data (sequences, token ids) is unusable.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

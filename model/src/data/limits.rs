//! Size bounds applied while reading untrusted dataset files.

/// Bounds on dataset input; every reader checks them and returns an error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Largest dataset file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Longest JSONL line accepted, in bytes (without the newline).
    pub max_line_bytes: usize,
    /// Most examples accepted from one file.
    pub max_examples: usize,
    /// Most messages in one chat row.
    pub max_messages: usize,
}

impl Default for DatasetLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 30,
            max_line_bytes: 8 << 20,
            max_examples: 50_000_000,
            max_messages: 1024,
        }
    }
}

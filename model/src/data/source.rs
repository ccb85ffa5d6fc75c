//! Opening a dataset file and choosing its reader by extension.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::example::Record;
use super::jsonl::read_jsonl;
use super::plain::read_plain_text;
use super::{DataError, DatasetLimits};

/// The on-disk formats a dataset file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// Plain text, documents separated by blank lines (`.txt`, `.text`, `.md`).
    PlainText,
}

impl Format {
    /// The format implied by a path's extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("txt" | "text" | "md") => Ok(Format::PlainText),
            _ => Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// Reads all examples of a dataset file, bounded by `limits`. An empty dataset is an error.
pub fn read_dataset(path: &Path, limits: &DatasetLimits) -> Result<Vec<Record>, DataError> {
    let format = Format::from_path(path)?;
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let too_large = |size| DataError::FileTooLarge {
        path: path.to_path_buf(),
        size,
        limit: limits.max_file_bytes,
    };
    if size > limits.max_file_bytes {
        return Err(too_large(size));
    }
    // The file may grow while we read it: never read past the limit.
    let bounded = file.take(limits.max_file_bytes.saturating_add(1));
    let records = match format {
        Format::Jsonl => {
            let mut reader = BufReader::new(bounded);
            let records = read_jsonl(&mut reader, limits)?;
            if reader.into_inner().limit() == 0 {
                return Err(too_large(limits.max_file_bytes.saturating_add(1)));
            }
            records
        }
        Format::PlainText => {
            let mut bytes = Vec::new();
            let mut bounded = bounded;
            bounded.read_to_end(&mut bytes).map_err(io)?;
            if bytes.len() as u64 > limits.max_file_bytes {
                return Err(too_large(bytes.len() as u64));
            }
            let text = String::from_utf8(bytes).map_err(|e| {
                let offset = e.utf8_error().valid_up_to();
                let line = e
                    .as_bytes()
                    .get(..offset)
                    .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
                    + 1;
                DataError::InvalidUtf8 {
                    line,
                    message: format!("invalid byte at offset {offset}"),
                }
            })?;
            read_plain_text(&text, limits)?
        }
    };
    if records.is_empty() {
        return Err(DataError::EmptyDataset {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

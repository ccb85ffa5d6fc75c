//! Bounded reads and atomic writes.

use std::io::Read;
use std::path::Path;

use crate::error::{ModelError, Result};

/// Reads a whole file, refusing files larger than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let size = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    if size > limit {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ModelError::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir
/// (see [`hearth_proto::fsutil`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    hearth_proto::fsutil::write_atomic(path, bytes).map_err(|e| ModelError::io(path, e))
}

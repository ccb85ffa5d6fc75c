//! The delta journal: the accepted deltas of the round in progress, so a restarted coordinator
//! can restore them instead of asking workers to train again.
//!
//! Appends do not fsync: a killed coordinator process loses nothing (the page cache survives
//! it), and what a power cut loses is only the open round's deltas, which workers resend or
//! retrain. Committed state (checkpoints, `state.json`) is fsynced where it is written. At 1,000
//! deltas per round an fsync per delta cost 16 s of the round (docs/bench/4-ingest.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use hearth_proto::ContentId;

use crate::store::{BlobStore, StoreError};

/// Journal file of the deltas accepted in `round`.
pub fn path(data_dir: &Path, round: u64) -> PathBuf {
    data_dir.join("journal").join(format!("round-{round}.log"))
}

/// Store a delta's bytes in `store` and append its content id to `round`'s journal.
pub fn append(
    store: &BlobStore,
    data_dir: &Path,
    round: u64,
    bytes: &[u8],
) -> Result<ContentId, StoreError> {
    let cid = store.put_unsynced(bytes)?;
    let file = path(data_dir, round);
    let io = |source| StoreError::Io {
        path: file.clone(),
        source,
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .map_err(io)?;
    // One write of the whole line, so a crash leaves whole lines or a torn last line that
    // `read` skips.
    f.write_all(format!("{cid}\n").as_bytes()).map_err(io)?;
    Ok(cid)
}

/// Content ids journaled for `round`, in order; unparsable (torn) lines are skipped.
pub fn read(data_dir: &Path, round: u64) -> Vec<ContentId> {
    std::fs::read_to_string(path(data_dir, round))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Forget `round`'s journal (its deltas are in a committed checkpoint, or being restored).
pub fn remove(data_dir: &Path, round: u64) {
    let _ = std::fs::remove_file(path(data_dir, round));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_remove_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        let a = append(&store, dir.path(), 3, b"delta a").unwrap();
        let b = append(&store, dir.path(), 3, b"delta b").unwrap();
        assert_eq!(read(dir.path(), 3), vec![a, b]);
        assert_eq!(store.get(&b).unwrap(), b"delta b");
        assert!(read(dir.path(), 4).is_empty());
        // A torn last line (crash mid-append) is skipped, the whole lines before it are kept.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path(), 3))
            .unwrap();
        f.write_all(&a.to_hex().as_bytes()[..20]).unwrap();
        assert_eq!(read(dir.path(), 3), vec![a, b]);
        remove(dir.path(), 3);
        assert!(read(dir.path(), 3).is_empty());
        // No temp files left behind by the unsynced puts.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}

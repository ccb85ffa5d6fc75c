//! Content-addressed blob store with atomic writes, and the atomically replaced state file.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hearth_proto::fsutil::{self, AtomicWrite};
use hearth_proto::ContentId;
use serde::{de::DeserializeOwned, Serialize};

/// Errors of the blob store and the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A blob's bytes do not hash to its name.
    #[error("blob {cid} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// The name (expected hash).
        cid: ContentId,
        /// What the bytes hash to.
        actual: ContentId,
    },
    /// No blob of that id.
    #[error("blob {0} not found")]
    NotFound(ContentId),
    /// A state file that does not parse.
    #[error("{path}: invalid state file: {reason}")]
    BadState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    fsutil::write_atomic(path, bytes).map_err(io(path))
}

/// Whether an I/O error means the file system is full (ENOSPC) or over quota (EDQUOT).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Why a round's checkpoint could not be committed (or an accepted delta journaled), typed so
/// that a full disk is told apart without walking an error chain.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The blob store, the state file or the journal.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Exporting the round's PEFT adapter.
    #[error(transparent)]
    Export(#[from] hearth_model::ModelError),
    /// Encoding the checkpoint.
    #[error(transparent)]
    Encode(#[from] hearth_proto::CheckpointError),
    /// Encoding the checkpoint's manifest.json.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Moving the round's PEFT directory into place.
    #[error("moving {path} into place: {source}")]
    Move {
        /// The directory's final path.
        path: PathBuf,
        /// The rename's error.
        source: std::io::Error,
    },
    /// The export task failed (a poisoned evaluator, a panic).
    #[error("{0}")]
    Task(String),
}

impl CommitError {
    /// Short description for the round state: `disk full` when the file system is full (ENOSPC)
    /// or over quota (EDQUOT), else `storage error`.
    pub fn fault(&self) -> &'static str {
        let io = match self {
            Self::Store(StoreError::Io { source, .. })
            | Self::Export(hearth_model::ModelError::Io { source, .. })
            | Self::Move { source, .. } => Some(source),
            _ => None,
        };
        if io.is_some_and(is_disk_full) {
            "disk full"
        } else {
            "storage error"
        }
    }
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::BadState {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Read JSON from `path`; `Ok(None)` when the file does not exist. At most `limit` bytes.
pub fn read_json<T: DeserializeOwned>(path: &Path, limit: u64) -> Result<Option<T>, StoreError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::BadState {
            path: path.to_path_buf(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::BadState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Blobs named by the blake3 of their bytes under `<dir>/<hex>`.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    /// Blobs whose bytes were hashed since this process started.
    verified: Mutex<HashSet<ContentId>>,
}

impl BlobStore {
    /// Open (creating) a store in `dir`, removing temp files a crash may have left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Where blob `cid` lives (whether or not it exists).
    pub fn path(&self, cid: &ContentId) -> PathBuf {
        self.dir.join(cid.to_hex())
    }

    /// Whether blob `cid` is present (not verified).
    pub fn contains(&self, cid: &ContentId) -> bool {
        self.path(cid).is_file()
    }

    /// Store `bytes`, returning their content id. Idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<ContentId, StoreError> {
        let cid = ContentId::of(bytes);
        let path = self.path(&cid);
        if !path.is_file() {
            write_atomic(&path, bytes)?;
        }
        self.mark_verified(cid);
        Ok(cid)
    }

    /// Store `bytes` without waiting for the disk (temp file + rename, no fsync): survives a killed
    /// process, not a power cut. For data a later fsynced commit supersedes, like the delta journal.
    pub fn put_unsynced(&self, bytes: &[u8]) -> Result<ContentId, StoreError> {
        let cid = ContentId::of(bytes);
        let path = self.path(&cid);
        if !path.is_file() {
            let how = AtomicWrite {
                durable: false,
                ..AtomicWrite::default()
            };
            fsutil::write_atomic_with(&path, how, |f| f.write_all(bytes)).map_err(io(&path))?;
        }
        self.mark_verified(cid);
        Ok(cid)
    }

    /// Copy the file at `src` into the store (streaming), returning its content id.
    pub fn put_file(&self, src: &Path) -> Result<ContentId, StoreError> {
        let mut hasher = blake3::Hasher::new();
        let mut f = File::open(src).map_err(io(src))?;
        hasher.update_reader(&mut f).map_err(io(src))?;
        let cid = ContentId::from_hasher(&hasher);
        let path = self.path(&cid);
        if !path.is_file() {
            let mut from = File::open(src).map_err(io(src))?;
            fsutil::write_atomic_with(&path, AtomicWrite::default(), |f| {
                std::io::copy(&mut from, f).map(|_| ())
            })
            .map_err(io(&path))?;
        }
        self.mark_verified(cid);
        Ok(cid)
    }

    fn mark_verified(&self, cid: ContentId) {
        if let Ok(mut v) = self.verified.lock() {
            v.insert(cid);
        }
    }

    /// Hash blob `cid` (once per process) and fail when its bytes do not match its name.
    pub fn verify(&self, cid: &ContentId) -> Result<(), StoreError> {
        if self
            .verified
            .lock()
            .map(|v| v.contains(cid))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let path = self.path(cid);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(*cid))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&mut f).map_err(io(&path))?;
        let actual = ContentId::from_hasher(&hasher);
        if actual != *cid {
            return Err(StoreError::Corrupt { cid: *cid, actual });
        }
        self.mark_verified(*cid);
        Ok(())
    }

    /// The whole blob, verified against its name.
    pub fn get(&self, cid: &ContentId) -> Result<Vec<u8>, StoreError> {
        let path = self.path(cid);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(*cid))
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let actual = ContentId::of(&bytes);
        if actual != *cid {
            return Err(StoreError::Corrupt { cid: *cid, actual });
        }
        self.mark_verified(*cid);
        Ok(bytes)
    }

    /// Total length and up to `max_len` bytes from `offset` of a verified blob.
    pub fn read_range(
        &self,
        cid: &ContentId,
        offset: u64,
        max_len: usize,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        self.verify(cid)?;
        let path = self.path(cid);
        let mut f = File::open(&path).map_err(io(&path))?;
        let total = f.metadata().map_err(io(&path))?.len();
        let start = offset.min(total);
        f.seek(SeekFrom::Start(start)).map_err(io(&path))?;
        let want = (total - start).min(max_len as u64) as usize;
        let mut buf = vec![0u8; want];
        f.read_exact(&mut buf).map_err(io(&path))?;
        Ok((total, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let cid = store.put(&data).unwrap();
        assert_eq!(cid, ContentId::of(&data));
        assert_eq!(store.get(&cid).unwrap(), data);
        let (total, chunk) = store.read_range(&cid, 9_000, 4_096).unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(chunk, &data[9_000..]);
        let (_, empty) = store.read_range(&cid, 20_000, 10).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn corrupt_blob_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cid = BlobStore::open(dir.path())
            .unwrap()
            .put(b"checkpoint bytes")
            .unwrap();
        fs::write(dir.path().join(cid.to_hex()), b"checkpoint bytez").unwrap();
        let fresh = BlobStore::open(dir.path()).unwrap();
        assert!(matches!(fresh.get(&cid), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            fresh.read_range(&cid, 0, 4),
            Err(StoreError::Corrupt { .. })
        ));
        let missing = ContentId::of(b"nope");
        assert!(matches!(fresh.get(&missing), Err(StoreError::NotFound(_))));
    }

    /// No dot-files (temp files) left in `dir`.
    fn temp_files(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json(&p, &vec![1u32, 2, 3]).unwrap();
        // Injected write error: the directory is a file, so no temp file can be created beside
        // it. (The helper's own tests inject a failure half-way through the write.)
        let err = write_json(&p.join("inner"), &vec![9u32; 100]).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert_eq!(
            read_json::<Vec<u32>>(&p, 1024).unwrap(),
            Some(vec![1, 2, 3])
        );
        // Injected rename error: the destination is a non-empty directory. The temp file goes away.
        let q = dir.path().join("blob");
        fs::create_dir(&q).unwrap();
        fs::write(q.join("y"), b"z").unwrap();
        assert!(write_atomic(&q, b"bytes").is_err());
        assert_eq!(temp_files(dir.path()), Vec::<String>::new());
        assert!(q.join("y").is_file());
    }

    #[test]
    fn disk_full_is_told_apart_from_other_write_errors() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&enospc()));
        let state = CommitError::from(StoreError::Io {
            path: PathBuf::from("data/state.json"),
            source: enospc(),
        });
        assert_eq!(state.fault(), "disk full");
        let export = CommitError::from(hearth_model::ModelError::io("ckpt/adapter", enospc()));
        assert_eq!(export.fault(), "disk full");
        let moved = CommitError::Move {
            path: PathBuf::from("checkpoints/3"),
            source: enospc(),
        };
        assert_eq!(moved.fault(), "disk full");
        let eio = CommitError::from(StoreError::Io {
            path: PathBuf::from("data/state.json"),
            source: std::io::Error::from_raw_os_error(5),
        });
        assert_eq!(eio.fault(), "storage error");
        let poisoned = CommitError::Task("evaluator poisoned".into());
        assert_eq!(poisoned.fault(), "storage error");
    }

    #[test]
    fn write_to_a_full_device_fails_with_enospc() {
        // /dev/full answers every write with ENOSPC: the same error a full data dir gives.
        let mut f = match fs::OpenOptions::new().write(true).open("/dev/full") {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipping: /dev/full not available: {e}");
                return;
            }
        };
        let e = f.write_all(&[0u8; 4096]).unwrap_err();
        assert!(is_disk_full(&e), "{e:?}");
    }

    #[test]
    fn json_state_round_trip_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(read_json::<Vec<u32>>(&p, 1024).unwrap(), None);
        write_json(&p, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            read_json::<Vec<u32>>(&p, 1024).unwrap(),
            Some(vec![1, 2, 3])
        );
        assert!(read_json::<Vec<u32>>(&p, 4).is_err());
        fs::write(&p, b"{ not json").unwrap();
        assert!(matches!(
            read_json::<Vec<u32>>(&p, 1024),
            Err(StoreError::BadState { .. })
        ));
    }
}

//! Content-addressed downloads from the coordinator: chunked, resumable, verified by blake3.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_net::{Client, PeerId, Protocol};
use hearth_proto::{encode, BlobRequest, BlobResponse, ContentId, Wire};
use tracing::{debug, warn};

/// Attempts per chunk before a download fails (a dropped link is retried, then resumed).
const CHUNK_ATTEMPTS: u32 = 6;

/// Errors of a download.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Local file system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The coordinator does not have (or will not serve) the blob.
    #[error("blob {0} not found on the coordinator")]
    NotFound(ContentId),
    /// The network failed repeatedly.
    #[error("blob {cid}: {reason}")]
    Network {
        /// The blob.
        cid: ContentId,
        /// The last error.
        reason: String,
    },
    /// A response that does not answer the request.
    #[error("blob {cid}: bad response: {reason}")]
    BadResponse {
        /// The blob.
        cid: ContentId,
        /// What is wrong.
        reason: String,
    },
    /// The downloaded bytes do not hash to the blob's id; the file was deleted.
    #[error("blob {cid}: downloaded bytes hash to {actual}; deleted, fetch again")]
    Corrupt {
        /// Expected.
        cid: ContentId,
        /// Actual.
        actual: ContentId,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// blake3 of a file, or `None` if it cannot be read.
pub fn hash_file(path: &Path) -> Option<ContentId> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    h.update_reader(&mut f).ok()?;
    Some(ContentId::from_hasher(&h))
}

/// Whether `path` holds exactly the bytes of `cid`. A file that does not match is deleted.
pub fn verify_cached(path: &Path, cid: &ContentId) -> bool {
    match hash_file(path) {
        Some(actual) if actual == *cid => true,
        Some(actual) => {
            warn!(
                "cached file {} is corrupt (blake3 {actual}, expected {cid}); deleted it, fetching it again",
                path.display()
            );
            let _ = std::fs::remove_file(path);
            false
        }
        None => false,
    }
}

/// Download blob `cid` from `peer` into `dest` unless a verified copy is there.
///
/// Bytes go to `dest.partial` first; an interrupted download resumes from its length. The
/// finished file is verified and renamed into place. `progress(done, total)` is called per chunk.
pub async fn fetch_blob(
    net: &Client,
    peer: PeerId,
    cid: ContentId,
    dest: &Path,
    chunk: u32,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), FetchError> {
    if dest.is_file() && verify_cached(dest, &cid) {
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let partial = dest.with_extension("partial");
    let mut offset = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .map_err(io(&partial))?;
    let mut total: Option<u64> = None;
    loop {
        if total.is_some_and(|t| offset >= t) {
            break;
        }
        let req = BlobRequest {
            cid,
            offset,
            max_len: chunk.max(1),
        };
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match net.request(peer, Protocol::Blob, encode(&req)).await {
                Ok(bytes) => match BlobResponse::from_bytes(&bytes) {
                    Ok(r) => break r,
                    Err(e) => {
                        return Err(FetchError::BadResponse {
                            cid,
                            reason: e.to_string(),
                        })
                    }
                },
                Err(e) if attempt < CHUNK_ATTEMPTS => {
                    debug!(%cid, offset, attempt, "chunk request failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
                Err(e) => {
                    return Err(FetchError::Network {
                        cid,
                        reason: e.to_string(),
                    })
                }
            }
        };
        resp.check_answers(&req)
            .map_err(|e| FetchError::BadResponse {
                cid,
                reason: e.to_string(),
            })?;
        match resp {
            BlobResponse::NotFound { .. } => return Err(FetchError::NotFound(cid)),
            BlobResponse::Chunk {
                total_len, data, ..
            } => {
                if offset > total_len {
                    // A stale partial file longer than the blob: start over.
                    drop(file);
                    std::fs::remove_file(&partial).map_err(io(&partial))?;
                    file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&partial)
                        .map_err(io(&partial))?;
                    offset = 0;
                    continue;
                }
                total = Some(total_len);
                file.write_all(&data).map_err(io(&partial))?;
                offset += data.len() as u64;
                progress(offset, total_len);
                if data.is_empty() && offset < total_len {
                    return Err(FetchError::BadResponse {
                        cid,
                        reason: "empty chunk before the end".into(),
                    });
                }
            }
        }
    }
    file.sync_all().map_err(io(&partial))?;
    drop(file);
    match hash_file(&partial) {
        Some(actual) if actual == cid => {}
        Some(actual) => {
            let _ = std::fs::remove_file(&partial);
            return Err(FetchError::Corrupt { cid, actual });
        }
        None => {
            return Err(FetchError::Io {
                path: partial,
                source: std::io::Error::other("unreadable"),
            })
        }
    }
    // A finished, verified download moved into place (resumable, so not hearth_proto::fsutil).
    std::fs::rename(&partial, dest).map_err(io(dest))?;
    Ok(())
}

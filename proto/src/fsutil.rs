//! The one atomic file writer every crate uses: a temp file beside the target, filled, fsynced,
//! renamed (or hard-linked, to never replace a file) into place, then the directory fsynced.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How [`write_atomic_with`] writes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtomicWrite {
    /// fsync the file before it is moved into place and its directory after; without it the file
    /// survives a killed process, not a power cut.
    pub durable: bool,
    /// Create the file with mode 0600 on Unix (keys and identities).
    pub private: bool,
    /// Never replace an existing file: fail with [`std::io::ErrorKind::AlreadyExists`].
    pub no_clobber: bool,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        Self {
            durable: true,
            private: false,
            no_clobber: false,
        }
    }
}

/// Writes `bytes` to `path` atomically and durably, creating its directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, AtomicWrite::default(), |f| f.write_all(bytes))
}

/// Writes the file at `path` atomically: `fill` writes a temp file in the same directory
/// (created if needed), which then takes `path`'s place whole, as `how` says. On any error the old
/// file (if any) is untouched and no temp file is left.
pub fn write_atomic_with(
    path: &Path,
    how: AtomicWrite,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    // A bare file name has an empty parent: that is the current directory.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, path)?;
    let placed = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if how.private {
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        }
        let mut f = opts.open(&tmp)?;
        fill(&mut f)?;
        if how.durable {
            f.sync_all()?;
        }
        drop(f);
        if how.no_clobber {
            // A hard link fails when `path` exists, unlike a rename; file systems without hard
            // links get a rename after an existence check.
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    if std::fs::symlink_metadata(path).is_ok() {
                        return Err(std::io::ErrorKind::AlreadyExists.into());
                    }
                    std::fs::rename(&tmp, path)
                }
                other => other,
            }
        } else {
            std::fs::rename(&tmp, path)
        }
    })();
    // Gone after a rename; the leftover after a hard link or a failure.
    let _ = std::fs::remove_file(&tmp);
    placed?;
    if how.durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `.NAME.tmp.PID.N` beside `path`: hidden, and unique within this process and across processes.
fn temp_path(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(
        ".{}.tmp.{}.{n}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-fsutil-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replaces_and_creates_the_directory() {
        let d = scratch("write");
        let p = d.join("sub").join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(&d.join("sub")), ["f.json"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_leaves_no_temp_file() {
        let d = scratch("fail");
        let p = d.join("state.json");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, AtomicWrite::default(), |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("injected"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "injected");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(&d), ["state.json"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn private_no_clobber_files_are_0600_and_never_replaced() {
        let d = scratch("key");
        let p = d.join("k");
        let how = AtomicWrite {
            private: true,
            no_clobber: true,
            ..AtomicWrite::default()
        };
        write_atomic_with(&p, how, |f| f.write_all(b"first")).unwrap();
        let err = write_atomic_with(&p, how, |f| f.write_all(b"second")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(names(&d), ["k"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}

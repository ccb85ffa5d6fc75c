//! Where the worker keeps its identity (data directory) and its downloads (cache directory).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hearth_proto::fsutil::{write_atomic_with, AtomicWrite};

/// Platform data directory for Hearth (`~/.local/share/hearth` on Linux), `./.hearth` without one.
pub fn data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("hearth"))
        .unwrap_or_else(|| PathBuf::from(".hearth"))
}

/// Default cache directory: `$HEARTH_CACHE`, else the platform cache directory
/// (`~/.cache/hearth` on Linux), where `deploy/fetch-model.sh` also puts the model.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("HEARTH_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("hearth")))
        .unwrap_or_else(|| PathBuf::from(".hearth-cache"))
}

/// The identity key file: `identity` if given; else `CACHE/identity.key` when a cache directory
/// was named (so several workers on one machine keep separate identities); else
/// `DATA/identity.key`. A key left by older versions in the default cache directory is moved
/// over the first time, so the volunteer keeps their peer id and credit.
pub fn identity_path(identity: Option<PathBuf>, cache_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = identity {
        return Ok(p);
    }
    if let Some(c) = cache_dir {
        return Ok(c.join("identity.key"));
    }
    let path = data_dir().join("identity.key");
    let legacy = default_cache_dir().join("identity.key");
    if !path.exists() && legacy.is_file() {
        adopt_legacy(&legacy, &path)
            .with_context(|| format!("moving {} to {}", legacy.display(), path.display()))?;
    }
    Ok(path)
}

/// Copy `from` to `to` atomically with mode 0600.
fn adopt_legacy(from: &Path, to: &Path) -> Result<()> {
    let mut src = std::fs::File::open(from)?;
    let how = AtomicWrite {
        private: true,
        ..AtomicWrite::default()
    };
    write_atomic_with(to, how, |f| std::io::copy(&mut src, f).map(|_| ()))?;
    tracing::info!("identity moved to {}", to.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win() {
        let p = identity_path(Some("/x/key".into()), Some(Path::new("/c"))).unwrap();
        assert_eq!(p, PathBuf::from("/x/key"));
        let p = identity_path(None, Some(Path::new("/c"))).unwrap();
        assert_eq!(p, PathBuf::from("/c/identity.key"));
    }

    #[test]
    fn legacy_key_is_adopted_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("old.key");
        std::fs::write(&from, b"key bytes").unwrap();
        let to = dir.path().join("data/hearth/identity.key");
        adopt_legacy(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"key bytes");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&to).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

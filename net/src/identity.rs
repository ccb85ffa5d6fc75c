//! The node's persistent ed25519 identity: one key file per machine, mode 0600.

use std::io::Write;
use std::path::Path;

use hearth_proto::fsutil::{write_atomic_with, AtomicWrite};
use libp2p::identity::Keypair;

use crate::error::NetError;

/// Largest key file read (a protobuf-encoded ed25519 keypair is 68 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// Load the keypair at `path`, or create one there (mode 0600, written atomically) if absent.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, NetError> {
    let fail = |source: crate::error::BoxError| NetError::Identity {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.len() > MAX_KEY_FILE {
                return Err(fail(format!("{} bytes, not a key file", meta.len()).into()));
            }
            let bytes = std::fs::read(path).map_err(|e| fail(e.into()))?;
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| fail(format!("not a libp2p key: {e}").into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| fail(e.into()))?;
            let how = AtomicWrite {
                private: true,
                ..AtomicWrite::default()
            };
            write_atomic_with(path, how, |f| f.write_all(&bytes)).map_err(|e| fail(e.into()))?;
            Ok(key)
        }
        Err(e) => Err(fail(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("hearth-id-{}", std::process::id()));
        let path = dir.join("identity.key");
        let _ = std::fs::remove_file(&path);
        let a = load_or_create_identity(&path).unwrap();
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load_or_create_identity(&path).is_err());
        // An I/O failure keeps its io::Error as the source (a directory is not a key file).
        let err = load_or_create_identity(&dir).unwrap_err();
        let source =
            std::error::Error::source(&err).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert!(source.is_some(), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

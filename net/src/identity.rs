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
    let cfg = |what: String| NetError::Config(format!("identity {}: {what}", path.display()));
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.len() > MAX_KEY_FILE {
                return Err(cfg(format!("{} bytes, not a key file", meta.len())));
            }
            let bytes = std::fs::read(path).map_err(|e| cfg(e.to_string()))?;
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| cfg(format!("not a libp2p key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| cfg(e.to_string()))?;
            let how = AtomicWrite {
                private: true,
                ..AtomicWrite::default()
            };
            write_atomic_with(path, how, |f| f.write_all(&bytes))
                .map_err(|e| cfg(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(cfg(e.to_string())),
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}

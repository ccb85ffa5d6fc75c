//! The pre-shared key of a private swarm (libp2p pnet): the IPFS `swarm.key` file format.
//!
//! A key file is either the IPFS/libp2p format
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```
//!
//! or one bare line of 64 hex digits. Blank lines, surrounding whitespace and CRLF line ends are
//! tolerated. The key itself is never printed: [`SwarmKey::fingerprint`] names it in logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use hearth_proto::fsutil::{write_atomic_with, AtomicWrite};
use rand::TryRngCore;

/// Largest swarm key file read (the IPFS format is 95 bytes).
pub const MAX_SWARM_KEY_FILE: u64 = 1024;
/// First line of the IPFS/libp2p swarm key format.
pub const SWARM_KEY_HEADER: &str = "/key/swarm/psk/1.0.0/";
/// Encoding line of the IPFS/libp2p swarm key format (the only encoding read).
pub const SWARM_KEY_ENCODING: &str = "/base16/";

/// Why a swarm key could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum SwarmKeyError {
    /// The file could not be read or written.
    #[error("swarm key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SWARM_KEY_FILE`].
    #[error("swarm key {path}: {size} bytes, not a key file (at most {MAX_SWARM_KEY_FILE})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The file is not UTF-8 text.
    #[error("swarm key {path}: not text (a key file is 64 hex digits, optionally after the IPFS header)")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The text has no key line.
    #[error("no key: expected 64 hex digits, optionally after the {SWARM_KEY_HEADER} and {SWARM_KEY_ENCODING} lines")]
    Empty,
    /// The first line starts like a header but is not the supported one.
    #[error("unsupported header {found:?}: expected {SWARM_KEY_HEADER:?}")]
    Header {
        /// The first line.
        found: String,
    },
    /// The encoding line is not `/base16/`.
    #[error("unsupported key encoding {found:?}: only {SWARM_KEY_ENCODING:?} is read")]
    Encoding {
        /// The encoding line.
        found: String,
    },
    /// The lines do not form either format (missing or extra lines).
    #[error("expected {expected} non-empty lines, found {found}")]
    Lines {
        /// Lines the format has.
        expected: usize,
        /// Non-empty lines found.
        found: usize,
    },
    /// The key line does not have 64 hex digits.
    #[error("the key has {found} characters, expected 64 hex digits (32 bytes)")]
    Length {
        /// Characters found on the key line.
        found: usize,
    },
    /// The key line holds a character that is not a hex digit.
    #[error("character {found:?} at position {position} of the key is not a hex digit")]
    NotHex {
        /// The offending character.
        found: char,
        /// Its position (0-based) on the key line.
        position: usize,
    },
    /// A parse error, with the file it came from.
    #[error("swarm key {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with its text.
        #[source]
        source: Box<SwarmKeyError>,
    },
    /// The generator refuses to overwrite a key (peers holding it would be locked out).
    #[error("swarm key {path} already exists; not overwriting it (remove it first to start a new private swarm)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("no randomness for a new swarm key: {0}")]
    Random(String),
}

/// A 32-byte pre-shared key; its `Debug` shows only the fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; 32]);

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

impl SwarmKey {
    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SwarmKey(bytes)
    }

    /// The raw key, as [`crate::NetConfig::psk`] takes it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A new random key from the operating system's random source.
    pub fn generate() -> Result<Self, SwarmKeyError> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| SwarmKeyError::Random(e.to_string()))?;
        Ok(SwarmKey(key))
    }

    /// First 8 hex digits of the key's blake3 hash: names the key in logs without revealing it.
    pub fn fingerprint(&self) -> String {
        blake3::hash(&self.0).to_hex()[..8].to_string()
    }

    /// Parses the IPFS format or a bare hex line (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, SwarmKeyError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let key = match lines.as_slice() {
            [] => return Err(SwarmKeyError::Empty),
            [header, rest @ ..] if header.starts_with('/') => {
                if *header != SWARM_KEY_HEADER {
                    return Err(SwarmKeyError::Header {
                        found: clip(header),
                    });
                }
                match rest {
                    [encoding, key] if *encoding == SWARM_KEY_ENCODING => *key,
                    [encoding, ..] if *encoding != SWARM_KEY_ENCODING => {
                        return Err(SwarmKeyError::Encoding {
                            found: clip(encoding),
                        })
                    }
                    _ => {
                        return Err(SwarmKeyError::Lines {
                            expected: 3,
                            found: lines.len(),
                        })
                    }
                }
            }
            [key] => *key,
            _ => {
                return Err(SwarmKeyError::Lines {
                    expected: 1,
                    found: lines.len(),
                })
            }
        };
        decode_hex(key).map(SwarmKey)
    }

    /// Reads and parses a key file (at most [`MAX_SWARM_KEY_FILE`] bytes).
    pub fn load(path: &Path) -> Result<Self, SwarmKeyError> {
        let io = |source| SwarmKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_SWARM_KEY_FILE {
            return Err(SwarmKeyError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let mut bytes = Vec::new();
        {
            use std::io::Read;
            let file = std::fs::File::open(path).map_err(io)?;
            // The file may have grown since the metadata call: never read more than the cap.
            file.take(MAX_SWARM_KEY_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(io)?;
        }
        if bytes.len() as u64 > MAX_SWARM_KEY_FILE {
            return Err(SwarmKeyError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| SwarmKeyError::NotText {
            path: path.to_path_buf(),
        })?;
        Self::parse(&text).map_err(|e| SwarmKeyError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// The key in the IPFS format, newline-terminated.
    pub fn to_file_text(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n{hex}\n")
    }

    /// Writes the key to a new file at `path` in the IPFS format, mode 0600, atomically (see
    /// [`hearth_proto::fsutil`]). Refuses to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<(), SwarmKeyError> {
        let io = |source| SwarmKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(SwarmKeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        let how = AtomicWrite {
            private: true,
            no_clobber: true,
            ..AtomicWrite::default()
        };
        let written = write_atomic_with(path, how, |f| f.write_all(self.to_file_text().as_bytes()));
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(SwarmKeyError::Exists {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(io(e)),
        }
    }
}

/// At most 64 characters of untrusted text, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// 64 hex digits (either case) to 32 bytes.
fn decode_hex(s: &str) -> Result<[u8; 32], SwarmKeyError> {
    let digits: Vec<char> = s.chars().collect();
    if digits.len() != 64 {
        return Err(SwarmKeyError::Length {
            found: digits.len(),
        });
    }
    let mut out = [0u8; 32];
    for (i, (pair, byte)) in digits.chunks_exact(2).zip(out.iter_mut()).enumerate() {
        let mut value = 0u8;
        for (j, c) in pair.iter().enumerate() {
            let nibble = c.to_digit(16).ok_or(SwarmKeyError::NotHex {
                found: *c,
                position: 2 * i + j,
            })?;
            value = (value << 4) | nibble as u8;
        }
        *byte = value;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff0123456789abcdefFEDCBA9876543210";

    fn expected() -> [u8; 32] {
        let mut k = [0u8; 32];
        let head = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let tail = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        k[..16].copy_from_slice(&head);
        k[16..].copy_from_slice(&tail);
        k
    }

    #[test]
    fn parses_both_formats_with_whitespace_and_crlf() {
        for text in [
            format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n{HEX}\n"),
            format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n{HEX}"),
            format!("{SWARM_KEY_HEADER}\r\n{SWARM_KEY_ENCODING}\r\n{HEX}\r\n"),
            format!("\n  {SWARM_KEY_HEADER}  \n\n\t{SWARM_KEY_ENCODING}\n {HEX} \n\n"),
            HEX.to_string(),
            format!("{HEX}\n"),
            format!("  {HEX}\r\n"),
            format!("\n\n{HEX}\n\n"),
        ] {
            let key = SwarmKey::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(key.to_bytes(), expected(), "{text:?}");
        }
    }

    #[test]
    fn every_malformed_case_is_a_clear_error() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no key"),
            ("\n \r\n\t\n".into(), "no key"),
            (HEX[..63].into(), "has 63 characters"),
            (format!("{HEX}0"), "has 65 characters"),
            (format!("{}0", &HEX[..62]), "has 63 characters"),
            (format!("{}g1", &HEX[..62]), "'g' at position 62"),
            (format!("{}é", &HEX[..63]), "'é' at position 63"),
            (format!("0x{}", &HEX[..62]), "'x' at position 1"),
            (
                format!("{} {}", &HEX[..32], &HEX[32..]),
                "has 65 characters",
            ),
            (
                format!("{HEX}\n{HEX}"),
                "expected 1 non-empty lines, found 2",
            ),
            (
                format!("/key/swarm/psk/2.0.0/\n{SWARM_KEY_ENCODING}\n{HEX}"),
                "unsupported header",
            ),
            (
                format!("{SWARM_KEY_HEADER}\n/base64/\nABCD"),
                "unsupported key encoding \"/base64/\"",
            ),
            (
                format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}"),
                "expected 3 non-empty lines, found 2",
            ),
            (
                SWARM_KEY_HEADER.into(),
                "expected 3 non-empty lines, found 1",
            ),
            (
                format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n{HEX}\n{HEX}"),
                "expected 3 non-empty lines, found 4",
            ),
            (
                format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n{}", &HEX[..10]),
                "has 10 characters",
            ),
        ];
        for (text, want) in cases {
            let err = SwarmKey::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn generated_keys_round_trip_through_a_0600_file_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("swarm.key");
        let key = SwarmKey::generate().unwrap();
        assert_ne!(key, SwarmKey::generate().unwrap());
        key.write_new(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
            "{text}"
        );
        assert_eq!(text.len(), 21 + 1 + 8 + 1 + 64 + 1);
        assert_eq!(SwarmKey::load(&path).unwrap(), key);
        assert_eq!(SwarmKey::parse(&key.to_file_text()).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let other = SwarmKey::generate().unwrap();
        let err = other.write_new(&path).unwrap_err();
        assert!(matches!(err, SwarmKeyError::Exists { .. }), "{err}");
        assert_eq!(SwarmKey::load(&path).unwrap(), key, "the old key survives");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("swarm.key")]);
    }

    #[test]
    fn load_rejects_missing_large_and_binary_files_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.key");
        let err = SwarmKey::load(&missing).unwrap_err();
        assert!(matches!(err, SwarmKeyError::Io { .. }), "{err}");
        assert!(err.to_string().contains("absent.key"), "{err}");

        let big = dir.path().join("big.key");
        std::fs::write(&big, format!("{HEX}\n{}", " ".repeat(1024))).unwrap();
        let err = SwarmKey::load(&big).unwrap_err();
        assert!(
            matches!(err, SwarmKeyError::TooLarge { size: 1089, .. }),
            "{err}"
        );

        let binary = dir.path().join("bin.key");
        std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
        let err = SwarmKey::load(&binary).unwrap_err();
        assert!(matches!(err, SwarmKeyError::NotText { .. }), "{err}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = SwarmKey::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.key") && err.contains("has 9 characters"),
            "{err}"
        );

        // A directory is unreadable as a key, not a panic.
        assert!(SwarmKey::load(dir.path()).is_err());
    }

    #[test]
    fn fingerprint_names_the_key_without_revealing_it() {
        let key = SwarmKey::from_bytes(expected());
        let fp = key.fingerprint();
        assert_eq!(fp.len(), 8);
        assert_eq!(fp, blake3::hash(&expected()).to_hex()[..8].to_string());
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        let debug = format!("{key:?}");
        assert_eq!(debug, format!("SwarmKey({fp})"));
        assert!(!debug.to_lowercase().contains(&HEX.to_lowercase()[..16]));
        assert_ne!(SwarmKey::from_bytes([1; 32]).fingerprint(), fp);
    }
}

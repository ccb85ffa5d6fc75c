//! Content ids: the blake3 hash of a byte string, printed as 64 hex characters.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a content id in bytes.
pub const CID_LEN: usize = 32;

/// Why a string or byte slice is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// The text is not 64 hexadecimal characters.
    #[error("content id {0:?} is not 64 hex characters")]
    BadHex(String),
    /// The byte slice is not 32 bytes long.
    #[error("content id has {0} bytes, expected 32")]
    BadLength(usize),
}

/// Blake3 hash of some bytes; names blobs, shards, checkpoints and deltas.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ContentId(pub [u8; CID_LEN]);

impl ContentId {
    /// Hashes `bytes` with blake3.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Finalizes a running blake3 hasher into a content id.
    pub fn from_hasher(hasher: &blake3::Hasher) -> Self {
        Self(*hasher.finalize().as_bytes())
    }

    /// Builds a content id from a 32-byte slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CidError> {
        <[u8; CID_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| CidError::BadLength(bytes.len()))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; CID_LEN] {
        &self.0
    }

    /// Lower-case hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time check that `bytes` hash to this id.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }

    /// Short form (first 12 hex characters) for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.to_hex())
    }
}

impl FromStr for ContentId {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; CID_LEN];
        if s.len() != 2 * CID_LEN || hex::decode_to_slice(s, &mut out).is_err() {
            let mut shown = s.to_string();
            shown.truncate(80);
            return Err(CidError::BadHex(shown));
        }
        Ok(Self(out))
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl Serialize for ContentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ContentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            struct HexVisitor;
            impl Visitor<'_> for HexVisitor {
                type Value = ContentId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("64 hex characters")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<ContentId, E> {
                    v.parse().map_err(E::custom)
                }
            }
            d.deserialize_str(HexVisitor)
        } else {
            <[u8; CID_LEN]>::deserialize(d).map(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_hex_round_trip() {
        // blake3("") from the reference test vectors.
        let id = ContentId::of(b"");
        assert_eq!(
            id.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(id.to_string().parse::<ContentId>().unwrap(), id);
        assert_eq!(id.short(), "af1349b9f5f9");
        assert!(id.matches(b""));
        assert!(!id.matches(b"x"));
    }

    #[test]
    fn hasher_equals_one_shot() {
        let mut h = blake3::Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(ContentId::from_hasher(&h), ContentId::of(b"hello world"));
    }

    #[test]
    fn bad_text_is_rejected() {
        assert!(matches!(
            "abc".parse::<ContentId>(),
            Err(CidError::BadHex(_))
        ));
        let not_hex = "g".repeat(64);
        assert!(not_hex.parse::<ContentId>().is_err());
        assert_eq!(
            ContentId::from_slice(&[0; 31]),
            Err(CidError::BadLength(31))
        );
    }

    #[test]
    fn serde_is_hex_in_json_and_32_bytes_in_bincode() {
        let id = ContentId::of(b"abc");
        let json = serde_json_like(&id);
        assert_eq!(json, format!("\"{}\"", id));
        let bin = crate::decode::encode(&id);
        assert_eq!(bin.len(), 32);
        let back: ContentId = crate::decode::decode_bounded(&bin, 32).unwrap();
        assert_eq!(back, id);
    }

    /// TOML cannot hold a bare string, so wrap it in a table and read the value back.
    fn serde_json_like(id: &ContentId) -> String {
        #[derive(Serialize, Deserialize)]
        struct W {
            id: ContentId,
        }
        let text = toml::to_string(&W { id: *id }).unwrap();
        let back: W = toml::from_str(&text).unwrap();
        assert_eq!(back.id, *id);
        text.trim().trim_start_matches("id = ").to_string()
    }
}

//! Canonical bincode encoding and bounded decoding of untrusted bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Hard upper bound on any single decode, whatever limit a caller asks for (64 MiB).
pub const MAX_DECODE_BYTES: usize = 64 << 20;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the caller's limit.
    #[error("input of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit in force.
        limit: usize,
    },
    /// bincode rejected the bytes (bad tag, short input, a length over the limit, ...).
    #[error("malformed input: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    /// The value ended before the input did.
    #[error("{trailing} trailing bytes after a {consumed}-byte value")]
    TrailingBytes {
        /// Bytes the value used.
        consumed: usize,
        /// Bytes left over.
        trailing: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes a value with bincode's standard configuration (varint integers, little endian).
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    // Encoding into a Vec only fails on serde's custom errors, which no type in this crate emits;
    // an empty vector then fails to decode on the other side rather than panicking here.
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

/// Decodes untrusted bytes: rejects inputs over `limit` (capped at [`MAX_DECODE_BYTES`]),
/// caps every length prefix by the same limit and requires the whole input to be consumed.
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    let limit = limit.min(MAX_DECODE_BYTES);
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, consumed) = bincode::serde::decode_from_slice(bytes, config())?;
    if consumed != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            consumed,
            trailing: bytes.len() - consumed,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// bincode varint for a u64 above u32::MAX: marker 253 then 8 little-endian bytes.
    fn huge_len_prefix() -> Vec<u8> {
        let mut b = vec![253u8];
        b.extend_from_slice(&(1u64 << 60).to_le_bytes());
        b
    }

    #[test]
    fn round_trip_and_exact_bytes() {
        let v = (7u32, String::from("hi"), vec![1u8, 2, 3]);
        let b = encode(&v);
        assert_eq!(b, vec![7, 2, b'h', b'i', 3, 1, 2, 3]);
        let back: (u32, String, Vec<u8>) = decode_bounded(&b, 64).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn input_over_limit_is_rejected_before_parsing() {
        let b = encode(&vec![0u8; 100]);
        let err = decode_bounded::<Vec<u8>>(&b, 50).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    len: 101,
                    limit: 50
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = encode(&5u32);
        b.push(0);
        let err = decode_bounded::<u32>(&b, 64).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::TrailingBytes {
                    consumed: 1,
                    trailing: 1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn length_prefix_of_2_pow_60_fails_fast_without_allocating() {
        // An allocation of 2^60 elements would abort the test process, so passing proves none happened.
        let start = Instant::now();
        let b = huge_len_prefix();
        assert!(decode_bounded::<Vec<u8>>(&b, 1 << 20).is_err());
        assert!(decode_bounded::<Vec<f32>>(&b, 1 << 20).is_err());
        assert!(decode_bounded::<String>(&b, 1 << 20).is_err());
        assert!(decode_bounded::<Vec<String>>(&b, 1 << 20).is_err());
        assert!(decode_bounded::<Vec<Vec<u64>>>(&b, 1 << 20).is_err());
        let mut nested = vec![1u8];
        nested.extend(huge_len_prefix());
        assert!(decode_bounded::<Vec<Vec<u8>>>(&nested, 1 << 20).is_err());
        assert!(
            start.elapsed().as_millis() < 1000,
            "took {:?}",
            start.elapsed()
        );
    }
}

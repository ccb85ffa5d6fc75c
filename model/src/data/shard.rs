//! Content-addressed training shards and their compact binary form.
//!
//! Layout (all integers little-endian), version 1:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `HSHD` |
//! | 1 | version = 1 |
//! | 1 | token width w ∈ {1, 2, 4}: the smallest that holds the largest token |
//! | 2 | reserved, zero |
//! | 4 | seq_len (2..=2^20) |
//! | 4 | sequence count n (≥ 1) |
//! | n·seq_len·w | tokens, row-major |
//! | ⌈n·seq_len/8⌉ | loss mask, bit i of the stream at byte i/8, bit i%8 (LSB first); padding bits zero |
//!
//! The encoding is canonical (one valid byte string per shard), so the blake3 of the bytes is a
//! content id: decoding then re-encoding gives the same bytes.

use crate::Sequence;

use super::error::ShardFormatError;
use super::pack::MAX_SEQ_LEN;
use super::DataError;

/// The first four bytes of every shard.
pub const MAGIC: [u8; 4] = *b"HSHD";
/// The format version written by [`Shard::to_bytes`].
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;

/// A 32-byte blake3 content id.
pub type Cid = [u8; 32];

/// A non-empty set of sequences of one length: the unit a worker leases and trains on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    seq_len: usize,
    sequences: Vec<Sequence>,
}

impl Shard {
    /// Builds a shard, checking that there is at least one sequence and that every token and mask
    /// has exactly `seq_len` entries.
    pub fn new(seq_len: usize, sequences: Vec<Sequence>) -> Result<Self, DataError> {
        super::pack::check_seq_len(seq_len)?;
        if sequences.is_empty() {
            return Err(DataError::Shard(ShardFormatError::Empty));
        }
        if u32::try_from(sequences.len()).is_err() {
            return Err(DataError::InvalidParameter {
                name: "sequences",
                value: sequences.len().to_string(),
                reason: "more than u32::MAX sequences in one shard",
            });
        }
        for (index, s) in sequences.iter().enumerate() {
            if s.tokens.len() != seq_len || s.loss_mask.len() != seq_len {
                return Err(DataError::SequenceLength {
                    index,
                    tokens: s.tokens.len(),
                    mask: s.loss_mask.len(),
                    seq_len,
                });
            }
        }
        Ok(Self { seq_len, sequences })
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The sequences.
    pub fn sequences(&self) -> &[Sequence] {
        &self.sequences
    }

    /// Takes the sequences out.
    pub fn into_sequences(self) -> Vec<Sequence> {
        self.sequences
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Always false: a shard holds at least one sequence.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The largest token id in the shard.
    pub fn max_token(&self) -> u32 {
        self.sequences
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .max()
            .unwrap_or(0)
    }

    /// Number of scored positions (see [`Sequence::target_count`]).
    pub fn target_count(&self) -> usize {
        self.sequences.iter().map(Sequence::target_count).sum()
    }

    /// The canonical binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let width = token_width(self.max_token());
        let total = self.seq_len * self.sequences.len();
        let mut out =
            Vec::with_capacity(HEADER_LEN + total * usize::from(width) + total.div_ceil(8));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(width);
        out.extend_from_slice(&[0, 0]);
        // `new` bounds both to u32.
        out.extend_from_slice(&(self.seq_len as u32).to_le_bytes());
        out.extend_from_slice(&(self.sequences.len() as u32).to_le_bytes());
        for t in self.sequences.iter().flat_map(|s| s.tokens.iter()) {
            match width {
                1 => out.push(*t as u8),
                2 => out.extend_from_slice(&(*t as u16).to_le_bytes()),
                _ => out.extend_from_slice(&t.to_le_bytes()),
            }
        }
        let mut byte = 0u8;
        let mut bit = 0u32;
        for m in self.sequences.iter().flat_map(|s| s.loss_mask.iter()) {
            if *m {
                byte |= 1 << bit;
            }
            bit += 1;
            if bit == 8 {
                out.push(byte);
                byte = 0;
                bit = 0;
            }
        }
        if bit > 0 {
            out.push(byte);
        }
        out
    }

    /// Decodes and validates shard bytes: at most `max_bytes` long, exact length, known version,
    /// canonical token width and zero padding bits. Never panics; allocates at most a small
    /// multiple of the input length.
    pub fn from_bytes(bytes: &[u8], max_bytes: usize) -> Result<Self, DataError> {
        Ok(decode(bytes, max_bytes)?)
    }

    /// blake3 of [`Shard::to_bytes`].
    pub fn cid(&self) -> Cid {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// [`Shard::cid`] as lowercase hex.
    pub fn cid_hex(&self) -> String {
        blake3::hash(&self.to_bytes()).to_hex().to_string()
    }
}

/// The smallest width in bytes (1, 2 or 4) that holds `max_token`.
fn token_width(max_token: u32) -> u8 {
    if max_token <= u32::from(u8::MAX) {
        1
    } else if max_token <= u32::from(u16::MAX) {
        2
    } else {
        4
    }
}

fn decode(bytes: &[u8], max_bytes: usize) -> Result<Shard, ShardFormatError> {
    use ShardFormatError as E;
    if bytes.len() > max_bytes {
        return Err(E::TooLarge {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    let (header, body) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(E::TruncatedHeader {
            len: bytes.len(),
            header: HEADER_LEN,
        })?;
    let [m0, m1, m2, m3, version, width, r0, r1, s0, s1, s2, s3, n0, n1, n2, n3] = *header;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(E::BadMagic {
            found: [m0, m1, m2, m3],
        });
    }
    if version != VERSION {
        return Err(E::UnsupportedVersion { version });
    }
    if ![1, 2, 4].contains(&width) {
        return Err(E::BadTokenWidth { width });
    }
    if [r0, r1] != [0, 0] {
        return Err(E::Reserved { found: [r0, r1] });
    }
    let seq_len = u32::from_le_bytes([s0, s1, s2, s3]);
    let max_seq = MAX_SEQ_LEN as u32;
    if !(2..=max_seq).contains(&seq_len) {
        return Err(E::BadSeqLen {
            seq_len,
            max: max_seq,
        });
    }
    let count = u32::from_le_bytes([n0, n1, n2, n3]);
    if count == 0 {
        return Err(E::Empty);
    }
    // u64 arithmetic cannot overflow: 2^32 · 2^20 · 4 < 2^64.
    let total = u64::from(seq_len) * u64::from(count);
    let expected = HEADER_LEN as u64 + total * u64::from(width) + total.div_ceil(8);
    if bytes.len() as u64 != expected {
        return Err(E::LengthMismatch {
            len: bytes.len(),
            expected,
        });
    }
    // From here every size is bounded by the (checked) input length.
    let seq_len = seq_len as usize;
    let total = total as usize;
    let (token_bytes, mask_bytes) =
        body.split_at_checked(total * usize::from(width))
            .ok_or(E::LengthMismatch {
                len: bytes.len(),
                expected,
            })?;
    let tokens: Vec<u32> = match width {
        1 => token_bytes.iter().map(|b| u32::from(*b)).collect(),
        2 => token_bytes
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| u32::from(u16::from_le_bytes(*c)))
            .collect(),
        _ => token_bytes
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| u32::from_le_bytes(*c))
            .collect(),
    };
    let max_token = tokens.iter().copied().max().unwrap_or(0);
    if token_width(max_token) != width {
        return Err(E::NonCanonicalWidth { width, max_token });
    }
    let used_bits = total % 8;
    if let Some(last) = mask_bytes.last().copied() {
        if used_bits != 0 && last >> used_bits != 0 {
            return Err(E::MaskPadding { last });
        }
    }
    let mut sequences = Vec::with_capacity(count as usize);
    for (row, chunk) in tokens.chunks_exact(seq_len).enumerate() {
        let start = row * seq_len;
        let loss_mask = (start..start + seq_len)
            .map(|i| mask_bytes.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1))
            .collect();
        sequences.push(Sequence {
            tokens: chunk.to_vec(),
            loss_mask,
        });
    }
    Ok(Shard { seq_len, sequences })
}

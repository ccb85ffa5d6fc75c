//! Little-endian bit packing for codec payloads.

/// Why a bit stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitsError {
    /// A read went past the end of the stream.
    #[error("bit stream ended: wanted {wanted} bits at bit {at}, stream has {len} bits")]
    Truncated {
        /// Bits requested.
        wanted: u32,
        /// Bit position of the read.
        at: usize,
        /// Stream length in bits.
        len: usize,
    },
    /// Padding bits after the last field are not zero.
    #[error("non-zero padding bits at the end of the stream")]
    DirtyPadding,
    /// Bytes left over after the last field.
    #[error("{0} unread bytes at the end of the stream")]
    Trailing(usize),
}

/// Bits needed to write any index below `n` (0 for n <= 1).
pub fn index_bits(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

/// Appends fields of up to 32 bits, least significant bit first.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    /// An empty writer with room for `bits` bits.
    pub fn with_capacity_bits(bits: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bits.div_ceil(8)),
            acc: 0,
            filled: 0,
        }
    }

    /// Writes the low `width` bits of `value` (`width` <= 32).
    pub fn write(&mut self, value: u32, width: u32) {
        debug_assert!(width <= 32);
        if width == 0 {
            return;
        }
        let mask = if width == 32 {
            u32::MAX
        } else {
            (1u32 << width) - 1
        };
        self.acc |= u64::from(value & mask) << self.filled;
        self.filled += width;
        while self.filled >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    /// Pads with zero bits to a byte boundary and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

/// Reads fields written by [`BitWriter`], with bounds checks on every read.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at bit 0 of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Reads `width` bits (`width` <= 32).
    pub fn read(&mut self, width: u32) -> Result<u32, BitsError> {
        debug_assert!(width <= 32);
        let len = self.bytes.len().saturating_mul(8);
        let end = self.pos.saturating_add(width as usize);
        if end > len {
            return Err(BitsError::Truncated {
                wanted: width,
                at: self.pos,
                len,
            });
        }
        let mut out: u64 = 0;
        let mut got = 0u32;
        while got < width {
            let byte = self.pos / 8;
            let shift = (self.pos % 8) as u32;
            let take = (8 - shift).min(width - got);
            let b = u64::from(self.bytes.get(byte).copied().unwrap_or(0));
            out |= ((b >> shift) & ((1u64 << take) - 1)) << got;
            got += take;
            self.pos += take as usize;
        }
        Ok(out as u32)
    }

    /// Reads `n` whole bytes when the reader is at a byte boundary (`None`, nothing read, when it
    /// is not).
    pub fn read_aligned_bytes(&mut self, n: usize) -> Result<Option<&'a [u8]>, BitsError> {
        if !self.pos.is_multiple_of(8) {
            return Ok(None);
        }
        let start = self.pos / 8;
        match self.bytes.get(start..start.saturating_add(n)) {
            Some(b) => {
                self.pos += n * 8;
                Ok(Some(b))
            }
            None => Err(BitsError::Truncated {
                wanted: u32::try_from(n.saturating_mul(8)).unwrap_or(u32::MAX),
                at: self.pos,
                len: self.bytes.len().saturating_mul(8),
            }),
        }
    }

    /// Reads a little-endian f32 stored as 32 bits.
    pub fn read_f32(&mut self) -> Result<f32, BitsError> {
        self.read(32).map(f32::from_bits)
    }

    /// Checks that only zero padding (less than one byte) remains.
    pub fn finish(self) -> Result<(), BitsError> {
        let used_bytes = self.pos.div_ceil(8);
        if used_bytes < self.bytes.len() {
            return Err(BitsError::Trailing(self.bytes.len() - used_bytes));
        }
        let rem = self.pos % 8;
        if rem != 0 {
            let last = self.bytes.get(used_bytes - 1).copied().unwrap_or(0);
            if last >> rem != 0 {
                return Err(BitsError::DirtyPadding);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_bits_values() {
        assert_eq!(index_bits(0), 0);
        assert_eq!(index_bits(1), 0);
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(4096), 12);
        assert_eq!(index_bits(4097), 13);
        assert_eq!(index_bits(512), 9);
    }

    #[test]
    fn mixed_widths_round_trip() {
        let fields: Vec<(u32, u32)> = (0..200u32)
            .map(|i| {
                let w = i % 33;
                let v =
                    i.wrapping_mul(2_654_435_761) & if w == 32 { u32::MAX } else { (1 << w) - 1 };
                (v, w)
            })
            .collect();
        let mut w = BitWriter::default();
        for &(v, width) in &fields {
            w.write(v, width);
        }
        let total: u32 = fields.iter().map(|f| f.1).sum();
        let bytes = w.finish();
        assert_eq!(bytes.len(), (total as usize).div_ceil(8));
        let mut r = BitReader::new(&bytes);
        for &(v, width) in &fields {
            assert_eq!(r.read(width).unwrap(), v);
        }
        r.finish().unwrap();
    }

    #[test]
    fn truncation_padding_and_trailing_are_errors() {
        let mut w = BitWriter::default();
        w.write(0b101, 3);
        let bytes = w.finish();
        assert_eq!(bytes, vec![0b101]);
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read(3).unwrap(), 5);
        assert!(matches!(
            r.read(6),
            Err(BitsError::Truncated {
                wanted: 6,
                at: 3,
                len: 8
            })
        ));
        let mut r = BitReader::new(&[0b1000_0101]);
        r.read(3).unwrap();
        assert_eq!(r.finish(), Err(BitsError::DirtyPadding));
        let mut r = BitReader::new(&[5, 0]);
        r.read(3).unwrap();
        assert_eq!(r.finish(), Err(BitsError::Trailing(1)));
    }

    #[test]
    fn aligned_bytes_are_read_whole_or_not_at_all() {
        let bytes = [1u8, 2, 3, 4];
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_aligned_bytes(2).unwrap(), Some(&bytes[..2]));
        assert_eq!(r.read(8).unwrap(), 3);
        r.read(1).unwrap();
        // Off a byte boundary: nothing is read.
        assert_eq!(r.read_aligned_bytes(1).unwrap(), None);
        assert_eq!(r.read(7).unwrap(), 2);
        // Past the end: an error, and the position stays.
        assert!(matches!(
            r.read_aligned_bytes(1),
            Err(BitsError::Truncated {
                at: 32,
                len: 32,
                ..
            })
        ));
        r.finish().unwrap();
    }
}

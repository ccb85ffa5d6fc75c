//! Adapter-delta codec: dense f32/f16/int8 and chunked top-k with b-bit values, with error feedback.
//!
//! A tensor is cut into chunks of `chunk_size` values (the last one may be shorter). Per codec:
//! - `F32`: exact, 4 bytes a value.
//! - `F16`: `half::f16`, values clamped to ±65504; relative error ≤ 2⁻¹¹ in the normal range.
//! - `Int8`: per chunk scale `s = max|x| / 127`, `q = round(x / s)` in [-127, 127]; error ≤ s/2 = max|x|/254.
//! - `TopK { density, bits }`: per chunk the `k = ceil(n·density)` values of largest magnitude are kept
//!   (ties to the lower index), the rest are sent as zero (their error is at most the smallest kept magnitude).
//!   Kept values with `bits = b ∈ {1,2,4}` are binned and each bin decodes to the mean of the
//!   values that fell in it (a one-pass Lloyd-Max quantizer: centroids, not bin midpoints; see
//!   Lloyd 1982 and the "centroid" quantizers of QSGD-style codecs). The `L = 2^b` bins are
//!   uniform over `±k·σ` (σ the RMS of the kept values; `k` = [`bin_range`]: 2 for 2 bits,
//!   2.7 for 4 bits, close to the Gaussian Lloyd-Max thresholds) with the two outer bins open,
//!   and `bits = 1` splits at zero. A chunk carries its `L` centroids as f32, so every kept value
//!   decodes to a value of its own sign within the span of its bin (error ≤ `m`, the largest kept
//!   magnitude, and ≤ the bin width `2kσ/L` for inner bins). With `bits = 8` a symmetric mid-rise
//!   uniform quantizer with `L = 256` levels `((2c + 1 − L) / L) · m`, `c ∈ [0, L)`, and one
//!   f32 scale `m` per chunk, so the error of every kept value is ≤ `m / L`.
//!   Indices are a bitmap of `n` bits or `k` fields of `ceil(log2 n)` bits, whichever is smaller,
//!   and absent when every value is kept (`density = 1`: a dense b-bit codec).
//!
//! A delta does not carry tensor names: it carries the [`layout_id`](crate::layout::layout_id)
//! of the ordered layout, and the decoder checks it, the tensor count, the total element count and
//! the exact byte length of every tensor before allocating anything.

use std::collections::BTreeMap;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::bits::{index_bits, BitWriter, BitsError};
use crate::cid::ContentId;
use crate::layout::{layout_id, TensorLayout};
use crate::tagged::tagged_enum;

mod decode;

pub use decode::decode;

/// Values per chunk used by [`encode`].
pub const DEFAULT_CHUNK_SIZE: usize = 4096;
/// Largest chunk a decoder accepts.
pub const MAX_CHUNK_SIZE: usize = 1 << 16;

tagged_enum! {
    /// How adapter deltas are compressed on the wire.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum CodecSpec {
        /// Raw little-endian f32.
        F32,
        /// IEEE half precision.
        F16,
        /// Dense int8 with one f32 scale per chunk.
        Int8,
        /// Top-k per chunk by magnitude, kept values quantized to `bits` bits.
        TopK as "topk" | "top_k" {
            /// Fraction of values kept per chunk, in (0, 1].
            density: f32,
            /// Bits per kept value: 1, 2, 4 or 8.
            bits: u8
        },
    }
}

impl Default for CodecSpec {
    /// The quality codec, dense 8-bit ([`CodecSpec::QUALITY`]): as close to f32 as f16 in table 2.
    /// SparseLoCo's 1/64 2-bit costs quality in runs of tens of rounds, and its deltas carry
    /// too few values for the coordinator's screen to judge one delta alone (docs/RELIABILITY.md).
    fn default() -> Self {
        CodecSpec::QUALITY
    }
}

impl CodecSpec {
    /// Dense 8-bit centroid codes, 4× smaller than f32 at SmolLM2 size. Quality first: on
    /// SmolLM2 after 10 rounds dense 8-bit ends where f16 and f32 do (+0.005 %) while dense 4-bit
    /// ends +1.1 % (docs/BENCHMARKS.md tables 2d and 2f); on the tiny preset both are within 0.4 %.
    pub const QUALITY: CodecSpec = CodecSpec::TopK {
        density: 1.0,
        bits: 8,
    };

    /// A top-k codec below density 1: a delta leaves most coordinates out.
    pub fn is_sparse(&self) -> bool {
        matches!(*self, CodecSpec::TopK { density, .. } if density < 1.0)
    }

    /// Values per chunk this codec uses when encoding.
    pub fn chunk_size(&self) -> usize {
        DEFAULT_CHUNK_SIZE
    }

    /// Checks parameters: density finite in (0, 1], bits in {1, 2, 4, 8}.
    pub fn validate(&self) -> Result<(), CodecError> {
        if let CodecSpec::TopK { density, bits } = *self {
            if !(density.is_finite() && density > 0.0 && density <= 1.0) {
                return Err(CodecError::BadDensity(density));
            }
            if !matches!(bits, 1 | 2 | 4 | 8) {
                return Err(CodecError::BadBits(bits));
            }
        }
        Ok(())
    }

    /// Short label such as `topk(0.015625,2b)` for logs and benchmarks.
    pub fn label(&self) -> String {
        match self {
            CodecSpec::F32 => "f32".into(),
            CodecSpec::F16 => "f16".into(),
            CodecSpec::Int8 => "int8".into(),
            CodecSpec::TopK { density, bits } => format!("topk({density},{bits}b)"),
        }
    }
}

/// Values kept in a chunk of `n` values at `density` (at least 1 for a non-empty chunk).
pub fn kept_per_chunk(n: usize, density: f32) -> usize {
    if n == 0 {
        return 0;
    }
    // The small slack keeps f32 densities such as 0.1 (stored as 0.100000001) from rounding k up.
    let k = (n as f64 * f64::from(density) - 1e-6).ceil();
    if k.is_nan() || k < 1.0 {
        1
    } else if k >= n as f64 {
        n
    } else {
        k as usize
    }
}

/// Why a delta could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// Top-k density outside (0, 1].
    #[error("top-k density {0} is not in (0, 1]")]
    BadDensity(f32),
    /// Unsupported bit width.
    #[error("top-k bit width {0} is not one of 1, 2, 4, 8")]
    BadBits(u8),
    /// Chunk size outside [1, MAX_CHUNK_SIZE].
    #[error("chunk size {0} is not in [1, {MAX_CHUNK_SIZE}]")]
    BadChunkSize(u32),
    /// The delta was built for another adapter layout.
    #[error("delta layout {got} does not match the run's adapter layout {expected}")]
    LayoutMismatch {
        /// Layout id in the delta.
        got: ContentId,
        /// Layout id of the expected tensors.
        expected: ContentId,
    },
    /// Wrong number of tensors.
    #[error("delta has {got} tensors, expected {expected}")]
    TensorCount {
        /// Tensors in the delta.
        got: usize,
        /// Tensors in the layout.
        expected: usize,
    },
    /// Wrong total element count.
    #[error("delta claims {got} values, layout has {expected}")]
    NumelMismatch {
        /// Values claimed.
        got: u64,
        /// Values in the layout.
        expected: u64,
    },
    /// The layout's sizes overflow.
    #[error("layout size overflows")]
    LayoutOverflow,
    /// A tensor's data length does not match its shape.
    #[error("tensor {name}: {len} values do not fill shape {shape:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Values given.
        len: usize,
        /// Declared shape.
        shape: Vec<usize>,
    },
    /// A tensor's payload has the wrong length for its codec and size.
    #[error("tensor {name}: payload has {got} bytes, expected {expected}")]
    PayloadLength {
        /// Tensor name.
        name: String,
        /// Bytes received.
        got: usize,
        /// Bytes the codec needs.
        expected: usize,
    },
    /// A value or scale is NaN or infinite.
    #[error("tensor {name}: non-finite value {value} at {index}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Element or chunk index.
        index: usize,
        /// Offending value.
        value: f32,
    },
    /// A chunk scale is negative.
    #[error("tensor {name}: negative scale {scale} in chunk {chunk}")]
    NegativeScale {
        /// Tensor name.
        name: String,
        /// Chunk index.
        chunk: usize,
        /// Offending scale.
        scale: f32,
    },
    /// An int8 code of -128 (outside the symmetric range).
    #[error("tensor {name}: int8 code -128 at {index}")]
    BadInt8 {
        /// Tensor name.
        name: String,
        /// Element index.
        index: usize,
    },
    /// Sparse indices out of range, repeated or unsorted, or a bitmap with the wrong count.
    #[error("tensor {name}: chunk {chunk}: {what}")]
    BadIndices {
        /// Tensor name.
        name: String,
        /// Chunk index.
        chunk: usize,
        /// Description with the offending value.
        what: String,
    },
    /// The bit stream is malformed.
    #[error("tensor {name}: {source}")]
    Bits {
        /// Tensor name.
        name: String,
        /// Bit-level error.
        source: BitsError,
    },
}

/// A dense tensor with its PEFT name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// PEFT tensor name.
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A tensor of zeros with the given layout.
    pub fn zeros(layout: &TensorLayout) -> Self {
        Self {
            name: layout.name.clone(),
            shape: layout.shape.clone(),
            data: vec![0.0; layout.numel().unwrap_or(0)],
        }
    }

    /// This tensor's name and shape.
    pub fn layout(&self) -> TensorLayout {
        TensorLayout::new(self.name.clone(), self.shape.clone())
    }

    /// Euclidean norm of the values (accumulated in f64).
    pub fn l2_norm(&self) -> f64 {
        self.data
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }
}

/// Error-feedback memory: what earlier encodings did not send, keyed by tensor name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Residual {
    map: BTreeMap<String, Vec<f32>>,
}

impl Residual {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored residual of a tensor.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.map.get(name).map(Vec::as_slice)
    }

    /// Scale every remembered value by `factor` (SparseLoCo's decayed error feedback; 1 keeps
    /// it as it is).
    pub fn decay(&mut self, factor: f32) {
        if factor == 1.0 {
            return;
        }
        for v in self.map.values_mut() {
            v.iter_mut().for_each(|x| *x *= factor);
        }
    }

    /// Number of tensors remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets everything (e.g. after a checkpoint the worker did not build on).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Euclidean norm over all remembered values.
    pub fn l2_norm(&self) -> f64 {
        self.map
            .values()
            .flatten()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }
}

/// A compressed adapter delta as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedDelta {
    /// Codec used.
    pub codec: CodecSpec,
    /// Values per chunk.
    pub chunk_size: u32,
    /// [`layout_id`] of the ordered tensors.
    pub layout: ContentId,
    /// Total number of values over all tensors.
    pub numel: u64,
    /// One payload per tensor, in layout order.
    #[serde(with = "byte_vecs")]
    pub tensors: Vec<Vec<u8>>,
}

/// Serde for a list of byte strings, each read as one block (serde's `Vec<u8>` visitor takes one
/// byte per call: a quarter of the coordinator's decode time at SmolLM2 size). The same bytes on
/// the wire as the derived encoding: bincode writes a byte string as its length and the bytes.
mod byte_vecs {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<ByteBuf>::deserialize(d)?;
        Ok(v.into_iter().map(ByteBuf::into_vec).collect())
    }
}

impl EncodedDelta {
    /// Size of the same delta as raw f32 values.
    pub fn raw_f32_bytes(&self) -> u64 {
        self.numel.saturating_mul(4)
    }

    /// Size of this delta in its bincode encoding.
    pub fn encoded_len(&self) -> usize {
        crate::decode::encode(self).len()
    }

    /// `raw_f32_bytes / encoded_len`.
    pub fn compression_ratio(&self) -> f64 {
        self.raw_f32_bytes() as f64 / self.encoded_len().max(1) as f64
    }
}

/// Exact payload length in bytes of a tensor of `numel` values, or `None` on overflow.
pub fn payload_len(codec: &CodecSpec, numel: usize, chunk_size: usize) -> Option<usize> {
    let chunk_size = chunk_size.max(1);
    match *codec {
        CodecSpec::F32 => numel.checked_mul(4),
        CodecSpec::F16 => numel.checked_mul(2),
        CodecSpec::Int8 => numel.checked_add(numel.div_ceil(chunk_size).checked_mul(4)?),
        CodecSpec::TopK { density, bits } => {
            let full = numel / chunk_size;
            let tail = numel % chunk_size;
            let full_bits = topk_chunk_bits(chunk_size, density, bits)?.checked_mul(full)?;
            let tail_bits = if tail > 0 {
                topk_chunk_bits(tail, density, bits)?
            } else {
                0
            };
            Some(full_bits.checked_add(tail_bits)?.div_ceil(8))
        }
    }
}

/// How a top-k chunk stores which of its values are kept.
#[derive(Debug, Clone, Copy)]
enum Indices {
    /// Every value is kept: nothing is stored.
    All,
    /// One bit per value.
    Bitmap,
    /// `k` fields of `ceil(log2 n)` bits, strictly increasing.
    Fields,
}

/// The smallest index encoding for a chunk of `n` values with `k` kept.
fn indices(n: usize, k: usize) -> Indices {
    if k >= n {
        Indices::All
    } else if n <= k.saturating_mul(index_bits(n) as usize) {
        Indices::Bitmap
    } else {
        Indices::Fields
    }
}

fn topk_chunk_bits(n: usize, density: f32, bits: u8) -> Option<usize> {
    let k = kept_per_chunk(n, density);
    let index = match indices(n, k) {
        Indices::All => 0,
        Indices::Bitmap => n,
        Indices::Fields => k.checked_mul(index_bits(n) as usize)?,
    };
    header_bits(bits)
        .checked_add(index)?
        .checked_add(k.checked_mul(usize::from(bits))?)
}

/// Bits of a top-k chunk's header: `2^b` f32 centroids for `b ≤ 4`, one f32 scale for 8 bits.
fn header_bits(bits: u8) -> usize {
    if bits <= 4 {
        32 << bits
    } else {
        32
    }
}

/// Half-width of the binned range in units of the kept values' RMS, for `bits` ∈ {2, 4}: the
/// uniform bin widths σ (2 bits) and 0.3375σ (4 bits) are those of the Gaussian Lloyd-Max
/// quantizers (Max 1960: 0.9816σ and 0.3352σ).
pub fn bin_range(bits: u8) -> f32 {
    if bits <= 2 {
        2.0
    } else {
        2.7
    }
}

/// Bin of `x` among `2^bits` bins for `bits ≤ 4` (see the module docs); `sigma` is the RMS of the chunk's kept values.
fn centroid_bin(x: f32, sigma: f32, bits: u8) -> u32 {
    if bits == 1 || sigma <= 0.0 {
        return u32::from(x >= 0.0) << (bits - 1);
    }
    let levels = 1u32 << bits;
    let width = 2.0 * bin_range(bits) * sigma / levels as f32;
    let pos = (x / width + (levels / 2) as f32).floor();
    let bin = pos.clamp(0.0, (levels - 1) as f32) as u32;
    // Zero is a bin edge: keep every value in a bin of its own sign.
    if x >= 0.0 {
        bin.max(levels / 2)
    } else {
        bin.min(levels / 2 - 1)
    }
}

/// Value of a uniform b-bit code `c` at scale `m` (8-bit chunks; see the module docs).
fn dequant(code: u32, scale: f32, bits: u8) -> f32 {
    let levels = 1u32 << bits;
    let num = 2.0 * code as f32 + 1.0 - levels as f32;
    num / levels as f32 * scale
}

/// Uniform b-bit code of `x` at scale `m` (8-bit chunks).
fn quant(x: f32, scale: f32, bits: u8) -> u32 {
    let levels = 1u32 << bits;
    if scale <= 0.0 {
        return levels / 2;
    }
    let pos = ((x / scale + 1.0) * levels as f32 / 2.0).floor();
    pos.clamp(0.0, (levels - 1) as f32) as u32
}

/// Compresses `tensors` (added to the residual first) and stores what was not sent back into `residual`.
///
/// Tensors must be in the run's layout order. A remembered residual whose length no longer
/// matches its tensor is dropped. Fails on invalid codec parameters, a data length that does not
/// match a shape, or a non-finite value.
pub fn encode(
    spec: &CodecSpec,
    tensors: &[NamedTensor],
    residual: &mut Residual,
) -> Result<EncodedDelta, CodecError> {
    spec.validate()?;
    let chunk = spec.chunk_size();
    // Check every tensor before touching the residual, so a failed call leaves it unchanged.
    let mut accs = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.layout().numel() != Some(t.data.len()) {
            return Err(CodecError::ShapeMismatch {
                name: t.name.clone(),
                len: t.data.len(),
                shape: t.shape.clone(),
            });
        }
        let mut acc = t.data.clone();
        if let Some(r) = residual.map.get(&t.name).filter(|r| r.len() == acc.len()) {
            for (a, r) in acc.iter_mut().zip(r) {
                *a += r;
            }
        }
        if let Some((index, &value)) = acc.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CodecError::NonFinite {
                name: t.name.clone(),
                index,
                value,
            });
        }
        accs.push(acc);
    }
    let layout: Vec<TensorLayout> = tensors.iter().map(NamedTensor::layout).collect();
    let mut numel = 0u64;
    let mut payloads = Vec::with_capacity(tensors.len());
    for (t, mut acc) in tensors.iter().zip(accs) {
        let mut sent = vec![0.0f32; acc.len()];
        payloads.push(encode_tensor(spec, chunk, &acc, &mut sent));
        for (a, s) in acc.iter_mut().zip(&sent) {
            *a -= s;
        }
        numel += acc.len() as u64;
        residual.map.insert(t.name.clone(), acc);
    }
    Ok(EncodedDelta {
        codec: *spec,
        chunk_size: chunk as u32,
        layout: layout_id(&layout),
        numel,
        tensors: payloads,
    })
}

/// Encodes one tensor; writes the values the decoder will reconstruct into `sent`.
fn encode_tensor(spec: &CodecSpec, chunk: usize, x: &[f32], sent: &mut [f32]) -> Vec<u8> {
    match *spec {
        CodecSpec::F32 => {
            sent.copy_from_slice(x);
            x.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        CodecSpec::F16 => {
            let mut out = Vec::with_capacity(x.len() * 2);
            for (v, s) in x.iter().zip(sent.iter_mut()) {
                let h = f16::from_f32(v.clamp(-f16::MAX.to_f32(), f16::MAX.to_f32()));
                *s = h.to_f32();
                out.extend_from_slice(&h.to_le_bytes());
            }
            out
        }
        CodecSpec::Int8 => {
            let mut out = Vec::with_capacity(x.len() + x.len().div_ceil(chunk) * 4);
            for (xc, sc) in x.chunks(chunk).zip(sent.chunks_mut(chunk)) {
                let max = xc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let scale = max / 127.0;
                out.extend_from_slice(&scale.to_le_bytes());
                for (v, s) in xc.iter().zip(sc.iter_mut()) {
                    let q = if scale > 0.0 {
                        (v / scale).round().clamp(-127.0, 127.0) as i8
                    } else {
                        0
                    };
                    *s = f32::from(q) * scale;
                    out.push(q as u8);
                }
            }
            out
        }
        CodecSpec::TopK { density, bits } => {
            let total_bits = payload_len(spec, x.len(), chunk).unwrap_or(0) * 8;
            let mut w = BitWriter::with_capacity_bits(total_bits);
            let mut order: Vec<u32> = Vec::with_capacity(chunk);
            for (xc, sc) in x.chunks(chunk).zip(sent.chunks_mut(chunk)) {
                encode_topk_chunk(&mut w, &mut order, xc, sc, density, bits);
            }
            w.finish()
        }
    }
}

fn encode_topk_chunk(
    w: &mut BitWriter,
    order: &mut Vec<u32>,
    x: &[f32],
    sent: &mut [f32],
    density: f32,
    bits: u8,
) {
    let n = x.len();
    let k = kept_per_chunk(n, density);
    order.clear();
    order.extend(0..n as u32);
    let by_magnitude = |a: &u32, b: &u32| {
        let (va, vb) = (x[*a as usize].abs(), x[*b as usize].abs());
        vb.total_cmp(&va).then(a.cmp(b))
    };
    if k < n {
        order.select_nth_unstable_by(k - 1, by_magnitude);
    }
    let kept = &mut order[..k];
    kept.sort_unstable();
    // Bits ≤ 4: bin every kept value, then send each bin's mean (its centroid).
    let mut centroids = Vec::new();
    let mut codes = Vec::with_capacity(k);
    let scale = if bits <= 4 {
        let sigma = (kept
            .iter()
            .map(|&i| f64::from(x[i as usize]).powi(2))
            .sum::<f64>()
            / k.max(1) as f64)
            .sqrt() as f32;
        let mut sums = vec![(0.0f64, 0u32); 1 << bits];
        for &i in kept.iter() {
            let v = x[i as usize];
            let code = centroid_bin(v, sigma, bits);
            let (sum, count) = &mut sums[code as usize];
            *sum += f64::from(v);
            *count += 1;
            codes.push(code);
        }
        centroids.extend(sums.iter().map(|&(sum, count)| {
            if count == 0 {
                0.0
            } else {
                (sum / f64::from(count)) as f32
            }
        }));
        for c in &centroids {
            w.write(c.to_bits(), 32);
        }
        sigma
    } else {
        let m = kept.iter().fold(0.0f32, |m, &i| m.max(x[i as usize].abs()));
        w.write(m.to_bits(), 32);
        m
    };
    match indices(n, k) {
        Indices::All => {}
        Indices::Bitmap => {
            let mut next = kept.iter().peekable();
            for i in 0..n as u32 {
                let hit = next.peek() == Some(&&i);
                if hit {
                    next.next();
                }
                w.write(u32::from(hit), 1);
            }
        }
        Indices::Fields => {
            let ib = index_bits(n);
            for &i in kept.iter() {
                w.write(i, ib);
            }
        }
    }
    if bits > 4 {
        codes.extend(kept.iter().map(|&i| quant(x[i as usize], scale, bits)));
    }
    for (&i, &code) in kept.iter().zip(&codes) {
        w.write(code, u32::from(bits));
        sent[i as usize] = match centroids.get(code as usize) {
            Some(&c) => c,
            None => dequant(code, scale, bits),
        };
    }
}

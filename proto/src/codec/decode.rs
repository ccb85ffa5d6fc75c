//! Decoding a delta: every length is checked against the run's layout before anything is
//! allocated, then each chunk is read back (dense or top-k, with its scale or centroids).

use crate::bits::{index_bits, BitReader, BitsError};
use crate::layout::{layout_id, total_numel, TensorLayout};

use super::*;

/// Decodes and validates a delta against the run's adapter layout (names and shapes come from `expected`).
pub fn decode(
    delta: &EncodedDelta,
    expected: &[TensorLayout],
) -> Result<Vec<NamedTensor>, CodecError> {
    delta.codec.validate()?;
    let chunk = delta.chunk_size as usize;
    if chunk == 0 || chunk > MAX_CHUNK_SIZE {
        return Err(CodecError::BadChunkSize(delta.chunk_size));
    }
    let want = layout_id(expected);
    if delta.layout != want {
        return Err(CodecError::LayoutMismatch {
            got: delta.layout,
            expected: want,
        });
    }
    if delta.tensors.len() != expected.len() {
        return Err(CodecError::TensorCount {
            got: delta.tensors.len(),
            expected: expected.len(),
        });
    }
    let total = total_numel(expected).ok_or(CodecError::LayoutOverflow)?;
    if delta.numel != total as u64 {
        return Err(CodecError::NumelMismatch {
            got: delta.numel,
            expected: total as u64,
        });
    }
    for (layout, payload) in expected.iter().zip(&delta.tensors) {
        let numel = layout.numel().ok_or(CodecError::LayoutOverflow)?;
        let need = payload_len(&delta.codec, numel, chunk).ok_or(CodecError::LayoutOverflow)?;
        if payload.len() != need {
            return Err(CodecError::PayloadLength {
                name: layout.name.clone(),
                got: payload.len(),
                expected: need,
            });
        }
    }
    expected
        .iter()
        .zip(&delta.tensors)
        .map(|(layout, payload)| {
            let mut t = NamedTensor::zeros(layout);
            decode_tensor(&delta.codec, chunk, payload, &mut t)?;
            Ok(t)
        })
        .collect()
}

fn decode_tensor(
    codec: &CodecSpec,
    chunk: usize,
    payload: &[u8],
    t: &mut NamedTensor,
) -> Result<(), CodecError> {
    let name = &t.name;
    let non_finite = |index: usize, value: f32| CodecError::NonFinite {
        name: name.clone(),
        index,
        value,
    };
    match *codec {
        CodecSpec::F32 => {
            for (i, (b, out)) in payload.chunks_exact(4).zip(t.data.iter_mut()).enumerate() {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if !v.is_finite() {
                    return Err(non_finite(i, v));
                }
                *out = v;
            }
        }
        CodecSpec::F16 => {
            for (i, (b, out)) in payload.chunks_exact(2).zip(t.data.iter_mut()).enumerate() {
                let v = f16::from_le_bytes([b[0], b[1]]).to_f32();
                if !v.is_finite() {
                    return Err(non_finite(i, v));
                }
                *out = v;
            }
        }
        CodecSpec::Int8 => {
            let mut rest = payload;
            for (c, out) in t.data.chunks_mut(chunk).enumerate() {
                let (head, tail) = rest.split_at(4.min(rest.len()));
                let scale =
                    f32::from_le_bytes(head.try_into().map_err(|_| CodecError::PayloadLength {
                        name: name.clone(),
                        got: payload.len(),
                        expected: payload.len() + 4,
                    })?);
                check_scale(name, c, scale)?;
                let (codes, tail) = tail.split_at(out.len().min(tail.len()));
                for (j, (&q, o)) in codes.iter().zip(out.iter_mut()).enumerate() {
                    if q == 0x80 {
                        return Err(CodecError::BadInt8 {
                            name: name.clone(),
                            index: c * chunk + j,
                        });
                    }
                    *o = f32::from(q as i8) * scale;
                    if !o.is_finite() {
                        return Err(non_finite(c * chunk + j, *o));
                    }
                }
                rest = tail;
            }
        }
        CodecSpec::TopK { density, bits } => {
            let bits_err = |source| CodecError::Bits {
                name: name.clone(),
                source,
            };
            let mut r = BitReader::new(payload);
            for (c, out) in t.data.chunks_mut(chunk).enumerate() {
                decode_topk_chunk(&mut r, name, c, out, density, bits).map_err(|e| match e {
                    ChunkError::Bits(b) => bits_err(b),
                    ChunkError::Codec(e) => e,
                })?;
            }
            r.finish().map_err(bits_err)?;
        }
    }
    Ok(())
}

enum ChunkError {
    Bits(BitsError),
    Codec(CodecError),
}

impl From<BitsError> for ChunkError {
    fn from(e: BitsError) -> Self {
        ChunkError::Bits(e)
    }
}

impl From<CodecError> for ChunkError {
    fn from(e: CodecError) -> Self {
        ChunkError::Codec(e)
    }
}

fn check_scale(name: &str, chunk: usize, scale: f32) -> Result<(), CodecError> {
    if !scale.is_finite() {
        return Err(CodecError::NonFinite {
            name: name.to_string(),
            index: chunk,
            value: scale,
        });
    }
    if scale < 0.0 {
        return Err(CodecError::NegativeScale {
            name: name.to_string(),
            chunk,
            scale,
        });
    }
    Ok(())
}

fn decode_topk_chunk(
    r: &mut BitReader<'_>,
    name: &str,
    chunk: usize,
    out: &mut [f32],
    density: f32,
    bits: u8,
) -> Result<(), ChunkError> {
    let n = out.len();
    let k = kept_per_chunk(n, density);
    let mut centroids = Vec::new();
    let scale = if bits <= 4 {
        for _ in 0..1u32 << bits {
            let c = r.read_f32()?;
            if !c.is_finite() {
                return Err(CodecError::NonFinite {
                    name: name.to_string(),
                    index: chunk,
                    value: c,
                }
                .into());
            }
            centroids.push(c);
        }
        0.0
    } else {
        let m = r.read_f32()?;
        check_scale(name, chunk, m)?;
        m
    };
    let bad = |what: String| CodecError::BadIndices {
        name: name.to_string(),
        chunk,
        what,
    };
    let layout = indices(n, k);
    if let Indices::All = layout {
        // Dense: every value's code in order, decoded through a table of the 2^bits values.
        let table: Vec<f32> = (0..1u32 << bits)
            .map(|c| {
                centroids
                    .get(c as usize)
                    .copied()
                    .unwrap_or_else(|| dequant(c, scale, bits))
            })
            .collect();
        let decoded = |code: u32| table.get(code as usize).copied().unwrap_or(0.0);
        if bits == 8 {
            if let Some(codes) = r.read_aligned_bytes(n)? {
                for (o, &c) in out.iter_mut().zip(codes) {
                    *o = decoded(u32::from(c));
                }
                return Ok(());
            }
        }
        for o in out.iter_mut() {
            *o = decoded(r.read(u32::from(bits))?);
        }
        return Ok(());
    }
    let mut idx: Vec<u32> = Vec::with_capacity(k);
    match layout {
        Indices::All => {}
        Indices::Bitmap => {
            for i in 0..n as u32 {
                if r.read(1)? == 1 {
                    if idx.len() == k {
                        return Err(bad(format!("bitmap has more than {k} bits set")).into());
                    }
                    idx.push(i);
                }
            }
            if idx.len() != k {
                return Err(bad(format!("bitmap has {} bits set, expected {k}", idx.len())).into());
            }
        }
        Indices::Fields => {
            let ib = index_bits(n);
            for _ in 0..k {
                let i = r.read(ib)?;
                if i as usize >= n {
                    return Err(bad(format!("index {i} out of range for {n} values")).into());
                }
                if let Some(&prev) = idx.last() {
                    if i <= prev {
                        return Err(bad(format!(
                            "index {i} after {prev}: not strictly increasing"
                        ))
                        .into());
                    }
                }
                idx.push(i);
            }
        }
    }
    for &i in &idx {
        let code = r.read(u32::from(bits))?;
        if let Some(o) = out.get_mut(i as usize) {
            *o = match centroids.get(code as usize) {
                Some(&c) => c,
                None => dequant(code, scale, bits),
            };
        }
    }
    Ok(())
}

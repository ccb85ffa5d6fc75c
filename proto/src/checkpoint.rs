//! Checkpoint adapters on the wire: the lossless `f32` delta codec over the run's adapter layout.

use crate::codec::{
    decode as decode_delta, encode as encode_delta, CodecError, CodecSpec, EncodedDelta,
    NamedTensor, Residual,
};
use crate::decode::{decode_bounded, encode, DecodeError};
use crate::layout::TensorLayout;

/// Largest checkpoint blob decoded.
pub const MAX_CHECKPOINT_BYTES: usize = 512 << 20;

/// Why checkpoint bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not a bounded bincode encoding of an encoded adapter.
    #[error("checkpoint: {0}")]
    Decode(#[from] DecodeError),
    /// Names, shapes or values do not fit the layout.
    #[error("checkpoint: {0}")]
    Codec(#[from] CodecError),
}

/// Encode checkpoint parameters (in layout order) losslessly.
pub fn encode_checkpoint(params: &[NamedTensor]) -> Result<Vec<u8>, CheckpointError> {
    Ok(encode(&encode_delta(
        &CodecSpec::F32,
        params,
        &mut Residual::new(),
    )?))
}

/// Decode checkpoint parameters, validated against `layout`.
pub fn decode_checkpoint(
    bytes: &[u8],
    layout: &[TensorLayout],
) -> Result<Vec<NamedTensor>, CheckpointError> {
    let enc: EncodedDelta = decode_bounded(bytes, MAX_CHECKPOINT_BYTES)?;
    Ok(decode_delta(&enc, layout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact_and_layout_is_checked() {
        let layout = vec![TensorLayout {
            name: "b".into(),
            shape: vec![2, 3],
        }];
        let params = vec![NamedTensor {
            name: "b".into(),
            shape: vec![2, 3],
            data: vec![0.5, -1.25, 3.0, 0.0, 1e-7, -2.0],
        }];
        let bytes = encode_checkpoint(&params).unwrap();
        assert_eq!(decode_checkpoint(&bytes, &layout).unwrap(), params);
        let other = vec![TensorLayout {
            name: "b".into(),
            shape: vec![3, 2],
        }];
        assert!(decode_checkpoint(&bytes, &other).is_err());
        assert!(decode_checkpoint(&bytes[..bytes.len() - 1], &layout).is_err());
    }
}

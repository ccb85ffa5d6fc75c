//! Bytes on the wire per delta at a run's real adapter size: real deltas encoded with each codec,
//! wrapped in a `DeltaMessage` and sealed in a signed envelope exactly as a worker sends them.

use anyhow::{anyhow, Result};
use hearth_proto::{
    encode_checkpoint, encode_delta, CodecSpec, ContentId, DeltaMessage, Domain, ModelArch,
    NamedTensor, Residual, RunSpec, SignedEnvelope, TensorLayout,
};

/// Sizes of one codec's delta for one layout.
#[derive(Debug, Clone)]
pub struct CodecSize {
    /// Codec.
    pub codec: CodecSpec,
    /// Encoded delta (the codec's payloads and header).
    pub delta_bytes: usize,
    /// Signed envelope as sent (message header, signature, public key).
    pub wire_bytes: usize,
    /// Relative L2 error of the first round's decoded delta (no error feedback yet).
    pub rel_error: f64,
}

/// Adapter values, raw f32 bytes and checkpoint bytes of a layout.
#[derive(Debug, Clone)]
pub struct LayoutSize {
    /// Trainable values.
    pub values: usize,
    /// `4 × values`.
    pub raw_f32: usize,
    /// The checkpoint a worker downloads each round (lossless f32 encoding).
    pub checkpoint_bytes: usize,
}

/// Deterministic Gaussian-like values (xorshift + Box-Muller), scaled like a LoRA-B delta.
fn gaussian_delta(layout: &[TensorLayout], seed: u64) -> Vec<NamedTensor> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    layout
        .iter()
        .map(|l| {
            let n = l.numel().unwrap_or(0);
            let data = (0..n)
                .map(|_| {
                    let (u, v) = (next(), next());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 1e-3) as f32
                })
                .collect();
            NamedTensor {
                name: l.name.clone(),
                shape: l.shape.clone(),
                data,
            }
        })
        .collect()
}

/// The SmolLM2-135M run spec (rank 8 on q and v, FFA-LoRA: B only), as `init` writes it.
pub fn smollm2_spec() -> RunSpec {
    RunSpec::smollm2_135m("SmolLM2-135M-Instruct.Q4_1.gguf", None, 0)
}

/// Parameters of the full model (what data-parallel training sends a gradient of every step).
pub fn full_model_params(arch: &ModelArch) -> u64 {
    let h = arch.hidden_size as u64;
    let (q, kv, i) = (
        arch.q_dim() as u64,
        arch.kv_dim() as u64,
        arch.intermediate_size as u64,
    );
    let attn = h * q + 2 * h * kv + q * h;
    let mlp = 3 * h * i;
    let per_layer = attn + mlp + 2 * h;
    let embed = arch.vocab_size as u64 * h;
    let head = if arch.tie_embeddings { 0 } else { embed };
    embed + head + arch.num_layers as u64 * per_layer + h
}

/// Sizes of the adapter of `spec`.
pub fn layout_size(spec: &RunSpec) -> Result<LayoutSize> {
    let layout = spec.adapter_layout()?;
    let values = hearth_proto::total_numel(&layout).ok_or_else(|| anyhow!("layout overflows"))?;
    let zeros: Vec<NamedTensor> = layout.iter().map(NamedTensor::zeros).collect();
    Ok(LayoutSize {
        values,
        raw_f32: values * 4,
        checkpoint_bytes: encode_checkpoint(&zeros)?.len(),
    })
}

/// Encode a real-size delta of `spec` with every codec in `codecs`.
pub fn codec_sizes(spec: &RunSpec, codecs: &[CodecSpec]) -> Result<Vec<CodecSize>> {
    let layout = spec.adapter_layout()?;
    let delta = gaussian_delta(&layout, 0x5eed);
    let norm: f64 = delta
        .iter()
        .map(|t| t.l2_norm().powi(2))
        .sum::<f64>()
        .sqrt();
    let key = hearth_net::Keypair::generate_ed25519();
    codecs
        .iter()
        .map(|codec| {
            let mut residual = Residual::new();
            let encoded = encode_delta(codec, &delta, &mut residual)?;
            let delta_bytes = encoded.encoded_len();
            let msg = DeltaMessage {
                run_id: spec.run_id.clone() + "-0123abcd",
                round: 12,
                base_round: 11,
                base_checkpoint: Some(ContentId::of(b"checkpoint")),
                tokens_trained: 15 * 4 * 256,
                steps: 15,
                train_loss: 1.5,
                delta: encoded,
            };
            let wire_bytes = SignedEnvelope::seal(&key, Domain::Delta, &msg)?
                .to_bytes()
                .len();
            Ok(CodecSize {
                codec: *codec,
                delta_bytes,
                wire_bytes,
                rel_error: residual.l2_norm() / norm.max(f64::MIN_POSITIVE),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_has_134_5_million_parameters() {
        assert_eq!(full_model_params(&ModelArch::smollm2_135m()), 134_515_008);
    }

    #[test]
    fn codec_sizes_and_errors_at_smollm2_size() {
        let spec = smollm2_spec();
        let l = layout_size(&spec).unwrap();
        assert_eq!(l.values, 30 * (576 + 192) * 8);
        let sparse = CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 2,
        };
        let s = codec_sizes(&spec, &[CodecSpec::F32, CodecSpec::QUALITY, sparse]).unwrap();
        assert!(s[0].wire_bytes > l.raw_f32 && s[0].rel_error == 0.0);
        // The quality codec, dense 8-bit: 4x (a 1 KiB set of 256 centroids per chunk), and close
        // to the Gaussian optimum of about 0.01 relative error.
        let ratio = l.raw_f32 as f64 / s[1].wire_bytes as f64;
        assert!(ratio > 3.9 && ratio < 4.0, "{ratio}");
        assert!(
            s[1].rel_error > 0.002 && s[1].rel_error < 0.02,
            "{}",
            s[1].rel_error
        );
        // SparseLoCo's 1/64 at 2 bits: over 100x, and most of each delta deferred.
        assert!(l.raw_f32 as f64 / s[2].wire_bytes as f64 > 100.0);
        assert!(s[2].rel_error > 0.5 && s[2].rel_error < 1.0);
    }
}

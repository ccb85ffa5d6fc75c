//! GGUF loading (`llama`, `qwen2` and `qwen3` architectures; any quantization candle dequantizes:
//! Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0, F16, BF16, F32): config and tokenizer from metadata,
//! weights dequantized and renamed to Hugging Face names, with llama.cpp's Q/K row permutation of
//! the `llama` architecture undone (half-split RoPE). Metadata or tensors that would change the
//! math and are not implemented are refused by name.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::config::{Family, Features, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::{Blocks, Weights};

/// Everything a GGUF file provides.
#[derive(Debug)]
pub struct GgufModel {
    /// Config from `llama.*` metadata.
    pub config: ModelConfig,
    /// Dequantized weights with Hugging Face names.
    pub weights: Weights,
    /// Tokenizer from `tokenizer.ggml.*`.
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template`, if present.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: u32,
}

struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn err(&self, msg: String) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.md
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key {key}")))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => return Err(self.err(format!("{key} is not an integer: {other:?}"))),
        };
        usize::try_from(n).map_err(|_| self.err(format!("{key} = {n} is not a valid size")))
    }

    fn f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::F32(x) => Ok(f64::from(*x)),
            Value::F64(x) => Ok(*x),
            other => Err(self.err(format!("{key} is not a float: {other:?}"))),
        }
    }

    fn string(&self, key: &str) -> Result<&str> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.err(format!("{key} is not a string: {:?}", other.value_type()))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.err(format!("{key} holds a non-string {:?}", other.value_type())))
                    }
                })
                .collect(),
            other => Err(self.err(format!("{key} is not an array: {:?}", other.value_type()))),
        }
    }

    fn ints(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(i64::from(*x)),
                    Value::U32(x) => Ok(i64::from(*x)),
                    Value::I8(x) => Ok(i64::from(*x)),
                    Value::U8(x) => Ok(i64::from(*x)),
                    other => Err(self.err(format!(
                        "{key} holds a non-integer {:?}",
                        other.value_type()
                    ))),
                })
                .collect(),
            other => Err(self.err(format!("{key} is not an array: {:?}", other.value_type()))),
        }
    }
}

/// The family of a GGUF `general.architecture`, or a refusal naming it.
fn family_of(m: &Meta, arch: &str) -> Result<Family> {
    match arch {
        "llama" => Ok(Family::Llama),
        "qwen2" => Ok(Family::Qwen2),
        "qwen3" => Ok(Family::Qwen3),
        other => Err(ModelError::Unsupported(format!(
            "{}: GGUF architecture {other:?} (Hearth implements llama, qwen2 and qwen3)",
            m.path.display()
        ))),
    }
}

/// Reads a GGUF's config from its metadata (`vocab` from the token list); `has` tells whether a
/// tensor is in the file, `rope_freqs` holds `rope_freqs.weight` when present.
fn config_from_meta(
    m: &Meta,
    has: &dyn Fn(&str) -> bool,
    vocab: usize,
    rope_freqs: Option<Vec<f64>>,
) -> Result<ModelConfig> {
    let arch = m.string("general.architecture")?;
    let family = family_of(m, arch)?;
    let k = |key: &str| format!("{arch}.{key}");
    let hidden = m.usize(&k("embedding_length"))?;
    let heads = m.usize(&k("attention.head_count"))?;
    let head_dim = m
        .usize(&k("attention.key_length"))
        .or_else(|_| m.usize(&k("rope.dimension_count")))
        .unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    if let Ok(rot) = m.usize(&k("rope.dimension_count")) {
        if rot != head_dim {
            return Err(ModelError::Unsupported(format!(
                "{}: partial rotary embedding ({} {rot} of head_dim {head_dim})",
                m.path.display(),
                k("rope.dimension_count")
            )));
        }
    }
    if let Ok(v) = m.usize(&k("attention.value_length")) {
        if v != head_dim {
            return Err(ModelError::Unsupported(format!(
                "{}: {} {v} differs from the key length {head_dim}",
                m.path.display(),
                k("attention.value_length")
            )));
        }
    }
    for key in [
        "attention.sliding_window",
        "final_logit_softcapping",
        "attn_logit_softcapping",
        "expert_count",
    ] {
        if m.md.contains_key(&k(key)) {
            return Err(ModelError::Unsupported(format!(
                "{}: {} is set (not implemented)",
                m.path.display(),
                k(key)
            )));
        }
    }
    let scaling_type = m.string(&k("rope.scaling.type")).unwrap_or("none");
    let rope_scaling = match (scaling_type, rope_freqs) {
        (_, Some(factors)) if scaling_type == "none" || scaling_type == "llama3" => {
            Some(RopeScaling::Factors { factors })
        }
        ("none", None) => None,
        ("linear", None) => Some(RopeScaling::Linear {
            factor: m.f64(&k("rope.scaling.factor"))?,
        }),
        (other, _) => {
            return Err(ModelError::Unsupported(format!(
                "{}: rope scaling {other:?} ({}); Hearth implements none, linear and llama3",
                m.path.display(),
                k("rope.scaling.type")
            )))
        }
    };
    let cfg = ModelConfig {
        vocab,
        hidden,
        intermediate: m.usize(&k("feed_forward_length"))?,
        layers: m.usize(&k("block_count"))?,
        heads,
        kv_heads: m.usize(&k("attention.head_count_kv")).unwrap_or(heads),
        head_dim,
        rope_theta: m.f64(&k("rope.freq_base")).unwrap_or(10_000.0),
        rms_eps: m.f64(&k("attention.layer_norm_rms_epsilon"))?,
        max_position: m.usize(&k("context_length"))?.min(1 << 20),
        tie_embeddings: !has("output.weight"),
        features: Features {
            family,
            rope_scaling,
            qkv_bias: has("blk.0.attn_q.bias"),
            o_bias: has("blk.0.attn_output.bias"),
            qk_norm: has("blk.0.attn_q_norm.weight"),
            sliding_window: None,
        },
    };
    if family == Family::Qwen2 && !cfg.features.qkv_bias {
        return Err(m.err("qwen2 GGUF without attention biases".into()));
    }
    if family == Family::Qwen3 && !cfg.features.qk_norm {
        return Err(m.err("qwen3 GGUF without q/k norms".into()));
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Undoes llama.cpp's rotary row permutation of a Q or K weight `[heads*head_dim, in]`.
pub fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (2 * heads) != 0 {
        return Err(ModelError::Config(format!(
            "cannot unpermute {out} rows into {heads} heads"
        )));
    }
    Ok(w.reshape((heads, out / heads / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

/// The row order [`unpermute_qk`] produces: row `r` of the Hugging Face weight is row
/// `qk_rows(out, heads)[r]` of the GGUF one.
pub fn qk_rows(out: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !out.is_multiple_of(2 * heads) {
        return Err(ModelError::Config(format!(
            "cannot unpermute {out} rows into {heads} heads"
        )));
    }
    let half = out / heads / 2;
    Ok((0..out)
        .map(|r| {
            let (h, rem) = (r / (2 * half), r % (2 * half));
            h * 2 * half + (rem % half) * 2 + rem / half
        })
        .collect())
}

fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.bias" => "self_attn.o_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// llama.cpp's per-frequency RoPE divisors (its form of Llama 3 scaling).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// What a GGUF header provides before any tensor data is read.
#[derive(Debug)]
pub struct GgufHeader {
    /// Config from `llama.*` metadata.
    pub config: ModelConfig,
    /// Tokenizer from `tokenizer.ggml.*`.
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template`, if present.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: u32,
}

/// Checks that every tensor Hearth loads lies inside a file of `file_len` bytes, with checked
/// arithmetic, so a forged shape can neither overflow nor make the reader allocate past the file.
fn check_tensor_ranges(m: &Meta, content: &Content, file_len: u64) -> Result<()> {
    for (name, info) in &content.tensor_infos {
        if hf_name(name).is_none() && name != ROPE_FREQS {
            return Err(ModelError::Unsupported(format!(
                "{}: tensor {name} is not part of a model Hearth implements (it would be ignored)",
                m.path.display()
            )));
        }
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = elems
            .filter(|e| block > 0 && e % block == 0)
            .and_then(|e| (e / block).checked_mul(info.ggml_dtype.type_size() as u64));
        let end = bytes.and_then(|b| {
            content
                .tensor_data_offset
                .checked_add(info.offset)?
                .checked_add(b)
        });
        if end.is_none_or(|e| e > file_len) {
            return Err(m.err(format!(
                "tensor {name} (shape {:?}, {:?}, offset {}) does not fit in the {file_len}-byte file",
                info.shape.dims(),
                info.ggml_dtype,
                info.offset
            )));
        }
    }
    Ok(())
}

/// Reads and checks the header of a GGUF stream of `file_len` bytes: metadata, config, tokenizer
/// and the byte range of every tensor (no tensor data is read).
fn read_header<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
    path: &Path,
    file_len: u64,
) -> Result<(Content, GgufHeader)> {
    let content = Content::read(reader).map_err(|e| ModelError::Gguf {
        path: PathBuf::from(path),
        msg: e.to_string(),
    })?;
    let m = Meta {
        path,
        md: &content.metadata,
    };
    let tokens = m.strings("tokenizer.ggml.tokens")?;
    let merges = m.strings("tokenizer.ggml.merges")?;
    let specials: Vec<u32> = match m.ints("tokenizer.ggml.token_type") {
        Ok(types) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(i, _)| i as u32)
            .collect(),
        Err(_) => Vec::new(),
    };
    let eos = m.usize("tokenizer.ggml.eos_token_id")?;
    if eos >= tokens.len() {
        return Err(m.err(format!("eos id {eos} >= vocab {}", tokens.len())));
    }
    check_tensor_ranges(&m, &content, file_len)?;
    let rope_freqs = if content.tensor_infos.contains_key(ROPE_FREQS) {
        let t = content
            .tensor(reader, ROPE_FREQS, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>())
            .map_err(|e| m.err(format!("tensor {ROPE_FREQS}: {e}")))?;
        Some(t)
    } else {
        None
    };
    let has = |name: &str| content.tensor_infos.contains_key(name);
    let config = config_from_meta(&m, &has, tokens.len(), rope_freqs)?;
    let tokenizer = Tokenizer::from_bpe_parts(&tokens, &merges, &specials)?;
    let chat_template = m.string("tokenizer.chat_template").ok().map(str::to_string);
    let header = GgufHeader {
        config,
        tokenizer,
        chat_template,
        eos_token_id: eos as u32,
    };
    Ok((content, header))
}

/// Parses and checks a GGUF header held in memory (the fuzzing entry point; `bytes` may be
/// truncated after the header, but then the tensor range check fails).
pub fn gguf_header_from_bytes(bytes: &[u8]) -> Result<GgufHeader> {
    let mut cursor = std::io::Cursor::new(bytes);
    read_header(&mut cursor, Path::new("<memory>"), bytes.len() as u64).map(|(_, h)| h)
}

/// Loads a llama GGUF: weights dequantized to `dtype` on `device`.
pub fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<GgufModel> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let (content, header) = read_header(&mut reader, path, file_len)?;
    let config = header.config;
    let m = Meta {
        path,
        md: &content.metadata,
    };

    let mut weights = Weights::default();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else {
            // rope_freqs.weight, read with the header; every other name was refused there.
            continue;
        };
        let q = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| m.err(format!("tensor {name}: {e}")))?;
        // Only the llama architecture's Q/K rows are permuted (for llama.cpp's interleaved
        // RoPE); qwen2 and qwen3 use the half-split (NeoX) layout as stored.
        let heads = match config.features.family {
            Family::Llama if hf.ends_with("q_proj.weight") => Some(config.heads),
            Family::Llama if hf.ends_with("k_proj.weight") => Some(config.kv_heads),
            _ => None,
        };
        if hf.ends_with("_proj.weight") {
            // Projections stay in the file's blocks until the model is built: one at a time
            // expanded, or kept as they are under a compact `--dtype` (`FrozenWeight::from_blocks`).
            let rows = match heads {
                Some(h) => Some(qk_rows(q.shape().dims2()?.0, h)?),
                None => None,
            };
            weights.insert_blocks(
                hf,
                Blocks {
                    q: std::sync::Arc::new(q),
                    rows,
                    dtype,
                    device: device.clone(),
                },
            );
            continue;
        }
        let mut t = q.dequantize(&Device::Cpu)?;
        if let Some(h) = heads {
            t = unpermute_qk(&t, h)?;
        }
        weights.insert(hf, t.to_dtype(dtype)?.to_device(device)?);
    }
    weights.validate(&config)?;
    Ok(GgufModel {
        config,
        weights,
        tokenizer: header.tokenizer,
        chat_template: header.chat_template,
        eos_token_id: header.eos_token_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // one head, head_dim 4, in 1: HF rows [0,1,2,3] are stored by llama.cpp as [0,2,1,3]
        let gguf = Tensor::new(&[[0f32], [2.], [1.], [3.]], &Device::Cpu).unwrap();
        let hf = unpermute_qk(&gguf, 1).unwrap();
        assert_eq!(
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 1., 2., 3.]
        );
    }

    #[test]
    fn qk_rows_reorder_as_unpermute_does() {
        for (out, heads) in [(4, 1), (16, 2), (24, 3), (64, 4)] {
            let data: Vec<f32> = (0..out * 3).map(|i| i as f32).collect();
            let w = Tensor::from_vec(data, (out, 3), &Device::Cpu).unwrap();
            let want = unpermute_qk(&w, heads).unwrap();
            let idx: Vec<u32> = qk_rows(out, heads)
                .unwrap()
                .into_iter()
                .map(|r| r as u32)
                .collect();
            let idx = Tensor::new(idx, &Device::Cpu).unwrap();
            let got = w.index_select(&idx, 0).unwrap();
            assert_eq!(
                got.to_vec2::<f32>().unwrap(),
                want.to_vec2::<f32>().unwrap(),
                "{out} rows, {heads} heads"
            );
        }
        assert!(qk_rows(6, 4).is_err());
    }

    #[test]
    fn maps_tensor_names() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}

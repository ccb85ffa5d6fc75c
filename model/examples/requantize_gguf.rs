//! Rewrites a GGUF file with its 2-D weights in a K-quant mix, keeping every metadata key: the
//! fixture maker for the K-quants (gguf-py can read them but not write them).
//!
//! `cargo run -p hearth-model --example requantize_gguf -- IN.gguf OUT.gguf MIX`, with MIX one of
//! `q4_k`, `q5_k`, `q6_k` (every 2-D weight) or `q4_k_m`, `q5_k_m` (llama.cpp's medium mixes as
//! it applies them to a model this small: `attn_v`, `ffn_down` and `output` in Q6_K, the rest in
//! the base type). A weight whose rows are not a multiple of 256 values falls back to Q8_0 (or
//! F16 when not a multiple of 32), as llama.cpp does; 1-D tensors stay as they are.

use std::fs::File;
use std::io::{BufReader, BufWriter};

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

/// The type of weight `name` under `mix`.
fn target(name: &str, mix: &str) -> Result<GgmlDType> {
    let base = match mix {
        "q4_k" | "q4_k_m" => GgmlDType::Q4K,
        "q5_k" | "q5_k_m" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => bail!("unknown mix {other:?} (q4_k, q5_k, q6_k, q4_k_m, q5_k_m)"),
    };
    let more_bits = ["attn_v.weight", "ffn_down.weight", "output.weight"];
    Ok(
        if mix.ends_with("_m") && more_bits.iter().any(|s| name.ends_with(s)) {
            GgmlDType::Q6K
        } else {
            base
        },
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, mix] = args.as_slice() else {
        bail!("usage: requantize_gguf IN.gguf OUT.gguf q4_k|q5_k|q6_k|q4_k_m|q5_k_m");
    };
    let mut reader = BufReader::new(File::open(input).with_context(|| input.clone())?);
    let content = gguf_file::Content::read(&mut reader).context("reading the GGUF header")?;
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors = Vec::new();
    for name in &names {
        let q = content.tensor(&mut reader, name, &Device::Cpu)?;
        let t = q.dequantize(&Device::Cpu)?;
        let ty = match t.dims() {
            [_, cols] if cols % 256 == 0 => target(name, mix)?,
            [_, cols] if cols % 32 == 0 => GgmlDType::Q8_0,
            [_, _] => GgmlDType::F16,
            _ => q.dtype(),
        };
        let out = if ty == q.dtype() {
            q
        } else {
            QTensor::quantize(&t, ty)?
        };
        eprintln!("{name:32} {:?} -> {ty:?}", t.dims());
        tensors.push((name.clone(), out));
    }
    let mut metadata: Vec<(&String, &gguf_file::Value)> = content.metadata.iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(b.0));
    let md: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut w = BufWriter::new(File::create(output).with_context(|| output.clone())?);
    gguf_file::write(&mut w, &md, &ts).context("writing the GGUF file")?;
    Ok(())
}

//! `hearth-coordinator export`: a round's PEFT adapter, or the base model with it merged in.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use hearth_model::candle_core::{DType, Device, Tensor};
use hearth_model::spec;
use hearth_proto::RunSpec;

use crate::state::State;
use crate::store::{read_json, write_json, BlobStore};

/// The run spec the coordinator keeps beside its state (for exports without run.toml).
pub fn spec_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("run-spec.json")
}

/// Record the run spec in the data dir.
pub fn save_spec(data_dir: &Path, run: &RunSpec) -> Result<()> {
    Ok(write_json(&spec_path(data_dir), run)?)
}

/// Copy round `round`'s PEFT directory to `out`; returns the round exported.
pub fn export_peft(data_dir: &Path, round: Option<u64>, out: &Path) -> Result<u64> {
    let state = State::load(data_dir)?;
    let round = round.unwrap_or(state.committed_round);
    if !state.checkpoints.iter().any(|c| c.manifest.round == round) {
        return Err(anyhow!(
            "round {round} has no committed checkpoint (latest is {})",
            state.committed_round
        ));
    }
    let src = data_dir.join("checkpoints").join(round.to_string());
    std::fs::create_dir_all(out)?;
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "manifest.json",
    ] {
        std::fs::copy(src.join(f), out.join(f))
            .with_context(|| format!("copying {f} of round {round}"))?;
    }
    Ok(round)
}

/// Write the base model with round `round`'s adapter merged in (`W + (α/r)·B·A` for every adapted
/// projection) as a Hugging Face directory: config.json, model.safetensors, tokenizer.json.
pub fn export_merged(data_dir: &Path, round: Option<u64>, out: &Path) -> Result<u64> {
    let tmp = out.join(".adapter");
    let round = export_peft(data_dir, round, &tmp)?;
    let run: RunSpec = read_json(&spec_path(data_dir), 1 << 20)?.ok_or_else(|| {
        anyhow!(
            "{} is missing: run the coordinator once with this version",
            spec_path(data_dir).display()
        )
    })?;
    let store = BlobStore::open(data_dir.join("blobs"))?;
    let model_file = crate::base_model::base_model_path(&store, &run.base, data_dir)?;
    let base = hearth_model::load_base(
        &spec::model_source(&run.base.source, model_file.as_deref()),
        &Device::Cpu,
        DType::F32,
    )?;
    let adapter = hearth_model::peft::import_peft(&tmp)?;
    let scale = adapter.config.lora_alpha / adapter.config.r as f64;
    let mut weights = base.weights.clone();
    let find = |name: &str| adapter.tensors.iter().find(|t| t.name == name);
    for a in adapter
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".lora_A.weight"))
    {
        let prefix = a.name.trim_end_matches(".lora_A.weight");
        let b = find(&format!("{prefix}.lora_B.weight"))
            .ok_or_else(|| anyhow!("{prefix} has A but no B"))?;
        let target = format!("{}.weight", prefix.trim_start_matches("base_model.model."));
        let w = weights.get(&target)?;
        let a_t = Tensor::from_slice(&a.data, a.shape.as_slice(), &Device::Cpu)?;
        let b_t = Tensor::from_slice(&b.data, b.shape.as_slice(), &Device::Cpu)?;
        let merged = (w + (b_t.matmul(&a_t)? * scale)?)?;
        weights.insert(target, merged);
    }
    hearth_model::hf::save_hf_dir(
        out,
        &base.config,
        &weights,
        &base.tokenizer,
        base.chat_template.as_deref(),
        base.eos_token_id,
    )?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(round)
}

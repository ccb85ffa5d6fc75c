//! The template delta: trained once from the latest checkpoint, sent by every peer with its own noise.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use hearth_model::data::Shard;
use hearth_model::{spec as mspec, DType, Device, TrainReport, Trainer};
use hearth_proto::{NamedTensor, RunSpec};
use hearth_worker::fetch::fetch_blob;

use super::SimPeer;

/// Largest shard read.
const MAX_SHARD_BYTES: usize = 1 << 30;
/// Per-peer noise, relative to the template's RMS value: enough that no two peers' deltas look like
/// copies of each other to the screen (cosine about 0.89, under its 0.99).
const NOISE: f32 = 0.5;
/// The template is scaled up so its first top-k sketch (1/64 of the values, before error feedback
/// has built up) lowers a shard's loss by a clear margin: trained on every shard rather than the
/// peer's own, one round's sketch lowers it by about 0.04 %, under the probe's 0.05 %.
const STRENGTH: f32 = 3.0;

/// A trained delta and the report that goes with it.
#[derive(Debug, Clone)]
pub struct Template {
    /// Trained minus starting adapter, in layout order.
    pub delta: Vec<NamedTensor>,
    /// Tokens the training saw.
    pub tokens: u64,
    /// Optimizer steps.
    pub steps: u32,
    /// Mean training loss.
    pub train_loss: f32,
    rms: f32,
}

/// splitmix64: a small, fast, seedable generator for the per-peer noise.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in (-1, 1).
fn uniform(state: &mut u64) -> f32 {
    (splitmix(state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// One round of local training (the run's `local_steps`) from `params` with the run's settings.
fn train_once(
    spec: &RunSpec,
    params: &[NamedTensor],
    data: &[hearth_model::Sequence],
) -> Result<(Vec<NamedTensor>, TrainReport)> {
    let source = mspec::model_source(&spec.base.source, None);
    let base = hearth_model::load_base(&source, &Device::Cpu, DType::F32)?;
    let mut model = base.model(Some(&mspec::lora_config(&spec.lora)?))?;
    model.set_adapter(params)?;
    let mut trainer = Trainer::new(&model, mspec::train_config(&spec.train, 1))?;
    let report = trainer.train(&model, data, |_| std::ops::ControlFlow::Continue(()))?;
    let mut by_name: std::collections::HashMap<String, NamedTensor> = model
        .adapter_tensors()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let trained = params
        .iter()
        .map(|p| {
            by_name
                .remove(&p.name)
                .filter(|t| t.shape == p.shape)
                .ok_or_else(|| anyhow!("the model has no adapter tensor {} {:?}", p.name, p.shape))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((trained, report))
}

impl Template {
    /// Fetch every train shard and the latest checkpoint over the real blob protocol, then train
    /// one round (the run's `local_steps`) with the worker's own trainer.
    pub async fn train(lead: &SimPeer, spec: &RunSpec, work_dir: &Path) -> Result<Self> {
        if spec.base.blake3.is_some() {
            return Err(anyhow!(
                "the simulator trains its template on preset runs only (use --preset tiny)"
            ));
        }
        let (latest, _) = lead.poll().await?;
        let m = latest.ok_or_else(|| anyhow!("the coordinator has no checkpoint yet"))?;
        let chunk = spec.net.blob_chunk_size;
        let mut data = Vec::new();
        for info in &spec.data.shards {
            let dest = work_dir.join("shards").join(info.cid.to_hex());
            fetch_blob(
                lead.net(),
                lead.coordinator(),
                info.cid,
                &dest,
                chunk,
                |_, _| {},
            )
            .await
            .with_context(|| format!("shard {}", info.cid))?;
            let bytes = std::fs::read(&dest)?;
            data.extend(Shard::from_bytes(&bytes, MAX_SHARD_BYTES)?.into_sequences());
        }
        let dest = work_dir.join("checkpoints").join(m.adapter.to_hex());
        fetch_blob(
            lead.net(),
            lead.coordinator(),
            m.adapter,
            &dest,
            chunk,
            |_, _| {},
        )
        .await
        .context("checkpoint")?;
        let layout = spec.adapter_layout()?;
        let params = hearth_proto::decode_checkpoint(&std::fs::read(&dest)?, &layout)?;
        let (trained, report) = tokio::task::spawn_blocking({
            let (spec, params) = (spec.clone(), params.clone());
            move || train_once(&spec, &params, &data)
        })
        .await??;
        let delta: Vec<NamedTensor> = trained
            .iter()
            .zip(&params)
            .map(|(new, old)| NamedTensor {
                name: new.name.clone(),
                shape: new.shape.clone(),
                data: new
                    .data
                    .iter()
                    .zip(&old.data)
                    .map(|(a, b)| STRENGTH * (a - b))
                    .collect(),
            })
            .collect();
        let n: usize = delta.iter().map(|t| t.data.len()).sum();
        let sq: f64 = delta.iter().map(|t| t.l2_norm().powi(2)).sum();
        let rms = (sq / n.max(1) as f64).sqrt() as f32;
        let r = &report;
        tracing::info!(
            steps = r.steps,
            loss = r.mean_loss,
            rms,
            "template delta trained"
        );
        Ok(Self {
            delta,
            tokens: r.tokens as u64,
            steps: r.steps as u32,
            train_loss: r.mean_loss as f32,
            rms,
        })
    }

    /// The delta peer `index` sends in `round`: the template plus its own small noise, so no two
    /// payloads are equal (the coordinator rejects replays).
    pub fn for_peer(&self, index: usize, round: u64) -> Vec<NamedTensor> {
        let mut state = (index as u64) << 32 ^ round ^ 0x5eed;
        self.delta
            .iter()
            .map(|t| NamedTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: t
                    .data
                    .iter()
                    .map(|v| v + NOISE * self.rms * uniform(&mut state))
                    .collect(),
            })
            .collect()
    }

    /// Raw f32 size of the delta, for the report.
    pub fn raw_bytes(&self) -> usize {
        self.delta.iter().map(|t| t.data.len() * 4).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_small_deterministic_and_per_peer() {
        let t = Template {
            delta: vec![NamedTensor {
                name: "x".into(),
                shape: vec![1000],
                data: vec![1.0; 1000],
            }],
            tokens: 1,
            steps: 1,
            train_loss: 1.0,
            rms: 1.0,
        };
        let a = t.for_peer(1, 1);
        assert_eq!(a[0].data, t.for_peer(1, 1)[0].data);
        assert_ne!(a[0].data, t.for_peer(2, 1)[0].data);
        assert_ne!(a[0].data, t.for_peer(1, 2)[0].data);
        let max = a[0]
            .data
            .iter()
            .map(|v| (v - 1.0).abs())
            .fold(0.0, f32::max);
        assert!(max <= NOISE && max > NOISE / 2.0, "noise {max}");
    }
}

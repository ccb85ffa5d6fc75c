//! Run spec: everything a run organiser sets in `run.toml`; every field has a default. The model
//! side lives in `model.rs`, the round side in `round.rs`; `RunSpec` ties them together here.

mod model;
mod round;

pub use model::*;
pub use round::*;

use serde::{Deserialize, Serialize};

use crate::cid::ContentId;
use crate::layout::TensorLayout;

/// Why a run spec is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A LoRA target this crate does not know.
    #[error("unknown LoRA target {0:?}; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")]
    UnknownTarget(String),
    /// A field has an invalid value.
    #[error("{field} = {value} is invalid: {why}")]
    Invalid {
        /// Dotted field name.
        field: &'static str,
        /// Offending value.
        value: String,
        /// What is expected.
        why: &'static str,
    },
    /// The TOML text does not parse.
    #[error("run spec TOML: {0}")]
    Toml(String),
}

pub(crate) fn invalid(field: &'static str, value: impl ToString, why: &'static str) -> SpecError {
    SpecError::Invalid {
        field,
        value: value.to_string(),
        why,
    }
}

/// The whole run: written by `hearth-coordinator init`, sent to workers on join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSpec {
    /// Run id, used in topic names (`hearth/<run_id>/...`).
    pub run_id: String,
    /// Human-readable name.
    pub name: String,
    /// Base model.
    pub base: BaseModel,
    /// Architecture of the base model.
    pub arch: ModelArch,
    /// LoRA settings.
    pub lora: LoraSpec,
    /// Training data.
    pub data: DatasetManifest,
    /// Inner training.
    pub train: TrainSpec,
    /// Rounds and aggregation.
    pub aggregate: AggregateSpec,
    /// Delta verification.
    pub verify: VerifySpec,
    /// Admission policy.
    pub admission: Admission,
    /// Network limits.
    pub net: NetSpec,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            run_id: "tiny".into(),
            name: "tiny demo run".into(),
            base: BaseModel::default(),
            arch: ModelArch::tiny(),
            lora: LoraSpec::default(),
            data: DatasetManifest::default(),
            train: TrainSpec::default(),
            aggregate: AggregateSpec::default(),
            verify: VerifySpec::default(),
            admission: Admission::default(),
            net: NetSpec::default(),
        }
    }
}

impl RunSpec {
    /// A run on the `tiny` preset (the default).
    pub fn tiny() -> Self {
        Self::default()
    }

    /// A run on SmolLM2-135M-Instruct loaded from a GGUF file.
    pub fn smollm2_135m(
        file_name: impl Into<String>,
        blake3: Option<ContentId>,
        size_bytes: u64,
    ) -> Self {
        Self {
            run_id: "smollm2".into(),
            name: "SmolLM2-135M-Instruct LoRA".into(),
            base: BaseModel {
                name: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                source: ModelSource::Gguf {
                    file_name: file_name.into(),
                },
                blake3,
                size_bytes,
                ..BaseModel::default()
            },
            arch: ModelArch::smollm2_135m(),
            data: DatasetManifest {
                seq_len: 256,
                shards: Vec::new(),
            },
            ..Self::default()
        }
    }

    /// Content id of the spec's bincode encoding.
    pub fn spec_id(&self) -> ContentId {
        ContentId::of(&crate::decode::encode(self))
    }

    /// The trainable adapter tensors of this run, in wire order.
    pub fn adapter_layout(&self) -> Result<Vec<TensorLayout>, SpecError> {
        self.lora.adapter_layout(&self.arch)
    }

    /// Upper bound on the size of one signed delta of this run: the codec's payloads for the
    /// adapter layout plus 16 bytes of length prefix a tensor and 4 KiB for the message fields and
    /// the signed envelope. Request limits are sized from it, so a delta too large for gossip can
    /// still be submitted directly. `None` on an invalid layout or overflow.
    pub fn max_delta_bytes(&self) -> Option<usize> {
        let layout = self.adapter_layout().ok()?;
        let mut largest = 0;
        for codec in self.aggregate.codecs() {
            let mut total = 4096usize.checked_add(self.run_id.len())?;
            for t in &layout {
                let payload = crate::codec::payload_len(&codec, t.numel()?, codec.chunk_size())?;
                total = total.checked_add(payload)?.checked_add(16)?;
            }
            largest = largest.max(total);
        }
        Some(largest)
    }

    /// Parses TOML and validates.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: RunSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Renders TOML.
    pub fn to_toml(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Toml(e.to_string()))
    }

    /// Checks every section for values a run cannot use.
    pub fn validate(&self) -> Result<(), SpecError> {
        let id_ok = !self.run_id.is_empty()
            && self.run_id.len() <= 64
            && self
                .run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !id_ok {
            return Err(invalid(
                "run_id",
                &self.run_id,
                "1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        if self.base.size_bytes > i64::MAX as u64 {
            return Err(invalid(
                "base.size_bytes",
                self.base.size_bytes,
                "must fit in i64",
            ));
        }
        self.base.validate()?;
        self.arch.validate()?;
        self.lora.validate()?;
        if self.data.seq_len < 2 || self.data.seq_len > self.arch.max_position {
            return Err(invalid(
                "data.seq_len",
                self.data.seq_len,
                "must be in 2..=arch.max_position",
            ));
        }
        let t = &self.train;
        if t.local_steps == 0 {
            return Err(invalid(
                "train.local_steps",
                t.local_steps,
                "must be positive",
            ));
        }
        if t.batch_size == 0 || t.grad_accum == 0 {
            return Err(invalid(
                "train.batch_size",
                t.batch_size,
                "batch_size and grad_accum must be positive",
            ));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(invalid("train.lr", t.lr, "must be positive"));
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            return Err(invalid("train.grad_clip", t.grad_clip, "must be >= 0"));
        }
        self.validate_aggregate()?;
        if let Admission::Allowlist { peers } = &self.admission {
            for p in peers {
                p.parse::<libp2p_identity::PeerId>()
                    .map_err(|_| invalid("admission.peers", p, "not a peer id"))?;
            }
        }
        let n = &self.net;
        if !(1024..=round::MAX_TRANSMIT_SIZE).contains(&n.max_transmit_size) {
            return Err(invalid(
                "net.max_transmit_size",
                n.max_transmit_size,
                "must be in 1 KiB..=16 MiB",
            ));
        }
        if n.inline_delta_limit > n.max_transmit_size {
            return Err(invalid(
                "net.inline_delta_limit",
                n.inline_delta_limit,
                "must not exceed net.max_transmit_size",
            ));
        }
        if n.blob_chunk_size == 0 || n.blob_chunk_size > crate::messages::MAX_BLOB_CHUNK {
            return Err(invalid(
                "net.blob_chunk_size",
                n.blob_chunk_size,
                "must be in 1..=4 MiB",
            ));
        }
        Ok(())
    }

    fn validate_aggregate(&self) -> Result<(), SpecError> {
        let a = &self.aggregate;
        a.codec
            .validate()
            .map_err(|e| invalid("aggregate.codec", e, "invalid codec"))?;
        if a.min_deltas == 0 || a.target_deltas < a.min_deltas {
            return Err(invalid(
                "aggregate.target_deltas",
                a.target_deltas,
                "need 1 <= min_deltas <= target_deltas",
            ));
        }
        if !(0.0..=1.0).contains(&a.error_feedback_decay) {
            return Err(invalid(
                "aggregate.error_feedback_decay",
                a.error_feedback_decay,
                "must be in [0, 1]",
            ));
        }
        if a.deadline_secs == 0 {
            return Err(invalid(
                "aggregate.deadline_secs",
                a.deadline_secs,
                "must be positive",
            ));
        }
        match a.aggregator {
            Aggregator::TrimmedMean { trim_fraction } if !(0.0..0.5).contains(&trim_fraction) => {
                return Err(invalid(
                    "aggregate.aggregator.trim_fraction",
                    trim_fraction,
                    "must be in [0, 0.5)",
                ));
            }
            Aggregator::CenteredClip { tau, iters }
                if !(tau.is_finite() && tau > 0.0) || iters == 0 =>
            {
                return Err(invalid(
                    "aggregate.aggregator.tau",
                    tau,
                    "tau > 0 and iters > 0",
                ));
            }
            _ => {}
        }
        let lr_ok = |lr: f32| lr.is_finite() && lr > 0.0;
        match a.outer {
            OuterOptimizer::Nesterov { lr, momentum }
                if !lr_ok(lr) || !(0.0..1.0).contains(&momentum) =>
            {
                Err(invalid(
                    "aggregate.outer",
                    lr,
                    "lr > 0 and momentum in [0, 1)",
                ))
            }
            OuterOptimizer::Average { lr } if !lr_ok(lr) => {
                Err(invalid("aggregate.outer.lr", lr, "must be positive"))
            }
            _ => Ok(()),
        }
    }
}

//! LoRA training: AdamW over the adapter `Var`s only, warmup + cosine schedule, global-norm
//! clipping, gradient accumulation, and a step or wall-clock budget.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::batch::Sequence;
use crate::error::{ModelError, Result};
use crate::llama::Model;
use crate::loss::make_batch;
use crate::schedule::{clip_grad_norm, lr_at};

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Optimizer steps to run in one [`Trainer::train`] call.
    pub max_steps: usize,
    /// Wall-clock budget for one call, in seconds.
    pub max_seconds: Option<f64>,
    /// Length of the cosine schedule in optimizer steps (default: `max_steps`).
    pub schedule_steps: Option<usize>,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip.
    pub grad_clip: Option<f64>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accum_steps: usize,
    /// Seed for LoRA dropout masks.
    pub seed: u64,
    /// Activation checkpointing: keep one block's activations at a time and recompute each
    /// block in the backward pass ([`crate::recompute`]); same gradients, one more forward.
    pub checkpoint_activations: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            max_steps: 100,
            max_seconds: None,
            schedule_steps: None,
            min_lr_ratio: 0.1,
            grad_clip: Some(1.0),
            batch_size: 4,
            accum_steps: 1,
            seed: 0,
            checkpoint_activations: false,
        }
    }
}

/// Progress after one optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// Optimizer steps done in this call (1-based).
    pub step: usize,
    /// Mean token loss of this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Input tokens processed in this call so far.
    pub tokens: usize,
    /// Seconds since the call started.
    pub seconds: f64,
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_steps` reached.
    Steps,
    /// Wall-clock budget spent.
    Time,
    /// The callback asked to stop.
    Callback,
}

/// Summary of one [`Trainer::train`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Input tokens processed (b·t summed).
    pub tokens: usize,
    /// Scored target tokens.
    pub target_tokens: usize,
    /// Mean of the per-step losses.
    pub mean_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_second: f64,
    /// Steps skipped because the gradient was not finite.
    pub skipped_steps: usize,
    /// Why it stopped.
    pub stopped_by: StopReason,
}

/// An AdamW optimizer over a model's LoRA variables that keeps its state between calls.
pub struct Trainer {
    cfg: TrainConfig,
    opt: AdamW,
    vars: Vec<candle_core::Var>,
    global_step: usize,
    cursor: usize,
}

impl Trainer {
    /// Creates the optimizer over `model.trainable_vars()`.
    pub fn new(model: &Model, cfg: TrainConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.accum_steps == 0 {
            return Err(ModelError::Config(format!(
                "batch_size {} and accum_steps {} must be positive",
                cfg.batch_size, cfg.accum_steps
            )));
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(ModelError::Config(format!(
                "learning rate {} must be positive",
                cfg.lr
            )));
        }
        let vars = model.trainable_vars();
        if vars.is_empty() {
            return Err(ModelError::Config(
                "model has no trainable LoRA variables".into(),
            ));
        }
        let params = ParamsAdamW {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        };
        let opt = AdamW::new(vars.clone(), params)?;
        Ok(Self {
            cfg,
            opt,
            vars,
            global_step: 0,
            cursor: 0,
        })
    }

    /// Optimizer steps taken over all calls.
    pub fn global_step(&self) -> usize {
        self.global_step
    }

    /// Trains on `data` (cycled in order from where the last call stopped) until `max_steps`,
    /// the time budget, or the callback's `Break`.
    pub fn train(
        &mut self,
        model: &Model,
        data: &[Sequence],
        mut on_step: impl FnMut(&StepInfo) -> ControlFlow<()>,
    ) -> Result<TrainReport> {
        if data.iter().all(|s| s.target_count() == 0) {
            return Err(ModelError::Input(format!(
                "none of the {} sequences has a scored token",
                data.len()
            )));
        }
        let start = Instant::now();
        let horizon = self.cfg.schedule_steps.unwrap_or(self.cfg.max_steps);
        let (mut steps, mut tokens, mut targets, mut skipped) = (0usize, 0usize, 0usize, 0usize);
        let (mut loss_sum, mut last_loss) = (0f64, f64::NAN);
        let mut stopped_by = StopReason::Steps;
        while steps < self.cfg.max_steps {
            if self
                .cfg
                .max_seconds
                .is_some_and(|s| start.elapsed().as_secs_f64() >= s)
            {
                stopped_by = StopReason::Time;
                break;
            }
            let micro: Vec<Vec<Sequence>> = (0..self.cfg.accum_steps)
                .map(|_| self.next_batch(data))
                .collect();
            let step_targets: usize = micro.iter().flatten().map(Sequence::target_count).sum();
            if step_targets == 0 {
                continue;
            }
            let lr = lr_at(
                self.global_step,
                self.cfg.lr,
                self.cfg.warmup_steps,
                horizon,
                self.cfg.min_lr_ratio,
            );
            self.opt.set_learning_rate(lr);
            let (mut grads, loss, step_tokens) = self.accumulate(model, &micro, step_targets)?;
            let norm = match self.cfg.grad_clip {
                Some(c) => clip_grad_norm(&mut grads, &self.vars, c)?,
                None => crate::schedule::grad_norm(&grads, &self.vars)?,
            };
            if norm.is_finite() && loss.is_finite() {
                self.opt.step(&grads)?;
            } else {
                tracing::warn!(
                    step = self.global_step,
                    norm,
                    loss,
                    "non-finite gradient, step skipped"
                );
                skipped += 1;
            }
            self.global_step += 1;
            steps += 1;
            tokens += step_tokens;
            targets += step_targets;
            loss_sum += loss;
            last_loss = loss;
            let info = StepInfo {
                step: steps,
                loss,
                lr,
                grad_norm: norm,
                tokens,
                seconds: start.elapsed().as_secs_f64(),
            };
            if on_step(&info).is_break() {
                stopped_by = StopReason::Callback;
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(TrainReport {
            steps,
            tokens,
            target_tokens: targets,
            mean_loss: if steps > 0 {
                loss_sum / steps as f64
            } else {
                f64::NAN
            },
            last_loss,
            seconds,
            tokens_per_second: if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            },
            skipped_steps: skipped,
            stopped_by,
        })
    }

    fn next_batch(&mut self, data: &[Sequence]) -> Vec<Sequence> {
        let mut out = Vec::with_capacity(self.cfg.batch_size);
        for _ in 0..self.cfg.batch_size {
            if let Some(s) = data.get(self.cursor % data.len().max(1)) {
                out.push(s.clone());
            }
            self.cursor = self.cursor.wrapping_add(1);
        }
        out
    }

    /// Backward over the micro-batches; gradients are of the mean over all `total` targets.
    fn accumulate(
        &self,
        model: &Model,
        micro: &[Vec<Sequence>],
        total: usize,
    ) -> Result<(GradStore, f64, usize)> {
        let mut acc: Option<GradStore> = None;
        let mut loss = 0f64;
        let mut tokens = 0;
        let dropout = model.lora_config().is_some_and(|l| l.dropout > 0.0);
        for (i, seqs) in micro.iter().enumerate() {
            let batch = make_batch(seqs, model.config().vocab, model.device(), model.dtype())?;
            tokens += batch.tokens;
            if batch.target_count == 0 {
                continue;
            }
            let seed = dropout.then(|| {
                self.cfg.seed.wrapping_add(
                    (self.global_step * self.cfg.accum_steps + i) as u64 * 0x9E37_79B9,
                )
            });
            let grads = if self.cfg.checkpoint_activations {
                let (part, grads) = crate::recompute::loss_and_grads(
                    model,
                    &batch.ids,
                    &batch.targets,
                    &batch.weights,
                    total as f64,
                    seed,
                )?;
                loss += part;
                grads
            } else {
                let h = model.hidden_states(&batch.ids, seed)?;
                let part =
                    (model.head_nll_sum(&h, &batch.targets, &batch.weights)? / total as f64)?;
                loss += part.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                part.backward()?
            };
            acc = Some(match acc {
                None => grads,
                Some(mut a) => {
                    for v in &self.vars {
                        if let Some(g) = grads.get(v.as_tensor()) {
                            let sum = match a.get(v.as_tensor()) {
                                Some(prev) => (prev + g)?,
                                None => g.clone(),
                            };
                            a.insert(v.as_tensor(), sum);
                        }
                    }
                    a
                }
            });
        }
        let grads = acc.ok_or_else(|| ModelError::Input("step had no scored tokens".into()))?;
        Ok((grads, loss, tokens))
    }
}

/// Convenience: a fresh [`Trainer`] run once.
pub fn train(
    model: &Model,
    data: &[Sequence],
    cfg: &TrainConfig,
    on_step: impl FnMut(&StepInfo) -> ControlFlow<()>,
) -> Result<TrainReport> {
    Trainer::new(model, cfg.clone())?.train(model, data, on_step)
}

/// Mean token loss over `data` and its gradient with respect to the trainable adapter, flattened
/// in [`Model::adapter_layout`] order (no dropout). The coordinator's screen uses it as the
/// round's reference direction.
pub fn loss_gradient(
    model: &Model,
    data: &[Sequence],
    batch_size: usize,
) -> Result<(f64, Vec<f32>)> {
    let total: usize = data.iter().map(Sequence::target_count).sum();
    if total == 0 {
        return Err(ModelError::Input(format!(
            "none of the {} sequences has a scored token",
            data.len()
        )));
    }
    let vars = model.trainable_vars();
    let mut sum: Vec<Option<candle_core::Tensor>> = vec![None; vars.len()];
    let mut loss = 0f64;
    for chunk in data.chunks(batch_size.max(1)) {
        let batch = make_batch(chunk, model.config().vocab, model.device(), model.dtype())?;
        if batch.target_count == 0 {
            continue;
        }
        let h = model.hidden_states(&batch.ids, None)?;
        let part = (model.head_nll_sum(&h, &batch.targets, &batch.weights)? / total as f64)?;
        loss += part.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let grads = part.backward()?;
        for (acc, v) in sum.iter_mut().zip(&vars) {
            if let Some(g) = grads.get(v.as_tensor()) {
                *acc = Some(match acc.take() {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                });
            }
        }
    }
    let mut flat = Vec::new();
    for (acc, v) in sum.into_iter().zip(&vars) {
        match acc {
            Some(g) => flat.extend(
                g.flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?,
            ),
            None => flat.extend(std::iter::repeat_n(0f32, v.as_tensor().elem_count())),
        }
    }
    Ok((loss, flat))
}

//! The training thread: owns the model and the inner optimizer, trains one round per job.
//!
//! Training is CPU/GPU-bound and blocking, so it runs on its own thread, off the async runtime.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use hearth_model::candle_core::{DType, Device};
use hearth_model::{spec, Model, Sequence, StepInfo, TrainReport, Trainer};
use hearth_proto::{NamedTensor, RunSpec, TensorLayout};
use tokio::sync::oneshot;

use crate::control::{Control, Gate};
use crate::device::DeviceChoice;

/// A step callback: sees each step (with `seconds` counting training time only, pauses left out)
/// and may stop the round early.
pub type StepCallback = Box<dyn FnMut(&StepInfo) -> ControlFlow<()> + Send>;

/// One round of local training from `params`.
struct Job {
    params: Vec<NamedTensor>,
    progress: StepCallback,
    reply: oneshot::Sender<Result<Trained>>,
}

/// Where and how the training thread trains.
#[derive(Debug, Clone)]
pub struct TrainerSetup {
    /// The device.
    pub device: DeviceChoice,
    /// Cap on sequences per micro-batch (`--max-batch`); the effective batch is kept by
    /// accumulating gradients.
    pub max_batch: Option<usize>,
    /// How the frozen base weights are held (`--dtype`) and activation checkpointing.
    pub footprint: crate::memory::Footprint,
    /// Pause, hours and stop.
    pub control: Control,
}

/// The result of a round of local training.
#[derive(Debug)]
pub struct Trained {
    /// Adapter after training, in layout order.
    pub params: Vec<NamedTensor>,
    /// Steps, tokens, loss, time.
    pub report: TrainReport,
}

/// Handle to the training thread.
#[derive(Debug, Clone)]
pub struct TrainerHandle {
    tx: std::sync::mpsc::Sender<Job>,
    stop: Arc<AtomicBool>,
    /// Sequences per micro-batch and micro-batches per step, after `--max-batch`.
    pub micro_batch: (usize, usize),
}

/// Put `tensors` in `layout` order, checking names and shapes.
pub fn arrange(layout: &[TensorLayout], tensors: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
    let mut by_name: std::collections::HashMap<String, NamedTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    layout
        .iter()
        .map(|l| {
            let t = by_name
                .remove(&l.name)
                .ok_or_else(|| anyhow!("the model has no adapter tensor {}", l.name))?;
            if t.shape != l.shape {
                return Err(anyhow!(
                    "adapter tensor {} has shape {:?}, the run expects {:?}",
                    l.name,
                    t.shape,
                    l.shape
                ));
            }
            Ok(t)
        })
        .collect()
}

impl TrainerHandle {
    /// Load the run's model on a new thread (returns once loaded) and train on `data` per job.
    pub async fn spawn(
        spec: RunSpec,
        model_file: Option<PathBuf>,
        data: Vec<Sequence>,
        seed: u64,
        setup: TrainerSetup,
    ) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_t = stop.clone();
        let mut cfg = spec::train_config(&spec.train, seed);
        // One inner optimizer across rounds (DiLoCo keeps the inner AdamW state); the
        // schedule warms up once and then stays near the peak learning rate.
        cfg.schedule_steps = Some(cfg.max_steps.saturating_mul(1000).max(1));
        if let Some(cap) = setup.max_batch {
            (cfg.batch_size, cfg.accum_steps) =
                crate::memory::cap_batch(cfg.batch_size, cfg.accum_steps, cap);
        }
        cfg.checkpoint_activations = setup.footprint.checkpoint;
        let micro_batch = (cfg.batch_size, cfg.accum_steps);
        // The time budget counts training time only: enforced below, with pauses left out.
        let budget = cfg.max_seconds.take();
        let control = setup.control;
        std::thread::Builder::new()
            .name("hearth-trainer".into())
            .spawn(move || {
                let setup = (|| -> Result<(Model, Trainer, Vec<TensorLayout>)> {
                    let source = spec::model_source(&spec.base.source, model_file.as_deref());
                    let device = setup.device.open()?;
                    // Read on the host; the model takes each tensor to the device as it is
                    // built, the projections only once compact (`--dtype`).
                    let base = hearth_model::load_base(&source, &Device::Cpu, DType::F32)
                        .context("loading the base model")?;
                    spec::check_model(&spec.base, &spec.arch, &base.config)
                        .map_err(|e| anyhow::anyhow!("refusing the base model: {e}"))?;
                    let lora = spec::lora_config(&spec.lora)?;
                    let model = hearth_model::Model::load_onto(
                        &base.weights,
                        &base.config,
                        Some(&lora),
                        setup.footprint.dtype,
                        &device,
                    )?;
                    drop(base);
                    let trainer = Trainer::new(&model, cfg)?;
                    let layout = spec.adapter_layout()?;
                    Ok((model, trainer, layout))
                })();
                let (mut model, mut trainer, layout) = match setup {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(mut job) = rx.recv() {
                    let result = (|| -> Result<Trained> {
                        model.set_adapter(&job.params)?;
                        let stop = &stop_t;
                        let mut paused = 0f64;
                        let mut report = trainer.train(&model, &data, |info| {
                            let active = (info.seconds - paused).max(0.0);
                            let seen = StepInfo {
                                seconds: active,
                                ..info.clone()
                            };
                            if (job.progress)(&seen).is_break()
                                || stop.load(Ordering::Relaxed)
                                || budget.is_some_and(|b| active >= b)
                            {
                                return ControlFlow::Break(());
                            }
                            match control.gate() {
                                Gate::Go(waited) => {
                                    paused += waited.as_secs_f64();
                                    ControlFlow::Continue(())
                                }
                                Gate::Stop => ControlFlow::Break(()),
                            }
                        })?;
                        report.seconds = (report.seconds - paused).max(0.0);
                        report.tokens_per_second = if report.seconds > 0.0 {
                            report.tokens as f64 / report.seconds
                        } else {
                            0.0
                        };
                        let params = arrange(&layout, model.adapter_tensors()?)?;
                        Ok(Trained { params, report })
                    })();
                    let _ = job.reply.send(result);
                }
            })
            .context("starting the training thread")?;
        ready_rx
            .await
            .map_err(|_| anyhow!("the training thread died while loading"))??;
        Ok(Self {
            tx,
            stop,
            micro_batch,
        })
    }

    /// Train one round from `params`.
    pub async fn train(
        &self,
        params: Vec<NamedTensor>,
        progress: impl FnMut(&StepInfo) -> ControlFlow<()> + Send + 'static,
    ) -> Result<Trained> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                params,
                progress: Box::new(progress),
                reply,
            })
            .map_err(|_| anyhow!("the training thread is gone"))?;
        rx.await.map_err(|_| anyhow!("the training thread died"))?
    }

    /// Ask the current round's training to stop after the step in progress.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

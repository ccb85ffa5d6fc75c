//! `hearth-coordinator demo`: a coordinator and N worker processes on loopback, then a summary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use tracing::{info, warn};

use crate::config::RunConfig;
use crate::init::{init, InitOptions, Preset};
use crate::overrides::{outer_label, RunOverrides};
use crate::service::{RunOptions, Service};
use crate::state::State;

/// What `demo` needs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Base model preset.
    pub preset: Preset,
    /// Model file for non-tiny presets.
    pub model: Option<PathBuf>,
    /// Worker processes to start.
    pub workers: usize,
    /// Rounds to run.
    pub rounds: u64,
    /// Working directory (a fresh temporary one when absent).
    pub dir: Option<PathBuf>,
    /// HTTP bind address of the coordinator.
    pub http: String,
    /// Threads per worker (defaults to the cores divided among the workers).
    pub threads: Option<usize>,
    /// How many of the workers misbehave.
    pub adversaries: usize,
    /// How they misbehave (a `hearth-worker join --attack` value).
    pub attack: String,
    /// Fresh demo-task examples decoded greedily before and after (0 = skip).
    pub accuracy_examples: usize,
    /// Training shards the data is cut into (default: the init default).
    pub shards: Option<usize>,
    /// Seed of the demo task, the split and the shards (default: the init default).
    pub seed: Option<u64>,
    /// Settings layered over the preset's run.toml.
    pub overrides: RunOverrides,
    /// Worker `i` serves Prometheus metrics on 127.0.0.1:(this + i).
    pub worker_metrics_port: Option<u16>,
    /// Run as a private swarm with this key file (coordinator and every worker).
    pub swarm_key: Option<PathBuf>,
}

/// Greedy exact-match accuracy of the base model and of the last checkpoint on `n` demo-task
/// examples generated with another seed than the training data.
fn exact_match_before_after(
    config: &std::path::Path,
    state: &State,
    n: usize,
) -> Result<(f64, f64)> {
    let cfg = crate::config::RunConfig::load(config)?;
    let data_dir = cfg.data_dir(config);
    let store = crate::store::BlobStore::open(data_dir.join("blobs"))?;
    let model_file = crate::base_model::base_model_path(&store, &cfg.run.base, &data_dir)?;
    let mut ev = crate::evaluator::Evaluator::load(&cfg.run, model_file.as_deref(), Vec::new(), 1)?;
    let layout = cfg.run.adapter_layout()?;
    let first = state
        .checkpoints
        .first()
        .ok_or_else(|| anyhow!("no checkpoint"))?;
    let last = state
        .checkpoints
        .last()
        .ok_or_else(|| anyhow!("no checkpoint"))?;
    let load = |m: &hearth_proto::CheckpointManifest| -> Result<Vec<hearth_proto::NamedTensor>> {
        Ok(hearth_proto::decode_checkpoint(
            &store.get(&m.adapter)?,
            &layout,
        )?)
    };
    let examples = hearth_model::demo::generate(n, ACCURACY_SEED);
    let base = ev.exact_match(&load(&first.manifest)?, &examples)?;
    let tuned = ev.exact_match(&load(&last.manifest)?, &examples)?;
    Ok((base, tuned))
}

/// Seed of the accuracy examples (the training data uses the init seed).
const ACCURACY_SEED: u64 = 1_000_003;

fn worker_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let candidates = [dir.join("hearth-worker"), dir.join("../hearth-worker")];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "hearth-worker not found next to {}; build it with `cargo build --bin hearth-worker`",
            exe.display()
        )
    })
}

/// Run the demo and return the one-line JSON summary.
pub async fn demo(opts: &DemoOptions) -> Result<serde_json::Value> {
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("hearth-demo-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut init_opts = InitOptions::new(opts.preset, dir.join("run"));
    init_opts.model = opts.model.clone();
    if let Some(s) = opts.shards {
        init_opts.shards = s;
    }
    if let Some(s) = opts.seed {
        init_opts.seed = s;
    }
    let config = tokio::task::spawn_blocking(move || init(&init_opts)).await??;
    let mut cfg = RunConfig::load(&config)?;
    if !opts.overrides.is_empty() {
        opts.overrides.apply(&mut cfg)?;
        crate::store::write_atomic(&config, cfg.to_commented_toml()?.as_bytes())?;
    }
    let started = std::time::Instant::now();
    let run_opts = RunOptions {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        http: Some(opts.http.clone()),
        rounds: Some(opts.rounds),
        addr_file: None,
        swarm_key: opts
            .swarm_key
            .as_deref()
            .map(hearth_net::SwarmKey::load)
            .transpose()
            .context("--swarm-key")?,
    };
    let (svc, events) = Service::start(&config, &run_opts).await?;
    let data_dir = svc.data_dir().to_path_buf();
    if !opts.http.is_empty() {
        let bound =
            crate::http::serve(&opts.http, svc.snapshot(), svc.metrics(), data_dir.clone()).await?;
        println!("dashboard: http://{bound}/");
    }
    let addr = svc
        .dial_addrs()
        .await
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the coordinator has no listen address"))?;
    info!(%addr, "coordinator listening");
    let children = spawn_workers(opts, &addr.to_string(), &dir)?;
    svc.run(events).await?;
    let swarm_seconds = started.elapsed().as_secs_f64();
    for mut c in children {
        match tokio::time::timeout(Duration::from_secs(20), c.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => warn!(%status, "a demo worker exited with an error"),
            _ => {
                let _ = c.kill().await;
            }
        }
    }
    summary(opts, &config, &cfg, &data_dir, swarm_seconds).await
}

/// Start the demo's `hearth-worker join` processes against `addr`, each with its own cache dir
/// under `dir` (the first `opts.adversaries` of them attacking).
fn spawn_workers(
    opts: &DemoOptions,
    addr: &str,
    dir: &std::path::Path,
) -> Result<Vec<tokio::process::Child>> {
    let worker = worker_binary()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = opts
        .threads
        .unwrap_or_else(|| (cores / opts.workers.max(1)).max(1));
    let key_file = opts
        .swarm_key
        .as_deref()
        .map(std::path::absolute)
        .transpose()?;
    let key_args: Vec<&std::ffi::OsStr> = key_file
        .iter()
        .flat_map(|k| [std::ffi::OsStr::new("--swarm-key"), k.as_os_str()])
        .collect();
    let mut children = Vec::new();
    for i in 0..opts.workers {
        let adversary = i < opts.adversaries;
        let name = if adversary {
            format!("adversary-{i}-{}", opts.attack)
        } else {
            format!("demo-worker-{i}")
        };
        let mut extra: Vec<String> = if adversary {
            vec!["--attack".into(), opts.attack.clone()]
        } else {
            Vec::new()
        };
        if let Some(port) = opts.worker_metrics_port {
            let port = usize::from(port) + i;
            if port > usize::from(u16::MAX) {
                return Err(anyhow!(
                    "--worker-metrics-port leaves no port for worker {i}"
                ));
            }
            extra.extend(["--metrics".into(), format!("127.0.0.1:{port}")]);
        }
        let child = tokio::process::Command::new(&worker)
            .arg("join")
            .arg(addr)
            .arg("--cache-dir")
            .arg(dir.join(format!("worker-{i}")))
            .arg("--name")
            .arg(&name)
            .arg("--rounds")
            .arg(opts.rounds.to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--quiet")
            .args(&extra)
            .args(&key_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", worker.display()))?;
        children.push(child);
    }
    Ok(children)
}

/// The demo's one-line JSON summary, from the committed state in `data_dir`.
async fn summary(
    opts: &DemoOptions,
    config: &std::path::Path,
    cfg: &RunConfig,
    data_dir: &std::path::Path,
    swarm_seconds: f64,
) -> Result<serde_json::Value> {
    let state = State::load(data_dir)?;
    let accuracy = if opts.accuracy_examples > 0 {
        let (cfg_path, n) = (config.to_path_buf(), opts.accuracy_examples);
        let st = state.clone();
        Some(
            tokio::task::spawn_blocking(move || exact_match_before_after(&cfg_path, &st, n))
                .await??,
        )
    } else {
        None
    };
    let base_loss = state.checkpoints.first().and_then(|c| c.manifest.eval_loss);
    let checkpoint_bytes = match state.checkpoints.last() {
        Some(c) => crate::store::BlobStore::open(data_dir.join("blobs"))?
            .get(&c.manifest.adapter)?
            .len(),
        None => 0,
    };
    let adapter_values = hearth_proto::total_numel(&cfg.run.adapter_layout()?).unwrap_or(0);
    let adversaries: Vec<_> = state
        .ledger
        .peers
        .values()
        .filter(|p| p.name.starts_with("adversary-"))
        .map(|p| json!({"name": p.name, "accepted": p.accepted, "rejected": p.rejected, "banned": p.banned}))
        .collect();
    Ok(json!({
        "preset": format!("{:?}", opts.preset).to_lowercase(),
        "workers": opts.workers,
        "codec": cfg.run.aggregate.codec.label(),
        "dense_rounds": cfg.run.aggregate.dense_rounds,
        "outer": outer_label(&cfg.run.aggregate.outer),
        "local_steps": cfg.run.train.local_steps,
        "lr": cfg.run.train.lr,
        "target_deltas": cfg.run.aggregate.target_deltas,
        "shards": cfg.run.data.shards.len(),
        "adapter_values": adapter_values,
        "checkpoint_bytes": checkpoint_bytes,
        "swarm_seconds": swarm_seconds,
        "bytes_per_round": state.rounds.iter().map(|r| r.bytes_received).collect::<Vec<_>>(),
        "rounds": state.committed_round,
        "deltas_accepted": state.rounds.iter().map(|r| r.accepted).collect::<Vec<_>>(),
        "deltas_rejected": state.rounds.iter().map(|r| r.rejected).collect::<Vec<_>>(),
        "eval_loss": std::iter::once(base_loss).chain(state.rounds.iter().map(|r| r.eval_loss)).collect::<Vec<_>>(),
        "train_loss": state.rounds.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
        "outcomes": state.rounds.iter().map(|r| r.outcome.clone()).collect::<Vec<_>>(),
        "bytes_received": state.rounds.iter().map(|r| r.bytes_received).sum::<u64>(),
        "tokens": state.rounds.iter().map(|r| r.tokens).sum::<u64>(),
        "round_seconds": state.rounds.iter().map(|r| r.seconds).collect::<Vec<_>>(),
        "adversaries": adversaries,
        "exact_match": accuracy.map(|(b, a)| json!({"base": b, "fine_tuned": a, "examples": opts.accuracy_examples})),
        "data_dir": data_dir.display().to_string(),
    }))
}

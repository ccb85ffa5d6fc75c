//! Runs one `hearth-coordinator demo` swarm and reads its JSON summary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// A workspace binary next to this one (`target/<profile>/<name>`).
pub fn sibling_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build -p hearth-coordinator -p hearth-worker",
            path.display()
        );
    }
    Ok(path)
}

/// One swarm configuration (tiny preset unless a model file is given; loopback, no dashboard).
#[derive(Debug, Clone)]
pub struct DemoSpec {
    /// Short name for files and logs.
    pub tag: String,
    /// Worker processes.
    pub workers: usize,
    /// Rounds to run.
    pub rounds: u64,
    /// Local steps per round (H).
    pub local_steps: u32,
    /// Inner learning rate.
    pub lr: f32,
    /// `--codec` value.
    pub codec: String,
    /// `--outer` value (None: the preset's default).
    pub outer: Option<String>,
    /// Training shards (workers lease one each).
    pub shards: usize,
    /// Deltas that close a round.
    pub target_deltas: u32,
    /// Seed of the demo task and split.
    pub seed: u64,
    /// Worker i serves metrics on this port + i.
    pub worker_metrics_port: Option<u16>,
    /// Extra `--set` overrides.
    pub set: Vec<String>,
    /// `RUST_LOG` of the demo and its workers (its stderr goes to `<tag>.log`).
    pub log: &'static str,
    /// SmolLM2-135M GGUF file: run the `smollm2-135m` preset on it instead of `tiny`.
    pub model: Option<PathBuf>,
}

impl DemoSpec {
    /// The command-line arguments after `hearth-coordinator`.
    pub fn args(&self, dir: &Path, json: &Path) -> Vec<String> {
        let preset = if self.model.is_some() {
            "smollm2-135m"
        } else {
            "tiny"
        };
        let mut a: Vec<String> = vec![
            "demo".into(),
            "--preset".into(),
            preset.into(),
            "--http".into(),
            String::new(),
            "--accuracy-examples".into(),
            "0".into(),
            "--workers".into(),
            self.workers.to_string(),
            "--rounds".into(),
            self.rounds.to_string(),
            "--local-steps".into(),
            self.local_steps.to_string(),
            "--lr".into(),
            self.lr.to_string(),
            "--codec".into(),
            self.codec.clone(),
            "--shards".into(),
            self.shards.to_string(),
            "--target-deltas".into(),
            self.target_deltas.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--json-out".into(),
            json.display().to_string(),
        ];
        if let Some(o) = &self.outer {
            a.extend(["--outer".into(), o.clone()]);
        }
        if let Some(m) = &self.model {
            a.extend(["--model".into(), m.display().to_string()]);
        }
        if let Some(p) = self.worker_metrics_port {
            a.extend(["--worker-metrics-port".into(), p.to_string()]);
        }
        for s in &self.set {
            a.extend(["--set".into(), s.clone()]);
        }
        a
    }

    /// The flags that differ between runs of a table, for the markdown.
    pub fn short_flags(&self) -> String {
        let mut s = format!(
            "--workers {} --rounds {} --local-steps {} --lr {} --codec {} --shards {} --target-deltas {}",
            self.workers,
            self.rounds,
            self.local_steps,
            self.lr,
            self.codec,
            self.shards,
            self.target_deltas
        );
        if let Some(o) = &self.outer {
            s.push_str(&format!(" --outer {o}"));
        }
        s
    }
}

/// What a demo run reported.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// Held-out loss per round; index 0 is the base model.
    pub eval_loss: Vec<f64>,
    /// Deltas accepted per round.
    pub accepted: Vec<u64>,
    /// Deltas rejected per round.
    pub rejected: Vec<u64>,
    /// Delta bytes received per round.
    pub bytes_per_round: Vec<u64>,
    /// Bytes of the checkpoint every worker downloads per round.
    pub checkpoint_bytes: u64,
    /// Trainable adapter values.
    pub adapter_values: u64,
    /// Codec label as the run spec has it.
    pub codec: String,
    /// Outer optimizer label.
    pub outer: String,
    /// Round outcomes (`committed`, `gated`, `carried`).
    pub outcomes: Vec<String>,
    /// Seconds of the whole demo process.
    pub wall_seconds: f64,
}

impl DemoResult {
    /// Held-out loss after the last round.
    pub fn final_loss(&self) -> f64 {
        self.eval_loss.last().copied().unwrap_or(f64::NAN)
    }

    /// Mean bytes per accepted-or-rejected delta.
    pub fn bytes_per_delta(&self) -> f64 {
        let deltas: u64 = self.accepted.iter().chain(&self.rejected).sum();
        self.bytes_per_round.iter().sum::<u64>() as f64 / deltas.max(1) as f64
    }

    /// The summary a finished run left in `work` (`<tag>.json`), if there is one.
    pub fn saved(work: &Path, tag: &str) -> Option<Self> {
        let text = std::fs::read_to_string(work.join(format!("{tag}.json"))).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Self::from_json(&v, f64::NAN).ok()
    }

    fn from_json(v: &Value, wall_seconds: f64) -> Result<Self> {
        let nums = |key: &str| -> Vec<f64> {
            v[key]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default()
        };
        let ints = |key: &str| -> Vec<u64> {
            v[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        let eval_loss = nums("eval_loss");
        if eval_loss.is_empty() {
            bail!("the demo summary has no eval_loss: {v}");
        }
        Ok(Self {
            eval_loss,
            accepted: ints("deltas_accepted"),
            rejected: ints("deltas_rejected"),
            bytes_per_round: ints("bytes_per_round"),
            checkpoint_bytes: v["checkpoint_bytes"].as_u64().unwrap_or(0),
            adapter_values: v["adapter_values"].as_u64().unwrap_or(0),
            codec: v["codec"].as_str().unwrap_or("?").to_string(),
            outer: v["outer"].as_str().unwrap_or("?").to_string(),
            outcomes: v["outcomes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default(),
            wall_seconds,
        })
    }
}

/// A demo process in flight.
pub struct Running {
    /// The demo process's stderr (coordinator and worker logs).
    pub log: PathBuf,
    child: Child,
    json: PathBuf,
    dir: PathBuf,
    started: Instant,
    tag: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `spec` under `work` (its own subdirectory, removed when it finishes).
pub fn start(spec: &DemoSpec, work: &Path) -> Result<Running> {
    let coordinator = sibling_bin("hearth-coordinator")?;
    sibling_bin("hearth-worker")?;
    std::fs::create_dir_all(work)?;
    let dir = work.join(&spec.tag);
    let json = work.join(format!("{}.json", spec.tag));
    let log = work.join(format!("{}.log", spec.tag));
    let _ = std::fs::remove_file(&json);
    let stderr = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    eprintln!("  run {}: {}", spec.tag, spec.short_flags());
    let child = Command::new(&coordinator)
        .args(spec.args(&dir, &json))
        .env("RUST_LOG", spec.log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", coordinator.display()))?;
    Ok(Running {
        child,
        json,
        dir,
        log,
        started: Instant::now(),
        tag: spec.tag.clone(),
    })
}

impl Running {
    /// Wait for the demo to finish (killing it after `timeout`) and read its summary.
    pub fn finish(mut self, timeout: Duration) -> Result<DemoResult> {
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                bail!(
                    "demo {} did not finish within {timeout:?}; log: {}",
                    self.tag,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let wall = self.started.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "demo {} failed ({status}); log: {}",
                self.tag,
                self.log.display()
            );
        }
        let text = std::fs::read_to_string(&self.json)
            .with_context(|| format!("reading {}", self.json.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", self.json.display()))?;
        let _ = std::fs::remove_dir_all(&self.dir);
        let r = DemoResult::from_json(&v, wall)?;
        eprintln!(
            "  run {}: held-out loss {:.4} → {:.4} in {:.0} s",
            self.tag,
            r.eval_loss[0],
            r.final_loss(),
            wall
        );
        Ok(r)
    }
}

/// Start and finish one run.
pub fn run(spec: &DemoSpec, work: &Path, timeout: Duration) -> Result<DemoResult> {
    start(spec, work)?.finish(timeout)
}

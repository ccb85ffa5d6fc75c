//! A run on loopback: `init` a tiny run, start coordinators and workers, read the committed
//! state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::proc::{bin, Proc};

/// `hearth-coordinator init --preset tiny --out DIR/run`, then apply `edit` to run.toml's text.
pub fn init_tiny(dir: &Path, edit: impl Fn(String) -> String) -> Result<PathBuf> {
    let out = dir.join("run");
    let status = Command::new(bin("hearth-coordinator"))
        .args(["init", "--preset", "tiny", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .context("running hearth-coordinator init")?;
    if !status.success() {
        return Err(anyhow!("init failed: {status}"));
    }
    let config = out.join("run.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, edit(text))?;
    Ok(config)
}

/// Replace the value of `key = ...` (first occurrence) in TOML text.
pub fn set_toml(text: String, key: &str, value: &str) -> String {
    let mut done = false;
    text.lines()
        .map(|l| {
            if !done && l.trim_start().starts_with(&format!("{key} = ")) {
                done = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The coordinator's committed state (state.json) as JSON.
pub fn state(config: &Path) -> Result<Value> {
    let path = config.with_file_name("data").join("state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Poll state.json until `committed_round >= round`.
pub fn wait_for_round(config: &Path, round: u64, timeout: Duration) -> Result<Value> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = state(config) {
            if s["committed_round"].as_u64().unwrap_or(0) >= round {
                return Ok(s);
            }
        }
        if Instant::now() > end {
            return Err(anyhow!(
                "round {round} was not committed within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `hearth-coordinator run` to start on loopback: the one way the helpers below start a
/// coordinator. Defaults: no HTTP, run until killed (`rounds` 0), stdout discarded.
pub struct CoordinatorRun<'a> {
    config: &'a Path,
    listen: &'a str,
    log: &'a Path,
    http: &'a str,
    rounds: u64,
    env: Vec<(&'a str, String)>,
    args: Vec<&'a str>,
    stdout_file: bool,
}

impl<'a> CoordinatorRun<'a> {
    /// `hearth-coordinator run --config CONFIG --listen LISTEN`, stderr to `log`.
    pub fn new(config: &'a Path, listen: &'a str, log: &'a Path) -> Self {
        Self {
            config,
            listen,
            log,
            http: "",
            rounds: 0,
            env: Vec::new(),
            args: Vec::new(),
            stdout_file: false,
        }
    }

    /// Serve HTTP (dashboard, JSON API, /metrics) on `http` ("" for none).
    pub fn http(mut self, http: &'a str) -> Self {
        self.http = http;
        self
    }

    /// Stop after `rounds` committed rounds (0: run until killed).
    pub fn rounds(mut self, rounds: u64) -> Self {
        self.rounds = rounds;
        self
    }

    /// Extra environment variables.
    pub fn env(mut self, env: &[(&'a str, String)]) -> Self {
        self.env.extend(env.iter().cloned());
        self
    }

    /// Extra arguments, after the others.
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.args.extend_from_slice(args);
        self
    }

    /// Keep stdout (the printed `listening on` lines) in `log` with the extension `out`.
    pub fn stdout_to_file(mut self) -> Self {
        self.stdout_file = true;
        self
    }

    /// Start it and wait for its dialable address.
    pub fn start(self) -> Result<(Proc, String)> {
        let stdout: Stdio = if self.stdout_file {
            std::fs::File::create(self.log.with_extension("out"))?.into()
        } else {
            Stdio::null()
        };
        let addr_file = self
            .config
            .with_file_name(format!("addr-{}", std::process::id()));
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(bin("hearth-coordinator"))
            .arg("run")
            .arg("--config")
            .arg(self.config)
            .args([
                "--listen",
                self.listen,
                "--http",
                self.http,
                "--rounds",
                &self.rounds.to_string(),
                "--addr-file",
            ])
            .arg(&addr_file)
            .args(&self.args)
            .stdout(stdout)
            .stderr(std::fs::File::create(self.log)?)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .spawn()
            .context("starting hearth-coordinator run")?;
        let mut proc = Proc {
            child,
            label: "coordinator".into(),
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let addr = std::fs::read_to_string(&addr_file).unwrap_or_default();
            if !addr.trim().is_empty() {
                return Ok((proc, addr.trim().to_string()));
            }
            if let Some(status) = proc.child.try_wait()? {
                return Err(anyhow!(
                    "coordinator exited early ({status}); log: {}",
                    std::fs::read_to_string(self.log).unwrap_or_default()
                ));
            }
            if Instant::now() > end {
                return Err(anyhow!("coordinator did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `hearth-worker join ADDR --threads 1` to start, with the cache dir `dir/NAME` (so a
/// restarted worker keeps its identity and downloads): the one way the helpers below start a
/// worker. Its log goes to `dir/NAME.log` unless [`WorkerRun::log`] says otherwise.
pub struct WorkerRun<'a> {
    addr: &'a str,
    dir: &'a Path,
    name: &'a str,
    rounds: u64,
    log: Option<&'a Path>,
    args: Vec<&'a str>,
}

impl<'a> WorkerRun<'a> {
    /// Worker `name` of the coordinator at `addr`, contributing to `rounds` rounds.
    pub fn new(addr: &'a str, dir: &'a Path, name: &'a str, rounds: u64) -> Self {
        Self {
            addr,
            dir,
            name,
            rounds,
            log: None,
            args: Vec::new(),
        }
    }

    /// Its log at `log` (so each life of a restarted worker keeps its own).
    pub fn log(mut self, log: &'a Path) -> Self {
        self.log = Some(log);
        self
    }

    /// Extra arguments (e.g. `--metrics 127.0.0.1:PORT`).
    pub fn args(mut self, args: &[&'a str]) -> Self {
        self.args.extend_from_slice(args);
        self
    }

    /// Start it.
    pub fn start(self) -> Result<Proc> {
        let cache = self.dir.join(self.name);
        std::fs::create_dir_all(&cache)?;
        let log = match self.log {
            Some(l) => l.to_path_buf(),
            None => self.dir.join(format!("{}.log", self.name)),
        };
        let child = Command::new(bin("hearth-worker"))
            .args([
                "join",
                self.addr,
                "--name",
                self.name,
                "--threads",
                "1",
                "--rounds",
            ])
            .arg(self.rounds.to_string())
            .arg("--cache-dir")
            .arg(&cache)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("starting hearth-worker")?;
        Ok(Proc {
            child,
            label: self.name.to_string(),
        })
    }
}

/// Start `hearth-coordinator run` on a loopback port; returns it and the dialable address.
pub fn start_coordinator(
    config: &Path,
    listen: &str,
    rounds: u64,
    log: &Path,
) -> Result<(Proc, String)> {
    CoordinatorRun::new(config, listen, log)
        .rounds(rounds)
        .start()
}

/// [`start_coordinator`] with extra environment variables.
pub fn start_coordinator_env(
    config: &Path,
    listen: &str,
    rounds: u64,
    log: &Path,
    env: &[(&str, String)],
) -> Result<(Proc, String)> {
    CoordinatorRun::new(config, listen, log)
        .rounds(rounds)
        .env(env)
        .start()
}

/// Start `hearth-coordinator run` serving HTTP (dashboard, JSON API, /metrics) on `http`;
/// `rounds` 0 runs until killed. Returns it and the dialable libp2p address.
pub fn start_coordinator_http(
    config: &Path,
    listen: &str,
    http: &str,
    rounds: u64,
    log: &Path,
) -> Result<(Proc, String)> {
    CoordinatorRun::new(config, listen, log)
        .http(http)
        .rounds(rounds)
        .start()
}

/// Start `hearth-coordinator run --config CONFIG --listen LISTEN --http HTTP --rounds 0` with
/// `extra` arguments (e.g. `--swarm-key FILE`, a second `--listen`); stderr goes to `log`, stdout
/// (the printed `listening on` lines) to `log` with the extension `out`. Waits for the dialable
/// address like [`start_coordinator`].
pub fn start_coordinator_args(
    config: &Path,
    listen: &str,
    http: &str,
    log: &Path,
    extra: &[&str],
) -> Result<(Proc, String)> {
    CoordinatorRun::new(config, listen, log)
        .http(http)
        .args(extra)
        .stdout_to_file()
        .start()
}

/// Start `hearth-worker join ADDR` with its own cache dir.
pub fn start_worker(addr: &str, dir: &Path, name: &str, rounds: u64) -> Result<Proc> {
    WorkerRun::new(addr, dir, name, rounds).start()
}

/// [`start_worker`] with extra arguments (e.g. `--metrics 127.0.0.1:PORT`); its log goes to
/// `dir/NAME.log`.
pub fn start_worker_with(
    addr: &str,
    dir: &Path,
    name: &str,
    rounds: u64,
    extra: &[&str],
) -> Result<Proc> {
    WorkerRun::new(addr, dir, name, rounds).args(extra).start()
}

/// [`start_worker_with`] with its log at `log` (so each life of a restarted worker keeps its own).
pub fn start_worker_logged(
    addr: &str,
    dir: &Path,
    name: &str,
    log: &Path,
    rounds: u64,
    extra: &[&str],
) -> Result<Proc> {
    WorkerRun::new(addr, dir, name, rounds)
        .log(log)
        .args(extra)
        .start()
}

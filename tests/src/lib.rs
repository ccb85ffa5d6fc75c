//! Helpers for the multi-process swarm tests: start real `hearth-coordinator` and `hearth-worker`
//! processes on loopback, wait on their files, read the coordinator's committed state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// Path of a workspace binary (built by `cargo test --workspace` next to the test executables).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join(name)
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub label: String,
}

impl Proc {
    /// Wait up to `timeout` for the process to exit; its exit code.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<i32> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() >= end {
                return Err(anyhow!("{} did not exit within {timeout:?}", self.label));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it wrote to stdout (after it exited).
    pub fn stdout(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Start `hearth-coordinator run` on a loopback port; returns it and the dialable address.
pub fn start_coordinator(
    config: &Path,
    listen: &str,
    rounds: u64,
    log: &Path,
) -> Result<(Proc, String)> {
    let addr_file = config.with_file_name(format!("addr-{}", std::process::id()));
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(bin("hearth-coordinator"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args([
            "--listen",
            listen,
            "--http",
            "",
            "--rounds",
            &rounds.to_string(),
            "--addr-file",
        ])
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting hearth-coordinator run")?;
    let mut proc = Proc {
        child,
        label: "coordinator".into(),
    };
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if !a.is_empty() {
                return Ok((proc, a.trim().to_string()));
            }
        }
        if let Some(status) = proc.child.try_wait()? {
            return Err(anyhow!(
                "coordinator exited early ({status}); log: {}",
                std::fs::read_to_string(log)?
            ));
        }
        if Instant::now() > end {
            return Err(anyhow!("coordinator did not start listening"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start `hearth-worker join ADDR` with its own cache dir.
pub fn start_worker(addr: &str, dir: &Path, name: &str, rounds: u64) -> Result<Proc> {
    let cache = dir.join(name);
    std::fs::create_dir_all(&cache)?;
    let child = Command::new(bin("hearth-worker"))
        .args([
            "join",
            addr,
            "--name",
            name,
            "--threads",
            "1",
            "--rounds",
            &rounds.to_string(),
            "--cache-dir",
        ])
        .arg(&cache)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
        .spawn()
        .context("starting hearth-worker")?;
    Ok(Proc {
        child,
        label: name.to_string(),
    })
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

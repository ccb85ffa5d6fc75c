//! Child processes: workspace binaries, a process killed on drop, signals, peak memory,
//! polling, and files left half-written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

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

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.child.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
    }

    /// SIGINT it (what Ctrl-C sends).
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
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

/// Send `signal` (e.g. "STOP", "CONT", "KILL") to process `pid` with kill(1).
pub fn signal_pid(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Send signal `sig` (e.g. `USR1`) to a process.
pub fn signal(proc: &Proc, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(proc.child.id().to_string())
        .status()?;
    if !status.success() {
        return Err(anyhow!("kill -{sig} {} failed", proc.child.id()));
    }
    Ok(())
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The cargo target directory (parent of the profile directory the test binaries run from).
pub fn target_dir() -> PathBuf {
    let profile = bin("x").parent().map(Path::to_path_buf).unwrap_or_default();
    profile.parent().map(Path::to_path_buf).unwrap_or(profile)
}

/// Poll `f` every 100 ms until it returns `Some`, or fail after `timeout` saying `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Files under `dir` (recursively) whose names mark an unfinished write (`.tmp`, `.partial`).
pub fn unfinished_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".tmp") || name.ends_with(".partial") {
                    out.push(p);
                }
            }
        }
    }
    out
}

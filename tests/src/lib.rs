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
    start_coordinator_env(config, listen, rounds, log, &[])
}

/// [`start_coordinator`] with extra environment variables.
pub fn start_coordinator_env(
    config: &Path,
    listen: &str,
    rounds: u64,
    log: &Path,
    env: &[(&str, String)],
) -> Result<(Proc, String)> {
    spawn_coordinator(config, listen, "", rounds, log, env)
}

/// Start `hearth-coordinator run` (HTTP on `http`, "" for none) and wait for its dialable address.
fn spawn_coordinator(
    config: &Path,
    listen: &str,
    http: &str,
    rounds: u64,
    log: &Path,
    env: &[(&str, String)],
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
            http,
            "--rounds",
            &rounds.to_string(),
            "--addr-file",
        ])
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
                std::fs::read_to_string(log).unwrap_or_default()
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
    start_worker_with(addr, dir, name, rounds, &[])
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

/// Start `hearth-coordinator run` serving HTTP (dashboard, JSON API, /metrics) on `http`;
/// `rounds` 0 runs until killed. Returns it and the dialable libp2p address.
pub fn start_coordinator_http(
    config: &Path,
    listen: &str,
    http: &str,
    rounds: u64,
    log: &Path,
) -> Result<(Proc, String)> {
    spawn_coordinator(config, listen, http, rounds, log, &[])
}

/// Start `hearth-worker join ADDR --threads 1` with its own cache dir and extra arguments
/// (e.g. `--metrics 127.0.0.1:PORT`); its log goes to `dir/NAME.log`.
pub fn start_worker_with(
    addr: &str,
    dir: &Path,
    name: &str,
    rounds: u64,
    extra: &[&str],
) -> Result<Proc> {
    let cache = dir.join(name);
    std::fs::create_dir_all(&cache)?;
    let child = Command::new(bin("hearth-worker"))
        .args(["join", addr, "--name", name, "--threads", "1", "--rounds"])
        .arg(rounds.to_string())
        .arg("--cache-dir")
        .arg(&cache)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
        .spawn()
        .context("starting hearth-worker")?;
    Ok(Proc {
        child,
        label: name.to_string(),
    })
}

/// A loopback TCP port that was free a moment ago (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `url` and return the body (status 200 only), with a 10 s timeout and a 32 MiB cap.
pub fn http_get(url: &str) -> Result<String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    resp.body_mut()
        .with_config()
        .limit(32 << 20)
        .read_to_string()
        .with_context(|| format!("reading {url}"))
}

/// The cargo target directory (parent of the profile directory the test binaries run from).
pub fn target_dir() -> PathBuf {
    let profile = bin("x").parent().map(Path::to_path_buf).unwrap_or_default();
    profile.parent().map(Path::to_path_buf).unwrap_or(profile)
}

/// Headless Chromium: `$HEARTH_CHROMIUM`, else Debian's `/usr/bin/chromium` (or `chromium-browser`).
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether browser tests must run (`HEARTH_REQUIRE_BROWSER=1`, set by .ci/run) instead of skipping.
pub fn browser_required() -> bool {
    std::env::var("HEARTH_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// Run headless Chromium on `url` with `args` added, after `budget_ms` of virtual time for the
/// page's scripts, with a fresh profile. Returns its stdout.
pub fn run_chromium(url: &str, budget_ms: u64, args: &[&str]) -> Result<String> {
    use std::io::Read;
    let browser = chromium().ok_or_else(|| anyhow!("chromium is not installed"))?;
    let profile = tempfile::tempdir()?;
    let child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", browser.display()))?;
    let mut proc = Proc {
        child,
        label: "chromium".into(),
    };
    // Read stdout on a thread so that a large DOM cannot block the browser on a full pipe.
    let stdout = proc.child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut out) = stdout {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let code = proc.wait_timeout(Duration::from_secs(90))?;
    let out = reader
        .join()
        .map_err(|_| anyhow!("chromium output reader panicked"))?;
    if code != 0 {
        return Err(anyhow!("chromium exited with {code} on {url}"));
    }
    Ok(out)
}

/// The page's DOM after its scripts ran for `budget_ms` of virtual time.
pub fn dump_dom(url: &str, budget_ms: u64) -> Result<String> {
    run_chromium(url, budget_ms, &["--dump-dom"])
}

/// A PNG screenshot of the page (`width`×`height`) at `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    run_chromium(
        url,
        4000,
        &[
            &format!("--screenshot={}", path.display()),
            &format!("--window-size={width},{height}"),
        ],
    )?;
    let len = std::fs::metadata(path)
        .with_context(|| format!("no screenshot at {}", path.display()))?
        .len();
    if len < 1000 {
        return Err(anyhow!(
            "screenshot {} has only {len} bytes",
            path.display()
        ));
    }
    Ok(())
}

/// Text of the element with `id="ID"` in serialised HTML: everything up to its closing tag,
/// with tags stripped (nested elements of other names are fine; same-name nesting is not).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html.get(..at)?.rfind('<')?;
    let name: String = html
        .get(tag_start + 1..)?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let body_start = at + html.get(at..)?.find('>')? + 1;
    let body_len = html.get(body_start..)?.find(&format!("</{name}>"))?;
    let inner = html.get(body_start..body_start + body_len)?;
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(text.trim().to_string())
}

/// The value of attribute `attr` on the element with `id="ID"` in serialised HTML.
pub fn element_attr(html: &str, id: &str, attr: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html.get(..at)?.rfind('<')?;
    let tag_end = at + html.get(at..)?.find('>')?;
    let tag = html.get(tag_start..tag_end)?;
    let key = format!(" {attr}=\"");
    let v = tag.get(tag.find(&key)? + key.len()..)?;
    Some(v.get(..v.find('"')?)?.to_string())
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

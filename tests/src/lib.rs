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
    spawn_coordinator(config, listen, "", rounds, log, env, &[], Stdio::null())
}

/// Start `hearth-coordinator run` (HTTP on `http`, "" for none; `extra` arguments after the
/// others) and wait for its dialable address.
#[allow(clippy::too_many_arguments)]
fn spawn_coordinator(
    config: &Path,
    listen: &str,
    http: &str,
    rounds: u64,
    log: &Path,
    env: &[(&str, String)],
    extra: &[&str],
    stdout: Stdio,
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
        .args(extra)
        .stdout(stdout)
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
    spawn_coordinator(config, listen, http, rounds, log, &[], &[], Stdio::null())
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
    start_worker_logged(
        addr,
        dir,
        name,
        &dir.join(format!("{name}.log")),
        rounds,
        extra,
    )
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

/// Start `hearth-worker join ADDR --threads 1` with the cache dir `dir/NAME` (so a restarted
/// worker keeps its identity and downloads) and its log at `log` (so each life keeps its own).
pub fn start_worker_logged(
    addr: &str,
    dir: &Path,
    name: &str,
    log: &Path,
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
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting hearth-worker")?;
    Ok(Proc {
        child,
        label: name.to_string(),
    })
}

/// Send `signal` (e.g. "STOP", "CONT", "KILL") to process `pid` with kill(1).
pub fn signal_pid(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
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

/// `hearth_deltas_total` from Prometheus text, as (outcome, reason) → count.
pub fn deltas_by_reason(metrics: &str) -> std::collections::BTreeMap<(String, String), u64> {
    let label = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!("{key}=\""))? + key.len() + 2;
        let rest = line.get(at..)?;
        Some(rest.get(..rest.find('"')?)?.to_string())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("hearth_deltas_total{"))
        .filter_map(|l| {
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some(((label(l, "outcome")?, label(l, "reason")?), value as u64))
        })
        .collect()
}

/// A small deterministic PRNG (splitmix64) for fault schedules: same seed, same schedule.
#[derive(Debug, Clone)]
pub struct ChaosRng(u64);

impl ChaosRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        ChaosRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// `k` distinct items of `items`, in random order.
    pub fn pick<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let i = self.range(0, pool.len() as u64) as usize;
            out.push(pool.swap_remove(i));
        }
        out
    }
}

/// `addr` (`/ip4/A/tcp/P/p2p/ID`) with its TCP port replaced by `port` (to go through a proxy).
pub fn with_tcp_port(addr: &str, port: u16) -> String {
    let mut parts: Vec<String> = addr.split('/').map(str::to_string).collect();
    if let Some(i) = parts.iter().position(|p| p == "tcp") {
        if let Some(p) = parts.get_mut(i + 1) {
            *p = port.to_string();
        }
    }
    parts.join("/")
}

/// Faults a [`TcpProxy`] injects, changeable while it runs.
#[derive(Debug, Default)]
pub struct ProxyFaults {
    /// Cut a connection (both directions, mid-stream) once it carried this many bytes from the
    /// server to the client; 0 never cuts.
    pub cut_after_downstream: std::sync::atomic::AtomicU64,
    /// How many more connections may be cut.
    pub cuts_left: std::sync::atomic::AtomicU32,
    /// Connections cut so far.
    pub cuts: std::sync::atomic::AtomicU32,
    /// Bytes the cut connections had carried downstream when cut (the last one).
    pub cut_at_bytes: std::sync::atomic::AtomicU64,
    /// When set, the next client→server read of at least `hang_min_read` bytes (an upload) is
    /// forwarded half, then the client process `hang_pid` is SIGSTOPped for `hang_ms`, SIGCONTed,
    /// and the rest is forwarded. Cleared once used.
    pub hang_armed: std::sync::atomic::AtomicBool,
    /// Smallest read that counts as an upload.
    pub hang_min_read: std::sync::atomic::AtomicUsize,
    /// The client process to stop.
    pub hang_pid: std::sync::atomic::AtomicU32,
    /// How long it stays stopped, in ms.
    pub hang_ms: std::sync::atomic::AtomicU64,
    /// Uploads interrupted this way.
    pub hangs: std::sync::atomic::AtomicU32,
    /// Connections accepted.
    pub connections: std::sync::atomic::AtomicU32,
    stop: std::sync::atomic::AtomicBool,
}

/// A loopback TCP proxy (one thread per direction per connection) that can cut links and stall
/// uploads, placed between one worker and the coordinator.
#[derive(Debug)]
pub struct TcpProxy {
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    /// Its faults and counters.
    pub faults: std::sync::Arc<ProxyFaults>,
}

impl TcpProxy {
    /// Listen on a free loopback port and forward every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Self> {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let faults = std::sync::Arc::new(ProxyFaults::default());
        let f = faults.clone();
        std::thread::spawn(move || {
            while !f.stop.load(SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                f.connections.fetch_add(1, SeqCst);
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue; // coordinator down: the client sees the connection close
                };
                let _ = server.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (fu, fd) = (f.clone(), f.clone());
                std::thread::spawn(move || pump(client, server, fu, true));
                std::thread::spawn(move || pump(s2, c2, fd, false));
            }
        });
        Ok(TcpProxy { port, faults })
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.faults
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copy `from` → `to` until either side closes, injecting the proxy's faults.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    f: std::sync::Arc<ProxyFaults>,
    upstream: bool,
) {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::sync::atomic::Ordering::SeqCst;
    let mut buf = vec![0u8; 64 * 1024];
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        if upstream && n >= f.hang_min_read.load(SeqCst) && f.hang_armed.swap(false, SeqCst) {
            let half = n / 2;
            if to
                .write_all(&data[..half])
                .and_then(|_| to.flush())
                .is_err()
            {
                break;
            }
            let pid = f.hang_pid.load(SeqCst);
            signal_pid(pid, "STOP");
            f.hangs.fetch_add(1, SeqCst);
            std::thread::sleep(Duration::from_millis(f.hang_ms.load(SeqCst)));
            signal_pid(pid, "CONT");
            if to.write_all(&data[half..]).is_err() {
                break;
            }
            continue;
        }
        let limit = f.cut_after_downstream.load(SeqCst);
        if !upstream
            && limit > 0
            && carried + n as u64 > limit
            && f.cuts_left
                .fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1))
                .is_ok()
        {
            // Deliver part of this read, then drop the link in the middle of the transfer.
            let part = (limit.saturating_sub(carried) as usize).min(n);
            let _ = to.write_all(&data[..part]);
            f.cut_at_bytes.store(carried + part as u64, SeqCst);
            f.cuts.fetch_add(1, SeqCst);
            break;
        }
        carried += n as u64;
        if to.write_all(data).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
/// Light simulated workers for the scale benchmark (`hearth-sim`).
pub mod sim;

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

/// POST to `url` with an empty body (status 200 only), with a 10 s timeout; the body.
pub fn http_post(url: &str) -> Result<String> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent
        .post(url)
        .send_empty()
        .with_context(|| format!("POST {url}"))?;
    resp.body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .with_context(|| format!("reading {url}"))
}

/// GET `url` and parse the body as JSON.
pub fn http_json(url: &str) -> Result<Value> {
    Ok(serde_json::from_str(&http_get(url)?)?)
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
    let stdout = std::fs::File::create(log.with_extension("out"))?;
    spawn_coordinator(config, listen, http, 0, log, &[], extra, stdout.into())
}

//! Fault injection between processes: a TCP proxy that delays, drops and cuts, and a seeded
//! PRNG for fault schedules.

use std::time::Duration;

use anyhow::Result;

use crate::proc::signal_pid;

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

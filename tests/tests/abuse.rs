//! Abuse: hostile peers (the `hearth-hostile` binary, and workers with `--attack`) against a
//! coordinator on loopback, bounded in count and time. Each attack is refused (reason counters in
//! /metrics and the ledger), the coordinator's peak RSS stays bounded, and honest workers keep
//! closing rounds at their undisturbed pace. Private swarms (pnet, `--swarm-key`) are covered
//! end to end by the last test, and at the network layer by hearth-net's
//! `private_network_admits_only_holders_of_the_key`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::{
    bin, deltas_by_reason, free_port, http_get, http_json, init_tiny, set_toml,
    start_coordinator_args, start_coordinator_http, start_worker_logged, state, vm_hwm_kib,
    wait_for_round, wait_until, Proc,
};
use serde_json::Value;

/// Peak RSS the coordinator may reach under all the attacks together (tiny preset).
const RSS_BOUND_MIB: u64 = 512;
/// Rounds under attack may take at most this factor of the undisturbed rounds (plus slack for
/// the 2 shared cores the hostile processes also use).
const SLOWDOWN: f64 = 3.0;

fn run_id(config: &Path) -> String {
    hearth_coordinator::config::RunConfig::load(config)
        .unwrap()
        .run
        .run_id
}

fn first_shard(config: &Path) -> String {
    hearth_coordinator::config::RunConfig::load(config)
        .unwrap()
        .run
        .data
        .shards[0]
        .cid
        .to_hex()
}

/// Start `hearth-hostile MODE ADDR --run-id ID ARGS...` with its stdout captured.
fn hostile(mode: &str, addr: &str, run: &str, args: &[&str], dir: &Path) -> Proc {
    outsider(&format!("hostile-{mode}"), mode, addr, run, args, dir)
}

/// Wait for a hostile process and parse its JSON line.
fn report(p: &mut Proc, dir: &Path, timeout: Duration) -> Value {
    let code = p.wait_timeout(timeout).unwrap();
    let log = std::fs::read_to_string(dir.join(format!(
        "hostile-{}.log",
        p.label.trim_start_matches("hostile ")
    )))
    .unwrap_or_default();
    assert_eq!(code, 0, "{} failed:\n{log}", p.label);
    let out = p.stdout();
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    println!("{}: {v}", p.label);
    v
}

fn metrics(http: &str) -> BTreeMap<(String, String), u64> {
    deltas_by_reason(&http_get(&format!("http://{http}/metrics")).unwrap())
}

fn rejected(m: &BTreeMap<(String, String), u64>, reason: &str) -> u64 {
    m.get(&("rejected".to_string(), reason.to_string()))
        .copied()
        .unwrap_or(0)
}

fn round_secs(s: &Value, rounds: std::ops::RangeInclusive<u64>) -> Vec<f64> {
    s["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| rounds.contains(&r["round"].as_u64().unwrap()))
        .map(|r| r["seconds"].as_f64().unwrap())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A raw TCP client that sends junk instead of a handshake, and one that sends nothing: both
/// are dropped by the coordinator (the idle one at the 10 s upgrade timeout).
fn raw_tcp_junk(port: u16) -> (bool, bool) {
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = junk.write_all(&vec![0xA5u8; 1 << 20]);
    let mut buf = [0u8; 4096];
    let closed_junk = loop {
        match junk.read(&mut buf) {
            Ok(0) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(25)))
        .unwrap();
    let closed_idle = loop {
        match idle.read(&mut buf) {
            Ok(0) => break true,
            Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => continue,
        }
    };
    (closed_junk, closed_idle)
}

fn worker(addr: &str, dir: &Path, name: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    (
        start_worker_logged(addr, dir, name, &log, 1000, extra).unwrap(),
        log,
    )
}

/// Open swarm: floods of gossip and of every request-response protocol, oversized frames, many
/// connections, junk TCP, a replayed delta (own, earlier round) and a forged signature, all
/// while three honest workers train.
#[test]
fn hostile_peers_are_refused_with_bounded_memory_and_honest_rounds_keep_pace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = init_tiny(d, |t| {
        let t = set_toml(t, "target_deltas", "3");
        let t = set_toml(t, "deadline_secs", "60");
        // Replay/forge workers must not get banned before they show their attack twice.
        set_toml(t, "ban_after_rejects", "3")
    })
    .unwrap();
    let run = run_id(&config);
    let port = free_port().unwrap();
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let log = d.join("coordinator.log");
    let (mut coord, addr) = start_coordinator_http(
        &config,
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        &http,
        0,
        &log,
    )
    .unwrap();
    let coord_pid = coord.child.id();
    let honest: Vec<(Proc, PathBuf)> = (0..3)
        .map(|i| worker(&addr, d, &format!("honest-{i}"), &[]))
        .collect();

    // Undisturbed: rounds 2-3 (round 1 includes downloads and start-up).
    let s = wait_for_round(&config, 3, Duration::from_secs(180)).unwrap();
    let calm = round_secs(&s, 2..=3);
    let calm_rss = vm_hwm_kib(coord_pid).unwrap();
    println!(
        "undisturbed rounds 2-3: {calm:?} s; coordinator VmHWM {} MiB",
        calm_rss / 1024
    );

    // Under attack.
    let t = Instant::now();
    let mut hostiles = [
        hostile(
            "flood-gossip",
            &addr,
            &run,
            &["--count", "3000", "--secs", "20"],
            d,
        ),
        hostile(
            "flood-rr",
            &addr,
            &run,
            &["--count", "300", "--concurrency", "32"],
            d,
        ),
        hostile("oversized", &addr, &run, &["--count", "4"], d),
        hostile(
            "connections",
            &addr,
            &run,
            &["--count", "100", "--secs", "10"],
            d,
        ),
    ];
    let mut attackers = [
        worker(&addr, d, "bad-replay", &["--attack", "replay"]),
        worker(&addr, d, "bad-forged", &["--attack", "forged"]),
    ];
    let (closed_junk, closed_idle) = raw_tcp_junk(port);
    println!("raw TCP: junk connection closed {closed_junk}, idle connection closed {closed_idle}");
    assert!(closed_junk && closed_idle);

    let reports: Vec<Value> = hostiles
        .iter_mut()
        .map(|h| report(h, d, Duration::from_secs(240)))
        .collect();
    let attack_secs = t.elapsed().as_secs_f64();
    let s = state(&config).unwrap();
    let during = s["committed_round"].as_u64().unwrap();
    // Three more rounds after the floods ended, with the attacking workers still sending.
    let s = wait_for_round(&config, during + 3, Duration::from_secs(240)).unwrap();
    let m = metrics(&http);
    let rss = vm_hwm_kib(coord_pid).unwrap();
    assert!(coord.is_running(), "the coordinator survived");

    println!("attacks ran {attack_secs:.1} s; rounds committed meanwhile up to {during}");
    println!("hearth_deltas_total: {m:?}");
    let under = round_secs(&s, 4..=during + 3);
    println!(
        "rounds 4-{}: {under:?} s (mean {:.1} s vs undisturbed {:.1} s)",
        during + 3,
        mean(&under),
        mean(&calm)
    );
    println!(
        "coordinator VmHWM {} MiB (undisturbed {} MiB, bound {RSS_BOUND_MIB} MiB)",
        rss / 1024,
        calm_rss / 1024
    );

    // Each attack was refused for its reason.
    let by = |mode: &str| reports.iter().find(|r| r["mode"] == mode).unwrap();
    let flood = by("flood-gossip");
    assert!(flood["published"].as_u64().unwrap() > 100, "{flood}");
    assert!(
        rejected(&m, "rate_limit") + rejected(&m, "stale") >= 100,
        "{m:?}"
    );
    assert!(rejected(&m, "decode") >= 3, "garbage deltas: {m:?}");
    let rr = by("flood-rr");
    assert!(rr["join"]["ok"].as_u64().unwrap() >= 1, "{rr}");
    // Once banned, the flooder's requests are answered "banned" (with the reason) until the
    // network refuses it.
    assert!(
        rr["delta"]["failed"].as_u64().unwrap() + rr["delta"]["banned"].as_u64().unwrap() > 0,
        "the delta flood ends in a ban: {rr}"
    );
    let big = by("oversized");
    assert_eq!(big["requests_answered"], 0, "{big}");
    let conns = by("connections");
    assert!(conns["opened"].as_u64().unwrap() >= 50, "{conns}");
    assert!(rejected(&m, "signature") >= 1, "forged: {m:?}");
    assert!(
        rejected(&m, "replay") + rejected(&m, "stale") >= 1,
        "replay worker: {m:?}"
    );

    let peers = s["ledger"]["peers"].as_object().unwrap();
    // The stale-delta flooder is rate-limited (not a strike); the garbage sender is banned.
    let flood_peer = flood["peer"].as_str().unwrap();
    assert!(
        peers[flood_peer]["rejected"]["rate_limit"]
            .as_u64()
            .unwrap()
            > 100
    );
    let garbage_peer = flood["garbage_peer"].as_str().unwrap();
    assert_eq!(
        peers[garbage_peer]["banned"], true,
        "the garbage sender is banned"
    );
    let rr_peer = rr["peer"].as_str().unwrap();
    assert_eq!(
        peers[rr_peer]["banned"], true,
        "the delta-request flooder is banned"
    );
    let forged = peers.values().find(|p| p["name"] == "bad-forged").unwrap();
    assert_eq!(forged["accepted"], 0, "{forged}");

    // Honest workers kept their throughput: every round under attack accepted honest deltas,
    // and rounds were not much slower than undisturbed ones.
    for r in s["rounds"].as_array().unwrap().iter().skip(3) {
        assert!(r["accepted"].as_u64().unwrap() >= 2, "round {r}");
    }
    for i in 0..3 {
        let p = peers
            .values()
            .find(|p| p["name"] == format!("honest-{i}"))
            .unwrap();
        assert!(
            p["accepted"].as_u64().unwrap() >= during.min(6),
            "honest-{i}: {p}"
        );
        // An honest worker's deltas are never rejected by the screen, and it is never banned.
        let rejected = p["rejected"].as_object().unwrap();
        assert!(
            p["banned"] == false
                && rejected
                    .keys()
                    .all(|k| !["screen", "copy", "free_ride", "norm"].contains(&k.as_str())),
            "{p}"
        );
    }
    assert!(
        mean(&under) <= SLOWDOWN * mean(&calm) + 5.0,
        "rounds under attack {under:?} vs undisturbed {calm:?}"
    );
    assert!(rss / 1024 <= RSS_BOUND_MIB, "peak RSS {} MiB", rss / 1024);

    for (w, _) in attackers.iter_mut() {
        w.kill9();
    }
    for (mut w, l) in honest {
        assert!(
            w.is_running(),
            "{}: {}",
            w.label,
            std::fs::read_to_string(l).unwrap_or_default()
        );
        w.kill9();
    }
    coord.interrupt();
    let _ = coord.wait_timeout(Duration::from_secs(30));
}

/// Closed swarms (join token, then allowlist): a peer that is not admitted cannot join, fetch
/// blobs, or get a delta counted, by request or by gossip; the admitted worker trains on.
#[test]
fn unadmitted_peers_are_refused_in_closed_swarms() {
    for policy in ["token", "allowlist"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The honest worker's identity, created before the run so the allowlist can name it.
        let cache = d.join("member");
        std::fs::create_dir_all(&cache).unwrap();
        let out = Command::new(bin("hearth-worker"))
            .args(["id", "--cache-dir"])
            .arg(&cache)
            .output()
            .unwrap();
        let member_id = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("12D3"))
            .unwrap_or_else(|| panic!("no peer id in {:?}", out))
            .to_string();
        let admission = match policy {
            "token" => format!(
                "kind = \"token\"\ntoken_blake3 = \"{}\"",
                hearth_proto::ContentId::of(b"sesame").to_hex()
            ),
            _ => format!("kind = \"allowlist\"\npeers = [\"{member_id}\"]"),
        };
        let config = init_tiny(d, |t| {
            let t = set_toml(t, "target_deltas", "1");
            t.replace(
                "[run.admission]\n# open, allowlist (peers = [...]) or token (token_blake3 = blake3 of the token).\nkind = \"open\"",
                &format!("[run.admission]\n{admission}"),
            )
        })
        .unwrap();
        assert!(
            std::fs::read_to_string(&config)
                .unwrap()
                .contains(&admission),
            "admission edit applied"
        );
        let http = format!("127.0.0.1:{}", free_port().unwrap());
        let log = d.join("coordinator.log");
        let (mut coord, addr) =
            start_coordinator_http(&config, "/ip4/127.0.0.1/tcp/0", &http, 0, &log).unwrap();
        let extra: &[&str] = if policy == "token" {
            &["--token", "sesame"]
        } else {
            &[]
        };
        let (mut member, mlog) = worker(&addr, d, "member", extra);
        wait_for_round(&config, 1, Duration::from_secs(120)).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(&mlog).unwrap_or_default()
            )
        });
        let run = run_id(&config);
        let cid = first_shard(&config);
        let mut args = vec!["--count", "20", "--cid", cid.as_str()];
        if policy == "token" {
            args.extend(["--token", "wrong"]);
        }
        let mut h = hostile("unadmitted", &addr, &run, &args, d);
        let r = report(&mut h, d, Duration::from_secs(120));
        let s = wait_for_round(&config, 2, Duration::from_secs(120)).unwrap();
        let m = metrics(&http);
        println!("{policy}: hearth_deltas_total {m:?}");
        assert!(r["join"].as_str().unwrap().contains("not admitted"), "{r}");
        assert_eq!(r["blob"], "not_found", "{r}");
        assert!(
            r["direct_delta"].as_str().unwrap().contains("not admitted"),
            "{r}"
        );
        assert!(rejected(&m, "not_admitted") >= 1, "{m:?}");
        let peers = s["ledger"]["peers"].as_object().unwrap();
        assert!(
            peers.contains_key(&member_id),
            "{policy}: member in the ledger"
        );
        for (id, p) in peers {
            assert!(
                id == &member_id || p["accepted"] == 0,
                "{policy}: only the member's deltas are accepted: {id} {p}"
            );
        }
        let outsider = r["peer"].as_str().unwrap();
        assert!(
            !peers.contains_key(outsider),
            "{policy}: an unadmitted peer gets no ledger record (state.json must not grow with it)"
        );
        assert!(member.is_running());
        member.kill9();
        coord.interrupt();
        let _ = coord.wait_timeout(Duration::from_secs(30));
    }
}

/// Peak RSS the coordinator of a private swarm may reach while outsiders knock (tiny preset).
const PNET_RSS_BOUND_MIB: u64 = 128;

/// `hearth-coordinator keygen --out FILE`; returns the fingerprint it printed.
fn keygen(path: &Path) -> String {
    let out = Command::new(bin("hearth-coordinator"))
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "keygen: {out:?}");
    text.split("fingerprint ")
        .nth(1)
        .and_then(|t| t.get(..8))
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_string()
}

/// `hearth-hostile MODE ADDR --run-id ID ARGS...`, stderr to `dir/LABEL.log`.
fn outsider(label: &str, mode: &str, addr: &str, run: &str, args: &[&str], dir: &Path) -> Proc {
    let child = Command::new(bin("hearth-hostile"))
        .args([mode, addr, "--run-id", run])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{label}.log"))).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        label: label.to_string(),
    }
}

/// Private swarm (libp2p pnet over TCP, `--swarm-key`): a run marked `private` refuses to start
/// without its key; with it, the coordinator listens on TCP only and prints only TCP addresses.
/// A worker with the key trains; peers without it or with another key cannot even open a
/// connection (the hostile binary's dials fail, 128 keyless peers knocking get no connection,
/// workers report that they cannot reach the coordinator), they are never listed nor counted,
/// and the coordinator's memory stays bounded while the member's rounds keep closing.
#[test]
fn peers_without_the_swarm_key_cannot_connect_to_a_private_swarm() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("swarm.key");
    let wrong = d.join("wrong.key");
    let fingerprint = keygen(&key);
    let wrong_fingerprint = keygen(&wrong);
    assert_ne!(fingerprint, wrong_fingerprint);
    let key_hex = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(key_hex.len(), 64);
    let config = init_tiny(d, |t| {
        let t = set_toml(t, "target_deltas", "1");
        // About 2 s a round: a lone member stays under the 10-deltas-in-10-s rate limit.
        let t = set_toml(t, "local_steps", "150");
        set_toml(t, "private", "true")
    })
    .unwrap();
    let run = run_id(&config);

    // A private run does not start without its key.
    let refused = Command::new(bin("hearth-coordinator"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", ""])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("coordinator.private = true"),
        "{refused:?}"
    );

    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let log = d.join("coordinator.log");
    let key_arg = key.to_str().unwrap();
    let (mut coord, addr) = start_coordinator_args(
        &config,
        "/ip4/127.0.0.1/tcp/0",
        &http,
        &log,
        &[
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--swarm-key",
            key_arg,
        ],
    )
    .unwrap();
    let coord_pid = coord.child.id();
    let printed = wait_until(Duration::from_secs(10), "printed addresses", || {
        let out = std::fs::read_to_string(log.with_extension("out")).unwrap_or_default();
        out.contains("dashboard on").then_some(out)
    })
    .unwrap();
    let listening: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("listening on "))
        .collect();
    println!("coordinator printed: {listening:?}");
    assert!(!listening.is_empty(), "{printed}");
    assert!(
        listening
            .iter()
            .all(|l| l.contains("/tcp/") && !l.contains("quic")),
        "only TCP addresses in a private swarm: {printed}"
    );
    let coord_log = std::fs::read_to_string(&log).unwrap();
    assert!(coord_log.contains(&fingerprint), "fingerprint logged");
    assert!(
        !coord_log.contains(&key_hex) && !printed.contains(&key_hex),
        "the key itself is never logged"
    );

    // A QUIC address with a key set is a clear error, before any network.
    let peer = addr.rsplit('/').next().unwrap();
    let quic = format!("/ip4/127.0.0.1/udp/9/quic-v1/p2p/{peer}");
    let mut q = start_worker_logged(
        &quic,
        d,
        "quic",
        &d.join("quic.log"),
        1,
        &["--swarm-key", key_arg],
    )
    .unwrap();
    assert_ne!(q.wait_timeout(Duration::from_secs(20)).unwrap(), 0);
    let qlog = std::fs::read_to_string(d.join("quic.log")).unwrap();
    assert!(qlog.contains("TCP only"), "{qlog}");

    let (mut member, mlog) = worker(&addr, d, "member", &["--swarm-key", key_arg]);

    // Outsiders, all at once while the member trains.
    let t = Instant::now();
    let wrong_arg = wrong.to_str().unwrap();
    let mut dialers = [
        outsider("no-key", "unadmitted", &addr, &run, &["--count", "5"], d),
        outsider(
            "wrong-key",
            "unadmitted",
            &addr,
            &run,
            &["--count", "5", "--swarm-key", wrong_arg],
            d,
        ),
    ];
    // Keyless dials fail at once or at the 10 s upgrade timeout (garbled bytes can look like a
    // long frame), so the knocks go 64 at a time: two waves at most.
    let mut flood = outsider(
        "no-key-knocks",
        "knock",
        &addr,
        &run,
        &["--count", "128", "--concurrency", "64"],
        d,
    );
    let (mut w_none, w_none_log) = worker(&addr, d, "outsider-no-key", &[]);
    let (mut w_wrong, w_wrong_log) =
        worker(&addr, d, "outsider-wrong-key", &["--swarm-key", wrong_arg]);

    for p in dialers.iter_mut() {
        let code = p.wait_timeout(Duration::from_secs(30)).unwrap();
        let err = std::fs::read_to_string(d.join(format!("{}.log", p.label))).unwrap();
        println!(
            "{}: exit {code} after {:.1} s: {}",
            p.label,
            t.elapsed().as_secs_f64(),
            err.trim()
        );
        assert_ne!(code, 0, "{}: {err}", p.label);
        assert!(
            err.contains("dialing the coordinator"),
            "{}: {err}",
            p.label
        );
    }
    assert_eq!(flood.wait_timeout(Duration::from_secs(60)).unwrap(), 0);
    let flooded: Value = serde_json::from_str(flood.stdout().trim()).unwrap();
    println!(
        "{}: {flooded} after {:.1} s",
        flood.label,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(flooded["opened"], 0, "{flooded}");
    assert_eq!(flooded["failed"], 128, "{flooded}");
    for (w, l) in [(&w_none, &w_none_log), (&w_wrong, &w_wrong_log)] {
        let line = wait_until(Duration::from_secs(30), "a dial failure report", || {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .lines()
                .find(|x| x.contains("cannot reach the coordinator"))
                .map(str::to_string)
        })
        .unwrap();
        println!("{}: {line}", w.label);
        assert!(w.is_running(), "{} keeps retrying", w.label);
    }
    let outsiders_secs = t.elapsed().as_secs_f64();

    // The member's rounds keep closing: two more after the outsiders gave up.
    let during = state(&config).unwrap()["committed_round"].as_u64().unwrap();
    let s =
        wait_for_round(&config, during.max(1) + 2, Duration::from_secs(40)).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(&mlog).unwrap_or_default()
            )
        });
    let m = metrics(&http);
    let workers = http_json(&format!("http://{http}/api/workers")).unwrap();
    let rss = vm_hwm_kib(coord_pid).unwrap();
    println!("outsiders refused within {outsiders_secs:.1} s; rounds committed: {during} during, {} at the end", s["committed_round"]);
    println!("hearth_deltas_total: {m:?}");
    println!("/api/workers: {workers}");
    println!(
        "coordinator VmHWM {} MiB (bound {PNET_RSS_BOUND_MIB} MiB); test ran {:.1} s",
        rss / 1024,
        started.elapsed().as_secs_f64()
    );

    let rows = workers.as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the member is listed: {workers}");
    assert_eq!(rows[0]["name"], "member");
    let member_accepted = rows[0]["accepted"].as_u64().unwrap();
    assert!(member_accepted >= 2, "{workers}");
    let peers = s["ledger"]["peers"].as_object().unwrap();
    assert_eq!(
        peers.len(),
        1,
        "only the member has a ledger record: {peers:?}"
    );
    assert!(
        m.keys().all(|(outcome, _)| outcome == "accepted"),
        "no delta from an outsider reached verification: {m:?}"
    );
    let accepted: u64 = m.values().sum();
    assert!(accepted >= member_accepted, "{m:?}");
    for r in s["rounds"].as_array().unwrap() {
        assert!(
            r["accepted"].as_u64().unwrap() >= 1,
            "every round closed on the member's deltas: {r}"
        );
    }
    assert!(coord.is_running() && member.is_running());
    assert!(
        rss / 1024 <= PNET_RSS_BOUND_MIB,
        "peak RSS {} MiB",
        rss / 1024
    );

    for w in [&mut w_none, &mut w_wrong, &mut member] {
        w.kill9();
    }
    coord.interrupt();
    let _ = coord.wait_timeout(Duration::from_secs(30));
}

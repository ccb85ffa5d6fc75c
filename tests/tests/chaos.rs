//! Chaos: 6 workers × 10 rounds under a seeded fault schedule (SIGKILLed workers, half of the
//! swarm down at once, restarts with the same identity, a SIGKILLed and restarted coordinator, a
//! worker SIGSTOPped in the middle of an upload, a link cut in the middle of a blob transfer).
//! Afterwards every round is committed exactly once, every checkpoint decodes and matches its
//! blake3, the held-out loss is within 5 % of an undisturbed run of the same run spec, and the
//! workers that were not killed ran as one process from start to end.
//!
//! The schedule's randomness comes from `HEARTH_CHAOS_SEED` (default 9); the printed figures go
//! into docs/RELIABILITY.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant, SystemTime};

use hearth_proto::{decode_checkpoint, CheckpointManifest, ContentId, Wire};
use hearth_tests::{
    free_port, init_tiny, set_toml, start_coordinator, start_worker_logged, state, wait_for_round,
    with_tcp_port, ChaosRng, Proc, TcpProxy,
};
use serde_json::Value;

const WORKERS: usize = 6;
const ROUNDS: u64 = 10;
/// A round waits at most this long for a worker that is stopped but still connected.
const DEADLINE_SECS: u64 = 15;
/// Blob chunks small enough that a shard (≈40 KB) takes ten requests: a cut lands mid-transfer.
const CHUNK: u32 = 4096;
/// The link proxy cuts its connection once this many bytes went to the worker (in the shards).
const CUT_AFTER: u64 = 12_000;
/// A client→server read at least this large is a delta upload (f32 deltas of the tiny preset
/// are ≈6 KB; pings, joins and blob requests are a few hundred bytes).
const UPLOAD_MIN: usize = 3000;
/// Allowed relative gap between the chaos run's and the undisturbed run's final held-out loss.
const LOSS_TOLERANCE: f64 = 0.05;

fn edit(t: String) -> String {
    let t = set_toml(t, "target_deltas", "3");
    let t = set_toml(t, "deadline_secs", &DEADLINE_SECS.to_string());
    let t = set_toml(t, "blob_chunk_size", &CHUNK.to_string());
    // Dense f32 deltas, so that an upload is recognisable by its size at the proxy.
    let default = "kind = \"topk\"\ndensity = 1.0\nbits = 8";
    assert!(t.contains(default), "the default codec's TOML changed");
    t.replace(default, "kind = \"f32\"")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Unix time of a log line that starts with an RFC 3339 UTC timestamp (`2026-12-06T12:50:01.123Z`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn final_loss(s: &Value) -> f64 {
    s["checkpoints"][ROUNDS as usize]["manifest"]["eval_loss"]
        .as_f64()
        .unwrap()
}

/// Interrupt `w` and require a clean exit with the summary line.
fn leave_cleanly(w: &mut Proc, log: &Path) -> Value {
    w.interrupt();
    let code = w
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", log_of(log)));
    assert_eq!(
        code,
        0,
        "{} exited with {code}; log:\n{}",
        w.label,
        log_of(log)
    );
    let out = w.stdout();
    let summary = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    assert_eq!(summary["event"], "left", "{}: {summary}", w.label);
    summary
}

/// The same swarm without faults; returns the final held-out loss and the wall time.
fn undisturbed(dir: &Path, config: &Path) -> (f64, f64) {
    let t = Instant::now();
    let log = dir.join("coordinator.log");
    let (mut coord, addr) =
        start_coordinator(config, "/ip4/127.0.0.1/tcp/0", ROUNDS, &log).unwrap();
    let mut workers: Vec<(Proc, PathBuf)> = (0..WORKERS)
        .map(|i| {
            let name = format!("w{i}");
            let log = dir.join(format!("{name}.log"));
            (
                start_worker_logged(&addr, dir, &name, &log, 1000, &[]).unwrap(),
                log,
            )
        })
        .collect();
    let code = coord.wait_timeout(Duration::from_secs(300)).unwrap();
    assert_eq!(code, 0, "baseline coordinator failed:\n{}", log_of(&log));
    for (w, log) in &mut workers {
        leave_cleanly(w, log);
    }
    let s = state(config).unwrap();
    (final_loss(&s), t.elapsed().as_secs_f64())
}

/// Every committed checkpoint: manifest and adapter blobs hash to their ids and decode.
fn check_checkpoints(config: &Path, s: &Value) {
    let run = hearth_coordinator::config::RunConfig::load(config).unwrap();
    let layout = run.run.adapter_layout().unwrap();
    let blobs = config.with_file_name("data").join("blobs");
    let ckpts = s["checkpoints"].as_array().unwrap();
    assert_eq!(ckpts.len() as u64, ROUNDS + 1, "checkpoints 0..=10");
    for (i, c) in ckpts.iter().enumerate() {
        let id: ContentId = c["id"].as_str().unwrap().parse().unwrap();
        let bytes = std::fs::read(blobs.join(id.to_hex())).unwrap();
        assert_eq!(ContentId::of(&bytes), id, "manifest blob of checkpoint {i}");
        let m = CheckpointManifest::from_bytes(&bytes).unwrap();
        assert_eq!(m.round, i as u64);
        let adapter = std::fs::read(blobs.join(m.adapter.to_hex())).unwrap();
        assert_eq!(
            ContentId::of(&adapter),
            m.adapter,
            "adapter of checkpoint {i}"
        );
        let tensors = decode_checkpoint(&adapter, &layout)
            .unwrap_or_else(|e| panic!("checkpoint {i} does not decode: {e}"));
        assert_eq!(tensors.len(), layout.len());
        assert!(tensors.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
        if i > 0 {
            let parent: ContentId = ckpts[i - 1]["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(m.parent, Some(parent), "checkpoint {i} chains to {}", i - 1);
        }
    }
}

#[test]
fn six_workers_ten_rounds_under_kills_restarts_hangs_and_cut_links() {
    let seed = std::env::var("HEARTH_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9u64);
    let mut rng = ChaosRng::new(seed);
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let chaos_dir = root.path().join("chaos");
    let base_dir = root.path().join("undisturbed");
    std::fs::create_dir_all(&chaos_dir).unwrap();
    let config = init_tiny(&chaos_dir, edit).unwrap();
    copy_dir(&chaos_dir.join("run"), &base_dir.join("run"));
    let base_config = base_dir.join("run").join("run.toml");

    let (base_loss, base_secs) = undisturbed(&base_dir, &base_config);
    println!(
        "undisturbed: {ROUNDS} rounds in {base_secs:.1} s, final held-out loss {base_loss:.4}"
    );

    // The chaos run.
    let t0 = Instant::now();
    let port = free_port().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let clog = |n: u32| chaos_dir.join(format!("coordinator-{n}.log"));
    let (mut coord, addr) = start_coordinator(&config, &listen, ROUNDS, &clog(1)).unwrap();
    let link = TcpProxy::start(port).unwrap();
    link.faults.cut_after_downstream.store(CUT_AFTER, SeqCst);
    link.faults.cuts_left.store(1, SeqCst);
    let hang = TcpProxy::start(port).unwrap();
    let hang_ms = rng.range(6000, 12_000);
    hang.faults.hang_min_read.store(UPLOAD_MIN, SeqCst);
    hang.faults.hang_ms.store(hang_ms, SeqCst);

    let wlog = |name: &str, life: u32| chaos_dir.join(format!("{name}-{life}.log"));
    let start = |i: usize, life: u32| {
        let name = format!("w{i}");
        let a = match i {
            4 => with_tcp_port(&addr, link.port),
            5 => with_tcp_port(&addr, hang.port),
            _ => addr.clone(),
        };
        start_worker_logged(&a, &chaos_dir, &name, &wlog(&name, life), 1000, &[]).unwrap()
    };
    let mut workers: Vec<Option<Proc>> = (0..WORKERS).map(|i| Some(start(i, 1))).collect();
    let first_pid: Vec<u32> = workers
        .iter()
        .map(|w| w.as_ref().unwrap().child.id())
        .collect();
    hang.faults.hang_pid.store(first_pid[5], SeqCst);
    let mut lives = [1u32; WORKERS];
    // Workers 0-3 may be killed; 4 (cut link) and 5 (hung upload) must survive as one process.
    let victims = rng.pick(&[0usize, 1, 2, 3], 3);
    let mut killed = Vec::new();
    let note = |s: String| println!("[{:6.1} s] {s}", t0.elapsed().as_secs_f64());
    let wait = |r: u64| {
        wait_for_round(&config, r, Duration::from_secs(150))
            .unwrap_or_else(|e| panic!("{e}; coordinator log:\n{}", log_of(&clog(1))))
    };

    wait(1);
    std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
    workers[victims[0]].take().unwrap().kill9();
    killed.push(victims[0]);
    note(format!("round 2: SIGKILL w{}", victims[0]));

    wait(2);
    hang.faults.hang_armed.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
    for &v in &victims[1..] {
        workers[v].take().unwrap().kill9();
        killed.push(v);
    }
    note(format!(
        "round 3: SIGKILL w{} and w{} (3 of 6 down); w5's next upload stalls for {hang_ms} ms",
        victims[1], victims[2]
    ));

    wait(3);
    lives[victims[0]] += 1;
    workers[victims[0]] = Some(start(victims[0], lives[victims[0]]));
    note(format!(
        "round 4: w{} restarted (same cache dir and identity)",
        victims[0]
    ));

    wait(4);
    std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
    coord.kill9();
    let unix_kill = unix_now();
    let killed_at = state(&config).unwrap()["committed_round"].as_u64().unwrap();
    let t_kill = Instant::now();
    std::thread::sleep(Duration::from_millis(rng.range(500, 2000)));
    let (coord2, addr2) = start_coordinator(&config, &listen, ROUNDS, &clog(2)).unwrap();
    let mut coord = coord2;
    assert_eq!(addr, addr2, "same identity and address after a restart");
    let t_restart = Instant::now();
    let unix_restart = unix_now();
    note(format!(
        "round 5: SIGKILL coordinator at committed round {killed_at}, restarted after {:.1} s",
        t_kill.elapsed().as_secs_f64()
    ));
    let s = wait_for_round(&config, killed_at + 1, Duration::from_secs(150))
        .unwrap_or_else(|e| panic!("{e}; coordinator log:\n{}", log_of(&clog(2))));
    let recovery = t_restart.elapsed().as_secs_f64();
    let kill_to_commit = t_kill.elapsed().as_secs_f64();
    note(format!(
        "round {}: committed {recovery:.1} s after the restart ({kill_to_commit:.1} s after the kill)",
        killed_at + 1
    ));
    let _ = s;
    for &v in &victims[1..] {
        lives[v] += 1;
        workers[v] = Some(start(v, lives[v]));
    }
    note(format!("w{} and w{} restarted", victims[1], victims[2]));

    let code = coord.wait_timeout(Duration::from_secs(240)).unwrap();
    assert_eq!(code, 0, "coordinator life 2 failed:\n{}", log_of(&clog(2)));
    let chaos_secs = t0.elapsed().as_secs_f64();
    let s = state(&config).unwrap();

    // Every round 1..=10 closed and committed exactly once.
    let rounds = s["rounds"].as_array().unwrap();
    let numbers: Vec<u64> = rounds
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=ROUNDS).collect::<Vec<_>>(), "each round once");
    for r in rounds {
        println!(
            "round {:2}: accepted {} rejected {} outcome {} {:.1} s eval_loss {:.4}",
            r["round"],
            r["accepted"],
            r["rejected"],
            r["outcome"],
            r["seconds"].as_f64().unwrap_or(0.0),
            r["eval_loss"].as_f64().unwrap_or(f64::NAN)
        );
        assert!(r["accepted"].as_u64().unwrap() >= 1, "round {r}");
    }
    assert_eq!(s["committed_round"].as_u64(), Some(ROUNDS));
    check_checkpoints(&config, &s);

    // The faults really happened.
    assert_eq!(link.faults.cuts.load(SeqCst), 1, "the link was cut once");
    let cut_at = link.faults.cut_at_bytes.load(SeqCst);
    assert_eq!(cut_at, CUT_AFTER, "cut in the middle of a read");
    assert_eq!(hang.faults.hangs.load(SeqCst), 1, "one upload was stalled");
    note(format!(
        "link of w4 cut after {cut_at} bytes to the worker (mid-shard, {CHUNK}-byte chunks); \
         w4 reconnected {} times through the proxy",
        link.faults.connections.load(SeqCst).saturating_sub(1)
    ));

    // Rejections by reason, over the whole run.
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for p in s["ledger"]["peers"].as_object().unwrap().values() {
        for (k, v) in p["rejected"].as_object().unwrap() {
            *reasons.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let accepted: u64 = rounds.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
    println!("deltas accepted {accepted}, rejected by reason {reasons:?}");

    // Workers never killed: the same process from start to end, leaving cleanly.
    std::thread::sleep(Duration::from_secs(1));
    let final_id = s["checkpoints"][ROUNDS as usize]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..WORKERS {
        let name = format!("w{i}");
        let w = workers[i].as_mut().unwrap();
        let log = wlog(&name, lives[i]);
        if !killed.contains(&i) {
            assert_eq!(w.child.id(), first_pid[i], "{name} was never restarted");
            assert!(
                w.is_running(),
                "{name} exited on its own:\n{}",
                log_of(&log)
            );
        }
        let summary = leave_cleanly(w, &log);
        println!("{name} left: {summary}");
        if i == 5 {
            // The stalled worker: still the same process and it left cleanly (checked above). Its
            // connection died while it was stopped; the rounds after the stall are faster than its
            // reconnection backoff, so whether it catches up before the run ends is timing.
            let round = summary["checkpoint_round"].as_u64().unwrap_or(0);
            assert!(round >= 2, "{name} lost its checkpoint: {summary}");
            note(format!(
                "w5 (stalled mid-upload) ended on checkpoint {round}"
            ));
        } else if !killed.contains(&i) {
            // It followed the run to its end: the final checkpoint, or (when the coordinator
            // exited after its last round before this worker, behind its slow proxy, had fetched
            // it) the one before, and the id matches the coordinator's record of that round.
            let round = summary["checkpoint_round"].as_u64().unwrap_or(0);
            let want = s["checkpoints"][round as usize]["id"]
                .as_str()
                .unwrap_or("");
            assert!(
                round + 1 >= ROUNDS && summary["checkpoint"].as_str() == Some(want),
                "{name} ended on {summary}, final {final_id}; log:\n{}\ncoordinator log:\n{}",
                log_of(&log),
                log_of(&clog(2))
            );
        }
    }

    // The workers that stayed connected through the coordinator's restart (w5 excepted: it may be
    // stopped mid-upload) redialed it within about a second of its coming back: each logs when it
    // is connected again after its first failed redial.
    for i in (0..5).filter(|i| !killed.contains(i)) {
        let name = format!("w{i}");
        let log = log_of(&wlog(&name, lives[i]));
        let back = log
            .lines()
            .filter(|l| l.contains("connected to the coordinator again"))
            .filter_map(log_time)
            .find(|&t| t >= unix_kill)
            .unwrap_or_else(|| panic!("{name} never logged its reconnection; log:\n{log}"));
        let lag = back - unix_restart;
        note(format!(
            "{name} reconnected {lag:.2} s after the coordinator was back"
        ));
        assert!(
            lag <= 5.0,
            "{name} reconnected {lag:.1} s after the restart; log:\n{log}"
        );
    }

    // Polling is not joining: the workers that were never killed joined the first coordinator only,
    // and only polled the restarted one (which knew them from its ledger).
    let log2 = log_of(&clog(2));
    for i in (0..WORKERS).filter(|i| !killed.contains(i)) {
        let joins = log2
            .lines()
            .filter(|l| l.contains("worker joined") && l.contains(&format!("name=w{i} ")))
            .count();
        assert_eq!(joins, 0, "w{i} joined the restarted coordinator:\n{log2}");
    }

    let chaos_loss = final_loss(&s);
    let gap = (chaos_loss - base_loss).abs() / base_loss;
    println!(
        "seed {seed}: chaos {ROUNDS} rounds in {chaos_secs:.1} s, final held-out loss {chaos_loss:.4} \
         vs undisturbed {base_loss:.4} (gap {:.2} %); recovery after the coordinator restart {recovery:.1} s; \
         test total {:.1} s",
        gap * 100.0,
        started.elapsed().as_secs_f64()
    );
    assert!(
        gap <= LOSS_TOLERANCE,
        "held-out loss {chaos_loss} is not within 5 % of {base_loss}"
    );
    let base0 = s["checkpoints"][0]["manifest"]["eval_loss"]
        .as_f64()
        .unwrap();
    assert!(
        chaos_loss < base0,
        "the chaos run still learned: {base0} → {chaos_loss}"
    );
}

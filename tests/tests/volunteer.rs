//! Volunteer controls, tried the way a volunteer uses them: a real coordinator and real workers on
//! loopback (tiny preset). Pause/resume by signal and by the control endpoint, the `--hours`
//! window (with an injected clock), Ctrl-C leaving cleanly, JSON logs, the memory check, and a
//! corrupt cached file fetched again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_tests::{
    free_port, http_json, http_post, init_tiny, set_toml, signal, start_coordinator_http,
    start_worker_with, unfinished_files, wait_until, Proc,
};
use serde_json::Value;

/// A run whose rounds last far longer than a test, so a worker keeps stepping while we watch.
fn long_round_run(dir: &Path) -> PathBuf {
    init_tiny(dir, |t| {
        let t = set_toml(t, "local_steps", "1000000");
        set_toml(t, "time_budget_secs", "100000")
    })
    .unwrap()
}

/// Start a coordinator serving HTTP; returns it, its libp2p address and its HTTP base URL.
fn coordinator(config: &Path, dir: &Path) -> (Proc, String, String) {
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let (proc, addr) = start_coordinator_http(
        config,
        "/ip4/127.0.0.1/tcp/0",
        &http,
        0,
        &dir.join("coordinator.log"),
    )
    .unwrap();
    (proc, addr, format!("http://{http}"))
}

/// A worker with a control endpoint; returns it and the endpoint's base URL.
fn worker(addr: &str, dir: &Path, name: &str, extra: &[&str]) -> (Proc, String) {
    let control = format!("127.0.0.1:{}", free_port().unwrap());
    let mut args = vec!["--control", control.as_str()];
    args.extend_from_slice(extra);
    let w = start_worker_with(addr, dir, name, 1000, &args).unwrap();
    (w, format!("http://{control}"))
}

fn status(control: &str) -> Value {
    http_json(&format!("{control}/status")).unwrap_or(Value::Null)
}

fn steps(control: &str) -> u64 {
    status(control)["steps_total"].as_u64().unwrap_or(0)
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Wait until the worker is training and has taken a few steps.
fn wait_training(control: &str, dir: &Path, name: &str) {
    wait_until(Duration::from_secs(45), "the worker to train", || {
        let s = status(control);
        (s["state"] == "training" && s["steps_total"].as_u64().unwrap_or(0) >= 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log(dir, name)));
}

/// Held: the step counter stays flat for 2 s (after the step in progress finished).
fn assert_held(control: &str, state: &str) {
    std::thread::sleep(Duration::from_millis(700));
    let before = steps(control);
    std::thread::sleep(Duration::from_secs(2));
    let s = status(control);
    assert_eq!(
        s["steps_total"].as_u64(),
        Some(before),
        "steps moved while held: {s}"
    );
    assert_eq!(s["state"], state, "{s}");
}

/// Running: the step counter moves within 3 s.
fn assert_running(control: &str) {
    let before = steps(control);
    wait_until(Duration::from_secs(5), "steps after resuming", || {
        (steps(control) > before + 2).then_some(())
    })
    .unwrap();
    assert_eq!(status(control)["state"], "training");
}

#[test]
fn pause_and_resume_by_signal_and_by_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_round_run(dir.path());
    let (_coord, addr, _) = coordinator(&config, dir.path());
    let (w, control) = worker(&addr, dir.path(), "w", &[]);
    wait_training(&control, dir.path(), "w");

    signal(&w, "USR1").unwrap();
    assert_held(&control, "paused");
    assert_eq!(status(&control)["paused"], true);
    signal(&w, "USR2").unwrap();
    assert_running(&control);

    let s: Value = serde_json::from_str(&http_post(&format!("{control}/pause")).unwrap()).unwrap();
    assert_eq!(s["paused"], true);
    assert_held(&control, "paused");
    http_post(&format!("{control}/resume")).unwrap();
    assert_running(&control);
    let s = status(&control);
    assert!(s["round"].as_u64().unwrap_or(0) >= 1, "{s}");
    eprintln!("status after pause/resume: {s}");
}

#[test]
fn hours_window_keeps_the_worker_idle_outside_and_training_inside() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_round_run(dir.path());
    let (_coord, addr, http) = coordinator(&config, dir.path());
    // "Now" is 12:00 for both: one may train only at night (wrapping midnight), one around noon.
    let (_night, night_ctl) = worker(
        &addr,
        dir.path(),
        "night",
        &["--hours", "22:00-07:00", "--now", "12:00"],
    );
    let (_noon, noon_ctl) = worker(
        &addr,
        dir.path(),
        "noon",
        &["--hours", "11:30-12:30", "--now", "12:00"],
    );
    wait_training(&noon_ctl, dir.path(), "noon");
    // The night worker joined (connected, listed by the coordinator) but does not train.
    wait_until(Duration::from_secs(20), "both workers connected", || {
        let w = http_json(&format!("{http}/api/workers")).ok()?;
        let connected = w
            .as_array()?
            .iter()
            .filter(|w| w["connected"] == true)
            .count();
        (connected == 2).then_some(())
    })
    .unwrap();
    let s = status(&night_ctl);
    assert_eq!(s["state"], "off-hours", "{s}");
    assert_eq!(s["in_hours"], false, "{s}");
    assert_held(&night_ctl, "off-hours");
    assert_eq!(steps(&night_ctl), 0);
    assert!(
        log(dir.path(), "night").contains("outside the training hours 22:00-07:00"),
        "{}",
        log(dir.path(), "night")
    );
    assert_running(&noon_ctl);
}

#[test]
fn ctrl_c_leaves_cleanly_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_round_run(dir.path());
    let (_coord, addr, http) = coordinator(&config, dir.path());
    let (mut w, control) = worker(&addr, dir.path(), "w", &["--log-format", "json"]);
    wait_training(&control, dir.path(), "w");
    let peer = status(&control);
    assert_eq!(peer["state"], "training");
    let connected = |http: &str| -> Option<bool> {
        let w = http_json(&format!("{http}/api/workers")).ok()?;
        w.as_array()?.first()?["connected"].as_bool()
    };
    // The coordinator's worker list catches up with the join within a second or two.
    wait_until(
        Duration::from_secs(20),
        "the coordinator lists the worker as connected",
        || (connected(&http) == Some(true)).then_some(()),
    )
    .unwrap();

    w.interrupt();
    let code = w.wait_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(code, 0, "log:\n{}", log(dir.path(), "w"));
    let out = w.stdout();
    let left: Value = serde_json::from_str(out.lines().last().unwrap_or("")).unwrap();
    assert_eq!(left["event"], "left");
    wait_until(
        Duration::from_secs(15),
        "the coordinator to mark the worker gone",
        || (connected(&http) == Some(false)).then_some(()),
    )
    .unwrap();
    let leftovers = unfinished_files(&dir.path().join("w"));
    assert!(leftovers.is_empty(), "unfinished files: {leftovers:?}");

    // Every log line is one JSON object with a level and a message.
    let text = log(dir.path(), "w");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 4, "{text}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("interrupted")), "{text}");
}

#[test]
fn memory_check_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_round_run(dir.path());
    let (_coord, addr, _) = coordinator(&config, dir.path());
    // The tiny run as `init` writes it: micro-batch 4 × 64 tokens. Allow less than that needs
    // but more than micro-batch 1 needs.
    let mut spec = hearth_proto::RunSpec::tiny();
    spec.data.seq_len = 64;
    assert_eq!(spec.train.batch_size, 4);
    let need = |cap| {
        hearth_worker::session::run_memory(&spec, cap, Default::default())
            .unwrap()
            .0
            .total()
    };
    let (need1, need4) = (need(Some(1)), need(None));
    assert!(need1 < need4);
    let limit = (need1 + need4) / 2;
    for (max, want) in [
        (limit.to_string(), "--max-batch"),
        ("1M".to_string(), "sequence length"),
    ] {
        let mut w =
            start_worker_with(&addr, dir.path(), "small", 1, &["--max-memory", &max]).unwrap();
        let code = w.wait_timeout(Duration::from_secs(30)).unwrap();
        let text = log(dir.path(), "small");
        assert_ne!(code, 0, "{text}");
        assert!(
            text.contains("not joining: training this run needs about"),
            "{text}"
        );
        assert!(text.contains(want), "{want}: {text}");
        assert!(text.contains("--max-memory"), "{text}");
    }
    // With the suggested batch it fits and trains.
    let (w, control) = worker(
        &addr,
        dir.path(),
        "fits",
        &["--max-memory", &limit.to_string(), "--max-batch", "1"],
    );
    wait_training(&control, dir.path(), "fits");
    assert!(log(dir.path(), "fits").contains("micro-batches of 1 per step"));
    drop(w);
}

#[test]
fn corrupt_cached_shard_is_deleted_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_round_run(dir.path());
    let (_coord, addr, _) = coordinator(&config, dir.path());
    let (mut w, control) = worker(&addr, dir.path(), "w", &[]);
    wait_training(&control, dir.path(), "w");
    w.interrupt();
    assert_eq!(w.wait_timeout(Duration::from_secs(20)).unwrap(), 0);

    let shards = dir.path().join("w").join("shards");
    let shard = std::fs::read_dir(&shards)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a cached shard");
    let mut bytes = std::fs::read(&shard).unwrap();
    let good = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();

    let (mut w, control) = worker(&addr, dir.path(), "w", &[]);
    wait_training(&control, dir.path(), "w");
    let text = log(dir.path(), "w");
    assert!(
        text.contains("is corrupt") && text.contains("fetching it again"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&shard).unwrap(),
        good,
        "the shard was not restored"
    );
    w.interrupt();
    assert_eq!(w.wait_timeout(Duration::from_secs(20)).unwrap(), 0);
}

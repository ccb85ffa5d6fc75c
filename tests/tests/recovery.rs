//! Crash recovery: SIGKILL the coordinator mid-round and abort it mid-checkpoint-write; it resumes
//! at the last committed round with its ledger, and the same worker processes carry on.

use std::process::Command;
use std::time::{Duration, Instant};

use hearth_tests::{
    bin, init_tiny, set_toml, start_coordinator_env, start_worker, state, wait_for_round, Proc,
};
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn coordinator_killed_mid_round_and_mid_checkpoint_resumes_with_workers_attached() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_tiny(dir.path(), |t| {
        let t = set_toml(t, "target_deltas", "3");
        let t = set_toml(t, "local_steps", "60");
        set_toml(t, "deadline_secs", "90")
    })
    .unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    // Enough rounds after the last restart for every worker's reconnection backoff (≤ 1 s) to end.
    let rounds = 8;
    let log = |n: u32| dir.path().join(format!("coordinator-{n}.log"));

    // Life 1: killed with SIGKILL while round 2 is in progress.
    let (mut coord, addr) = start_coordinator_env(&config, &listen, rounds, &log(1), &[]).unwrap();
    // Workers run until told to stop (Ctrl-C), so none ever needs a restart.
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| start_worker(&addr, dir.path(), &format!("w{i}"), 1000).unwrap())
        .collect();
    let s1 = wait_for_round(&config, 1, Duration::from_secs(120)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    coord.kill9();
    let s1k = state(&config).unwrap();
    let committed_at_kill = s1k["committed_round"].as_u64().unwrap();
    let ledger_at_kill = s1k["ledger"].clone();
    println!("killed (SIGKILL) at committed round {committed_at_kill}");
    assert!(committed_at_kill >= s1["committed_round"].as_u64().unwrap());

    // Life 2: restarted; aborts half-way through committing the next checkpoint.
    let crash_round = committed_at_kill + 1;
    let t = Instant::now();
    let (mut coord, addr2) = start_coordinator_env(
        &config,
        &listen,
        rounds,
        &log(2),
        &[("HEARTH_TEST_CRASH_AT_CHECKPOINT", crash_round.to_string())],
    )
    .unwrap();
    assert_eq!(addr, addr2, "same identity and address after a restart");
    let code = coord.wait_timeout(Duration::from_secs(180)).unwrap();
    assert_ne!(
        code,
        0,
        "life 2 should have aborted while committing round {crash_round}; log:\n{}",
        std::fs::read_to_string(log(2)).unwrap_or_default()
    );
    let s2 = state(&config).unwrap();
    assert_eq!(
        s2["committed_round"].as_u64().unwrap(),
        committed_at_kill,
        "the half-written checkpoint must not count"
    );
    // The ledger survived the kill: every peer's accepted count only grew.
    for (peer, rec) in ledger_at_kill["peers"].as_object().unwrap() {
        assert!(
            s2["ledger"]["peers"][peer]["accepted"].as_u64() >= rec["accepted"].as_u64(),
            "{peer}"
        );
    }
    println!(
        "aborted mid-commit of round {crash_round} after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Life 3: runs to the end with the same worker processes.
    let t = Instant::now();
    let (mut coord, _) = start_coordinator_env(&config, &listen, rounds, &log(3), &[]).unwrap();
    let code = coord.wait_timeout(Duration::from_secs(240)).unwrap();
    assert_eq!(
        code,
        0,
        "life 3 failed; log:\n{}",
        std::fs::read_to_string(log(3)).unwrap_or_default()
    );
    println!(
        "life 3 finished the run in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let s = state(&config).unwrap();
    assert_eq!(s["committed_round"].as_u64().unwrap(), rounds);
    let numbers: Vec<u64> = s["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=rounds).collect::<Vec<_>>(),
        "each round committed exactly once"
    );
    let ckpts: Vec<u64> = s["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["manifest"]["round"].as_u64().unwrap())
        .collect();
    assert_eq!(ckpts, (0..=rounds).collect::<Vec<_>>());
    let final_id = s["checkpoints"][rounds as usize]["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(1));
    for w in &workers {
        assert!(w.is_running(), "{} exited on its own", w.label);
        w.interrupt();
    }
    for w in &mut workers {
        let code = w.wait_timeout(Duration::from_secs(60)).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.path().join(format!("{}.log", w.label)))
                .unwrap_or_default();
            panic!("{e}; worker log:\n{log}")
        });
        assert_eq!(code, 0, "{} (never restarted) exited with {code}", w.label);
        let out = w.stdout();
        let summary: Value = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        assert_eq!(
            summary["checkpoint"].as_str(),
            Some(final_id.as_str()),
            "{}: {summary}",
            w.label
        );
    }
    // Every committed checkpoint is still readable: export each round's PEFT adapter.
    for r in 0..=rounds {
        let out = dir.path().join(format!("export-{r}"));
        let st = Command::new(bin("hearth-coordinator"))
            .args(["export", "--round", &r.to_string(), "--data-dir"])
            .arg(config.with_file_name("data"))
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "export of round {r}");
        assert!(out.join("adapter_model.safetensors").is_file());
    }
}

//! Scale guard: 50 simulated peers (real libp2p nodes, real join, signed deltas) against one real
//! coordinator process for 2 rounds; no delta may be lost and every one must be accepted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::{init_tiny, set_toml, start_coordinator, state};
use serde_json::Value;

const PEERS: u64 = 50;
const ROUNDS: u64 = 2;

#[test]
fn fifty_simulated_peers_lose_no_delta() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_tiny(dir.path(), |t| {
        let t = set_toml(t, "target_deltas", &PEERS.to_string());
        let t = set_toml(t, "grace_secs", "1");
        set_toml(t, "deadline_secs", "120")
    })
    .unwrap();
    let log = dir.path().join("coordinator.log");
    let (mut coord, addr) =
        start_coordinator(&config, "/ip4/127.0.0.1/tcp/0", ROUNDS, &log).unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-sim"))
        .arg(&addr)
        .args([
            "--peers",
            &PEERS.to_string(),
            "--rounds",
            &ROUNDS.to_string(),
        ])
        .args(["--request-timeout", "60", "--round-timeout", "90"])
        .arg("--work-dir")
        .arg(dir.path().join("sim"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hearth-sim failed: {text}\ncoordinator log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let summary: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON summary line");
    println!("{summary}\n({secs:.1} s)");
    assert_eq!(summary["sent"], PEERS * ROUNDS, "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["accepted"], PEERS * ROUNDS, "{summary}");
    let code = coord.wait_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(code, 0);
    let s = state(&config).unwrap();
    assert_eq!(s["committed_round"], ROUNDS);
    for r in s["rounds"].as_array().unwrap() {
        assert_eq!(r["accepted"], PEERS, "round {r}");
        assert_eq!(r["rejected"], 0, "round {r}");
    }
}

//! Byzantine workers: every kind of bad delta is rejected with the right reason while the honest
//! workers' deltas of the same rounds are accepted and the coordinator keeps serving.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::{bin, init_tiny, set_toml, start_coordinator, state, Proc};

/// Attack name → the rejection reasons that count as caught.
/// `held_back` counts the deltas the screen aggregated with weight 0 (no record yet).
const ATTACKS: &[(&str, &[&str])] = &[
    ("sign-flip", &["screen", "norm"]),
    ("scale", &["norm", "screen"]),
    ("nan", &["non_finite"]),
    ("noise", &["screen", "norm", "held_back"]),
    ("replay", &["replay"]),
    ("stale", &["stale"]),
    ("wrong-shape", &["structure"]),
    ("forged", &["signature"]),
];

fn start(addr: &str, dir: &std::path::Path, name: &str, attack: Option<&str>) -> Proc {
    start_for(addr, dir, name, attack, 3)
}

fn start_for(
    addr: &str,
    dir: &std::path::Path,
    name: &str,
    attack: Option<&str>,
    rounds: u64,
) -> Proc {
    let cache = dir.join(name);
    std::fs::create_dir_all(&cache).unwrap();
    let mut cmd = Command::new(bin("hearth-worker"));
    cmd.args([
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
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    if let Some(a) = attack {
        cmd.args(["--attack", a]);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        label: name.to_string(),
    }
}

#[test]
fn every_attack_is_rejected_with_its_reason_and_honest_work_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let workers = 3 + ATTACKS.len() + 1;
    let config = init_tiny(dir.path(), |t| {
        let t = set_toml(t, "target_deltas", &workers.to_string());
        let t = set_toml(t, "ban_after_rejects", "0");
        set_toml(t, "deadline_secs", "90")
    })
    .unwrap();
    let log = dir.path().join("coordinator.log");
    let (mut coord, addr) = start_coordinator(&config, "/ip4/127.0.0.1/tcp/0", 3, &log).unwrap();
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| start(&addr, dir.path(), &format!("honest-{i}"), None))
        .collect();
    for (attack, _) in ATTACKS {
        procs.push(start(
            &addr,
            dir.path(),
            &format!("bad-{attack}"),
            Some(attack),
        ));
    }
    procs.push(start(&addr, dir.path(), "bad-alie", Some("alie")));

    let code = coord.wait_timeout(Duration::from_secs(400)).unwrap();
    assert_eq!(
        code,
        0,
        "coordinator failed; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let s = state(&config).unwrap();
    assert_eq!(
        s["committed_round"], 3,
        "the coordinator kept running rounds"
    );
    let peers = s["ledger"]["peers"].as_object().unwrap();
    let by_name = |n: &str| {
        peers
            .values()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n} not in the ledger"))
    };

    for i in 0..3 {
        let p = by_name(&format!("honest-{i}"));
        println!(
            "honest-{i}: accepted {} rejected {}",
            p["accepted"], p["rejected"]
        );
        assert!(p["accepted"].as_u64().unwrap() >= 2, "honest-{i}: {p}");
        assert_eq!(p["held_back"], 0, "honest-{i}: {p}");
        for bad in [
            "screen",
            "copy",
            "free_ride",
            "norm",
            "non_finite",
            "signature",
            "structure",
        ] {
            assert!(
                p["rejected"].get(bad).is_none(),
                "honest-{i} was rejected for {bad}: {p}"
            );
        }
    }
    for (attack, reasons) in ATTACKS {
        let p = by_name(&format!("bad-{attack}"));
        println!(
            "bad-{attack}: accepted {} rejected {}",
            p["accepted"], p["rejected"]
        );
        let caught: u64 = reasons
            .iter()
            .filter_map(|r| p["rejected"][*r].as_u64().or(p[*r].as_u64()))
            .sum();
        assert!(
            caught >= 1,
            "{attack} was never rejected for {reasons:?}: {p}"
        );
        // No attacker earns credit (a replayer's first delta is its own honest work, and so is a
        // "stale" one built on checkpoint 0, which cannot be older; a scaled delta can arrive
        // before the norm bound has three recent norms to compare with).
        if !["replay", "stale", "scale"].contains(attack) {
            assert_eq!(p["tokens"], 0, "{attack} earned credit: {p}");
        }
    }
    let alie = by_name("bad-alie");
    println!(
        "bad-alie: accepted {} rejected {}",
        alie["accepted"], alie["rejected"]
    );
    assert!(
        alie["rejected"]["screen"].as_u64() >= Some(1) && alie["tokens"] == 0,
        "ALIE pushes against the task and is rejected by the screen: {alie}"
    );

    // Held-out loss still went down despite the attackers.
    let base = s["checkpoints"][0]["manifest"]["eval_loss"]
        .as_f64()
        .unwrap();
    let last = s["rounds"][2]["eval_loss"].as_f64().unwrap();
    println!(
        "held-out loss {base:.4} → {last:.4} with {} attackers",
        ATTACKS.len() + 1
    );
    assert!(last < base);
}

#[test]
fn a_banned_worker_is_told_why_and_exits_non_zero_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_tiny(dir.path(), |t| set_toml(t, "target_deltas", "3")).unwrap();
    let log = dir.path().join("coordinator.log");
    let (coord, addr) = start_coordinator(&config, "/ip4/127.0.0.1/tcp/0", 0, &log).unwrap();
    let _honest: Vec<Proc> = (0..2)
        .map(|i| start_for(&addr, dir.path(), &format!("honest-{i}"), None, 40))
        .collect();
    let mut bad = start_for(&addr, dir.path(), "bad", Some("sign-flip"), 40);

    // Five screen failures in a row ban it (docs/RELIABILITY.md).
    let deadline = Instant::now() + Duration::from_secs(240);
    let banned_at = loop {
        assert!(Instant::now() < deadline, "never banned");
        let banned = state(&config).ok().is_some_and(|s| {
            s["ledger"]["peers"].as_object().is_some_and(|p| {
                p.values()
                    .any(|p| p["name"] == "bad" && p["banned"] == true)
            })
        });
        if banned {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let code = bad.wait_timeout(Duration::from_secs(30)).unwrap();
    let exited_after = banned_at.elapsed();
    let text = std::fs::read_to_string(dir.path().join("bad.log")).unwrap();
    println!("banned worker exited {exited_after:?} after its ban, code {code}");
    assert_ne!(code, 0, "a banned worker exits non-zero; log:\n{text}");
    assert!(
        exited_after < Duration::from_secs(20),
        "it stopped {exited_after:?} after the ban"
    );
    for needle in ["banned", "screen", "evidence", "hearth-worker id"] {
        assert!(text.contains(needle), "{needle:?} not in its log:\n{text}");
    }
    let s = state(&config).unwrap();
    let rec = s["ledger"]["peers"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["name"] == "bad")
        .unwrap()
        .clone();
    assert!(rec["rejected"]["screen"].as_u64() >= Some(5), "{rec}");
    assert!(
        rec["ban_reason"].as_str().unwrap_or("").contains("ln 10⁶"),
        "{rec}"
    );
    assert_eq!(rec["tokens"], 0, "{rec}");
    coord.interrupt();
}

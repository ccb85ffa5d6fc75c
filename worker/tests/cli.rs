//! The CLI contract of `hearth-worker` (and, being an integration test, it makes `cargo test`
//! build the binary the multi-process tests start).

use std::process::Command;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearth-worker"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help() {
    for cmd in ["join", "train", "id", "bench"] {
        let out = worker(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help failed");
    }
}

#[test]
fn bad_coordinator_address_is_a_one_line_error() {
    for addr in ["not-a-multiaddr", "/ip4/127.0.0.1/tcp/1"] {
        let dir = tempfile::tempdir().unwrap();
        let out = worker(&[
            "join",
            addr,
            "--cache-dir",
            &dir.path().display().to_string(),
        ]);
        assert!(!out.status.success(), "{addr} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("hearth-worker:"))
                .count(),
            1,
            "{err}"
        );
    }
}

#[test]
fn id_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let a = worker(&["id", "--cache-dir", &d]);
    let b = worker(&["id", "--cache-dir", &d]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    assert!(String::from_utf8_lossy(&a.stdout).starts_with("12D3Koo"));
}

#[test]
fn join_help_explains_every_volunteer_option() {
    let out = worker(&["join", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--device",
        "--threads",
        "--max-batch",
        "--max-memory",
        "--hours",
        "--rounds",
        "--name",
        "--cache-dir",
        "--identity",
        "--control",
        "--quiet",
        "--log-format",
    ] {
        assert!(
            help.contains(opt),
            "{opt} missing from join --help:\n{help}"
        );
    }
    assert!(!help.contains("--now"), "the test clock is hidden");
}

#[test]
fn bad_volunteer_options_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWSVC4occiBRqv3uVuS6aJsdtbwCAWqwR63a486YspqB1F";
    for (args, want) in [
        (vec!["--hours", "25:00-07:00"], "not a time of day"),
        (vec!["--hours", "22:00"], "HH:MM-HH:MM"),
        (vec!["--device", "tpu"], "not cpu, cuda:N or auto"),
        (vec!["--max-memory", "lots"], "--max-memory"),
        (vec!["--max-batch", "0"], "--max-batch"),
        (vec!["--threads", "0"], "--threads"),
    ] {
        let mut all = vec!["join", addr, "--cache-dir", &d];
        all.extend(args.iter().copied());
        let out = worker(&all);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWSVC4occiBRqv3uVuS6aJsdtbwCAWqwR63a486YspqB1F";
    let out = worker(&["join", addr, "--cache-dir", &d, "--device", "cuda:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}

#[test]
fn identity_defaults_to_the_data_dir_with_mode_0600() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-worker"))
        .arg("id")
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("HEARTH_CACHE")
        .env_remove("HEARTH_IDENTITY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = home.path().join(".local/share/hearth/identity.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = Command::new(env!("CARGO_BIN_EXE_hearth-worker"))
        .args(["id", "--identity"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn bench_tiny_reports_speed_memory_and_round_time() {
    let out = worker(&[
        "bench",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["steps"], 2);
    assert_eq!(r["batch"], 4);
    assert_eq!(r["seq_len"], 64);
    assert!(r["tokens_per_second"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["peak_memory_bytes"].as_u64().unwrap() > 0, "{r}");
    let per_step = r["seconds_per_step"].as_f64().unwrap();
    let round = r["round_seconds"].as_f64().unwrap();
    assert!(
        (round - 15.0 * per_step).abs() < 1e-6 * round.max(1.0),
        "{r}"
    );
    let table = worker(&[
        "bench",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--threads",
        "1",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("training speed") && text.contains("one round"),
        "{text}"
    );
}

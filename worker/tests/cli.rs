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
    for cmd in ["join", "train", "id"] {
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

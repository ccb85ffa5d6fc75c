//! The CLI contract: every command has `--help`; bad input exits non-zero with a one-line reason.
//! (Being an integration test, this also makes `cargo test` build the `hearth-coordinator` binary
//! that the multi-process tests in `tests/` start.)

use std::process::Command;

fn coordinator(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearth-coordinator"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help() {
    for cmd in ["init", "run", "demo", "export", "eval", "ban", "status"] {
        let out = coordinator(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd} --help printed no usage"
        );
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let cases: Vec<Vec<String>> = vec![
        vec![
            "run".into(),
            "--config".into(),
            missing.display().to_string(),
        ],
        vec![
            "ban".into(),
            "not-a-peer-id".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
        ],
        vec![
            "export".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--out".into(),
            "x".into(),
        ],
    ];
    for args in cases {
        let out = coordinator(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("hearth-coordinator:"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
    }
}

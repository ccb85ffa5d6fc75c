//! Export: the merged model (W + (α/r)·B·A) scores exactly like the base model with the PEFT adapter.

use std::process::{Command, Stdio};

use hearth_tests::bin;
use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let out = Command::new(bin("hearth-coordinator"))
        .args(args)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "hearth-coordinator {args:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null)
}

#[test]
fn merged_export_matches_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let summary = run_json(&[
        "demo",
        "--preset",
        "tiny",
        "--workers",
        "2",
        "--rounds",
        "1",
        "--http",
        "",
        "--accuracy-examples",
        "0",
        "--dir",
        &d("demo"),
    ]);
    assert_eq!(summary["rounds"], 1);
    let data = d("demo/run/data");
    for (extra, out) in [(None, "peft"), (Some("--merged"), "merged")] {
        let mut args = vec!["export", "--data-dir", &data, "--out"];
        let o = d(out);
        args.push(&o);
        args.extend(extra);
        let st = Command::new(bin("hearth-coordinator"))
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "export {extra:?}");
    }
    // Score a slice of the run's own dataset three ways.
    let text = std::fs::read_to_string(dir.path().join("demo/run/demo.jsonl")).unwrap();
    let eval_file = d("eval.jsonl");
    std::fs::write(
        &eval_file,
        text.lines().take(50).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let eval = |model: &str, adapter: Option<&str>| {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--dataset",
            &eval_file,
            "--seq-len",
            "64",
        ];
        args.extend(adapter.map(|a| ["--adapter", a]).into_iter().flatten());
        run_json(&args)["loss"].as_f64().unwrap()
    };
    let base = eval("tiny", None);
    let with_adapter = eval("tiny", Some(&d("peft")));
    let merged = eval(&d("merged"), None);
    println!("loss: base {base:.6}, base + adapter {with_adapter:.6}, merged {merged:.6}");
    assert!(
        (with_adapter - merged).abs() < 1e-4 * with_adapter,
        "merged {merged} vs adapter {with_adapter}"
    );
    assert!(
        (with_adapter - base).abs() > 1e-4,
        "the adapter changed nothing"
    );
}

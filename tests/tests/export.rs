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

#[test]
fn an_unsupported_family_or_rope_type_exits_non_zero_naming_it() {
    // A tiny Hugging Face directory (the base preset saved by `hearth_model::hf::save_hf_dir`),
    // its config.json relabelled as families and rope types Hearth does not implement.
    let dir = tempfile::tempdir().unwrap();
    let base = hearth_model::load_base(
        &hearth_model::ModelSource::Tiny { seed: 0 },
        &hearth_model::Device::Cpu,
        hearth_model::DType::F32,
    )
    .unwrap();
    hearth_model::hf::save_hf_dir(
        dir.path(),
        &base.config,
        &base.weights,
        &base.tokenizer,
        base.chat_template.as_deref(),
        base.eos_token_id,
    )
    .unwrap();
    let text = dir.path().join("eval.txt");
    std::fs::write(&text, "hello hearth ".repeat(40)).unwrap();
    let cfg_path = dir.path().join("config.json");
    let original: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    let eval = || {
        Command::new(bin("hearth-coordinator"))
            .args(["eval", "--model"])
            .arg(dir.path())
            .arg("--text")
            .arg(&text)
            .args(["--seq-len", "32"])
            .output()
            .unwrap()
    };
    let ok = eval();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (field, value, named) in [
        ("model_type", serde_json::json!("gemma"), "gemma"),
        ("model_type", serde_json::json!("phi3"), "phi3"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "yarn",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "dynamic", "factor": 2.0}),
            "dynamic",
        ),
        ("hidden_act", serde_json::json!("gelu_pytorch_tanh"), "gelu"),
    ] {
        let mut cfg = original.clone();
        cfg[field] = value;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let out = eval();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field} = {named} was accepted");
        assert!(
            err.contains(named) && err.contains("not supported"),
            "{field}: {err}"
        );
    }
}

//! `init --model DIR` for a model that is not a preset: a random-weight Qwen2 checkpoint (q/k/v
//! biases) saved as a Hugging Face directory runs a real swarm end to end. The workers fetch the
//! directory file by file from the coordinator and check each file's blake3, the family and
//! the shape.

use std::process::{Command, Stdio};

use hearth_model::preset::{random_weights, tiny_tokenizer, CHATML_TEMPLATE};
use hearth_model::{DType, Device, Family, ModelConfig};
use hearth_tests::bin;
use serde_json::Value;

fn qwen2_dir(dir: &std::path::Path) {
    let mut cfg = ModelConfig::tiny();
    cfg.features.family = Family::Qwen2;
    cfg.features.qkv_bias = true;
    cfg.tie_embeddings = false;
    let weights = random_weights(&cfg, 3, &Device::Cpu, DType::F32).unwrap();
    let tok = tiny_tokenizer().unwrap();
    let eos = tok.token_id("<|im_end|>").unwrap();
    hearth_model::hf::save_hf_dir(dir, &cfg, &weights, &tok, Some(CHATML_TEMPLATE), eos).unwrap();
}

#[test]
fn a_custom_qwen2_directory_runs_a_swarm_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-qwen2");
    qwen2_dir(&model);
    let demo = tmp.path().join("demo");
    let out = Command::new(bin("hearth-coordinator"))
        .args(["demo", "--model"])
        .arg(&model)
        .args([
            "--workers",
            "2",
            "--rounds",
            "2",
            "--http",
            "",
            "--accuracy-examples",
            "0",
        ])
        .arg("--dir")
        .arg(&demo)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {err}");
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON summary");
    assert_eq!(summary["rounds"], 2, "{summary}");
    let losses: Vec<f64> = summary["eval_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        losses.last() < losses.first(),
        "held-out loss did not go down: {losses:?}"
    );
    let accepted: u64 = summary["deltas_accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(accepted >= 2, "{summary}");

    // The spec names the family and every file of the directory.
    let toml = std::fs::read_to_string(demo.join("run/run.toml")).unwrap();
    assert!(toml.contains("family = \"qwen2\""), "{toml}");
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(
            toml.contains(&format!("name = \"{f}\"")),
            "{f} missing from {toml}"
        );
    }
    // Each worker fetched the directory into its own cache (none shares the coordinator's).
    let fetched: Vec<_> = walk(&demo)
        .into_iter()
        .filter(|p| {
            p.ends_with("config.json")
                && p.parent()
                    .and_then(|d| d.parent())
                    .is_some_and(|d| d.ends_with("models"))
                && !p.to_string_lossy().contains("/run/")
        })
        .collect();
    assert!(
        fetched.len() >= 2,
        "workers' fetched model dirs: {fetched:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! Parity with Hugging Face transformers for every supported family: random-weight checkpoints
//! made by `model/reference/make_families.py` (committed with their expected losses, so no
//! PyTorch is needed here) load from their directories, and our loss, our loss with a PEFT LoRA
//! adapter and that loss's gradient with respect to every LoRA weight equal transformers'.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hearth_model::hf::{load_hf_weights, parse_hf_config};
use hearth_model::linear::BaseDType;
use hearth_model::{loss_gradient, Family, Model, ModelError, RopeScaling};

/// Relative tolerance of the losses (issue 18: 1e-4).
const LOSS_RTOL: f64 = 1e-4;
/// Relative tolerance of the gradient, as ‖ours − theirs‖ / ‖theirs‖ over each tensor.
const GRAD_RTOL: f64 = 1e-4;

mod common;

use common::{families_expected as expected, families_root as root, family_model, rel_l2};

fn ids(exp: &serde_json::Value) -> Vec<Vec<u32>> {
    common::fixture_ids(exp)
}

/// Mean next-token loss over all sequences, as transformers' `labels = input_ids`.
fn mean_loss(model: &Model, rows: &[Vec<u32>]) -> f64 {
    let ids = Tensor::new(rows.to_vec(), &Device::Cpu).unwrap();
    let (b, t) = ids.dims2().unwrap();
    let logits = model.forward(&ids, None).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1).unwrap(), 2).unwrap();
    let lp = lp.to_vec3::<f32>().unwrap();
    let mut sum = 0f64;
    for (i, row) in rows.iter().enumerate() {
        for j in 0..t - 1 {
            sum -= f64::from(lp[i][j][row[j + 1] as usize]);
        }
    }
    sum / (b * (t - 1)) as f64
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn families() -> Vec<(String, serde_json::Value)> {
    let exp = expected();
    exp["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn every_family_has_a_fixture() {
    let names: Vec<String> = families().into_iter().map(|(n, _)| n).collect();
    for f in [
        "llama",
        "llama3",
        "llama_linear",
        "mistral",
        "qwen2",
        "qwen3",
    ] {
        assert!(
            names.iter().any(|n| n == f),
            "no fixture for {f}: {names:?}"
        );
    }
}

#[test]
fn base_loss_equals_transformers_for_every_family() {
    let exp = expected();
    let rows = ids(&exp);
    for (name, fam) in families() {
        let (_, cfg, weights) = load_hf_weights(&root().join(&name), &Device::Cpu, DType::F32)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_family = match fam["model_type"].as_str().unwrap() {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => panic!("{other}"),
        };
        assert_eq!(cfg.features.family, want_family, "{name}");
        let model = Model::load(&weights, &cfg, None).unwrap();
        let ours = mean_loss(&model, &rows);
        let theirs = fam["loss"].as_f64().unwrap();
        eprintln!(
            "{name:13} ours {ours:.6} transformers {theirs:.6} rel {:.1e}",
            rel(ours, theirs)
        );
        assert!(
            rel(ours, theirs) < LOSS_RTOL,
            "{name}: loss {ours} vs transformers {theirs}"
        );
    }
}

#[test]
fn each_family_feature_changes_the_loss() {
    // The fixtures would not catch a dropped feature if the feature changed nothing.
    let exp = expected();
    let rows = ids(&exp);
    for name in ["llama3", "llama_linear", "qwen2", "qwen3"] {
        let (_, mut cfg, mut weights) =
            load_hf_weights(&root().join(name), &Device::Cpu, DType::F32).unwrap();
        let with = mean_loss(&Model::load(&weights, &cfg, None).unwrap(), &rows);
        let f = &mut cfg.features;
        if f.rope_scaling.take().is_none() {
            let keep: Vec<(String, Tensor)> = weights
                .tensors()
                .unwrap()
                .into_iter()
                .filter(|(k, _)| !k.ends_with(".bias") && !k.contains("_norm.weight"))
                .collect();
            f.qkv_bias = false;
            f.o_bias = false;
            f.qk_norm = false;
            weights = hearth_model::weights::Weights::new(keep.into_iter().collect());
        }
        let without = mean_loss(&Model::load(&weights, &cfg, None).unwrap(), &rows);
        assert!(
            rel(without, with) > 1e-3,
            "{name}: the family feature changes the loss only from {with} to {without}"
        );
    }
}

#[test]
fn the_transformers_4_and_5_configs_read_the_same() {
    let dir = root().join("llama3");
    let v5 = std::fs::read(dir.join("config.json")).unwrap();
    let v4 = std::fs::read(dir.join("config.v4.json")).unwrap();
    let (_, a) = parse_hf_config(&v5, Path::new("config.json")).unwrap();
    let (_, b) = parse_hf_config(&v4, Path::new("config.v4.json")).unwrap();
    assert_eq!(a, b);
    assert!(matches!(
        a.features.rope_scaling,
        Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0
    ));
    assert!(String::from_utf8_lossy(&v5).contains("rope_parameters"));
}

#[test]
fn peft_adapter_loss_and_lora_gradients_equal_transformers_for_every_family() {
    let exp = expected();
    let rows = ids(&exp);
    for (name, fam) in families() {
        let dir = root().join(&name);
        let model = family_model(&dir, "adapter", &Device::Cpu).model;
        let ours = mean_loss(&model, &rows);
        let theirs = fam["lora_loss"].as_f64().unwrap();
        assert!(
            rel(ours, theirs) < LOSS_RTOL,
            "{name}: loss with the PEFT adapter {ours} vs transformers {theirs}"
        );

        let seqs = common::fixture_sequences(&exp);
        let (loss, flat) = loss_gradient(&model, &seqs, seqs.len()).unwrap();
        assert!(rel(loss, theirs) < LOSS_RTOL, "{name}: {loss} vs {theirs}");
        let grads =
            candle_core::safetensors::load(dir.join("lora_grads.safetensors"), &Device::Cpu)
                .unwrap();
        let mut offset = 0;
        let mut worst = 0f64;
        for slot in model.adapter_layout() {
            let n: usize = slot.shape.iter().product();
            let ours = &flat[offset..offset + n];
            offset += n;
            let theirs = grads
                .get(&slot.name)
                .unwrap_or_else(|| panic!("{name}: no transformers gradient for {}", slot.name))
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let r = rel_l2(ours, &theirs);
            worst = worst.max(r);
            assert!(
                r < GRAD_RTOL,
                "{name} {}: gradient differs by {r:.2e} relative",
                slot.name
            );
        }
        assert_eq!(offset, flat.len());
        assert_eq!(grads.len(), model.adapter_layout().len(), "{name}");
        eprintln!(
            "{name:13} LoRA loss rel {:.1e}, worst gradient rel {worst:.1e}",
            rel(ours, theirs)
        );
    }
}

#[test]
fn our_exported_adapter_reads_back_with_the_same_loss() {
    let exp = expected();
    let rows = ids(&exp);
    for (name, _) in families() {
        let f = family_model(&root().join(&name), "adapter", &Device::Cpu);
        let model = &f.model;
        let out = tempfile::tempdir().unwrap();
        hearth_model::save_adapter(model, out.path(), &name).unwrap();
        let mut again = Model::load(&f.weights, &f.cfg, Some(&f.lora)).unwrap();
        hearth_model::load_adapter(&mut again, out.path()).unwrap();
        assert_eq!(mean_loss(model, &rows), mean_loss(&again, &rows), "{name}");
    }
}

#[test]
fn an_unsupported_family_or_rope_type_is_refused_by_name() {
    let dir = root().join("llama");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "gemma".into();
    let e = parse_hf_config(cfg.to_string().as_bytes(), Path::new("config.json")).unwrap_err();
    assert!(
        matches!(&e, ModelError::Unsupported(m) if m.contains("gemma")),
        "{e}"
    );
    cfg["model_type"] = "llama".into();
    cfg["rope_parameters"] =
        serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4});
    let e = parse_hf_config(cfg.to_string().as_bytes(), Path::new("config.json")).unwrap_err();
    assert!(
        matches!(&e, ModelError::Unsupported(m) if m.contains("yarn")),
        "{e}"
    );
}

#[test]
fn a_tensor_the_config_does_not_use_is_refused() {
    // A qwen2 checkpoint (with q/k/v biases) relabelled as llama: the biases would be ignored.
    let src = root().join("qwen2");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "llama".into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let e = load_hf_weights(tmp.path(), &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(&e, ModelError::Unsupported(m) if m.contains("bias")),
        "{e}"
    );
}

#[test]
fn a_mistral_window_shorter_than_the_sequence_is_refused() {
    let (_, mut cfg, weights) =
        load_hf_weights(&root().join("mistral"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(cfg.features.sliding_window, Some(4096));
    cfg.features.sliding_window = Some(8);
    let model = Model::load(&weights, &cfg, None).unwrap();
    let ids = Tensor::new(&[[1u32; 9]], &Device::Cpu).unwrap();
    let e = model.forward(&ids, None).unwrap_err();
    assert!(e.to_string().contains("sliding_window"), "{e}");
    assert!(model.forward(&ids.narrow(1, 0, 8).unwrap(), None).is_ok());
}

#[test]
fn gguf_loss_equals_transformers_on_the_dequantized_weights_for_every_family() {
    let exp = expected();
    let rows = ids(&exp);
    let mut types = Vec::new();
    for (name, fam) in families() {
        let g = hearth_model::gguf::load_gguf(
            &root().join(&name).join("model.gguf"),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let arch = fam["gguf"]["architecture"].as_str().unwrap();
        assert_eq!(g.config.features.family.name(), arch, "{name}");
        let model = Model::load(&g.weights, &g.config, None).unwrap();
        let ours = mean_loss(&model, &rows);
        let theirs = fam["gguf"]["loss"].as_f64().unwrap();
        let ty = fam["gguf"]["type"].as_str().unwrap().to_string();
        eprintln!("{name:13} GGUF {ty:5} ours {ours:.6} transformers {theirs:.6}");
        assert!(
            rel(ours, theirs) < LOSS_RTOL,
            "{name} ({ty}): GGUF loss {ours} vs transformers {theirs}"
        );
        types.push(ty);
    }
    types.sort();
    assert_eq!(types, ["BF16", "F16", "F32", "Q4_0", "Q4_1", "Q8_0"]);
}

#[test]
fn k_quant_gguf_losses_equal_transformers_on_weights_gguf_py_decodes() {
    // make_kquants.py: files quantized by candle, the expected loss from gguf-py's own decoder.
    let dir = root().join("..").join("kquants");
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let exp: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = ids(&exp);
    let mut mixes = Vec::new();
    for (file, want) in exp["files"].as_object().unwrap() {
        let g = hearth_model::gguf::load_gguf(&dir.join(file), &Device::Cpu, DType::F32)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            g.config.features.family.name(),
            want["architecture"].as_str().unwrap(),
            "{file}"
        );
        let model = Model::load(&g.weights, &g.config, None).unwrap();
        let ours = mean_loss(&model, &rows);
        let theirs = want["loss"].as_f64().unwrap();
        let f32_loss = want["f32_loss"].as_f64().unwrap();
        eprintln!("{file:20} ours {ours:.6} transformers {theirs:.6} (f32 {f32_loss:.6})");
        assert!(
            rel(ours, theirs) < LOSS_RTOL,
            "{file}: loss {ours} vs transformers {theirs}"
        );
        // The quantization itself shows: the weights are not the f32 ones.
        assert!(
            rel(ours, f32_loss) > 1e-5,
            "{file}: {ours} equals the f32 loss"
        );
        mixes.push(want["mix"].as_str().unwrap().to_string());
    }
    mixes.sort();
    mixes.dedup();
    assert_eq!(mixes, ["Q4_K_M", "Q5_K_M", "Q6_K"]);
}

#[test]
fn a_compact_dtype_keeps_a_gguf_files_own_blocks() {
    // A file already in blocks no larger than the dtype asks for is used as it is, rows
    // reordered in place for llama's Q/K: the model computes exactly what the dequantized file
    // does. Quantizing the expanded weights again would move the loss (Q4_0 and Q8_0 files
    // re-quantize to themselves, so the K-quant files are the ones that tell the paths apart).
    let kq = root().join("..").join("kquants");
    for (path, kind) in [
        (root().join("mistral").join("model.gguf"), BaseDType::Q4),
        (root().join("qwen2").join("model.gguf"), BaseDType::Q8),
        (kq.join("llama.q6_k.gguf"), BaseDType::Q8),
        (kq.join("llama.q4_k_m.gguf"), BaseDType::Q8),
    ] {
        let g = hearth_model::gguf::load_gguf(&path, &Device::Cpu, DType::F32).unwrap();
        let rows = ids(&expected());
        let full = mean_loss(&Model::load(&g.weights, &g.config, None).unwrap(), &rows);
        let kept = mean_loss(
            &Model::load_with(&g.weights, &g.config, None, kind).unwrap(),
            &rows,
        );
        eprintln!("{path:?} {kind:?}: {kept:.7} vs expanded {full:.7}");
        assert!(rel(kept, full) < 1e-6, "{path:?}: {kept} vs {full}");
    }
}

/// Writes our PEFT export of each family's adapter to `<family>/exported/`, for
/// `make_families.py --check-exports` to load with PEFT (run after regenerating the fixtures).
#[test]
#[ignore = "writes fixtures; run by hand after make_families.py"]
fn write_exported_adapters() {
    for (name, _) in families() {
        let dir = root().join(&name);
        let model = family_model(&dir, "adapter", &Device::Cpu).model;
        hearth_model::save_adapter(&model, &dir.join("exported"), &name).unwrap();
    }
}

#[test]
fn peft_loads_our_exported_adapters_with_our_loss() {
    // make_families.py --check-exports loaded each `exported/` adapter with PEFT and recorded
    // transformers' loss with it.
    let exp = expected();
    let rows = ids(&exp);
    for (name, fam) in families() {
        let dir = root().join(&name);
        let peft_loss = fam["exported_loss"].as_f64().unwrap_or_else(|| {
            panic!("{name}: no exported_loss; run make_families.py --check-exports")
        });
        let model = family_model(&dir, "exported", &Device::Cpu).model;
        let ours = mean_loss(&model, &rows);
        assert!(
            rel(ours, peft_loss) < LOSS_RTOL,
            "{name}: our exported adapter gives {ours} here and {peft_loss} in PEFT"
        );
    }
}

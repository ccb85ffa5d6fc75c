//! PEFT export → import round trip, file format, and rejection of bad adapters.

mod common;

use candle_core::{DType, Tensor};
use hearth_model::peft::{
    import_peft, load_adapter, save_adapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
};

fn logits(model: &hearth_model::Model) -> Vec<f32> {
    let ids = Tensor::new(&[[10u32, 20, 30, 40, 50]], model.device()).unwrap();
    model
        .forward(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn export_then_import_restores_the_adapter() {
    let base = common::tiny(DType::F32);
    let lora = common::lora_all(false);
    let mut model = base.model(Some(&lora)).unwrap();
    common::randomize_adapter(&mut model, 42);
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&model, dir.path(), "hearth/tiny").unwrap();

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["modules_to_save"], serde_json::Value::Null);
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 7);

    let adapter = import_peft(dir.path()).unwrap();
    assert_eq!(
        adapter.tensors.len(),
        28,
        "A and B are both exported in FFA mode"
    );
    assert!(adapter.tensors.iter().any(|t| t.name
        == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        && t.shape == vec![4, 64]));

    // a model with a different A seed gets A from the file, so outputs match exactly
    let mut other_lora = lora.clone();
    other_lora.seed = 999;
    let mut fresh = base.model(Some(&other_lora)).unwrap();
    assert_ne!(logits(&fresh), logits(&model));
    load_adapter(&mut fresh, dir.path()).unwrap();
    assert_eq!(logits(&fresh), logits(&model));
    assert_eq!(
        fresh.all_adapter_tensors().unwrap(),
        model.all_adapter_tensors().unwrap()
    );
}

#[test]
fn rejects_mismatched_or_corrupt_adapters() {
    let base = common::tiny(DType::F32);
    let model = base.model(Some(&common::lora_all(false))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_adapter(&model, dir.path(), "tiny").unwrap();

    let mut lora8 = common::lora_all(false);
    lora8.rank = 8;
    let mut wrong_rank = base.model(Some(&lora8)).unwrap();
    let err = load_adapter(&mut wrong_rank, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("r 4"), "{err}");

    let path = dir.path().join(ADAPTER_WEIGHTS);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    assert!(import_peft(dir.path()).is_err());

    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
    assert!(import_peft(dir.path()).is_err());

    std::fs::write(dir.path().join(ADAPTER_CONFIG), br#"{"peft_type":"IA3"}"#).unwrap();
    assert!(import_peft(dir.path()).is_err());
}

#[test]
fn set_adapter_validates_names_shapes_and_values() {
    let base = common::tiny(DType::F32);
    let mut model = base.model(Some(&common::lora_all(false))).unwrap();
    let good = model.adapter_tensors().unwrap();
    let mut bad = good.clone();
    bad[0].shape = vec![1, 2];
    assert!(model
        .set_adapter(&bad)
        .unwrap_err()
        .to_string()
        .contains("shape"));
    let mut bad = good.clone();
    bad[0].name = "base_model.model.lm_head.lora_B.weight".into();
    assert!(model
        .set_adapter(&bad)
        .unwrap_err()
        .to_string()
        .contains("unknown"));
    let mut bad = good.clone();
    bad[1].data[0] = f32::NAN;
    assert!(model
        .set_adapter(&bad)
        .unwrap_err()
        .to_string()
        .contains("non-finite"));
    assert!(model
        .set_adapter(&good[1..])
        .unwrap_err()
        .to_string()
        .contains("not given"));
    model.set_adapter(&good).unwrap();
}

//! Hugging Face directory save/load gives the same model.

mod common;

use candle_core::{DType, Device, Tensor};
use hearth_model::hf::save_hf_dir;
use hearth_model::{load_base, ModelSource};

#[test]
fn tiny_round_trips_through_an_hf_directory() {
    let base = common::tiny(DType::F32);
    let dir = tempfile::tempdir().unwrap();
    save_hf_dir(
        dir.path(),
        &base.config,
        &base.weights,
        &base.tokenizer,
        base.chat_template.as_deref(),
        base.eos_token_id,
    )
    .unwrap();
    let loaded = load_base(
        &ModelSource::HfDir(dir.path().to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(loaded.config, base.config);
    assert_eq!(loaded.eos_token_id, base.eos_token_id);
    assert_eq!(loaded.chat_template, base.chat_template);
    let text = "héllo <|im_start|>user\n42<|im_end|>";
    assert_eq!(
        loaded.tokenizer.encode(text).unwrap(),
        base.tokenizer.encode(text).unwrap()
    );
    let ids = Tensor::new(&[[1u32, 2, 3, 300]], &Device::Cpu).unwrap();
    let a = base
        .model(None)
        .unwrap()
        .forward(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = loaded
        .model(None)
        .unwrap()
        .forward(&ids, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn missing_or_bad_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_base(
        &ModelSource::HfDir(dir.path().to_path_buf()),
        &Device::Cpu,
        DType::F32
    )
    .is_err());
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let err = load_base(
        &ModelSource::HfDir(dir.path().to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}

//! CUDA against CPU (run by tests/gpu/run.sh on a GPU machine): every family fixture's loss and
//! LoRA gradients on `cuda:0` equal the CPU's. Built only with `--features cuda`.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use hearth_model::hf::load_hf_weights;
use hearth_model::peft::{import_peft, lora_config_of};
use hearth_model::{loss_gradient, Model, Sequence};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families")
}

fn run(dev: &Device, dir: &Path, seqs: &[Sequence]) -> (f64, Vec<f32>) {
    let (_, cfg, weights) = load_hf_weights(dir, dev, DType::F32).unwrap();
    let adapter = import_peft(&dir.join("adapter")).unwrap();
    let lora = lora_config_of(&adapter.config, true, 0).unwrap();
    let mut model = Model::load(&weights, &cfg, Some(&lora)).unwrap();
    model.set_adapter(&adapter.tensors).unwrap();
    loss_gradient(&model, seqs, seqs.len()).unwrap()
}

#[test]
fn cuda_matches_cpu_for_every_family() {
    let cuda = Device::new_cuda(0).expect("a CUDA device");
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("expected.json")).unwrap()).unwrap();
    let seqs: Vec<Sequence> = exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let tokens: Vec<u32> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            Sequence {
                loss_mask: vec![true; tokens.len()],
                tokens,
            }
        })
        .collect();
    for name in exp["families"].as_object().unwrap().keys() {
        let dir = root().join(name);
        let (cpu_loss, cpu_grad) = run(&Device::Cpu, &dir, &seqs);
        let (gpu_loss, gpu_grad) = run(&cuda, &dir, &seqs);
        let diff: f64 = gpu_grad
            .iter()
            .zip(&cpu_grad)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = cpu_grad
            .iter()
            .map(|b| f64::from(*b).powi(2))
            .sum::<f64>()
            .sqrt();
        println!(
            "{name:13} cpu {cpu_loss:.6} cuda {gpu_loss:.6} gradient rel diff {:.1e}",
            diff / norm
        );
        assert!((gpu_loss - cpu_loss).abs() < 1e-4 * cpu_loss, "{name}");
        assert!(diff / norm < 1e-3, "{name}: {:.1e}", diff / norm);
    }
}

//! CUDA against CPU (run by tests/gpu/run.sh on a GPU machine): every family fixture's loss and
//! LoRA gradients on `cuda:0` equal the CPU's. Built only with `--features cuda`.
#![cfg(feature = "cuda")]

mod common;

use candle_core::Device;
use common::{families_expected, families_root, family_model, fixture_sequences, rel_l2};
use hearth_model::loss_gradient;

#[test]
fn cuda_matches_cpu_for_every_family() {
    let cuda = Device::new_cuda(0).expect("a CUDA device");
    let exp = families_expected();
    let seqs = fixture_sequences(&exp);
    for name in exp["families"].as_object().unwrap().keys() {
        let dir = families_root().join(name);
        let cpu = family_model(&dir, "adapter", &Device::Cpu).model;
        let gpu = family_model(&dir, "adapter", &cuda).model;
        let (cpu_loss, cpu_grad) = loss_gradient(&cpu, &seqs, seqs.len()).unwrap();
        let (gpu_loss, gpu_grad) = loss_gradient(&gpu, &seqs, seqs.len()).unwrap();
        let r = rel_l2(&gpu_grad, &cpu_grad);
        println!("{name:13} cpu {cpu_loss:.6} cuda {gpu_loss:.6} gradient rel diff {r:.1e}");
        assert!((gpu_loss - cpu_loss).abs() < 1e-4 * cpu_loss, "{name}");
        assert!(r < 1e-3, "{name}: {r:.1e}");
    }
}

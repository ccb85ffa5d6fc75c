//! Encode/decode throughput (MB/s of raw f32) and compression ratio of each codec on a SmolLM2-135M adapter delta.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hearth_proto::codec::{decode, encode, CodecSpec, NamedTensor, Residual};
use hearth_proto::{LoraSpec, ModelArch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn delta(train_a: bool) -> (Vec<hearth_proto::TensorLayout>, Vec<NamedTensor>) {
    let layout = LoraSpec {
        train_a,
        ..LoraSpec::default()
    }
    .adapter_layout(&ModelArch::smollm2_135m())
    .expect("known targets");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let tensors = layout
        .iter()
        .map(|l| {
            let n = l.numel().unwrap_or(0);
            let data = (0..n)
                .map(|_| {
                    let u1: f64 = rng.random::<f64>().max(1e-300);
                    let u2: f64 = rng.random::<f64>();
                    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                        * 1e-3
                })
                .collect();
            NamedTensor {
                name: l.name.clone(),
                shape: l.shape.clone(),
                data,
            }
        })
        .collect();
    (layout, tensors)
}

fn codecs(c: &mut Criterion) {
    let (layout, tensors) = delta(false);
    let raw = tensors.iter().map(|t| t.data.len() * 4).sum::<usize>() as u64;
    let mut group = c.benchmark_group("smollm2_r8_qv_B");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    group.throughput(Throughput::Bytes(raw));
    for spec in [
        CodecSpec::F32,
        CodecSpec::F16,
        CodecSpec::Int8,
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 1,
        },
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 2,
        },
        CodecSpec::TopK {
            density: 1.0 / 64.0,
            bits: 8,
        },
        CodecSpec::TopK {
            density: 0.25,
            bits: 4,
        },
    ] {
        let enc = encode(&spec, &tensors, &mut Residual::new()).expect("valid codec");
        println!(
            "{:<22} raw {raw} B -> {} B, ratio {:.1}x",
            spec.label(),
            enc.encoded_len(),
            enc.compression_ratio()
        );
        group.bench_function(format!("encode/{}", spec.label()), |b| {
            let mut residual = Residual::new();
            b.iter(|| encode(&spec, &tensors, &mut residual).expect("valid codec"))
        });
        group.bench_function(format!("decode/{}", spec.label()), |b| {
            b.iter(|| decode(&enc, &layout).expect("own encoding"))
        });
    }
    group.finish();
    let (_, with_a) = delta(true);
    let enc = encode(&CodecSpec::default(), &with_a, &mut Residual::new()).expect("valid codec");
    println!(
        "with A (train_a): raw {} B -> {} B, ratio {:.1}x",
        enc.raw_f32_bytes(),
        enc.encoded_len(),
        enc.compression_ratio()
    );
}

criterion_group!(benches, codecs);
criterion_main!(benches);

//! Table 8 (docs/BENCHMARKS.md): what the worker's memory estimate says fits 8, 12 and 24 GB cards
//! for Llama 3.2 1B, Llama 3.2 3B and Llama 3.1 8B in each `--dtype`, LoRA r 16 on all seven
//! projections (A and B trained), micro-batch 1 × 512. `bash tests/bench/8-memory.sh`.

use hearth_model::linear::BaseDType;
use hearth_model::{LoraConfig, LoraTarget, ModelConfig};
use hearth_worker::memory::{estimate_with, human_bytes, Footprint};

/// What a CUDA context and its kernels take before any tensor (a conservative figure).
const CUDA_CONTEXT: u64 = 600 << 20;

fn llama(
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    head_dim: usize,
    tie: bool,
) -> ModelConfig {
    ModelConfig {
        vocab,
        hidden,
        intermediate: inter,
        layers,
        heads,
        kv_heads: 8,
        head_dim,
        rope_theta: 500_000.0,
        rms_eps: 1e-5,
        max_position: 8192,
        tie_embeddings: tie,
        features: Default::default(),
    }
}

fn main() {
    let models = [
        ("Llama 3.2 1B", hearth_worker::bench::llama_3_2_1b_config()),
        (
            "Llama 3.2 3B",
            llama(128_256, 3072, 8192, 28, 24, 128, true),
        ),
        (
            "Llama 3.1 8B",
            llama(128_256, 4096, 14_336, 32, 32, 128, false),
        ),
    ];
    let lora = LoraConfig {
        rank: 16,
        alpha: 32.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        train_a: true,
        seed: 0,
    };
    let cards = [8u64, 12, 24];
    println!("# 8. Memory: what fits a consumer GPU\n");
    println!(
        "The worker's own estimate (`hearth_worker::memory::estimate_with`, the one `join` checks \
before training), LoRA r 16 on all seven projections with A and B trained, micro-batch 1 × 512 \
tokens, without and with activation checkpointing (`--checkpoint-activations`: one block's \
activations and each block's input are kept, each block is recomputed in the backward pass; \
the gradients are the same, `model/tests/checkpointing.rs`). `--dtype` makes the seven projections \
compact (QLoRA-style for q4: 4.5 bits a value, expanded to f32 one matmul at a time); the \
embedding, norms and LM head stay f32. A card fits when the estimate plus {} of CUDA context is \
at most its size. The f32 estimate was checked against measured CPU peaks (1.01–1.10×, \
`worker/tests/memory.rs`, `hearth-worker bench`), and every dtype with and without \
checkpointing against measured peaks of SmolLM2-135M and a random model of Llama 3.2 1B's shape \
in table 8b (`docs/bench/8-memory-measured.md`): the estimate is at or above every measured peak. \
A GPU worker reads the base on the host and sends each projection to the card only once compact \
(`Model::load_onto`), and a GGUF file's projections stay in the file's blocks until then, so the \
card never holds the full-precision projections. Command: `bash tests/bench/8-memory.sh`.\n",
        human_bytes(CUDA_CONTEXT)
    );
    println!("| model | parameters | --dtype | checkpointing | weights | activations | adapter + AdamW | total | fits 8 GB | fits 12 GB | fits 24 GB |");
    println!("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |");
    for (name, cfg) in &models {
        for f in [
            BaseDType::F32,
            BaseDType::Bf16,
            BaseDType::Q8,
            BaseDType::Q4,
        ]
        .into_iter()
        .flat_map(|dtype| [false, true].map(|checkpoint| Footprint { dtype, checkpoint }))
        {
            let e = estimate_with(cfg, &lora, 1, 512, f);
            let fits: Vec<&str> = cards
                .iter()
                .map(|gb| {
                    if e.total() + CUDA_CONTEXT <= gb * 1_000_000_000 {
                        "yes"
                    } else {
                        "no"
                    }
                })
                .collect();
            println!(
                "| {name} | {:.2} B | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cfg.parameter_count() as f64 / 1e9,
                format!("{:?}", f.dtype).to_lowercase(),
                if f.checkpoint { "yes" } else { "no" },
                human_bytes(e.weights),
                human_bytes(e.activations),
                human_bytes(e.adapter),
                human_bytes(e.total()),
                fits[0],
                fits[1],
                fits[2]
            );
        }
    }
}

//! Run spec: defaults, TOML and JSON forms, validation and adapter layouts.

use hearth_proto::spec::{MAX_ARCH_SIZE, MAX_LAYERS};
use hearth_proto::*;

#[test]
fn default_spec_is_valid_and_survives_toml() {
    let spec = RunSpec::default();
    spec.validate().unwrap();
    let text = spec.to_toml().unwrap();
    assert_eq!(RunSpec::from_toml(&text).unwrap(), spec);
    assert!(text.contains("kind = \"centered_clip\""), "{text}");
    assert!(text.contains("kind = \"topk\""), "{text}");
}

#[test]
fn smollm_spec_with_every_enum_variant_survives_toml_json_and_bincode() {
    let mut spec = RunSpec::smollm2_135m(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        Some(ContentId::of(b"gguf")),
        97_000_000,
    );
    spec.data.shards = vec![ShardInfo {
        cid: ContentId::of(b"s0"),
        sequences: 100,
        tokens: 25_600,
    }];
    let peer = libp2p_identity::Keypair::ed25519_from_bytes([1u8; 32])
        .unwrap()
        .public()
        .to_peer_id();
    for (aggregator, outer, admission, codec, source) in [
        (
            Aggregator::WeightedMean,
            OuterOptimizer::Average { lr: 1.0 },
            Admission::Open,
            CodecSpec::F32,
            ModelSource::Safetensors {
                dir_name: "smol".into(),
            },
        ),
        (
            Aggregator::TrimmedMean { trim_fraction: 0.1 },
            OuterOptimizer::Nesterov {
                lr: 0.7,
                momentum: 0.9,
            },
            Admission::Allowlist {
                peers: vec![peer.to_base58()],
            },
            CodecSpec::F16,
            ModelSource::Preset {
                name: "tiny".into(),
            },
        ),
        (
            Aggregator::CoordinateMedian,
            OuterOptimizer::Average { lr: 0.5 },
            Admission::Token {
                token_blake3: ContentId::of(b"secret"),
            },
            CodecSpec::Int8,
            ModelSource::Gguf {
                file_name: "m.gguf".into(),
            },
        ),
    ] {
        spec.aggregate.aggregator = aggregator;
        spec.aggregate.outer = outer;
        spec.admission = admission;
        spec.aggregate.codec = codec;
        if let ModelSource::Safetensors { .. } = source {
            spec.base.files = directory_files();
            spec.base.blake3 = Some(BaseModel::manifest_id(&spec.base.files));
            spec.base.size_bytes = spec.base.files.iter().map(|f| f.size_bytes).sum();
        } else {
            spec.base.files.clear();
            spec.base.blake3 = Some(ContentId::of(b"gguf"));
        }
        spec.base.source = source;
        spec.validate().unwrap();
        let text = spec.to_toml().unwrap();
        assert_eq!(RunSpec::from_toml(&text).unwrap(), spec, "{text}");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RunSpec>(&json).unwrap(), spec);
        let bin = encode(&spec);
        assert_eq!(decode_bounded::<RunSpec>(&bin, 1 << 20).unwrap(), spec);
    }
}

#[test]
fn a_minimal_toml_fills_defaults_and_typos_are_errors() {
    let spec = RunSpec::from_toml(
        r#"
run_id = "demo"
[lora]
rank = 4
[aggregate]
codec = { kind = "topk", density = 0.03125, bits = 4 }
aggregator = { kind = "trimmed_mean", trim_fraction = 0.2 }
"#,
    )
    .unwrap();
    assert_eq!(spec.run_id, "demo");
    assert_eq!(spec.lora.rank, 4);
    assert_eq!(spec.lora.targets, vec!["q_proj", "v_proj"]);
    assert_eq!(
        spec.aggregate.codec,
        CodecSpec::TopK {
            density: 0.03125,
            bits: 4
        }
    );
    assert_eq!(
        spec.aggregate.aggregator,
        Aggregator::TrimmedMean { trim_fraction: 0.2 }
    );
    assert_eq!(spec.net.max_transmit_size, 262_144);
    assert!(RunSpec::from_toml("run_idd = \"x\"").is_err());
    assert!(RunSpec::from_toml("[lora]\nrnak = 4").is_err());
    assert!(RunSpec::from_toml("[aggregate]\ncodec = { kind = \"zip\" }").is_err());
    let alias =
        RunSpec::from_toml("[aggregate]\ncodec = { kind = \"top_k\", density = 0.5, bits = 8 }")
            .unwrap();
    assert_eq!(
        alias.aggregate.codec,
        CodecSpec::TopK {
            density: 0.5,
            bits: 8
        }
    );
}

#[test]
fn validation_names_the_bad_field() {
    type Breaker = fn(&mut RunSpec);
    let cases: Vec<(Breaker, &str)> = vec![
        (|s| s.run_id = "has space".into(), "run_id"),
        (|s| s.lora.rank = 0, "lora.rank"),
        (|s| s.lora.targets = vec!["qkv".into()], "qkv"),
        (
            |s| s.lora.targets = vec!["q_proj".into(), "q_proj".into()],
            "lora.targets",
        ),
        (|s| s.lora.seed = u64::MAX, "lora.seed"),
        (|s| s.arch.num_kv_heads = 3, "arch.num_kv_heads"),
        (
            |s| {
                s.aggregate.codec = CodecSpec::TopK {
                    density: 2.0,
                    bits: 2,
                }
            },
            "aggregate.codec",
        ),
        (|s| s.aggregate.min_deltas = 0, "aggregate.target_deltas"),
        (
            |s| s.aggregate.error_feedback_decay = 1.5,
            "aggregate.error_feedback_decay",
        ),
        (
            |s| s.aggregate.error_feedback_decay = f32::NAN,
            "aggregate.error_feedback_decay",
        ),
        (
            |s| s.aggregate.aggregator = Aggregator::TrimmedMean { trim_fraction: 0.5 },
            "trim_fraction",
        ),
        (
            |s| {
                s.admission = Admission::Allowlist {
                    peers: vec!["nope".into()],
                }
            },
            "admission.peers",
        ),
        (
            |s| s.net.inline_delta_limit = 1 << 30,
            "net.inline_delta_limit",
        ),
        (
            |s| s.net.max_transmit_size = hearth_proto::MAX_TRANSMIT_SIZE + 1,
            "net.max_transmit_size",
        ),
        (|s| s.net.max_transmit_size = 1023, "net.max_transmit_size"),
        (|s| s.data.seq_len = 100_000, "data.seq_len"),
    ];
    for (break_it, field) in cases {
        let mut s = RunSpec::default();
        break_it(&mut s);
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err:?} should name {field}");
    }
}

#[test]
fn spec_id_is_stable_and_sensitive() {
    let a = RunSpec::default();
    assert_eq!(a.spec_id(), RunSpec::default().spec_id());
    let mut b = a.clone();
    b.train.lr = 2e-3;
    assert_ne!(a.spec_id(), b.spec_id());
}

#[test]
fn smollm2_adapter_layout_matches_peft_names_and_shapes() {
    let arch = ModelArch::smollm2_135m();
    let lora = LoraSpec::default();
    let b_only = lora.adapter_layout(&arch).unwrap();
    assert_eq!(b_only.len(), 60);
    assert_eq!(
        b_only[0].name,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    );
    assert_eq!(b_only[0].shape, vec![576, 8]);
    assert_eq!(
        b_only[1].name,
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    );
    assert_eq!(b_only[1].shape, vec![192, 8]);
    assert_eq!(
        b_only[59].name,
        "base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight"
    );
    assert_eq!(total_numel(&b_only), Some(30 * (576 + 192) * 8));

    let all = LoraSpec {
        train_a: true,
        targets: vec![
            "o_proj".into(),
            "down_proj".into(),
            "gate_proj".into(),
            "k_proj".into(),
        ],
        ..lora
    }
    .adapter_layout(&arch)
    .unwrap();
    assert_eq!(all.len(), 30 * 4 * 2);
    let find = |n: &str| all.iter().find(|t| t.name == n).unwrap().shape.clone();
    assert_eq!(
        find("base_model.model.model.layers.3.self_attn.o_proj.lora_A.weight"),
        vec![8, 576]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight"),
        vec![576, 8]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.mlp.down_proj.lora_A.weight"),
        vec![8, 1536]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"),
        vec![576, 8]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.mlp.gate_proj.lora_B.weight"),
        vec![1536, 8]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.self_attn.k_proj.lora_A.weight"),
        vec![8, 576]
    );
    assert_eq!(
        find("base_model.model.model.layers.3.self_attn.k_proj.lora_B.weight"),
        vec![192, 8]
    );
    assert!(matches!(
        LoraSpec {
            targets: vec!["lm_head".into()],
            ..LoraSpec::default()
        }
        .adapter_layout(&arch),
        Err(SpecError::UnknownTarget(_))
    ));
}

#[test]
fn admission_policies() {
    let kp = libp2p_identity::Keypair::ed25519_from_bytes([2u8; 32]).unwrap();
    let me = kp.public().to_peer_id();
    let other = libp2p_identity::Keypair::ed25519_from_bytes([3u8; 32])
        .unwrap()
        .public()
        .to_peer_id();
    assert!(Admission::Open.admits(&me, None));
    let allow = Admission::Allowlist {
        peers: vec![me.to_base58()],
    };
    assert!(allow.admits(&me, None));
    assert!(!allow.admits(&other, Some("anything")));
    let token = Admission::Token {
        token_blake3: ContentId::of(b"open sesame"),
    };
    assert!(token.admits(&other, Some("open sesame")));
    assert!(!token.admits(&other, Some("open sesame ")));
    assert!(!token.admits(&other, None));
    assert!((AggregateSpec::staleness_weight(3) - 0.5).abs() < 1e-6);
}

#[test]
fn oversized_architectures_are_rejected_before_any_layout_is_built() {
    // Found by fuzzing a join response: a spec naming ~2^61 layers passed validation and
    // `adapter_layout` then asked for an impossible allocation.
    let mut spec = RunSpec::default();
    spec.arch.num_layers = 1 << 61;
    assert!(spec.validate().is_err());
    spec.arch.num_layers = MAX_LAYERS + 1;
    assert!(spec.validate().is_err());
    spec.arch.num_layers = MAX_LAYERS;
    spec.validate().unwrap();
    spec.arch.hidden_size = MAX_ARCH_SIZE + 2;
    assert!(spec.validate().is_err());
}

#[test]
fn the_default_and_quality_codecs_validate_and_survive_toml() {
    CodecSpec::QUALITY.validate().unwrap();
    let mut spec = RunSpec::default();
    spec.aggregate.codec = CodecSpec::QUALITY;
    spec.aggregate.codec.validate().unwrap();
    let back = RunSpec::from_toml(&spec.to_toml().unwrap()).unwrap();
    assert_eq!(back.aggregate.codec, spec.aggregate.codec);
    // A run.toml that names no codec gets the default.
    let minimal = RunSpec::from_toml("run_id = \"r\"\n").unwrap();
    assert_eq!(minimal.aggregate.codec, CodecSpec::default());
    assert_eq!(
        CodecSpec::default(),
        CodecSpec::QUALITY,
        "the default is the quality codec"
    );
}

fn directory_files() -> Vec<ModelFile> {
    ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .enumerate()
        .map(|(i, n)| ModelFile {
            name: n.to_string(),
            blake3: ContentId::of(n.as_bytes()),
            size_bytes: 10 + i as u64,
        })
        .collect()
}

#[test]
fn a_directory_model_must_list_plain_unique_files_matching_its_id() {
    let mut spec = RunSpec::tiny();
    spec.base.source = ModelSource::Safetensors {
        dir_name: "m".into(),
    };
    spec.base.files = directory_files();
    spec.base.blake3 = Some(BaseModel::manifest_id(&spec.base.files));
    spec.base.size_bytes = 33;
    spec.validate().unwrap();
    let bad = |edit: &dyn Fn(&mut RunSpec)| {
        let mut s = spec.clone();
        edit(&mut s);
        s.validate().is_err()
    };
    assert!(bad(
        &|s| s.base.files[2].name = "../model.safetensors".into()
    ));
    assert!(bad(
        &|s| s.base.files[2].name = "sub/model.safetensors".into()
    ));
    assert!(bad(&|s| s.base.files[2].name = "config.json".into()));
    assert!(bad(&|s| {
        s.base.files.remove(1);
    }));
    assert!(bad(&|s| s.base.files[0].blake3 = ContentId::of(b"other")));
    assert!(bad(&|s| s.base.size_bytes = 34));
    assert!(bad(&|s| s.base.family = "gemma".into()));
    assert!(bad(&|s| s.base.files.clear()));
    // The id does not depend on the listing order.
    let mut rev = spec.base.files.clone();
    rev.reverse();
    assert_eq!(BaseModel::manifest_id(&rev), spec.base.blake3.unwrap());
    // A GGUF or preset run lists no files.
    assert!(bad(&|s| s.base.source = ModelSource::Gguf {
        file_name: "m.gguf".into()
    }));
}

#[test]
fn the_absolute_norm_cap_follows_how_far_adamw_can_move_the_adapter() {
    use hearth_proto::CodecSpec;
    let mut spec = RunSpec::default();
    spec.train.lr = 0.01;
    spec.train.local_steps = 25;
    let dims = 10_000;
    // Derived by default: 4 × lr × steps × √d = 4 × 0.01 × 25 × 100.
    let derived = spec
        .verify
        .norm_cap(&spec.train, &spec.aggregate, dims)
        .unwrap();
    assert!((derived - 100.0).abs() < 1e-3, "{derived}");
    // Ten times the learning rate or the steps: ten times the reach.
    spec.train.lr = 0.1;
    let higher = spec
        .verify
        .norm_cap(&spec.train, &spec.aggregate, dims)
        .unwrap();
    assert!((higher - 1_000.0).abs() < 1e-2, "{higher}");
    // A sparse codec with local error feedback carries up to 1/density rounds of residual.
    spec.aggregate.codec = CodecSpec::TopK {
        density: 0.25,
        bits: 2,
    };
    spec.aggregate.local_error_feedback = true;
    let sparse = spec
        .verify
        .norm_cap(&spec.train, &spec.aggregate, dims)
        .unwrap();
    assert!((sparse - 4_000.0).abs() < 0.1, "{sparse}");
    // A positive setting is the cap itself, a negative one turns it off.
    spec.verify.norm_abs_cap = 7.5;
    assert_eq!(
        spec.verify.norm_cap(&spec.train, &spec.aggregate, dims),
        Some(7.5)
    );
    spec.verify.norm_abs_cap = -1.0;
    assert_eq!(
        spec.verify.norm_cap(&spec.train, &spec.aggregate, dims),
        None
    );
}

#[test]
fn a_density_schedule_sends_dense_first_and_sizes_requests_for_it() {
    let mut spec = RunSpec::default();
    let sparse = CodecSpec::TopK {
        density: 1.0 / 64.0,
        bits: 2,
    };
    spec.aggregate.codec = sparse;
    let one_codec = spec.max_delta_bytes().unwrap();
    assert_eq!(spec.aggregate.codec_for(1), sparse);
    assert_eq!(spec.aggregate.codecs(), vec![sparse]);
    spec.aggregate.dense_rounds = 2;
    let dense = CodecSpec::TopK {
        density: 1.0,
        bits: 2,
    };
    let by_round: Vec<CodecSpec> = (1..=4).map(|r| spec.aggregate.codec_for(r)).collect();
    assert_eq!(by_round, vec![dense, dense, sparse, sparse]);
    assert_eq!(
        (1..=4)
            .map(|r| spec.aggregate.mean_over_senders_in(r))
            .collect::<Vec<_>>(),
        vec![false, false, true, true]
    );
    // Requests are sized for the larger, dense rounds.
    let mut all_dense = spec.clone();
    all_dense.aggregate.codec = dense;
    all_dense.aggregate.dense_rounds = 0;
    assert_eq!(spec.max_delta_bytes(), all_dense.max_delta_bytes());
    assert!(spec.max_delta_bytes().unwrap() > one_codec);
    let back = RunSpec::from_toml(&spec.to_toml().unwrap()).unwrap();
    assert_eq!(back.aggregate.dense_rounds, 2);
    // Dense codecs have nothing to schedule.
    spec.aggregate.codec = CodecSpec::Int8;
    assert_eq!(spec.aggregate.codec_for(1), CodecSpec::Int8);
    assert_eq!(spec.aggregate.codecs(), vec![CodecSpec::Int8]);
}

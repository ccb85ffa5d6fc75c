//! Reading a Hugging Face `config.json` into a [`ModelConfig`]: the family from `model_type`, its
//! features, and a refusal that names every field which would change the math but is not
//! implemented. Both the transformers 4 form (flat `rope_theta`, `rope_scaling`) and the
//! transformers 5 form (`rope_parameters`) are read.

use serde_json::{Map, Value};

use crate::config::{Family, Features, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};

/// Fields read by [`parse_config`].
const USED: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "hidden_act",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "attention_dropout",
    "rope_interleaved",
    "partial_rotary_factor",
    "hidden_activation",
    "eos_token_id",
];

/// Fields known not to change the forward or backward pass of the base model; ignored.
pub const IGNORED: &[&str] = &[
    "architectures",
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "bos_token_id",
    "pad_token_id",
    "use_cache",
    "initializer_range",
    // Tensor-parallel slicing of pre-training; transformers ignores it in the forward pass.
    "pretraining_tp",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "is_llama_config",
    "unsloth_fixed",
    "tokenizer_class",
    "auto_map",
    "keys_to_ignore_at_inference",
    "chunk_size_feed_forward",
    "id2label",
    "label2id",
];

/// Fields that change the math and are not implemented: present with anything but their neutral
/// value, the config is refused by name.
const REFUSED: &[(&str, &str)] = &[
    (
        "quantization_config",
        "pre-quantized Hugging Face weights (use a GGUF or an unquantized directory)",
    ),
    ("final_logit_softcapping", "logit soft-capping"),
    ("attn_logit_softcapping", "attention logit soft-capping"),
    ("num_experts", "mixture of experts"),
    ("num_local_experts", "mixture of experts"),
    ("embedding_multiplier", "embedding scaling"),
    ("logits_scaling", "logit scaling"),
    ("residual_multiplier", "residual scaling"),
    ("attention_multiplier", "attention scaling"),
    ("query_pre_attn_scalar", "query scaling"),
];

fn unsupported(msg: String) -> ModelError {
    ModelError::Unsupported(msg)
}

fn neutral(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(_) => false,
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn usize(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| ModelError::Config(format!("{k} = {v} is not a size"))),
        }
    }

    fn need(&self, k: &str) -> Result<usize> {
        self.usize(k)?
            .ok_or_else(|| ModelError::Config(format!("config.json lacks {k}")))
    }

    fn f64(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ModelError::Config(format!("{k} = {v} is not a number"))),
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| ModelError::Config(format!("{k} = {v} is not a boolean"))),
        }
    }
}

/// The family of a `model_type`, or a refusal naming it.
pub fn family_of(model_type: &str) -> Result<Family> {
    match model_type {
        "llama" => Ok(Family::Llama),
        "mistral" => Ok(Family::Mistral),
        "qwen2" => Ok(Family::Qwen2),
        "qwen3" => Ok(Family::Qwen3),
        other => Err(unsupported(format!(
            "model_type {other:?}: Hearth implements llama, mistral, qwen2 and qwen3"
        ))),
    }
}

/// Reads a rope block (`rope_scaling` or `rope_parameters`): its scaling, and its theta if any.
fn rope_block(name: &str, v: &Value) -> Result<(Option<RopeScaling>, Option<f64>)> {
    let Some(o) = v.as_object() else {
        return Err(ModelError::Config(format!("{name} is not an object: {v}")));
    };
    let f = Fields(o);
    let theta = f.f64("rope_theta")?;
    let kind = f
        .get("rope_type")
        .or_else(|| f.get("type"))
        .and_then(Value::as_str);
    let num = |k: &str| -> Result<f64> {
        f.f64(k)?
            .ok_or_else(|| ModelError::Config(format!("{name} lacks {k}")))
    };
    let scaling = match kind {
        None if theta.is_some() => None,
        None => {
            return Err(unsupported(format!(
                "{name} without rope_type ({v}); per-layer-type rope parameters are not implemented"
            )))
        }
        Some("default") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        Some("llama3") => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position: num("original_max_position_embeddings")?,
        }),
        Some(other) => {
            return Err(unsupported(format!(
                "rope type {other:?} in {name}: Hearth implements default, linear and llama3 \
                 (dynamic, yarn, longrope and the others are refused)"
            )))
        }
    };
    if let Some(factor) = f.f64("attention_factor")? {
        if factor != 1.0 {
            return Err(unsupported(format!("{name}.attention_factor {factor}")));
        }
    }
    Ok((scaling, theta))
}

/// Parses `config.json` (already decoded as JSON) into a checked [`ModelConfig`]; returns it with
/// the names of the fields it did not know (neither read, ignored nor refused), for a warning.
pub fn parse_config(json: &Value) -> Result<(ModelConfig, Vec<String>)> {
    let Some(obj) = json.as_object() else {
        return Err(ModelError::Config(
            "config.json is not a JSON object".into(),
        ));
    };
    let f = Fields(obj);
    let model_type = f
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ModelError::Config("config.json has no model_type".into()))?;
    let family = family_of(model_type)?;
    for (k, what) in REFUSED {
        if let Some(v) = obj.get(*k).filter(|v| !neutral(v)) {
            return Err(unsupported(format!("{k} = {v} ({what})")));
        }
    }
    if let Some(act) = f.get("hidden_act").or_else(|| f.get("hidden_activation")) {
        if act.as_str() != Some("silu") {
            return Err(unsupported(format!(
                "hidden_act {act}: Hearth implements silu (SwiGLU)"
            )));
        }
    }
    if f.bool("mlp_bias")? == Some(true) {
        return Err(unsupported("mlp_bias = true".into()));
    }
    if f.bool("rope_interleaved")? == Some(true) {
        return Err(unsupported("rope_interleaved = true".into()));
    }
    if let Some(p) = f.f64("partial_rotary_factor")? {
        if p != 1.0 {
            return Err(unsupported(format!("partial_rotary_factor {p}")));
        }
    }
    if let Some(d) = f.f64("attention_dropout")? {
        if d != 0.0 {
            return Err(unsupported(format!(
                "attention_dropout {d} (dropout inside the base model's attention)"
            )));
        }
    }
    if let Some(types) = f.get("layer_types").and_then(Value::as_array) {
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return Err(unsupported(format!("layer_types entry {t}")));
        }
    }

    // RoPE: transformers 5 `rope_parameters`, else the flat 4.x fields.
    let (rope_scaling, theta) = match f.get("rope_parameters") {
        Some(p) => rope_block("rope_parameters", p)?,
        None => match f.get("rope_scaling") {
            Some(s) => rope_block("rope_scaling", s)?,
            None => (None, None),
        },
    };
    let rope_theta = theta.or(f.f64("rope_theta")?).unwrap_or(10_000.0);

    let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
    let (qkv_bias, o_bias) = match family {
        // Qwen2 always has q/k/v biases and never an output bias; Mistral never has any.
        Family::Qwen2 => (true, false),
        Family::Mistral => (false, false),
        _ => (attention_bias, attention_bias),
    };
    let sliding_window = match family {
        Family::Mistral => f.usize("sliding_window")?,
        Family::Qwen2 | Family::Qwen3 => {
            if f.bool("use_sliding_window")? == Some(true) {
                return Err(unsupported(format!(
                    "use_sliding_window = true in {model_type} (sliding attention on some layers)"
                )));
            }
            None
        }
        Family::Llama => None,
    };
    let heads = f.need("num_attention_heads")?;
    let hidden = f.need("hidden_size")?;
    let config = ModelConfig {
        vocab: f.need("vocab_size")?,
        hidden,
        intermediate: f.need("intermediate_size")?,
        layers: f.need("num_hidden_layers")?,
        heads,
        kv_heads: f.usize("num_key_value_heads")?.unwrap_or(heads),
        head_dim: f
            .usize("head_dim")?
            .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        rope_theta,
        rms_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
        max_position: f.need("max_position_embeddings")?.min(1 << 20),
        tie_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(false),
        features: Features {
            family,
            rope_scaling,
            qkv_bias,
            o_bias,
            qk_norm: family == Family::Qwen3,
            sliding_window,
        },
    };
    config.validate()?;
    let unknown = obj
        .keys()
        .filter(|k| {
            let k = k.as_str();
            !USED.contains(&k) && !IGNORED.contains(&k) && !REFUSED.iter().any(|(r, _)| *r == k)
        })
        .cloned()
        .collect();
    Ok((config, unknown))
}

/// A transformers 4 style `config.json` for `cfg` (the form every transformers version reads).
pub fn config_json(cfg: &ModelConfig, eos: u32) -> Value {
    let f = &cfg.features;
    let (arch, model_type) = match f.family {
        Family::Llama => ("LlamaForCausalLM", "llama"),
        Family::Mistral => ("MistralForCausalLM", "mistral"),
        Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Family::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let rope_scaling = match &f.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        }) => serde_json::json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position,
        }),
        // Per-frequency divisors have no config.json form; the exported model carries the
        // already-scaled behaviour only through GGUF.
        Some(RopeScaling::Factors { .. }) => Value::Null,
    };
    let mut v = serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "rms_norm_eps": cfg.rms_eps,
        "max_position_embeddings": cfg.max_position,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "eos_token_id": eos,
    });
    if let Some(o) = v.as_object_mut() {
        match f.family {
            Family::Llama | Family::Qwen3 => {
                o.insert("attention_bias".into(), Value::Bool(f.o_bias));
            }
            Family::Mistral => {
                o.insert(
                    "sliding_window".into(),
                    f.sliding_window.map_or(Value::Null, Value::from),
                );
            }
            Family::Qwen2 => {
                o.insert("use_sliding_window".into(), Value::Bool(false));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(model_type: &str) -> Value {
        json!({
            "model_type": model_type, "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "hidden_act": "silu"
        })
    }

    fn with(mut v: Value, k: &str, x: Value) -> Value {
        v.as_object_mut().unwrap().insert(k.into(), x);
        v
    }

    fn refusal(v: &Value) -> String {
        match parse_config(v) {
            Err(ModelError::Unsupported(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn families_get_their_features() {
        let (c, _) = parse_config(&base("qwen2")).unwrap();
        assert!(c.features.qkv_bias && !c.features.o_bias && !c.features.qk_norm);
        let (c, _) = parse_config(&base("qwen3")).unwrap();
        assert!(c.features.qk_norm && !c.features.qkv_bias);
        let (c, _) = parse_config(&with(base("llama"), "attention_bias", json!(true))).unwrap();
        assert!(c.features.qkv_bias && c.features.o_bias);
        let (c, _) = parse_config(&with(base("mistral"), "sliding_window", json!(4096))).unwrap();
        assert_eq!(c.features.sliding_window, Some(4096));
        assert_eq!(c.rope_theta, 10_000.0);
    }

    #[test]
    fn both_rope_forms_give_the_same_config() {
        let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let flat = with(
            with(base("llama"), "rope_theta", json!(500000.0)),
            "rope_scaling",
            scaling.clone(),
        );
        let mut params = scaling;
        params
            .as_object_mut()
            .unwrap()
            .insert("rope_theta".into(), json!(500000.0));
        let v5 = with(base("llama"), "rope_parameters", params);
        let (a, _) = parse_config(&flat).unwrap();
        let (b, _) = parse_config(&v5).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 500000.0);
        assert!(matches!(
            a.features.rope_scaling,
            Some(RopeScaling::Llama3 { .. })
        ));
        // transformers 5 Mistral: theta only inside rope_parameters.
        let m = with(
            base("mistral"),
            "rope_parameters",
            json!({"rope_type": "default", "rope_theta": 1e6}),
        );
        assert_eq!(parse_config(&m).unwrap().0.rope_theta, 1e6);
    }

    #[test]
    fn what_is_not_implemented_is_refused_by_name() {
        for (v, name) in [
            (base("gemma"), "gemma"),
            (base("phi3"), "phi3"),
            (
                with(
                    base("llama"),
                    "rope_scaling",
                    json!({"rope_type": "yarn", "factor": 4.0}),
                ),
                "yarn",
            ),
            (
                with(
                    base("llama"),
                    "rope_scaling",
                    json!({"type": "dynamic", "factor": 2.0}),
                ),
                "dynamic",
            ),
            (with(base("llama"), "hidden_act", json!("gelu")), "gelu"),
            (with(base("llama"), "mlp_bias", json!(true)), "mlp_bias"),
            (
                with(base("qwen2"), "use_sliding_window", json!(true)),
                "use_sliding_window",
            ),
            (
                with(base("llama"), "final_logit_softcapping", json!(30.0)),
                "soft-capping",
            ),
            (
                with(
                    base("llama"),
                    "quantization_config",
                    json!({"quant_method": "gptq"}),
                ),
                "quantization_config",
            ),
            (
                with(base("llama"), "layer_types", json!(["sliding_attention"])),
                "sliding_attention",
            ),
        ] {
            let m = refusal(&v);
            assert!(m.contains(name), "{m:?} should name {name}");
        }
        // neutral values of refused fields are fine
        let ok = with(base("llama"), "final_logit_softcapping", Value::Null);
        assert!(parse_config(&ok).is_ok());
    }

    #[test]
    fn unknown_fields_are_listed_and_ignored_ones_are_not() {
        let v = with(
            with(base("llama"), "torch_dtype", json!("bfloat16")),
            "frobnicate",
            json!(1),
        );
        let (_, unknown) = parse_config(&v).unwrap();
        assert_eq!(unknown, vec!["frobnicate".to_string()]);
    }

    #[test]
    fn exported_config_reads_back_equal() {
        for t in ["llama", "mistral", "qwen2", "qwen3"] {
            let v = with(
                with(
                    base(t),
                    "rope_scaling",
                    json!({"rope_type": "linear", "factor": 2.0}),
                ),
                "sliding_window",
                if t == "mistral" {
                    json!(128)
                } else {
                    Value::Null
                },
            );
            let (c, _) = parse_config(&v).unwrap();
            let (back, unknown) = parse_config(&config_json(&c, 0)).unwrap();
            assert_eq!(back, c, "{t}");
            assert!(unknown.is_empty(), "{unknown:?}");
        }
    }

    #[test]
    fn llama3_scaling_matches_transformers_bands() {
        // head_dim 16, theta 500000, original context 64: wavelengths under 64/4 are kept, over
        // 64/1 divided by 8, and the band between is interpolated.
        let half = 8;
        let mut inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / 500000f64.powf(2.0 * i as f64 / 16.0))
            .collect();
        let orig = inv.clone();
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 64.0,
        }
        .apply(&mut inv);
        // wavelength 2π < 16: unchanged; 2π·500000^(14/16) > 64: divided by 8; 2π·5.18 = 32.5
        // lies between.
        assert_eq!(inv[0], orig[0]);
        assert!((inv[half - 1] - orig[half - 1] / 8.0).abs() < 1e-18);
        assert!(
            inv[1] < orig[1] && inv[1] > orig[1] / 8.0,
            "{} {}",
            inv[1],
            orig[1]
        );
    }
}

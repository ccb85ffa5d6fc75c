#!/usr/bin/env python3
"""Parity fixtures for every model family Hearth supports, computed with Hugging Face transformers
(+ PEFT) on CPU in f32.

For each family it builds a small random-weight checkpoint with transformers' own model class,
saves it as a Hugging Face directory (config.json as this transformers writes it, safetensors in the
dtype the family's row names, sharded with model.safetensors.index.json for one of them), and
records, for fixed token ids:
  - the mean next-token loss of the base model (`labels = input_ids`);
  - a PEFT LoRA adapter on all seven projections (A and B random), saved with PEFT's
    save_pretrained, the loss with it and the gradient of that loss with respect to every lora_A
    and lora_B (saved as safetensors under PEFT's names).
The weights are re-drawn with a larger spread than transformers' initialisation (std 0.02 gives
losses within 1e-3 of ln(vocab), which would hide a missing bias or norm), and norm gains and
biases are random, so a family feature that is ignored changes the loss.

Run in a venv outside the repo (the registry's default torch wheel is the large CUDA build; the
CPU is enough):
    python3 -m venv /work/.venv-ref && /work/.venv-ref/bin/pip install torch transformers peft safetensors
    /work/.venv-ref/bin/python model/reference/make_families.py
It also writes each family as a GGUF file the way llama.cpp's converter lays it out (tensor names,
metadata keys, the llama architecture's Q/K row permutation, Llama 3 scaling as `rope_freqs.weight`,
norms and biases in f32), with the 2-D weights in one quantization per family (F32, F16, BF16,
Q8_0, Q4_0, Q4_1: the ones gguf-py can write; K-quants come from make_kquants.py), and records transformers' loss
on the dequantized weights (`gguf_loss`).

Writes model/tests/fixtures/families/<name>/ and model/tests/fixtures/families/expected.json.

The other direction, our export loading in PEFT: after the fixtures are written,
    cargo test -p hearth-model --test families -- --ignored write_exported_adapters
    /work/.venv-ref/bin/python model/reference/make_families.py --check-exports
loads each `<name>/exported/` adapter (written by Hearth's PEFT export) with PEFT's
PeftModel.from_pretrained and records transformers' loss with it as `exported_loss`.
"""
import json
import os
import shutil
import sys

import math

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "families")

VOCAB = 96
SEQ = 24
BATCH = 2
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    hidden_act="silu",
)

# name: (config class, extra config fields, saved dtype, shard size or None, legacy flat config.json)
FAMILIES = {
    "llama": (LlamaConfig, dict(rope_theta=10000.0), torch.float32, "24KB", None),
    "llama3": (
        LlamaConfig,
        dict(
            rope_theta=500000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
            tie_word_embeddings=True,
        ),
        torch.float32,
        None,
        # the same model as a transformers 4.x config.json (flat rope_theta + rope_scaling)
        {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "llama_linear": (
        LlamaConfig,
        dict(rope_theta=10000.0, rope_scaling=dict(rope_type="linear", factor=4.0)),
        torch.float32,
        None,
        None,
    ),
    "mistral": (MistralConfig, dict(rope_theta=1000000.0, sliding_window=4096, head_dim=8), torch.bfloat16, None, None),
    "qwen2": (
        Qwen2Config,
        dict(rope_theta=1000000.0, use_sliding_window=False, sliding_window=32768),
        torch.float16,
        None,
        None,
    ),
    "qwen3": (
        Qwen3Config,
        dict(rope_theta=1000000.0, head_dim=12, use_sliding_window=False, attention_bias=False),
        torch.float32,
        None,
        None,
    ),
}


# GGUF quantization of the 2-D weights per family (Mistral is the llama architecture in GGUF).
GGUF = {
    "llama": ("llama", Q.F16),
    "llama3": ("llama", Q.F32),
    "llama_linear": ("llama", Q.Q4_1),
    "mistral": ("llama", Q.Q4_0),
    "qwen2": ("qwen2", Q.Q8_0),
    "qwen3": ("qwen3", Q.BF16),
}

GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def permute(w, heads):
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (for its interleaved RoPE)."""
    out, inp = w.shape
    return w.reshape(heads, 2, out // heads // 2, inp).swapaxes(1, 2).reshape(out, inp)


def llama3_rope_factors(cfg):
    """The per-frequency divisors llama.cpp's converter writes as rope_freqs.weight."""
    p = cfg.rope_parameters
    base, dim = p["rope_theta"], cfg.head_dim
    factor, low, high, old = p["factor"], p["low_freq_factor"], p["high_freq_factor"], p["original_max_position_embeddings"]
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / base ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path, arch, qtype, cfg, state):
    """Writes `state` (HF names, f32 numpy) as GGUF; returns the dequantized weights by HF name."""
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters
    w.add_rope_freq_base(rope["rope_theta"])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    # A small BPE vocabulary of VOCAB tokens: printable ASCII, one merge, an end token (the loss
    # uses ids only).
    tokens = [chr(33 + i) for i in range(VOCAB - 2)] + ["ab", "<eos>"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (VOCAB - 1) + [3])
    w.add_token_merges(["a b"])
    w.add_eos_token_id(VOCAB - 1)
    if rope.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    back = {}
    for hf, x in state.items():
        x = x.astype(np.float32)
        if arch == "llama" and hf.endswith("q_proj.weight"):
            x = permute(x, cfg.num_attention_heads)
        elif arch == "llama" and hf.endswith("k_proj.weight"):
            x = permute(x, cfg.num_key_value_heads)
        t = qtype if x.ndim == 2 else Q.F32
        if t in (Q.Q8_0, Q.Q4_0, Q.Q4_1) and x.shape[-1] % 32 != 0:
            t = Q.F16
        if t == Q.F32:
            data = x
        elif t == Q.F16:
            data = x.astype(np.float16)
        else:
            data = gguf.quants.quantize(x, t)
        w.add_tensor(gguf_name(hf), data, raw_dtype=t)
        deq = x if t == Q.F32 else gguf.quants.dequantize(data, t).reshape(x.shape).astype(np.float32)
        if arch == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in hf else cfg.num_key_value_heads
            out, inp = deq.shape
            deq = deq.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)
        back[hf] = deq
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return back


def randomize(model, seed, scale=0.3):
    """Norm gains near 1, biases of spread 0.5, other weights of spread `scale`."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def mean_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def check_exports():
    from peft import PeftModel

    path = os.path.join(OUT, "expected.json")
    with open(path) as fh:
        expected = json.load(fh)
    ids = torch.tensor(expected["ids"])
    for name, fam in expected["families"].items():
        d = os.path.join(OUT, name)
        base = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
        model = PeftModel.from_pretrained(base, os.path.join(d, "exported")).eval()
        with torch.no_grad():
            loss = float(mean_loss(model, ids))
        fam["exported_loss"] = loss
        print(f"{name:13} PEFT loss with Hearth's exported adapter {loss:.6f} (PEFT's own {fam['lora_loss']:.6f})")
    with open(path, "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")


def main():
    if "--check-exports" in sys.argv:
        return check_exports()
    torch.manual_seed(0)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "ids": ids.tolist(),
        "families": {},
    }
    for i, (name, (cls, extra, dtype, shard, legacy)) in enumerate(FAMILIES.items()):
        cfg = cls(**{**COMMON, **extra})
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        randomize(model, 100 + i)
        d = os.path.join(OUT, name)
        # Save in the row's dtype, then reload in f32: the losses are those of the saved weights.
        model.to(dtype).save_pretrained(d, safe_serialization=True, max_shard_size=shard or "100MB")
        if legacy is not None:
            with open(os.path.join(d, "config.json")) as fh:
                flat = json.load(fh)
            flat.pop("rope_parameters", None)
            flat.update(legacy)
            with open(os.path.join(d, "config.v4.json"), "w") as fh:
                json.dump(flat, fh, indent=2)
        model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            base = float(mean_loss(model, ids))

        # The same model as GGUF, and transformers' loss on its dequantized weights.
        arch, qtype = GGUF[name]
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        back = write_gguf(os.path.join(d, "model.gguf"), arch, qtype, cfg, state)
        deq = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
        with torch.no_grad():
            sd = deq.state_dict()
            for k, v in back.items():
                sd[k].copy_(torch.from_numpy(v))
            gguf_loss = float(mean_loss(deq.eval(), ids))

        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lcfg)
        g = torch.Generator().manual_seed(200 + i)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n or "lora_A" in n:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        peft_model.eval()
        loss = mean_loss(peft_model, ids)
        loss.backward()
        grads = {}
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                # PEFT's saved names drop the adapter name ("default").
                grads[n.replace(".default", "")] = p.grad.detach().clone().contiguous()
        adir = os.path.join(d, "adapter")
        peft_model.save_pretrained(adir)
        os.remove(os.path.join(adir, "README.md"))
        os.remove(os.path.join(d, "generation_config.json"))
        acfg_path = os.path.join(adir, "adapter_config.json")
        with open(acfg_path) as fh:
            acfg = json.load(fh)
        acfg["base_model_name_or_path"] = name
        with open(acfg_path, "w") as fh:
            json.dump(acfg, fh, indent=2)
        from safetensors.torch import save_file

        save_file(grads, os.path.join(d, "lora_grads.safetensors"))
        files = sorted(os.listdir(d))
        expected["families"][name] = {
            "model_type": cfg.model_type,
            "dtype": str(dtype).replace("torch.", ""),
            "loss": base,
            "lora_loss": float(loss.detach()),
            "gguf": {"architecture": arch, "type": qtype.name, "loss": gguf_loss},
            "files": files,
        }
        print(f"{name:13} {cfg.model_type:8} {str(dtype):15} loss {base:.6f}  with LoRA {float(loss):.6f}  "
              f"GGUF {qtype.name} {gguf_loss:.6f}")
    with open(os.path.join(OUT, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

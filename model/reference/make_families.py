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
Writes model/tests/fixtures/families/<name>/ and model/tests/fixtures/families/expected.json.
"""
import json
import os
import shutil

import torch
import transformers
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


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def mean_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def main():
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
            "lora_loss": float(loss),
            "files": files,
        }
        print(f"{name:13} {cfg.model_type:8} {str(dtype):15} loss {base:.6f}  with LoRA {float(loss):.6f}  {files}")
    with open(os.path.join(OUT, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

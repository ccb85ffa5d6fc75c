#!/usr/bin/env python3
"""K-quant GGUF fixtures (Q4_K_M, Q5_K_M, Q6_K): transformers' loss on weights that gguf-py
dequantizes, for files whose quantization Hearth's loader (candle) decodes on its own.

gguf-py can read K-quants but cannot write them, so the files are written by candle's quantizer
(`cargo run -p hearth-model --example requantize_gguf`) from an F32 GGUF that
make_families.write_gguf lays out as llama.cpp's converter does. The expected loss then comes from
an independent decoder: gguf-py's numpy dequantization of every tensor in the written file, loaded
into the transformers model (Q/K rows un-permuted for the llama architecture). A K-quant needs rows
of 256 values, so these models are wider than the family fixtures (hidden 256, MLP 256, one layer).

    /work/.venv-ref/bin/python model/reference/make_kquants.py

Writes model/tests/fixtures/kquants/<name>.gguf and model/tests/fixtures/kquants/expected.json.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_families as mf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "kquants")

# The family fixtures' shape, wide enough for whole 256-value super-blocks.
COMMON = {**mf.COMMON, "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 1}

# name: (config class, extra fields, GGUF architecture, mixes written)
MODELS = {
    "llama": (LlamaConfig, dict(rope_theta=10000.0), "llama", ["q4_k_m", "q5_k_m", "q6_k"]),
    "qwen2": (
        Qwen2Config,
        dict(rope_theta=1000000.0, use_sliding_window=False, sliding_window=32768),
        "qwen2",
        ["q4_k_m"],
    ),
}


def hf_names(state):
    """GGUF tensor name -> HF name, for the names `state` has."""
    return {mf.gguf_name(k): k for k in state}


def requantize(src, dst, mix):
    subprocess.run(
        ["cargo", "run", "-q", "-p", "hearth-model", "--example", "requantize_gguf", "--", src, dst, mix],
        check=True,
        cwd=ROOT,
    )


def dequantized(path, cfg, arch, names):
    """Every tensor of the GGUF at `path`, decoded by gguf-py, by HF name; and the types used."""
    reader = gguf.GGUFReader(path)
    out, types = {}, {}
    for t in reader.tensors:
        if t.name not in names:
            continue
        hf = names[t.name]
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        x = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if arch == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in hf else cfg.num_key_value_heads
            o, i = x.shape
            x = x.reshape(heads, o // heads // 2, 2, i).swapaxes(1, 2).reshape(o, i)
        out[hf] = x
        types[t.name] = t.tensor_type.name
    return out, types


def main():
    torch.manual_seed(0)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    ids = torch.randint(0, mf.VOCAB, (mf.BATCH, mf.SEQ), generator=torch.Generator().manual_seed(1))
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19",
        "ids": ids.tolist(),
        "files": {},
    }
    tmp = tempfile.mkdtemp()
    for i, (name, (cls, extra, arch, mixes)) in enumerate(MODELS.items()):
        cfg = cls(**{**COMMON, **extra})
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).eval()
        # make_families' spread, scaled to this width so activations stay in the same range.
        mf.randomize(model, 200 + i, scale=0.3 * (32 / COMMON["hidden_size"]) ** 0.5)
        with torch.no_grad():
            f32_loss = float(mf.mean_loss(model, ids))
        state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        src = os.path.join(tmp, f"{name}.f32.gguf")
        mf.write_gguf(src, arch, Q.F32, cfg, state)
        names = hf_names(state)
        for mix in mixes:
            file = f"{name}.{mix}.gguf"
            dst = os.path.join(OUT, file)
            requantize(src, dst, mix)
            deq, types = dequantized(dst, cfg, arch, names)
            assert set(deq) == set(state), sorted(set(state) - set(deq))
            with torch.no_grad():
                sd = model.state_dict()
                for k, v in deq.items():
                    sd[k].copy_(torch.from_numpy(v))
                loss = float(mf.mean_loss(model, ids))
                for k, v in state.items():
                    sd[k].copy_(torch.from_numpy(v))
            expected["files"][file] = {
                "architecture": arch,
                "mix": mix.upper(),
                "types": sorted(set(types.values())),
                "loss": loss,
                "f32_loss": f32_loss,
            }
            print(f"{file:20} {arch:6} loss {loss:.6f} (f32 {f32_loss:.6f}) types {sorted(set(types.values()))}")
    shutil.rmtree(tmp)
    with open(os.path.join(OUT, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
        fh.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

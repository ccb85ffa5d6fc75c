#!/usr/bin/env python3
"""Reference figures for hearth-model, computed with Hugging Face transformers (+ PEFT).

Loads SmolLM2-135M-Instruct from the same GGUF file the Rust code loads (transformers dequantizes it
to f32 and undoes llama.cpp's Q/K permutation), tokenizes a few fixed texts without special tokens,
and records token ids and the mean next-token loss. If the committed small adapter exists
(model/tests/fixtures/adapter_r1, written by `cargo test -p hearth-model --test real_model --
--ignored write_adapter_fixture`), it also loads it with PEFT and records the loss with it.

Run in a venv outside the repo:
    python3 -m venv /work/.venv-ref && /work/.venv-ref/bin/pip install torch transformers gguf peft
    /work/.venv-ref/bin/python model/reference/make_reference.py [GGUF]
Writes model/tests/fixtures/smollm2_reference.json.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

TEXTS = {
    "prose": "The hearth was the centre of the home: people gathered around it to cook, to talk and to keep warm through the long winter evenings.",
    "code": "fn main() {\n    let xs: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", xs);\n}\n",
    "digits": "In 2024, 1,234,567 volunteers trained 89.5% of 3141592653 tokens at 42 tok/s.",
    "unicode": "Café naïve façade — “quotes” and emoji 🔥🏠✨ with tabs\tand  double  spaces.",
    "japanese": "暖炉の火は家族を温め、冬の長い夜に物語を語り合う場所でした。",
}

ADAPTER_TEXT = TEXTS["prose"]


def default_gguf():
    cache = os.environ.get("HEARTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hearth"
    )
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def mean_loss(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids])
        return float(model(input_ids=x, labels=x).loss)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTH_MODEL") or default_gguf()
    d, f = os.path.split(os.path.abspath(path))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    out = {"model": f, "transformers": __import__("transformers").__version__, "texts": []}
    for name, text in TEXTS.items():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, (name, tok.decode(ids))
        loss = mean_loss(model, ids)
        print(f"{name:10} {len(ids):4} tokens  loss {loss:.5f}")
        out["texts"].append({"name": name, "text": text, "ids": ids, "loss": loss})

    adapter_dir = os.path.join(FIXTURES, "adapter_r1")
    if os.path.exists(os.path.join(adapter_dir, "adapter_config.json")):
        from peft import PeftModel

        ids = tok(ADAPTER_TEXT, add_special_tokens=False)["input_ids"]
        base_loss = mean_loss(model, ids)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        peft_model.eval()
        peft_loss = mean_loss(peft_model, ids)
        print(f"adapter_r1: base loss {base_loss:.5f}, with PEFT adapter {peft_loss:.5f}")
        out["adapter"] = {"dir": "adapter_r1", "text": ADAPTER_TEXT, "base_loss": base_loss, "loss": peft_loss}
    else:
        print("no adapter fixture yet; run the Rust write_adapter_fixture test first")

    os.makedirs(FIXTURES, exist_ok=True)
    dst = os.path.join(FIXTURES, "smollm2_reference.json")
    with open(dst, "w") as fh:
        json.dump(out, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print("wrote", dst)


if __name__ == "__main__":
    main()

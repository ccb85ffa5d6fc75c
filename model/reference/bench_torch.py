#!/usr/bin/env python3
"""PyTorch + PEFT baseline for model/benches/train_speed.rs: SmolLM2-135M (from the same GGUF),
f32, batch 4 x 256 tokens, LoRA r=8 alpha=16 on q_proj/v_proj, AdamW; training and forward-only
tokens/s with torch.set_num_threads(N) (N from RAYON_NUM_THREADS, default 2).

    RAYON_NUM_THREADS=2 /work/.venv-ref/bin/python model/reference/bench_torch.py [GGUF] [STEPS]
"""
import os
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import default_gguf  # noqa: E402

B, T = 4, 256


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTH_MODEL") or default_gguf()
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    threads = int(os.environ.get("RAYON_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    ids = tok("Volunteers fine-tune a small language model on their home computers. " * 200, add_special_tokens=False)["input_ids"]
    x = torch.tensor(ids[: B * T]).reshape(B, T)

    model.eval()
    with torch.no_grad():
        model(input_ids=x)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(input_ids=x)
        fwd = steps * B * T / (time.perf_counter() - t0)

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss)

    step()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step()
        print(f"step {i + 1} loss {loss:.4f} {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    train = steps * B * T / (time.perf_counter() - t0)
    print(f"pytorch {torch.__version__} + peft, SmolLM2-135M f32, batch {B}x{T}, LoRA r8 q,v, threads {threads}: "
          f"train {train:.1f} tokens/s, forward-only {fwd:.1f} tokens/s")


if __name__ == "__main__":
    main()

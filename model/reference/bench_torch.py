#!/usr/bin/env python3
"""PyTorch + PEFT baseline for model/benches/train_speed.rs: SmolLM2-135M (from the same GGUF), f32,
batch 4 x 256 tokens, AdamW (lr 1e-4, clip 1.0); training and forward-only tokens/s with
torch.set_num_threads(N) (N from RAYON_NUM_THREADS, default 2). Prints one JSON line on stdout.

LoRA config (HEARTH_BENCH_LORA): qv8 = r 8, alpha 16 on q_proj, v_proj (default); all16 = r 16,
alpha 32 on q, k, v, o, gate, up, down. HEARTH_BENCH_MODE=matmul times a 2048^3 torch.mm instead.

    RAYON_NUM_THREADS=2 /work/.venv-ref/bin/python model/reference/bench_torch.py [GGUF] [STEPS]
"""
import json
import os
import statistics
import sys
import time

import torch

B, T = 4, 256
CONFIGS = {
    "qv8": (8, ["q_proj", "v_proj"]),
    "all16": (16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
}


def matmul_rate(steps, threads):
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(max(steps, 1)):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    print(json.dumps({"side": "pytorch", "mode": "matmul", "n": n, "threads": str(threads),
                      "gflops": round(statistics.median(rates), 2), "torch": torch.__version__}))


def main():
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else int(os.environ.get("HEARTH_BENCH_STEPS", "3"))
    threads = int(os.environ.get("RAYON_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    if os.environ.get("HEARTH_BENCH_MODE") == "matmul":
        return matmul_rate(steps, threads)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_reference import default_gguf  # noqa: E402

    path = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else os.environ.get("HEARTH_MODEL") or default_gguf()
    which = os.environ.get("HEARTH_BENCH_LORA", "qv8")
    rank, targets = CONFIGS[which]
    d, f = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    ids = tok("Volunteers fine-tune a small language model on their home computers. " * 200,
              add_special_tokens=False)["input_ids"]
    x = torch.tensor(ids[: B * T]).reshape(B, T)

    model.eval()
    with torch.no_grad():
        model(input_ids=x)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(input_ids=x)
        fwd = steps * B * T / (time.perf_counter() - t0)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss)

    step()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step()
        print(f"step {i + 1} loss {loss:.4f} {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    train = steps * B * T / (time.perf_counter() - t0)
    print(f"pytorch {torch.__version__} + peft, SmolLM2-135M f32, batch {B}x{T}, LoRA {which}, threads {threads}: "
          f"train {train:.1f} tokens/s, forward-only {fwd:.1f} tokens/s", file=sys.stderr)
    print(json.dumps({"side": "pytorch", "mode": "model", "lora": which, "threads": str(threads), "steps": steps,
                      "train_tps": round(train, 2), "forward_tps": round(fwd, 2), "last_loss": round(loss, 4),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()

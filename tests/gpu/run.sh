#!/usr/bin/env bash
# On a CUDA machine (not run in CI: this project's CI has no GPU). Checks the CUDA build against
# the CPU, then measures training speed and peak GPU memory of the worker for SmolLM2-135M (when
# its GGUF is in the cache) and a 1B-class random model (Llama 3.2 1B's shape), in f32, bf16 and
# q4 (`--dtype`). Prints a markdown table; OUT=FILE also writes it there.
#   bash tests/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this needs a CUDA machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"

# 1. Parity: every family fixture's loss and LoRA gradients on cuda:0 against the CPU.
cargo test --release -p hearth-model --features cuda --test cuda -- --nocapture

# 2. Speed and peak memory: `hearth-worker bench` on cuda:0, GPU memory sampled every 100 ms.
cargo build --release -p hearth-worker --features cuda
bench() { # label args...
  local label=$1; shift
  local log; log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" &
  local smi=$!
  local json
  json=$(target/release/hearth-worker bench --device cuda:0 --json --steps 5 "$@" 2>/dev/null | tail -1) || json='{}'
  kill "$smi" 2>/dev/null || true
  local peak; peak=$(sort -n "$log" | tail -1)
  rm -f "$log"
  python3 - "$label" "$peak" "$json" <<'PY'
import json, sys
label, peak, text = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.loads(text)
    print(f"| {label} | {r['batch']} × {r['seq_len']} | {r['tokens_per_second']:.0f} | {r['seconds_per_step']:.3f} | {peak} MiB | {r['estimated_memory_bytes'] / 2**20:.0f} MiB |")
except Exception as e:
    print(f"| {label} | failed ({e}) | | | {peak} MiB | |")
PY
}
{
  echo "| model, --dtype | batch × tokens | tokens/s | s/step | peak GPU memory (nvidia-smi) | worker's estimate |"
  echo "| --- | --- | ---: | ---: | ---: | ---: |"
  for dtype in f32 bf16 q4; do
    if [ -f "${HEARTH_MODEL:-$HOME/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf}" ]; then
      bench "SmolLM2-135M, $dtype" --dtype "$dtype" --batch 4 --seq-len 256
    fi
    bench "llama-1b (random), $dtype" --preset llama-1b --dtype "$dtype" --batch 1 --seq-len 512
  done
} | tee "${OUT:-/dev/null}"

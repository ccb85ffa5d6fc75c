#!/usr/bin/env bash
# Table 8b (docs/BENCHMARKS.md): the worker's memory estimate against measured peaks on this CPU,
# for every --dtype with and without activation checkpointing: SmolLM2-135M (4 x 256, when its
# GGUF is fetched) and a random model in Llama 3.2 1B's shape (1 x 512). `hearth-worker bench`
# loads the base as `join` does (on the host, the projections made compact one at a time, the
# host copy dropped), then resets the process's peak (/proc/self/clear_refs) and trains.
# About 40 min on 2 cores (the 1B steps take ~2 min each). Writes docs/bench/8-memory-measured.md.
#   bash tests/bench/8-memory-measured.sh            # run and write
#   JSONL=FILE bash tests/bench/8-memory-measured.sh  # write from runs already in FILE
set -euo pipefail
cd "$(dirname "$0")/../.."
out=docs/bench/8-memory-measured.md
model="${HEARTH_MODEL:-$HOME/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
jsonl="${JSONL:-}"
if [ -z "$jsonl" ]; then
  cargo build -q -p hearth-worker --bin hearth-worker
  jsonl=$(mktemp)
  for dtype in f32 bf16 q8 q4; do
    for ckpt in "" --checkpoint-activations; do
      if [ -f "$model" ]; then
        echo "SmolLM2-135M $dtype $ckpt" >&2
        target/debug/hearth-worker bench --model "$model" --dtype "$dtype" $ckpt --batch 4 --seq-len 256 \
          --steps 1 --json 2>/dev/null | tail -1 | sed "s/^{/{\"dtype\":\"$dtype\",\"checkpoint\":\"${ckpt:+yes}\",/" >> "$jsonl"
      fi
      echo "llama-1b $dtype $ckpt" >&2
      target/debug/hearth-worker bench --preset llama-1b --dtype "$dtype" $ckpt --batch 1 --seq-len 512 \
        --steps 1 --json 2>/dev/null | tail -1 | sed "s/^{/{\"dtype\":\"$dtype\",\"checkpoint\":\"${ckpt:+yes}\",/" >> "$jsonl"
    done
  done
fi
python3 - "$jsonl" > "$out.tmp" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
mib = lambda b: f"{b / 2**20:,.0f} MiB"
print("# 8b. Memory: the estimate against measured peaks on the CPU\n")
print("`hearth-worker bench` on this 2-core machine, LoRA of the default run spec (rank 8 on q_proj and v_proj), one warm-up and one timed step. "
      "It loads the base as `join` does: read on the host, each projection made compact (`--dtype`) as the model is built, the host's "
      "full-precision copy dropped. \"Training peak\" is the process's peak resident memory after that (the peak is reset with "
      "`/proc/self/clear_refs`), \"load peak\" the peak while loading. The estimate is the one `join` checks before it trains "
      "(`hearth_worker::memory::estimate_with`); it should not be below the training peak. Command: `bash tests/bench/8-memory-measured.sh`.\n")
print("| model | --dtype | checkpointing | batch × tokens | load peak | training peak | estimate | estimate / peak | s/step |")
print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    peak, est = r["peak_memory_bytes"], r["estimated_memory_bytes"]
    print(f"| {r['model']} | {r['dtype']} | {r['checkpoint'] or 'no'} | {r['batch']} × {r['seq_len']} | {mib(r['load_peak_memory_bytes'])} "
          f"| {mib(peak)} | {mib(est)} | {est / peak:.2f} | {r['seconds_per_step']:.1f} |")
ratios = [r["estimated_memory_bytes"] / r["peak_memory_bytes"] for r in rows]
if ratios:
    below = [r for r, x in zip(rows, ratios) if x < 1]
    print(f"\n## Reading\n\n- The estimate is {min(ratios):.2f}–{max(ratios):.2f}× the measured training peak over these {len(rows)} runs"
          + (f"; it is below the peak in {len(below)} of them, so `join` could start a run that does not fit." if below
             else ": never below it, so `join` does not start a run that would not fit; it is most conservative for "
                  "compact dtypes with checkpointing, where the expanded weight of one matmul is all that is added.")
          )
PY
mv "$out.tmp" "$out"
echo "wrote $out" >&2

#!/usr/bin/env bash
# Table 2k (docs/BENCHMARKS.md, issue 16): a density schedule. A sparse top-k codec sends its first
# `run.aggregate.dense_rounds` rounds densely (density 1, the same bits), later rounds at its density:
# dense low-bit rounds while updates are large and error feedback has nothing banked, sparse ones after.
# Each row is one `hearth-coordinator demo` run (3 workers, seed 7, every other setting at the preset's
# default); summaries are kept in docs/bench/runs/2k-*.json and the table is written to
# docs/bench/2-communication-density.md. The f32 rows of SmolLM2 are table 2j's (runs/2j-*-f32-*.json).
#
#   bash tests/bench/2k-density.sh                     # tiny preset, 10 and 30 rounds
#   HEARTH_2K_SMOLLM2=1 bash tests/bench/2k-density.sh # also SmolLM2-135M, 10 rounds (about 10 min a run)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p hearth-coordinator -p hearth-worker
runs=docs/bench/runs
mkdir -p "$runs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
table=2k
# shellcheck source=tests/bench/demo-runs.sh
source tests/bench/demo-runs.sh
d() { echo "--set run.aggregate.dense_rounds=$1"; }
for r in 10 30; do
  run tiny "$r" f32 --codec f32
  run tiny "$r" default
  run tiny "$r" dense2 --codec topk:1:2
  run tiny "$r" topk64 --codec topk:1/64:2
  # shellcheck disable=SC2046
  {
    run tiny "$r" topk64-d1 --codec topk:1/64:2 $(d 1)
    run tiny "$r" topk64-d2 --codec topk:1/64:2 $(d 2)
    run tiny "$r" topk64-d5 --codec topk:1/64:2 $(d 5)
    run tiny "$r" topk32-d2 --codec topk:1/32:2 $(d 2)
    run tiny "$r" topk16-d2 --codec topk:1/16:2 $(d 2)
  }
done
if [ -n "${HEARTH_2K_SMOLLM2:-}" ]; then
  # shellcheck disable=SC2046
  run smollm2-135m 10 topk64-d2 --codec topk:1/64:2 $(d 2)
fi
python3 - "$runs" > docs/bench/2-communication-density.md <<'PY'
import json, os, sys
runs = sys.argv[1]
ROWS = [
    ("f32", "f32"),
    ("default", "the preset's default codec"),
    ("dense2", "dense 2-bit every round"),
    ("topk64", "top-k 1/64 2-bit every round"),
    ("topk64-d1", "dense 2-bit in round 1, then top-k 1/64 2-bit"),
    ("topk64-d2", "dense 2-bit in rounds 1-2, then top-k 1/64 2-bit"),
    ("topk64-d5", "dense 2-bit in rounds 1-5, then top-k 1/64 2-bit"),
    ("topk32-d2", "dense 2-bit in rounds 1-2, then top-k 1/32 2-bit"),
    ("topk16-d2", "dense 2-bit in rounds 1-2, then top-k 1/16 2-bit"),
]
def load(preset, name, rounds):
    for table in ("2k", "2j"):
        p = os.path.join(runs, f"{table}-{preset}-{name}-{rounds}.json")
        if os.path.exists(p) and (table == "2k" or name == "f32"):
            return json.load(open(p))
    return None
print("# 2k. A density schedule: dense low-bit rounds first, sparse ones later\n")
print("`bash tests/bench/2k-density.sh`: `hearth-coordinator demo --workers 3 --rounds R` (seed 7) with every "
      "setting at the preset's default but the codec and `run.aggregate.dense_rounds` (the first rounds send the "
      "top-k codec at density 1 with the same bits). Size: all bytes the coordinator received over the run against "
      "the f32 row's, at the preset's own adapter size (the tiny adapter is too small for sparse envelopes to "
      "shrink as far as at SmolLM2 size; table 2's size section has those). Held-out loss after R rounds, and its "
      "gap to the f32 row of the same preset and R.\n")
results = []
for preset, rounds in (("tiny", 10), ("tiny", 30), ("smollm2-135m", 10)):
    base = load(preset, "f32", rounds)
    if base is None:
        continue
    rows = [(name, label, load(preset, name, rounds)) for name, label in ROWS[1:]]
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        continue
    print(f"\n**{preset}, {rounds} rounds** (f32: held-out loss {base['eval_loss'][-1]:.4f})\n")
    if base.get("note"):
        print(f"The f32 row: {base['note']}.\n")
    print("| variant | codec | dense rounds | bytes vs f32 | held-out loss | vs f32 | rejected |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    fb = sum(base["bytes_per_round"])
    for name, label, j in rows:
        b = sum(j["bytes_per_round"])
        loss = j["eval_loss"][-1]
        gap = (loss / base["eval_loss"][-1] - 1) * 100
        results.append((preset, rounds, name, fb / b, gap))
        print(f"| {label} | {j['codec']} | {j.get('dense_rounds', 0)} | {fb / b:.1f}× | {loss:.4f} | {gap:+.2f} % | {sum(j['deltas_rejected'])} |")
print("\n**Reading.**")
for preset, rounds in (("tiny", 10), ("tiny", 30), ("smollm2-135m", 10)):
    sched = [r for r in results if r[0] == preset and r[1] == rounds and "-d" in r[2]]
    if not sched:
        continue
    best = min(sched, key=lambda r: r[4])
    within = [r for r in sched if r[4] <= 1.0]
    print(f"- {preset}, {rounds} rounds: the closest schedule is `{best[2]}` at {best[4]:+.2f} % from f32 "
          f"({best[3]:.1f}× fewer bytes here); {len(within)} of {len(sched)} schedules end within 1 %.")
PY
echo "wrote docs/bench/2-communication-density.md" >&2

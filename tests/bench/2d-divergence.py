#!/usr/bin/env python3
"""Table 2d: how far codecs near f32 stay from f32 on SmolLM2-135M over 30 rounds, and where any
change at all (f16) parts from f32's trajectory. Reads the `demo --json-out` summaries of runs made
with the arguments of `hearth-bench-swarm communication`'s SmolLM2 pair (2 workers, 5 local steps of
batch 2, lr 0.004, seed 7, 30 rounds), one per codec:

    for c in f32 f16 topk:1:8 topk:1:4; do
      target/debug/hearth-coordinator demo --preset smollm2-135m --model MODEL --http "" \
        --accuracy-examples 0 --workers 2 --rounds 30 --local-steps 5 --lr 0.004 --codec $c --shards 2 \
        --target-deltas 2 --seed 7 --set run.train.batch_size=2 --set run.aggregate.deadline_secs=900 \
        --json-out docs/bench/runs/2d-smollm2-<name>.json
    done
    python3 tests/bench/2d-divergence.py > docs/bench/2-communication-smollm2-30.md
"""
import json
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RUNS = os.path.join(ROOT, "docs", "bench", "runs")
CODECS = [("f32", "f32", "1.0×"), ("f16", "f16", "2.0×"), ("dense8", "dense 8-bit (the default)", "4.0×"),
          ("dense4", "dense 4-bit", "7.5×")]


def load(name):
    with open(os.path.join(RUNS, f"2d-smollm2-{name}.json")) as fh:
        return json.load(fh)


def main():
    runs = {k: load(k) for k, _, _ in CODECS}
    base = runs["f32"]["eval_loss"]
    n = len(base) - 1
    out = sys.stdout
    out.write("# 2d. Communication: codecs near f32 on SmolLM2-135M over 30 rounds\n\n")
    out.write(
        "2 workers, 30 rounds of 5 local steps of batch 2 (lr 0.004, seed 7), as the SmolLM2 pair of "
        "table 2b, one run per codec (the runs are deterministic: the f32 run's first 10 rounds repeat "
        "table 2b's to four digits). The held-out gate keeps the previous checkpoint when a merged update "
        "raises held-out loss by more than 2 %, which splits a trajectory at the first round two runs gate "
        "differently. Command: see `tests/bench/2d-divergence.py` (reads `docs/bench/runs/2d-smollm2-*.json`).\n\n"
    )
    out.write("| codec | size vs f32 | held-out loss, round 0 to 30 | after 10 | after 30 | vs f32 after 10 / 30 | "
              "geometric mean vs f32, rounds 1–20 / 21–30 | first round > 1 % from f32 | gated rounds | run time |\n")
    out.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    rows = {}
    for key, label, ratio in CODECS:
        r = runs[key]
        x = r["eval_loss"]
        gap = lambda i: (x[i] - base[i]) / base[i]
        geo = lambda a, b: math.exp(sum(math.log(x[i] / base[i]) for i in range(a, b + 1)) / (b - a + 1)) - 1
        first = next((i for i in range(1, n + 1) if abs(gap(i)) > 0.01), None)
        gated = [i + 1 for i, o in enumerate(r["outcomes"]) if o == "gated"]
        rows[key] = (gap(10), gap(n), first, geo(1, 20), geo(21, n))
        out.write(
            f"| {label} | {ratio} | {' '.join(f'{v:.3f}' for v in x)} | {x[10]:.4f} | {x[n]:.4f} | "
            f"{gap(10) * 100:+.2f} % / {gap(n) * 100:+.1f} % | {geo(1, 20) * 100:+.2f} % / {geo(21, n) * 100:+.1f} % | "
            f"{first if first else '–'} | {', '.join(map(str, gated))} | {r['swarm_seconds']:.0f} s |\n"
        )
    f16, d8, d4 = rows["f16"], rows["dense8"], rows["dense4"]
    out.write("\n## Reading\n\n")
    out.write(
        f"- f16 rounds each value to 11 bits; it changes nothing a held-out loss shows for {f16[2] - 1} rounds, "
        f"then parts from f32 and ends {f16[1] * 100:+.1f} % after {n} rounds. A change that small already moves "
        f"the 30-round end point by tens of percent, so after 30 rounds on SmolLM2 no codec but f32 itself can "
        f"promise to end within 1 % of f32's single run: the end point measures where the trajectory split, "
        f"not the codec.\n"
    )
    out.write(
        f"- Dense 8-bit (the default) follows f32 almost as long as f16 does (first round more than 1 % off: {d8[2]}; "
        f"f16: {f16[2]}) and ends {d8[0] * 100:+.3f} % after 10 rounds. Dense 4-bit parts at round {d4[2]} "
        f"and ends {d4[0] * 100:+.1f} % after 10 rounds, which is why it is no longer the default.\n"
    )
    near = [rows[k] for k in ("f16", "dense8")]
    late = [rows[k][4] for k in ("f16", "dense8", "dense4")]
    out.write(
        f"- Before the split, f16 and dense 8-bit stay within {max(abs(r[3]) for r in near) * 100:.2f} % of f32 "
        f"over rounds 1–20 (geometric mean of the loss ratio), dense 4-bit within {abs(d4[3]) * 100:.2f} %. "
        f"After it, the three runs spread both ways ({min(late) * 100:+.1f} % to {max(late) * 100:+.1f} % over "
        f"rounds 21–{n}), so a 30-round claim on this model needs several seeds per codec.\n"
    )


if __name__ == "__main__":
    main()

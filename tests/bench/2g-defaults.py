#!/usr/bin/env python3
"""Table 2g: the SmolLM2 defaults against the same run with `--codec f32`, 30 rounds: the issue's own
acceptance command on SmolLM2. Reads the `demo --json-out` summaries of

    for c in default f32; do
      extra=""; [ $c = f32 ] && extra="--codec f32"
      target/release/hearth-coordinator demo --preset smollm2-135m --model MODEL --workers 3 \
        --rounds 30 --http "" $extra --json-out docs/bench/runs/2g-smollm2-$c.json
    done
    python3 tests/bench/2g-defaults.py > docs/bench/2-communication-smollm2-defaults.md
"""
import json
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RUNS = os.path.join(ROOT, "docs", "bench", "runs")
RUNS_OF = [("default", "dense 8-bit (the default)"), ("f32", "f32"), ("f16-12", "f16 (12 rounds)"),
           ("default-rejecting", "dense 8-bit, before the relative norm bound scaled instead of rejecting")]


def load(name):
    with open(os.path.join(RUNS, f"2g-smollm2-{name}.json")) as fh:
        return json.load(fh)


def pct(x, base):
    return (x - base) / base * 100


def gmean(x, base, a, b):
    return (math.exp(sum(math.log(x[i] / base[i]) for i in range(a, b + 1)) / (b - a + 1)) - 1) * 100


def main():
    runs = {k: load(k) for k, _ in RUNS_OF if os.path.exists(os.path.join(RUNS, f"2g-smollm2-{k}.json"))}
    base = runs["f32"]["eval_loss"]
    n = len(base) - 1
    out = sys.stdout
    d = runs["default"]
    out.write("# 2g. The SmolLM2 defaults against f32, 30 rounds\n\n")
    out.write(
        f"`hearth-coordinator demo --preset smollm2-135m --workers 3 --rounds {n}` with everything `init` "
        f"writes by default ({d['workers']} workers, {d['local_steps']} local steps, lr {d['lr']:.3g}, outer "
        f"{d['outer']}, codec {d['codec']}), against the same command with `--codec f32`: the acceptance "
        "command of issue 16 on SmolLM2. Command: see `tests/bench/2g-defaults.py` (reads "
        "`docs/bench/runs/2g-smollm2-*.json`).\n\n"
    )
    out.write("| codec | held-out loss, round 0 to 30 | after 10 | after 30 | vs f32 after 10 / 30 | "
              "geometric mean vs f32, rounds 1–10 | gated rounds | exact match | accepted / rejected | run time |\n")
    out.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    for key, label in RUNS_OF:
        if key not in runs:
            continue
        r = runs[key]
        x = r["eval_loss"]
        m = len(x) - 1
        gated = [i + 1 for i, o in enumerate(r["outcomes"]) if o == "gated"]
        em = r.get("exact_match") or {}
        em_s = f"{em.get('base', 0) * 100:.0f} % → {em.get('fine_tuned', 0) * 100:.0f} %" if em else "–"
        end = f"{x[n]:.4g}" if m == n else "–"
        gap_end = f"{pct(x[n], base[n]):+.2f} %" if m == n else "–"
        out.write(
            f"| {label} | {' '.join(f'{v:.4g}' for v in x)} | {x[10]:.4g} | {end} | "
            f"{pct(x[10], base[10]):+.2f} % / {gap_end} | {gmean(x, base, 1, 10):+.2f} % | "
            f"{', '.join(map(str, gated)) or '–'} | {em_s} | "
            f"{sum(r['deltas_accepted'])} / {sum(r['deltas_rejected'])} | {r['swarm_seconds']:.0f} s |\n"
        )
    x = d["eval_loss"]
    first = next((i for i in range(1, n + 1) if abs(pct(x[i], base[i])) > 1), None)
    gated = lambda r: sum(o == "gated" for o in r["outcomes"])
    out.write("\n## Reading\n\n")
    out.write(
        f"- The two runs agree within 1 % up to round {first - 1 if first else n} "
        f"(gaps by round: {', '.join(f'{pct(x[i], base[i]):+.1f} %' for i in range(1, min(n, 10) + 1))}), then "
        f"part while held-out loss falls from {min(x[:first] if first else x):.3g} through three orders of "
        f"magnitude: from there the end point says which round each run's loss happened to drop in, not what "
        f"the codec kept. Both end at the same exact match ({(d.get('exact_match') or {}).get('fine_tuned', 0) * 100:.0f} % "
        f"of the fresh examples) far below a loss of 0.03.\n"
    )
    if "f16-12" in runs:
        h = runs["f16-12"]["eval_loss"]
        f_first = next((i for i in range(1, len(h)) if abs(pct(h[i], base[i])) > 1), None)
        out.write(
            f"- f16, which only rounds each value to 11 bits, parts from f32 too: first more than 1 % off in "
            f"round {f_first}, {pct(h[10], base[10]):+.1f} % after 10 rounds (dense 8-bit: "
            f"{pct(x[10], base[10]):+.1f} %; geometric mean over rounds 1–10: f16 {gmean(h, base, 1, 10):+.2f} %, "
            f"dense 8-bit {gmean(x, base, 1, 10):+.2f} %). At these settings the round-10 loss sits in the round "
            f"where it drops tenfold, so no lossy codec can promise 1 % there.\n"
        )
    if "default-rejecting" in runs:
        y = runs["default-rejecting"]["eval_loss"]
        rep = max(abs(pct(x[i], y[i])) for i in range(1, 11))
        out.write(
            f"- The two dense 8-bit runs (the same settings until round 26, where the older code rejected what "
            f"the new one scales) differ by at most {rep:.2f} % over rounds 1–10: run-to-run noise is far "
            f"below the codec's effect, which the sharp drop amplifies.\n"
        )

    def longest(r):
        best = run = 0
        for o in r["outcomes"]:
            run = run + 1 if o == "gated" else 0
            best = max(best, run)
        return best

    out.write(
        f"- The held-out gate's tolerance is relative (2 %): at a loss near 0.01 it discards any merged update "
        f"that raises held-out loss by more than 0.0002 nats. The default run gated {gated(d)} of {n} rounds, "
        f"{longest(d)} in a row (f32: {gated(runs['f32'])}, {longest(runs['f32'])} in a row). Left as it is "
        f"(a change to the gate needs its own runs).\n"
    )

if __name__ == "__main__":
    main()

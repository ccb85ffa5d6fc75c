#!/usr/bin/env python3
"""Table 2i: the SmolLM2 defaults against `--codec f32` over several seeds, 10 rounds: is the gap of table 2g
a cost of the codec, or the run's sensitivity to any change? Reads the `demo --json-out` summaries of

    for s in 8 9; do for c in default f32; do
      extra=""; [ $c = f32 ] && extra="--codec f32"
      target/release/hearth-coordinator demo --preset smollm2-135m --model MODEL --workers 3 --rounds 10 \
        --seed $s --http "" $extra --json-out docs/bench/runs/2i-smollm2-$c-seed$s.json
    done; done
    python3 tests/bench/2i-seeds.py > docs/bench/2-communication-smollm2-seeds.md

Seed 7 (the demo's default) is table 2g's pair of 30-round runs (docs/bench/runs/2g-smollm2-{default,f32}.json),
read at round 10: the rounds of a run do not depend on how many follow (each round's schedule is its own).
"""
import json
import math
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
RUNS = os.path.join(ROOT, "docs", "bench", "runs")
ROUNDS = 10


def load(codec, seed):
    name = f"2g-smollm2-{codec}.json" if seed == 7 else f"2i-smollm2-{codec}-seed{seed}.json"
    path = os.path.join(RUNS, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def pct(x, base):
    return (x / base - 1) * 100


def main():
    seeds = [s for s in (7, 8, 9, 10, 11) if load("default", s) and load("f32", s)]
    print("# 2i. The SmolLM2 defaults against f32 over several seeds\n")
    print("`demo --preset smollm2-135m --workers 3 --rounds 10 --seed S` with every default (dense 8-bit) "
          "against the same command with `--codec f32`; the seed picks the demo task's examples, the held-out "
          "split and the shards. Written by `tests/bench/2i-seeds.py` from the runs' JSON in "
          "`docs/bench/runs/2i-*` (seed 7: table 2g's runs at round 10).\n")
    print("| seed | f32: held-out loss after 5 / 10 rounds | dense 8-bit: after 5 / 10 | dense 8-bit vs f32 after 10 "
          "| geometric mean of the ratio, rounds 1–10 | exact match f32 / dense 8-bit |")
    print("| ---: | --- | --- | ---: | ---: | --- |")
    gaps, gm, f32_end, d8_end = [], [], [], []
    for s in seeds:
        f, d = load("f32", s), load("default", s)
        fl, dl = f["eval_loss"], d["eval_loss"]
        g = pct(dl[ROUNDS], fl[ROUNDS])
        m = (math.exp(sum(math.log(dl[i] / fl[i]) for i in range(1, ROUNDS + 1)) / ROUNDS) - 1) * 100
        gaps.append(g)
        gm.append(m)
        f32_end.append(fl[ROUNDS])
        d8_end.append(dl[ROUNDS])

        def em(j):
            e = j.get("exact_match") or {}
            return f"{e['fine_tuned'] * 100:.0f} %" if "fine_tuned" in e else "–"
        print(f"| {s} | {fl[5]:.4f} / {fl[ROUNDS]:.5f} | {dl[5]:.4f} / {dl[ROUNDS]:.5f} | {g:+.1f} % | {m:+.1f} % "
              f"| {em(f)} / {em(d)} |")
    if len(seeds) >= 2:
        def spread(xs):
            return max(xs) / min(xs)
        gmean = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))  # noqa: E731
        print(f"\nOver the {len(seeds)} seeds: f32 ends between {min(f32_end):.5f} and {max(f32_end):.5f} after "
              f"{ROUNDS} rounds ({spread(f32_end):.1f}× apart), dense 8-bit between {min(d8_end):.5f} and "
              f"{max(d8_end):.5f}. Geometric mean after {ROUNDS} rounds: f32 {gmean(f32_end):.5f}, dense 8-bit "
              f"{gmean(d8_end):.5f} ({pct(gmean(d8_end), gmean(f32_end)):+.1f} %). The gap to f32 per seed runs "
              f"from {min(gaps):+.1f} % to {max(gaps):+.1f} %.")
        worse = sum(1 for g in gaps if g > 1.0)
        print(f"\nReading: dense 8-bit ends more than 1 % above f32 after {ROUNDS} rounds in {worse} of "
              f"{len(seeds)} seeds, and its geometric-mean ratio over rounds 1–{ROUNDS} is above 1 in "
              f"{sum(1 for m in gm if m > 0)} of {len(seeds)}. On seed 7 alone (table 2g) the gap could be read "
              "as the codec's rounding amplified either way (f16 ended −7.6 % there); over several seeds it is "
              "one way. The losses are small where the task is learned (exact match above), so the relative "
              "gap is large while what the model does barely differs; but the issue's measure is the relative "
              "gap, and by it dense 8-bit costs quality at the SmolLM2 demo's settings. So `init --preset "
              "smollm2-135m` writes f32 deltas (since 2026-12-06); the tiny preset keeps dense 8-bit (+0.02 % "
              "after 10 rounds, −0.01 % after 30, table 2e).")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Table 7h (docs/RELIABILITY.md, issue 17): honest swarms under the statistical screen. For every codec
# of table 2, `hearth-coordinator demo --preset tiny --workers 3 --rounds 200 --codec C` with every other
# setting at its default; all workers honest. The script reads each run's JSON summary, the ledger in its
# state.json and the coordinator's log (each accepted delta's alignment z, the screen's abstentions, held
# back and unpaid deltas, deltas scaled to the norm bound) and writes docs/bench/7-honest.md.
#
#   bash tests/bench/7-honest.sh
#   HEARTH_HONEST_ROUNDS=20 HEARTH_HONEST_CODECS="f32 topk:1:8" bash tests/bench/7-honest.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p hearth-coordinator -p hearth-worker
mkdir -p docs/bench
out=docs/bench/7-honest.md
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rounds="${HEARTH_HONEST_ROUNDS:-200}"
# Every codec of table 2; `default` is the run without --codec (dense 8-bit).
codecs="${HEARTH_HONEST_CODECS:-default f32 f16 int8 topk:1:4 topk:1:2 topk:1:1 topk:1/2:1 topk:1/4:2 topk:1/4:8 \
topk:1/16:2 topk:1/16:4 topk:1/32:2 topk:1/48:2 topk:1/64:1 topk:1/64:2 topk:1/64:4 topk:1/128:4 topk:1/128:8 topk:1/256:2}"
i=0
for c in $codecs; do
  i=$((i + 1))
  d="$work/run-$i"
  extra=()
  [ "$c" != default ] && extra=(--codec "$c")
  echo "$c" > "$d.codec"
  NO_COLOR=1 timeout 1800 ./target/release/hearth-coordinator demo --preset tiny --workers 3 --rounds "$rounds" \
    --dir "$d" --http "" --accuracy-examples 0 "${extra[@]}" > "$d.json" 2> "$d.log" \
    || echo '{"failed": true}' > "$d.json"
  rm -rf "$d"/worker-*
  echo "$c: done" >&2
done
python3 - "$work" "$rounds" > "$out.tmp" <<'PY'
import glob, json, math, os, re, sys
work, rounds = sys.argv[1], int(sys.argv[2])
ANSI = re.compile(r"\x1b\[[0-9;]*m")
Z = re.compile(r"delta accepted .*?\bz=([-0-9.e+]+|None)")
NEAREST = re.compile(r"delta accepted .*?\bnearest=([-0-9.e+]+|None)")

def pctile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

def name(c):
    if c == "default":
        return "dense 8-bit (the default)"
    m = re.fullmatch(r"topk:([0-9/.]+):([0-9]+)", c)
    if not m:
        return c
    d, b = m.groups()
    return f"dense {b}-bit" if d == "1" else f"top-k {d} {b}-bit"

print("# 7h. Honest swarms under the statistical screen\n")
print(f"Tiny preset, 3 honest workers, {rounds} rounds, every setting at its default but the codec; "
      "`bash tests/bench/7-honest.sh`. Rejected: honest deltas turned down for any reason. Held back: weight 0 "
      "because not significant on its own and no record yet. Unpaid: weight 0 as a free ride (under 10 % of the "
      "round's median size per token). Scaled: over κ × the median recent norm, scaled down and kept. Abstained: "
      "rounds whose median z was under 3.09, so the screen judged nobody. z: each accepted delta's alignment with "
      "its round's reference gradient, `cos·√d`, which is N(0, 1) under the null of a delta that carries no "
      "information about the task (a fraction under 0 of 50 %, 5th percentile −1.64, median 0). Nearest: the "
      "largest sketched cosine between two honest deltas of a round (copies are flagged at 0.97).\n")
print("| codec | rounds | rejected | held back | unpaid | banned | scaled | abstained rounds | honest z: min / 5th pct / median / max | z < 0 | nearest honest pair | held-out loss, first → last |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |")
runs = sorted(glob.glob(f"{work}/run-*.codec"), key=lambda p: int(re.search(r"run-(\d+)", p).group(1)))
for cpath in runs:
    base = cpath[: -len(".codec")]
    c = open(cpath).read().strip()
    j = json.load(open(base + ".json"))
    if j.get("failed"):
        print(f"| {name(c)} | run failed | | | | | | | | | | |")
        continue
    log = ANSI.sub("", open(base + ".log", errors="replace").read())
    zs = [float(x) for x in Z.findall(log) if x != "None"]
    near = [float(x) for x in NEAREST.findall(log) if x != "None"]
    st = json.load(open(os.path.join(j["data_dir"], "state.json")))
    peers = st["ledger"]["peers"].values()
    rejected = sum(sum(p.get("rejected", {}).values()) for p in peers)
    held = sum(p.get("held_back", 0) for p in peers)
    banned = sum(1 for p in peers if p.get("banned"))
    unpaid = log.count("delta unpaid, a free ride")
    scaled = log.count("delta scaled down")
    abstained = log.count("screen abstained")
    neg = sum(1 for z in zs if z < 0) / len(zs) * 100 if zs else float("nan")
    loss = j["eval_loss"]
    print(f"| {name(c)} | {len(j['outcomes'])} | {rejected} | {held} | {unpaid} | {banned} | {scaled} | {abstained} | "
          f"{min(zs):.1f} / {pctile(zs, 0.05):.1f} / {pctile(zs, 0.5):.1f} / {max(zs):.1f} | {neg:.1f} % | "
          f"{max(near) if near else float('nan'):.3f} | {loss[0]:.3f} → {loss[-1]:.3f} |")
PY
mv "$out.tmp" "$out"
echo "wrote $out" >&2

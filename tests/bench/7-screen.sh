#!/usr/bin/env bash
# Table 7 (docs/RELIABILITY.md): the statistical screen against every attack kind, at 1 of 5 and 2 of 5
# workers, tiny preset, 10 rounds, plus the clean run they are compared with. Each row is one
# `hearth-coordinator demo` run on loopback; the script reads its JSON summary and the ledger in its
# state.json. Writes docs/bench/7-screen.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p hearth-coordinator -p hearth-worker
mkdir -p docs/bench
out=docs/bench/7-screen.md
# HEARTH_SCREEN_KEEP=DIR keeps every run's directory, JSON summary and coordinator log there.
if [ -n "${HEARTH_SCREEN_KEEP:-}" ]; then
  work="$HEARTH_SCREEN_KEEP"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
attacks="${HEARTH_SCREEN_ATTACKS:-sign-flip scale nan noise replay stale wrong-shape forged alie free-ride lazy copycat}"
rounds="${HEARTH_SCREEN_ROUNDS:-10}"
run() { # name adversaries attack
  local d="$work/$1"
  timeout 600 ./target/debug/hearth-coordinator demo --preset tiny --workers 5 --rounds "$rounds" \
    --adversaries "$2" --attack "$3" --dir "$d" --http "" --accuracy-examples 0 \
    > "$d.json" 2> "$d.log" || echo "{\"failed\": true}" > "$d.json"
}
run clean 0 scale
for a in $attacks; do
  run "$a-1" 1 "$a"
  run "$a-2" 2 "$a"
done
python3 - "$work" "$rounds" $attacks > "$out.tmp" <<'PY'
import json, sys, os, glob
work, rounds, attacks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(name):
    j = json.load(open(f"{work}/{name}.json"))
    if j.get("failed"):
        return j, {}
    st = json.load(open(os.path.join(j["data_dir"], "state.json")))
    return j, st["ledger"]["peers"]
clean, _ = load("clean")
clean_loss = clean["eval_loss"][-1]
print("# 7. The statistical screen against attacks\n")
print(f"Tiny preset, 5 workers, {rounds} rounds, default settings; `tests/bench/7-screen.sh`. "
      "Adversarial credit share: credit (tokens × screen weight) the adversaries earned, as a share of all "
      "credit; the aggregation weight of a delta is its tokens × staleness weight × the same screen weight, so "
      "this is the adversaries' share of the aggregate. For `copycat` the adversary is the second identity that sends the copies (the first does honest work and counts as honest). Honest rejected/held back: deltas of honest workers "
      "rejected for any reason but lateness (`stale`), and held back with weight 0.\n")
print("Real share of the work: for the attacks that do some real training, the adversaries' share of the "
      "steps actually trained on a current checkpoint, in deltas: `lazy` trains a quarter of the steps it claims "
      "(0.25 per aggregated delta); `replay` and `stale` send one genuinely trained delta first (a replay "
      "needs an original, and a round-1 delta has no older checkpoint to claim), then only attacks. Every attack delta "
      "of theirs is rejected (aggregated = one per adversary), so all adversarial weight is removed and the credit "
      "they keep is that first delta's; it sits a little above the share of the work because honest deltas late in "
      "the run get a weight under 1 when their alignment falls below 6.18. `lazy` must keep at most its share; "
      "every other attack ≤ 1 %.\n")
print(f"Clean run: final held-out loss {clean_loss:.4f}.\n")
print("| attack | adversaries | adversarial deltas rejected / held back / aggregated | adversarial credit share | real share of the work | adversaries banned | honest rejected / held back | final loss vs clean |")
print("| --- | ---: | --- | ---: | ---: | --- | --- | ---: |")
LAZY = 0.25
for a in attacks:
    for k in (1, 2):
        j, peers = load(f"{a}-{k}")
        if j.get("failed"):
            print(f"| {a} | {k} of 5 | run failed | | | | |")
            continue
        # A copycat's own identity does honest work; its second (Sybil) identity sends the copies.
        bad = (lambda n: n.endswith("-sybil")) if a == "copycat" else (lambda n: n.startswith("adversary-"))
        adv = [p for p in peers.values() if bad(p["name"])]
        hon = [p for p in peers.values() if not bad(p["name"])]
        credit_adv = sum(p.get("tokens", 0) for p in adv)
        credit_all = sum(p.get("tokens", 0) for p in peers.values())
        rej = sum(sum(p.get("rejected", {}).values()) for p in adv)
        held = sum(p.get("held_back", 0) for p in adv)
        acc = sum(p.get("accepted", 0) for p in adv)
        banned = sum(1 for p in adv if p.get("banned"))
        hrej = sum(v for p in hon for r, v in p.get("rejected", {}).items() if r != "stale")
        hheld = sum(p.get("held_back", 0) for p in hon)
        loss = j["eval_loss"][-1]
        share = credit_adv / credit_all if credit_all else 0.0
        work_hon = sum(p.get("accepted", 0) + p.get("held_back", 0) for p in hon)
        work_adv = {"lazy": LAZY * acc, "replay": min(acc, len(adv)), "stale": min(acc, len(adv))}.get(a)
        real = "—" if work_adv is None else f"{work_adv / (work_adv + work_hon) * 100:.2f} %"
        print(f"| {a} | {k} of 5 | {rej} / {held} / {acc} | {share*100:.2f} % | {real} | {banned} of {k} | {hrej} / {hheld} | {(loss/clean_loss-1)*100:+.2f} % |")
PY
mv "$out.tmp" "$out"
echo "wrote $out" >&2

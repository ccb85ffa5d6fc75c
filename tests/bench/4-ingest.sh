#!/usr/bin/env bash
# Table 4: coordinator ingest. Real signed, encoded SmolLM2-size deltas through the real verifier,
# engine (centered clipping + Nesterov), journal and checkpoint code, timed by stage, for 10, 100 and
# 1,000 deltas per round; the screen (per delta) and the round's reference gradient (on the real model) are timed. Writes docs/bench/4-ingest.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p docs/bench
out=docs/bench/4-ingest.md
counts="${HEARTH_INGEST_COUNTS:-10,100,1000}"
cmd="RAYON_NUM_THREADS=2 cargo bench -q -p hearth-coordinator --bench ingest -- --counts $counts --reference-reps 3"
table="$(RAYON_NUM_THREADS=2 timeout 3600 cargo bench -q -p hearth-coordinator --bench ingest -- \
  --counts "$counts" --reference-reps 3)"
# The README demo's adapter: rank 8 on all seven projections, 6.75x the values of DESIGN's "SmolLM2-size".
demo="$(RAYON_NUM_THREADS=2 timeout 3600 cargo bench -q -p hearth-coordinator --bench ingest -- \
  --counts "$counts" --reference-reps 3 --all-projections)"
{
  echo "# 4. Coordinator ingest"
  echo
  echo "Deltas verified and aggregated per round at SmolLM2-135M adapter size, one process, 2 cores"
  echo "(DESIGN target: 1,000 deltas per round in at most 10 s). Command:"
  echo
  echo '```'
  echo "$cmd"
  echo '```'
  echo
  echo "$table"
  echo
  echo "## 4b. The README demo's adapter (rank 8 on all seven projections)"
  echo
  echo "The same bench with \`--all-projections\`: the adapter \`init --preset smollm2-135m\` writes, 6.75× the"
  echo "values of DESIGN.md's SmolLM2-size delta above."
  echo
  echo "$demo"
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2

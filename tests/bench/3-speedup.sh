#!/usr/bin/env bash
# Table 3b (speed-up against N): time to a target held-out loss with N = 1, 2, 4, 8 workers, each with
# its best local steps per round (H), learning rate and outer optimizer from a grid, every H with the
# same budget of local steps; real `hearth-coordinator demo` swarms on loopback (release build), driven
# by hearth-bench-swarm. Without arguments: the tiny preset's grid, docs/bench/3-speedup.md and its SVGs.
# Arguments replace that grid and go to `hearth-bench-swarm speedup` (see its --help). Outer learning
# rates above 1 (table 3c, N = 1 and 4 only):
#   bash tests/bench/3-speedup.sh --workers 1,4 --hs 10,20 --lrs 0.32,0.48 \
#     --outers average:1.5,average:2,nesterov:1:0.5,nesterov:0.7:0.5 \
#     --table 3c --out docs/bench/3-speedup-outer.md --svg docs/bench/3-speedup-outer.svg
# SmolLM2 (a shorter run):
#   bash tests/bench/3-speedup.sh --model ~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf \
#     --workers 1,2,4 --rounds 8 --local-steps 14 --lrs 0.004,0.008 --outers nesterov:0.7:0.9 \
#     --out docs/bench/3-speedup-smollm2.md --svg docs/bench/3-speedup-smollm2.svg
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q --release -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
if [ "$#" -eq 0 ]; then
  set -- --hs 5,10,20 --lrs 0.32,0.64 --outers average:1,nesterov:0.5:0.5
fi
timeout 7200 target/release/hearth-bench-swarm speedup "$@"
echo "table 3 (speed-up): $(( $(date +%s) - start )) s wall" >&2

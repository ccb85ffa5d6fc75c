#!/usr/bin/env bash
# Table 3b (speed-up against N): time to a target held-out loss with N = 1, 2, 4, 8 workers, each with
# its best learning rate and outer optimizer from a grid; real `hearth-coordinator demo` swarms on
# loopback (release build), driven by hearth-bench-swarm. Writes docs/bench/3-speedup.md and its SVGs.
# Extra arguments go to `hearth-bench-swarm speedup` (see its --help). SmolLM2 (a shorter run):
#   bash tests/bench/3-speedup.sh --model ~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf \
#     --workers 1,2,4 --rounds 8 --local-steps 14 --lrs 0.004,0.008 --outers nesterov:0.7:0.9 \
#     --out docs/bench/3-speedup-smollm2.md --svg docs/bench/3-speedup-smollm2.svg
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q --release -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
timeout 7200 target/release/hearth-bench-swarm speedup "$@"
echo "table 3b (speed-up): $(( $(date +%s) - start )) s wall" >&2

#!/usr/bin/env bash
# Table 3 (convergence): real `hearth-coordinator demo` swarms on loopback (tiny preset), driven by the
# hearth-bench-swarm binary; writes docs/bench/3-convergence.md and docs/bench/3-convergence*.svg.
# Extra arguments go to `hearth-bench-swarm convergence` (see its --help), e.g. --rounds 4 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
timeout 2400 target/debug/hearth-bench-swarm convergence "$@"
echo "table 3 (convergence): $(( $(date +%s) - start )) s wall" >&2

#!/usr/bin/env bash
# Table 6 (utilisation): real `hearth-coordinator demo` swarms on loopback (tiny preset), driven by the
# hearth-bench-swarm binary; writes docs/bench/6-utilisation.md.
# Extra arguments go to `hearth-bench-swarm utilisation` (see its --help), e.g. --rounds 4 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
timeout 1200 target/debug/hearth-bench-swarm utilisation "$@"
echo "table 6 (utilisation): $(( $(date +%s) - start )) s wall" >&2

#!/usr/bin/env bash
# Table 2 (communication): real `hearth-coordinator demo` swarms on loopback (tiny preset), driven by the
# hearth-bench-swarm binary; writes docs/bench/2-communication.md.
# Extra arguments go to `hearth-bench-swarm communication` (see its --help), e.g. --rounds 4 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
timeout 2400 target/debug/hearth-bench-swarm communication "$@"
echo "table 2 (communication): $(( $(date +%s) - start )) s wall" >&2

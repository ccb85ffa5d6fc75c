#!/usr/bin/env bash
# Table 2 (communication): real `hearth-coordinator demo` swarms on loopback (tiny preset, plus f32 vs the
# default codec and vs dense 2-bit on SmolLM2-135M when the model is fetched), driven by the hearth-bench-swarm
# binary; writes docs/bench/2-communication.md. About 20 min on 2 cores (5 min with --smollm2-rounds 0).
# Extra arguments go to `hearth-bench-swarm communication` (see its --help), e.g. --rounds 4 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build -q -p hearth-coordinator -p hearth-worker -p hearth-tests --bin hearth-coordinator --bin hearth-worker --bin hearth-bench-swarm
mkdir -p docs/bench
timeout 3600 target/debug/hearth-bench-swarm communication "$@"
echo "table 2 (communication): $(( $(date +%s) - start )) s wall" >&2

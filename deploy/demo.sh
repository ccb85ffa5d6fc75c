#!/usr/bin/env bash
# The README's demo: fetch SmolLM2-135M-Instruct if needed, build, and run a local swarm
# (one coordinator, 3 workers on loopback) on the generated demo task.
#
#   bash deploy/demo.sh [extra args for `hearth-coordinator demo`]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(bash deploy/fetch-model.sh)"
cargo build --release --bin hearth-coordinator --bin hearth-worker
exec target/release/hearth-coordinator demo --preset smollm2-135m --model "$model" --workers 3 "$@"

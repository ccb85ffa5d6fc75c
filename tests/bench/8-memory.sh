#!/usr/bin/env bash
# Table 8 (docs/BENCHMARKS.md): what the worker's memory estimate says fits 8, 12 and 24 GB cards
# for 1B, 3B and 8B Llama models in each --dtype. Writes docs/bench/8-memory.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p docs/bench
cargo run -q -p hearth-worker --example memory_table > docs/bench/8-memory.md.tmp
mv docs/bench/8-memory.md.tmp docs/bench/8-memory.md
echo "wrote docs/bench/8-memory.md" >&2

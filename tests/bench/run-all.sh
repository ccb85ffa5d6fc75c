#!/usr/bin/env bash
# Runs every benchmark table and assembles docs/BENCHMARKS.md.
#
#   bash tests/bench/run-all.sh            # all tables (tens of minutes on 2 cores)
#   bash tests/bench/run-all.sh 2 4        # only tables 2 and 4, then reassemble
#   bash tests/bench/run-all.sh --assemble # only reassemble docs/BENCHMARKS.md from docs/bench/*.md
#
# Each table's script tests/bench/N-name.sh writes docs/bench/N-name.md (heading, command, table, reading).
set -euo pipefail
cd "$(dirname "$0")/../.."

want=("$@")
if [ "${want[0]:-}" != "--assemble" ]; then
  for script in tests/bench/[0-9]-*.sh; do
    n="$(basename "$script" | cut -d- -f1)"
    if [ "${#want[@]}" -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qx "$n"; then
      continue
    fi
    echo "== table $n: $script" >&2
    bash "$script"
  done
fi

out=docs/BENCHMARKS.md
{
  echo "# Hearth benchmarks"
  echo
  echo "Every table below is written by the script named in its section; \`bash tests/bench/run-all.sh\`"
  echo "reruns them all and reassembles this file. Both sides of each comparison are measured in the same run."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') |"
  echo "| cores available | $(nproc) |"
  echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| GPU | $(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo none) |"
  # shellcheck source=/dev/null
  echo "| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r) |"
  echo "| Rust | $(rustc --version) |"
  echo "| assembled | $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD) |"
  echo
  echo "The machine is shared: other builds often ran beside these benchmarks, so absolute speeds are lower"
  echo "bounds; comparisons alternate both sides in the same run to even out that load."
  # In the order of the tables' own headings ("# 2. …", "# 2b. …", "# 3. …").
  for f in $(grep -m1 -H '^# ' docs/bench/[0-9]-*.md | LC_ALL=C sort -t: -k2 | cut -d: -f1); do
    [ -f "$f" ] || continue
    echo
    # Demote each table's headings one level under this file's title.
    # ... and point relative links (plots next to the section files) into docs/bench/.
    awk '/^```/ {fence = !fence} !fence && /^#/ {$0 = "#" $0} {print}' "$f" |
      sed -E 's#\]\(([0-9][^)]*)\)#](bench/\1)#g'
  done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2

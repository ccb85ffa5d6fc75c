# Sourced by the table scripts that keep one `hearth-coordinator demo` summary per row (2j, 2k).
# Before sourcing, set `table` (the file prefix, e.g. 2k), `runs` (where summaries are kept) and
# `work` (a scratch directory). `run PRESET ROUNDS NAME [demo args...]` runs 3 workers on the preset,
# writes $runs/$table-PRESET-NAME-ROUNDS.json, and skips a row whose summary is already there.
# shellcheck shell=bash disable=SC2154 # table, runs and work are set by the sourcing script
run() { # preset rounds name args...
  local preset=$1 rounds=$2 name=$3
  shift 3
  local out="$runs/$table-$preset-$name-$rounds.json"
  [ -s "$out" ] && return 0
  local model=()
  [ "$preset" = smollm2-135m ] && model=(--model "$(bash deploy/fetch-model.sh)")
  timeout 3600 target/release/hearth-coordinator demo --preset "$preset" "${model[@]}" --workers 3 \
    --rounds "$rounds" --http "" --accuracy-examples 0 --dir "$work/$name-$rounds" --json-out "$out.tmp" \
    "$@" > /dev/null 2> "$work/$name-$rounds.log"
  mv "$out.tmp" "$out"
  rm -rf "${work:?}/$name-$rounds"
  echo "$preset $name $rounds: done" >&2
}

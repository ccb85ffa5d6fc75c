#!/usr/bin/env bash
# Table 5: scale. One real `hearth-coordinator run` (tiny preset) on loopback against 100, 250 and
# 500 simulated peers (hearth-sim: real libp2p nodes, real join, signed deltas, no training), 3 rounds
# each. Counts deltas sent / accepted / rejected / lost and measures round close time, coordinator
# CPU time and peak RSS. Writes docs/bench/5-scale.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p docs/bench
out=docs/bench/5-scale.md
sizes="${HEARTH_SCALE_PEERS:-100 250 500}"
rounds="${HEARTH_SCALE_ROUNDS:-3}"
per_proc="${HEARTH_SCALE_PER_PROCESS:-250}"
# Two sockets per peer on loopback (coordinator side and peer side), plus QUIC, logs, blobs.
ulimit -n "$(ulimit -Hn)"
ulimit -n 65536 2>/dev/null || true

# HEARTH_SCALE_PROFILE=debug reuses the test build (dependencies are optimised there too).
profile="${HEARTH_SCALE_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build -q --release -p hearth-coordinator -p hearth-tests --bin hearth-coordinator --bin hearth-sim
else
  cargo build -q -p hearth-coordinator -p hearth-tests --bin hearth-coordinator --bin hearth-sim
fi
coord="target/$profile/hearth-coordinator"
sim="target/$profile/hearth-sim"
tick="$(getconf CLK_TCK)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rows=()
lost_total=0
summary=""
for n in $sizes; do
  d="$work/$n"
  mkdir -p "$d"
  "$coord" init --preset tiny --out "$d/run" > /dev/null 2>&1
  # The round waits for every simulated peer: target = peers, short grace, long deadline.
  sed -i -e "s/^target_deltas = .*/target_deltas = $n/" -e "s/^grace_secs = .*/grace_secs = 1/" \
    -e "s/^deadline_secs = .*/deadline_secs = 600/" "$d/run/run.toml"
  "$coord" run --config "$d/run/run.toml" --listen /ip4/127.0.0.1/tcp/0 --http "" --rounds 0 \
    --addr-file "$d/addr" 2> "$d/coordinator.log" &
  cpid=$!
  for _ in $(seq 600); do [ -s "$d/addr" ] && break; sleep 0.1; done
  addr="$(cat "$d/addr")"
  procs=$(( (n + per_proc - 1) / per_proc ))
  pids=()
  for p in $(seq 0 $((procs - 1))); do
    first=$(( p * per_proc ))
    count=$(( n - first < per_proc ? n - first : per_proc ))
    RUST_LOG=warn timeout 1500 "$sim" "$addr" --peers "$count" --first-peer "$first" --rounds "$rounds" \
      --request-timeout 300 --round-timeout 600 --work-dir "$d/sim-$p" > "$d/sim-$p.json" 2> "$d/sim-$p.log" &
    pids+=($!)
  done
  ok=1
  for pid in "${pids[@]}"; do wait "$pid" || ok=0; done
  # Coordinator CPU (utime + stime) and peak RSS, read while it still runs.
  cpu="$(awk -v t="$tick" '{printf "%.1f", ($14 + $15) / t}' "/proc/$cpid/stat")"
  rss="$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$cpid/status")"
  kill -INT "$cpid"; wait "$cpid" || true
  if [ "$ok" != 1 ]; then
    echo "simulator failed for $n peers:" >&2; tail -5 "$d"/sim-*.log >&2; exit 1
  fi
  all="$(cat "$d"/sim-*.json | jq -s -c '{
      sent: (map(.sent) | add), accepted: (map(.accepted) | add),
      rejected: (map(.rejected) | add), lost: (map(.lost) | add),
      join: (map(.join_secs) | max),
      close: [range(0; .[0].rounds | length) as $i | map(.rounds[$i].close_secs) | max],
      ack: [range(0; .[0].rounds | length) as $i | map(.rounds[$i].ack_secs) | max],
      reasons: (map(.rounds[].reasons | to_entries[]) | group_by(.key) | map({(.[0].key): (map(.value) | add)}) | add // {})}')"
  state="$d/run/data/state.json"
  coord_acc="$(jq -c '[.rounds[] | .accepted]' "$state")"
  fmt() { jq -r "$1" <<< "$all"; }
  rows+=("| $n | $rounds | $(fmt .sent) | $(fmt .accepted) | $(fmt .rejected) | **$(fmt .lost)** | $coord_acc | $(fmt '.join | . * 10 | round / 10') | $(fmt '.ack | map(. * 10 | round / 10) | join(" / ")') | $(fmt '.close | map(. * 10 | round / 10) | join(" / ")') | $cpu | $rss | $procs |")
  echo "$n peers: $all cpu ${cpu}s rss ${rss}MiB" >&2
  lost_total=$(( lost_total + $(fmt .lost) ))
  summary="$summary $n peers: $(fmt '.close | max | . * 10 | round / 10') s, ${cpu} s CPU, ${rss} MiB;"
  reasons="$(fmt '.reasons | to_entries | map("\(.key) ×\(.value)") | join(", ")')"
  [ -n "$reasons" ] && rows+=("| | | | | | | reasons: $reasons | | | | | | |")
done

{
  echo "# 5. Scale: simulated peers against one coordinator"
  echo
  echo "One real \`hearth-coordinator run\` process (tiny preset, loopback TCP, $profile build) against light"
  echo "simulated workers: \`hearth-sim\` runs many real libp2p nodes (hearth-net) per process, each with its own"
  echo "ed25519 identity; every peer joins with the real \`/hearth/join/1\` protocol and each round sends one"
  echo "signed delta in the run's codec, built on the latest checkpoint, by direct submission (\`/hearth/delta/1\`),"
  echo "and counts the coordinator's acknowledgement. Peers do not train: the simulator trains one template"
  echo "delta once and every peer sends it with its own noise, so each delta passes the whole verification"
  echo "pipeline including the loss probe. The run waits for all peers (\`target_deltas\` = peers, grace 1 s,"
  echo "deadline 600 s). Lost = sent − accepted − explicitly rejected. Command:"
  echo
  echo '```'
  echo "HEARTH_SCALE_PEERS=\"$sizes\" HEARTH_SCALE_ROUNDS=$rounds HEARTH_SCALE_PER_PROCESS=$per_proc HEARTH_SCALE_PROFILE=$profile bash tests/bench/5-scale.sh"
  echo '```'
  echo
  echo "| peers | rounds | sent | accepted | rejected | lost | coordinator's accepted per round | all joined (s) | last ack per round (s) | round close per round (s) | coordinator CPU (s) | coordinator peak RSS (MiB) | sim processes |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | ---: |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Round close: from the round's first delta sent to its checkpoint announced (seen by the simulator)."
  echo "Last ack: from the first delta sent to the last acknowledgement. Coordinator CPU: user + system time"
  echo "of the whole process (\`/proc/PID/stat\`), startup included; peak RSS: \`VmHWM\` of \`/proc/PID/status\`."
  echo "Rounds 1 and 2 probe every delta (new peers); later rounds probe a sampled 10 %."
  echo
  echo "**Reading.** Deltas lost over all sizes: **$lost_total**. Slowest round close, coordinator CPU and peak"
  echo "RSS:${summary%;}. The coordinator handles deltas one at a time in its event loop, so round"
  echo "close grows with the number of deltas probed (every delta of a new peer); memory stays small on the tiny"
  echo "preset (one decoded delta is 6 KiB here, 720 KiB on SmolLM2, where 1,000 pending deltas hold ~0.7 GiB)."
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2

#!/usr/bin/env bash
# Build and run every fuzz target for a bounded time; exit non-zero on any crash, leak, OOM or timeout.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]      (default 60; CI runs `bash fuzz/run.sh 10`)
#
# Environment:
#   FUZZ_TARGETS="a b"   run only these targets (default: every target `cargo fuzz list` prints)
#   FUZZ_MERGE=1         minimise what was found into the committed corpus fuzz/corpus/<target>/
#   FUZZ_RSS_MB=2048     libFuzzer -rss_limit_mb (and -malloc_limit_mb)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Uses the nightly toolchain with
# AddressSanitizer when one is installed; on a stable-only machine it builds with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags) and no sanitizer. New inputs go to
# fuzz/target/corpus-run/<target>/, so the committed corpus only changes with FUZZ_MERGE=1.
# Per-target figures (runs, execs/s, corpus, crashes) go to stdout and fuzz/target/summary.tsv.
set -euo pipefail

SECS="${1:-60}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
RSS_MB="${FUZZ_RSS_MB:-2048}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

if cargo +nightly --version >/dev/null 2>&1; then
    CARGO=(cargo +nightly)
    SANITIZER=address
else
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo)
    SANITIZER=none
fi
FUZZ=("${CARGO[@]}" fuzz)
echo "fuzz: $("${CARGO[@]}" --version), sanitizer $SANITIZER, ${SECS}s per target"

# Build once, then run the binaries directly: `cargo fuzz run` would rebuild whenever a source
# file changed in the meantime.
"${FUZZ[@]}" build --sanitizer "$SANITIZER"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BINDIR="$HERE/target/$TRIPLE/release"

read -r -a TARGETS <<<"${FUZZ_TARGETS:-$("${FUZZ[@]}" list | tr '\n' ' ')}"

# Largest input per target: small wire messages get a tight bound, files and deltas a looser one.
max_len() {
    case "$1" in
        msg_join_request | msg_poll_request | msg_poll_response | msg_round_info | msg_delta_ref | msg_delta_ack | msg_blob_request | msg_checkpoint_manifest | msg_announcement) echo 4096 ;;
        *) echo 65536 ;;
    esac
}

SUMMARY="$HERE/target/summary.tsv"
mkdir -p "$HERE/target"
printf 'target\truns\texecs_per_s\tcorpus_files\tcorpus_bytes\tresult\n' >"$SUMMARY"
failed=()
for t in "${TARGETS[@]}"; do
    seeds="$HERE/corpus/$t"
    work="$HERE/target/corpus-run/$t"
    log="$HERE/target/logs/$t.log"
    mkdir -p "$seeds" "$work" "$(dirname "$log")" "$HERE/artifacts/$t"
    echo "== $t (${SECS}s)"
    set +e
    "$BINDIR/$t" "$work" "$seeds" \
        -max_total_time="$SECS" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" \
        -max_len="$(max_len "$t")" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$HERE/artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    files=$(find "$work" "$seeds" -type f | wc -l)
    bytes=$(find "$work" "$seeds" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FAILED (rc $rc, see $log and $HERE/artifacts/$t/)"
        failed+=("$t")
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -8 || true
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${runs:-?}" "${eps:-?}" "$files" "$bytes" "$result" >>"$SUMMARY"
    if [ "$rc" -eq 0 ] && [ "${FUZZ_MERGE:-0}" = 1 ]; then
        merged="$HERE/target/corpus-merged/$t"
        rm -rf "$merged" && mkdir -p "$merged"
        "$BINDIR/$t" "$merged" "$seeds" "$work" \
            -merge=1 -max_len="$(max_len "$t")" -rss_limit_mb="$RSS_MB" >>"$log" 2>&1
        rm -rf "$seeds" && mv "$merged" "$seeds"
    fi
done

column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets ran ${SECS}s without a crash"

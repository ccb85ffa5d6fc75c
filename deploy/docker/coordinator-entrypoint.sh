#!/bin/sh
# Entrypoint of the Hearth coordinator image.
#
#   (no arguments)        first start: `hearth-coordinator init` into $HEARTH_HOME (when run.toml is missing),
#                         then `hearth-coordinator run` on 4001/tcp, 4001/udp (QUIC) and $HEARTH_HTTP,
#                         writing the dialable multiaddr to $HEARTH_ADDR_FILE.
#   --rounds 10 ...       arguments starting with a dash are appended to `run`.
#   status --api URL ...  anything else runs that hearth-coordinator command (export, status, eval, --help).
#
# Environment: HEARTH_HOME (/var/lib/hearth), HEARTH_PRESET (smollm2-135m), HEARTH_MODEL (GGUF for init),
# HEARTH_DATASET (JSONL or text for init; default: the generated demo task), HEARTH_SHARDS (8),
# HEARTH_HTTP (0.0.0.0:8080), HEARTH_P2P_PORT (4001), HEARTH_ADDR_FILE ($HEARTH_HOME/coordinator.addr), RUST_LOG,
# HEARTH_TOKEN_BLAKE3: blake3 hex of a join token; when set at the first start, [run.admission] of the new
# run.toml becomes kind = "token" with that hash, and workers must pass --token. Admission is part of the run
# spec: a data dir refuses a changed spec, so the token of a run cannot change later (start a new run).
set -eu

home="${HEARTH_HOME:-/var/lib/hearth}"
preset="${HEARTH_PRESET:-smollm2-135m}"
http="${HEARTH_HTTP-0.0.0.0:8080}"
port="${HEARTH_P2P_PORT:-4001}"
addr_file="${HEARTH_ADDR_FILE:-$home/coordinator.addr}"

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec hearth-coordinator "$@"
fi

# Checked before anything is written: a bad hash must not leave an open run behind.
token_hash="${HEARTH_TOKEN_BLAKE3:-}"
case "$token_hash" in
  *[!0-9a-f]*)
    echo "hearth: HEARTH_TOKEN_BLAKE3 must be 64 lowercase hex digits (blake3 of the token)" >&2
    exit 1
    ;;
esac
if [ -n "$token_hash" ] && [ "${#token_hash}" -ne 64 ]; then
  echo "hearth: HEARTH_TOKEN_BLAKE3 has ${#token_hash} characters; a blake3 hex digest has 64" >&2
  exit 1
fi

# `init`, with the optional paths added one by one so that spaces in them survive.
init_run() {
  set -- init --preset "$preset" --out "$home" --shards "${HEARTH_SHARDS:-8}"
  if [ -n "${HEARTH_MODEL:-}" ] && [ "$preset" != tiny ]; then
    set -- "$@" --model "$HEARTH_MODEL"
  fi
  if [ -n "${HEARTH_DATASET:-}" ]; then
    set -- "$@" --dataset "$HEARTH_DATASET"
  fi
  hearth-coordinator "$@"
}

# [run.admission] of run.toml becomes kind = "token" with the given hash; the rest of the file is kept.
set_token_admission() {
  hash="$1"
  awk -v h="$hash" '
    function admission() {
      print "[run.admission]"
      print "# Set from HEARTH_TOKEN_BLAKE3 by the container entrypoint."
      print "kind = \"token\""
      print "token_blake3 = \"" h "\""
      print ""
      seen = 1
    }
    /^\[/ { inside = ($0 == "[run.admission]"); if (inside) { admission(); next } }
    inside { next }
    { print }
    END { if (!seen) { print ""; admission() } }
  ' "$home/run.toml" > "$home/run.toml.new"
  mv -f "$home/run.toml.new" "$home/run.toml"
}

if [ ! -f "$home/run.toml" ]; then
  echo "hearth: no $home/run.toml yet; running init (preset $preset)" >&2
  init_run >/dev/null
  if [ -n "$token_hash" ]; then
    set_token_admission "$token_hash"
  fi
elif [ -n "$token_hash" ] && ! grep -q "^token_blake3 = \"$token_hash\"" "$home/run.toml"; then
  echo "hearth: warning: HEARTH_TOKEN_BLAKE3 differs from the admission of the existing run.toml, which stays" >&2
fi

# A stale address (from before a wiped data dir) must not mislead waiting workers.
mkdir -p "$(dirname "$addr_file")"
rm -f "$addr_file"

hearth-coordinator run --config "$home/run.toml" \
  --listen "/ip4/0.0.0.0/tcp/$port" --listen "/ip4/0.0.0.0/udp/$port/quic-v1" \
  --http "$http" --addr-file "$addr_file" "$@" &
pid=$!
# SIGTERM (docker stop, Kubernetes) becomes SIGINT: the coordinator then stops cleanly.
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do
  status=0
  wait "$pid" || status=$?
done
exit "$status"

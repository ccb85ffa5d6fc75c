#!/bin/sh
# Entrypoint of the Hearth worker images: find the coordinator, then `hearth-worker join`.
#
#   (no arguments)    join; arguments starting with a dash are appended to `join` (e.g. --rounds 5 --relay)
#   id | --help ...   anything else runs that hearth-worker command
#
# The coordinator's address, from the first of these that is set:
#   HEARTH_COORDINATOR         a full multiaddr, /ip4/…/tcp/4001/p2p/<peer id>.
#   HEARTH_ADDR_FILE           a file the coordinator writes with `run --addr-file` (a shared volume);
#                              waited for up to HEARTH_WAIT_SECS.
#   HEARTH_COORDINATOR_API     the coordinator's HTTP base URL (e.g. http://hearth-coordinator:8080); its
#                              /api/status names the peer id; waited for up to HEARTH_WAIT_SECS.
# With HEARTH_ADDR_FILE or HEARTH_COORDINATOR_API, HEARTH_COORDINATOR_HOST (a DNS name or IPv4 address) and
# HEARTH_COORDINATOR_PORT (4001) say where to dial: the name is resolved here, because the coordinator only
# knows its own interface addresses. HEARTH_TRANSPORT=quic dials QUIC instead of TCP.
#
# Other settings: HEARTH_NAME (the host name), HEARTH_THREADS (all cores), HEARTH_DEVICE (cpu),
# HEARTH_TOKEN (join token), HEARTH_METRICS (serve Prometheus /metrics on this address, e.g. 0.0.0.0:9101),
# HEARTH_CACHE (/var/cache/hearth), RUST_LOG.
set -eu

cache="${HEARTH_CACHE:-/var/cache/hearth}"
wait_secs="${HEARTH_WAIT_SECS:-900}"

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec hearth-worker "$@"
fi

die() {
  echo "hearth-worker-entrypoint: $*" >&2
  exit 1
}

# True when $1 looks like a base58 libp2p peer id.
is_peer_id() {
  case "$1" in
    '' | *[!123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]*) return 1 ;;
    *) [ "${#1}" -ge 40 ] && [ "${#1}" -le 60 ] ;;
  esac
}

# Prints the coordinator's peer id or address source, waiting up to $wait_secs.
wait_for() {
  what="$1"
  deadline=$(($(date +%s) + wait_secs))
  while :; do
    case "$what" in
      file)
        if [ -s "$HEARTH_ADDR_FILE" ]; then
          head -n 1 "$HEARTH_ADDR_FILE"
          return 0
        fi
        ;;
      api)
        body="$(curl -fsS --max-time 5 "${HEARTH_COORDINATOR_API%/}/api/status" 2>/dev/null || true)"
        id="$(printf '%s' "$body" | sed -n 's/.*"peer_id":[[:space:]]*"\([^"]*\)".*/\1/p')"
        if [ -n "$id" ]; then
          printf '%s\n' "$id"
          return 0
        fi
        ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 2
  done
}

# /ip4/<address of HEARTH_COORDINATOR_HOST>/{tcp,udp}/<port>[/quic-v1]
dial_prefix() {
  host="$HEARTH_COORDINATOR_HOST"
  ip="$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 { print $1 }')"
  [ -n "$ip" ] || die "cannot resolve HEARTH_COORDINATOR_HOST=$host"
  port="${HEARTH_COORDINATOR_PORT:-4001}"
  case "${HEARTH_TRANSPORT:-tcp}" in
    tcp) printf '/ip4/%s/tcp/%s' "$ip" "$port" ;;
    quic) printf '/ip4/%s/udp/%s/quic-v1' "$ip" "$port" ;;
    *) die "HEARTH_TRANSPORT must be tcp or quic, not ${HEARTH_TRANSPORT}" ;;
  esac
}

if [ -n "${HEARTH_COORDINATOR:-}" ]; then
  addr="$HEARTH_COORDINATOR"
elif [ -n "${HEARTH_ADDR_FILE:-}" ]; then
  echo "hearth-worker-entrypoint: waiting for $HEARTH_ADDR_FILE" >&2
  addr="$(wait_for file)" || die "$HEARTH_ADDR_FILE did not appear within ${wait_secs}s"
  if [ -n "${HEARTH_COORDINATOR_HOST:-}" ]; then
    id="${addr##*/p2p/}"
    is_peer_id "$id" || die "$HEARTH_ADDR_FILE holds $addr, which does not end in /p2p/<peer id>"
    addr="$(dial_prefix)/p2p/$id"
  fi
elif [ -n "${HEARTH_COORDINATOR_API:-}" ]; then
  [ -n "${HEARTH_COORDINATOR_HOST:-}" ] || die "HEARTH_COORDINATOR_API needs HEARTH_COORDINATOR_HOST"
  echo "hearth-worker-entrypoint: asking ${HEARTH_COORDINATOR_API} for the coordinator's peer id" >&2
  id="$(wait_for api)" || die "${HEARTH_COORDINATOR_API}/api/status did not answer within ${wait_secs}s"
  is_peer_id "$id" || die "${HEARTH_COORDINATOR_API}/api/status gave peer id $id, which is not base58"
  addr="$(dial_prefix)/p2p/$id"
else
  die "set HEARTH_COORDINATOR, HEARTH_ADDR_FILE or HEARTH_COORDINATOR_API"
fi

set -- join "$addr" --cache-dir "$cache" --name "${HEARTH_NAME:-$(uname -n)}" \
  --device "${HEARTH_DEVICE:-cpu}" "$@"
if [ -n "${HEARTH_THREADS:-}" ]; then
  set -- "$@" --threads "$HEARTH_THREADS"
fi
if [ -n "${HEARTH_TOKEN:-}" ]; then
  set -- "$@" --token "$HEARTH_TOKEN"
fi
if [ -n "${HEARTH_METRICS:-}" ]; then
  set -- "$@" --metrics "$HEARTH_METRICS"
fi

echo "hearth-worker-entrypoint: joining $addr" >&2
hearth-worker "$@" &
pid=$!
# SIGTERM (docker stop, Kubernetes) becomes SIGINT: the worker finishes its step, hands in, leaves.
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do
  status=0
  wait "$pid" || status=$?
done
exit "$status"

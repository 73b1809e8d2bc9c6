#!/usr/bin/env bash
# Shared by scripts/bench-*.sh (sourced, not run): the release build of the
# bench and the services, moto, and the open-file limit. Each script sets
# BENCH_SCRIPT (its name, for log lines) before sourcing this file.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/canvas-target}"
MOTO_VERSION="5.2.5"
MOTO_VENV="${MOTO_VENV:-$HOME/.cache/canvas-backend/moto-venv}"
# The bench builds its AWS settings itself; these keep any SDK default
# chain from reaching for a real account or the instance metadata service.
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

log() { printf '[%s] %s\n' "${BENCH_SCRIPT:-bench}" "$*" >&2; }

# Builds the bench and both services (release) and sets BENCH_BIN. Always
# the same three packages: another set would unify dependency features
# differently and rebuild much of the tree.
build_bench() {
  cargo build --release -p bench -p orchestrator -p canvas-service
  # shellcheck disable=SC2034  # read by the scripts that source this file
  BENCH_BIN="${CARGO_TARGET_DIR}/release/bench"
}

moto_answers() { curl -fsS -o /dev/null --max-time 2 "$1/moto-api/" 2>/dev/null; }

MOTO_PID=""
stop_moto() {
  if [ -n "${MOTO_PID}" ]; then
    kill "${MOTO_PID}" 2>/dev/null || true
    wait "${MOTO_PID}" 2>/dev/null || true
    log "stopped the moto it started (pid ${MOTO_PID})"
    MOTO_PID=""
  fi
}

# Starts moto on 127.0.0.1:$1 (installing it into MOTO_VENV the first time,
# as scripts/test.sh does) unless one answers there; exports MOTO_URL. The
# caller stops it with stop_moto (an EXIT trap).
start_moto() {
  local port="$1"
  export MOTO_URL="http://127.0.0.1:${port}"
  if moto_answers "${MOTO_URL}"; then
    log "moto already answers at ${MOTO_URL}; reusing it"
    return
  fi
  # Read pip's whole answer before matching: `pip show | grep -q` under
  # pipefail fails whenever grep exits before pip has finished writing.
  local installed=""
  if [ -x "${MOTO_VENV}/bin/pip" ]; then
    installed="$("${MOTO_VENV}/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p' || true)"
  fi
  if [ ! -x "${MOTO_VENV}/bin/moto_server" ] || [ "${installed}" != "${MOTO_VERSION}" ]; then
    log "installing moto[server]==${MOTO_VERSION} into ${MOTO_VENV}"
    python3 -m venv "${MOTO_VENV}"
    "${MOTO_VENV}/bin/pip" install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
  fi
  local moto_log
  moto_log="$(mktemp -t moto.XXXXXX.log)"
  "${MOTO_VENV}/bin/moto_server" -H 127.0.0.1 -p "${port}" >"${moto_log}" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 50); do
    if moto_answers "${MOTO_URL}"; then
      log "moto started at ${MOTO_URL} (pid ${MOTO_PID}, log: ${moto_log})"
      return
    fi
    sleep 0.2
  done
  log "moto did not start; its log:"
  cat "${moto_log}" >&2
  exit 1
}

# A loopback port that is free now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Each open stream or connection is a socket in the bench and another in
# the service (which inherits this limit): thousands need more than 1024.
raise_fd_limit() {
  local want=16384 hard
  hard="$(ulimit -Hn)"
  if [ "${hard}" != "unlimited" ] && [ "${hard}" -lt "${want}" ]; then
    want="${hard}"
  fi
  if [ "$(ulimit -Sn)" != "unlimited" ] && [ "$(ulimit -Sn)" -lt "${want}" ]; then
    ulimit -Sn "${want}"
  fi
  log "open file limit: $(ulimit -Sn)"
}

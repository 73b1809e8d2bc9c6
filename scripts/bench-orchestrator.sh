#!/usr/bin/env bash
# Builds the orchestrator and its submit/status benchmark in release mode,
# then runs the benchmark against the freshly built binary: (a) embedded
# (SQLite), (b) SQS + DynamoDB on moto, (c) the raw moto ceiling. Loopback
# only; the orchestrator runs in a temp dir that is removed afterwards.
#
# moto: one already answering at MOTO_URL is reused; otherwise it is started
# from the venv under ~/.cache/canvas-backend (installed there with pip the
# first time, as scripts/test.sh does) and stopped at the end.
#
# Usage: scripts/bench-orchestrator.sh
# Environment:
#   CARGO_TARGET_DIR        build directory (default /var/tmp/canvas-target)
#   MOTO_PORT               port of moto (default 5000)
#   MOTO_VENV               where the moto venv lives
#   BENCH_SUBMITS_EMBEDDED  submits per level, embedded (default 3000)
#   BENCH_STATUS_EMBEDDED   status reads per level, embedded (default 10000)
#   BENCH_SUBMITS_MOTO      submits per level on moto (default 300)
#   BENCH_STATUS_MOTO       status reads per level on moto (default 1000)
#   BENCH_LEVEL_SECS        time cap per level in seconds (default 30)
#   BENCH_SKIP_MOTO=1       embedded only; moto is neither started nor used
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/canvas-target}"
MOTO_VERSION="5.2.5"
MOTO_PORT="${MOTO_PORT:-5000}"
MOTO_VENV="${MOTO_VENV:-$HOME/.cache/canvas-backend/moto-venv}"
export MOTO_URL="http://127.0.0.1:${MOTO_PORT}"
# The benchmark builds its AWS settings itself; these keep any SDK default
# chain from reaching for a real account or the instance metadata service.
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

log() { printf '[bench-orchestrator.sh] %s\n' "$*" >&2; }

moto_answers() { curl -fsS -o /dev/null --max-time 2 "${MOTO_URL}/moto-api/" 2>/dev/null; }

MOTO_PID=""
stop_moto() {
  if [ -n "${MOTO_PID}" ]; then
    kill "${MOTO_PID}" 2>/dev/null || true
    wait "${MOTO_PID}" 2>/dev/null || true
    log "stopped the moto it started (pid ${MOTO_PID})"
  fi
}
trap stop_moto EXIT

start_moto() {
  if moto_answers; then
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
  "${MOTO_VENV}/bin/moto_server" -H 127.0.0.1 -p "${MOTO_PORT}" >"${moto_log}" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 50); do
    if moto_answers; then
      log "moto started at ${MOTO_URL} (pid ${MOTO_PID}, log: ${moto_log})"
      return
    fi
    sleep 0.2
  done
  log "moto did not start; its log:"
  cat "${moto_log}" >&2
  exit 1
}

cargo build --release -p orchestrator --bins --examples

if [ "${BENCH_SKIP_MOTO:-0}" != "1" ] && [ "${BENCH_SKIP_MOTO:-0}" != "true" ]; then
  start_moto
fi

# Not exec: the EXIT trap must still stop the moto started here.
"$CARGO_TARGET_DIR/release/examples/submit_bench" \
  "$CARGO_TARGET_DIR/release/orchestrator"

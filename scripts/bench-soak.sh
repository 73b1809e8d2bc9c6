#!/usr/bin/env bash
# The soaks (a benchmark, not a test; bounded in time and count, loopback
# only): builds the bench and both services in release mode, starts a moto
# of its own, then runs
#   `bench soak`          SOAK_SUBMITS submits of the five job kinds against
#                         the orchestrator on SQS + DynamoDB (moto) through a
#                         fault proxy cut for SOAK_CUT_SECS after a third,
#                         reconciled with the table and the queues;
#   `bench soak-uploads`  SOAK_UPLOADS uploads against canvas-service on
#                         Postgres + S3 (moto) with S3 cut the same way,
#                         rows reconciled with objects.
# Each prints one table of counters; a non-zero loss counter makes it exit 2,
# and this script then says so and exits non-zero. About 6 minutes with the
# defaults on 2 cores (after the build).
#
# moto: a private one on a free port, started here and stopped at the end —
# the soak fills two queues with thousands of messages and keeps moto's one
# core busy for minutes, which other users of a shared moto would feel. Set
# MOTO_URL to use a running one instead. Postgres: TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) must be a loopback server the
# soak may create and drop a `canvas_bench_*` database on.
#
# Usage: scripts/bench-soak.sh
# Environment:
#   CARGO_TARGET_DIR   build directory (default /var/tmp/canvas-target)
#   SOAK_SUBMITS       submits of the orchestrator soak (default 10000; 0 skips it)
#   SOAK_UPLOADS       uploads of the upload soak (default 3000; 0 skips it)
#   SOAK_CONCURRENCY   clients at once, both soaks (default 16)
#   SOAK_CUT_SECS      how long the dependency is cut (default 20)
#   SOAK_MODE          refuse (connections reset, the default) or blackhole
#                      (accepted, never answered)
#   SOAK_SETTLE_SECS   wait after the last answer before the id-by-id check
#                      (default 60)
#   SOAK_BACKOFF_MILLIS how long a client waits after a failed call before its
#                      next (default 1000; 0 = at once)
#   SOAK_KEEP_MESSAGES=1 leave the messages queued until the check instead of
#                      taking them off as they arrive (slow on moto: its
#                      calls walk the whole queue; over 20 min at 10000)
#   BENCH_KEEP_LOGS=1  keep each service's log (its path is printed)
#   MOTO_URL           a running moto to use instead of a private one
#   MOTO_VENV          where the moto venv lives
#   TEST_DATABASE_URL  the Postgres server of the upload soak
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_SCRIPT=bench-soak.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
trap stop_moto EXIT
trap 'exit 143' INT TERM

build_bench
if [ -n "${MOTO_URL:-}" ]; then
  moto_answers "${MOTO_URL}" || { log "MOTO_URL=${MOTO_URL} does not answer"; exit 1; }
  log "using the moto at ${MOTO_URL}"
else
  start_moto "$(free_port)"
fi
raise_fd_limit

failed=()
run_soak() {
  local scenario="$1" count="$2" status=0
  if [ "${count}" = "0" ]; then
    log "${scenario}: skipped (count 0)"
    return
  fi
  "${BENCH_BIN}" "${scenario}" || status=$?
  case "${status}" in
    0) log "${scenario}: every loss counter is 0" ;;
    2) log "${scenario}: LOSSES FOUND (see the loss counters above)"; failed+=("${scenario}") ;;
    *) log "${scenario}: did not finish (exit ${status})"; failed+=("${scenario}") ;;
  esac
}
run_soak soak "${SOAK_SUBMITS:-10000}"
run_soak soak-uploads "${SOAK_UPLOADS:-3000}"
if ((${#failed[@]})); then
  log "failed: ${failed[*]}"
  exit 1
fi

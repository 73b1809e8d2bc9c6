#!/usr/bin/env bash
# Orchestrator submit and status: builds the bench and the orchestrator in
# release mode and runs `bench submit`: (a) embedded (SQLite), (b) SQS +
# DynamoDB on moto, (c) the raw moto ceiling. Loopback only; the
# orchestrator runs in a temp dir that is removed afterwards.
#
# moto: one already answering at 127.0.0.1:MOTO_PORT is reused; otherwise
# it is started from the venv under ~/.cache/canvas-backend (installed there
# with pip the first time, as scripts/test.sh does) and stopped at the end.
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
BENCH_SCRIPT=bench-orchestrator.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
trap stop_moto EXIT
trap 'exit 143' INT TERM

build_bench
if [ "${BENCH_SKIP_MOTO:-0}" != "1" ] && [ "${BENCH_SKIP_MOTO:-0}" != "true" ]; then
  start_moto "${MOTO_PORT:-5000}"
fi
# Not exec: the EXIT trap must still stop the moto started here.
"${BENCH_BIN}" submit

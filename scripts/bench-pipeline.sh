#!/usr/bin/env bash
# The orchestrator's embedded pipeline and its event streams: builds the
# bench and the orchestrator in release mode, then runs `bench pipeline`
# (jobs per second through queue -> in-process worker -> stand-in inference
# API -> task store) and `bench events` (many open job event streams, SSE).
# Loopback only; the bench starts its own stand-in backend, and the
# orchestrator runs in a temp dir that is removed afterwards.
#
# Usage: scripts/bench-pipeline.sh
# Environment:
#   CARGO_TARGET_DIR    build directory (default /var/tmp/canvas-target)
#   BENCH_JOBS_C1       jobs at WORKER_CONCURRENCY=1 (default 300)
#   BENCH_JOBS_C16      jobs at WORKER_CONCURRENCY=16 (default 2000)
#   BENCH_JOBS_SLOW     jobs whose backend answers `processing` once first
#                       (default 320; 0 skips that run)
#   BENCH_RUN_SECS      time cap per run in seconds (default 60)
#   BENCH_SSE_JOBS      jobs the event streams follow (default 200)
#   BENCH_SSE_STREAMS   cumulative stream counts (default 1000,5000; `none`
#                       skips the streams)
#   BENCH_HOLD_SECS     how long each stage of streams is held (default 10)
#   EVENTS_POLL_MILLIS  the orchestrator's event watcher interval (default 1000)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_SCRIPT=bench-pipeline.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

raise_fd_limit
build_bench
"${BENCH_BIN}" pipeline
"${BENCH_BIN}" events

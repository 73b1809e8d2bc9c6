#!/usr/bin/env bash
# Builds the orchestrator and its pipeline benchmark in release mode, then
# runs the benchmark against the freshly built binary: jobs per second
# through queue -> in-process worker -> stand-in inference API -> task store,
# and many open job event streams (SSE). Loopback only; the benchmark starts
# its own stand-in backend, and the orchestrator runs in a temp dir that is
# removed afterwards.
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
#   BENCH_SSE_STREAMS   cumulative stream counts (default 1000,5000; empty
#                       skips the streams)
#   BENCH_HOLD_SECS     how long each stage of streams is held (default 10)
#   EVENTS_POLL_MILLIS  the child's event watcher interval (default 1000)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/canvas-target}"

# Each stream is a socket in the benchmark and another in the orchestrator
# (which inherits this limit): 5000 streams need more than the usual 1024.
want_fds=16384
hard_fds="$(ulimit -Hn)"
if [ "$hard_fds" != "unlimited" ] && [ "$hard_fds" -lt "$want_fds" ]; then
  want_fds="$hard_fds"
fi
if [ "$(ulimit -Sn)" != "unlimited" ] && [ "$(ulimit -Sn)" -lt "$want_fds" ]; then
  ulimit -Sn "$want_fds"
fi
printf '[bench-pipeline.sh] open file limit: %s\n' "$(ulimit -Sn)" >&2

cargo build --release -p orchestrator --bins --examples

exec "$CARGO_TARGET_DIR/release/examples/pipeline_bench" \
    "$CARGO_TARGET_DIR/release/orchestrator"

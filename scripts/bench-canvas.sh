#!/usr/bin/env bash
# Builds canvas-service and its upload benchmark in release mode, then runs
# the benchmark against the freshly built binary (loopback only; the service
# runs with zero configuration in a temp dir that is removed afterwards).
#
# Usage: scripts/bench-canvas.sh
# Environment:
#   CARGO_TARGET_DIR     build directory (default /var/tmp/canvas-target)
#   BENCH_SMALL_UPLOADS  small uploads per concurrency level (default 5000)
#   BENCH_LEVEL_SECS     time cap per level in seconds (default 20)
#   BENCH_BIG_MIB        size of the large streamed upload (default 256)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/canvas-target}"

cargo build --release -p canvas-service --bins --examples

exec "$CARGO_TARGET_DIR/release/examples/upload_bench" \
    "$CARGO_TARGET_DIR/release/canvas-service"

#!/usr/bin/env bash
# canvas-service uploads: builds the bench and canvas-service in release
# mode and runs `bench upload` (loopback only; the service runs with zero
# configuration in a temp dir that is removed afterwards).
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
BENCH_SCRIPT=bench-canvas.sh
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

build_bench
exec "${BENCH_BIN}" upload

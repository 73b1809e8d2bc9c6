#!/usr/bin/env bash
# Fuzzes both services through their own OpenAPI documents (issue 8):
# schemathesis generates requests from each service's /openapi.json and fails
# the run on any 5xx and on any response the document does not describe (an
# undeclared status code, a body that does not match its schema, a content
# type or header the operation does not declare, a method that is not 405).
#
#   scripts/fuzz-openapi.sh            (run by scripts/test.sh; SKIP_FUZZ=1 skips it there)
#
# Each service runs in embedded mode with zero configuration (SQLite and a
# local object directory under a temporary DATA_DIR, loopback only, on a free
# port), from the binaries of a `cargo build` into CARGO_TARGET_DIR (or the
# ones in FUZZ_BIN_DIR, without building). The orchestrator has no
# GPU_BACKEND_URL, so jobs stay pending; that is all the fuzzer needs.
#
# Repeatable: schemathesis runs in its deterministic mode (the same inputs
# every run) with no example database or cache carried between runs, bounded
# by FUZZ_MAX_EXAMPLES per operation and phase. FUZZ_SEED=<n> switches to
# seeded random generation instead, for exploring beyond the fixed inputs.
#
# Environment: CARGO_TARGET_DIR (as cargo); FUZZ_BIN_DIR; FUZZ_VENV (where
# schemathesis is installed, the first time, with pip); FUZZ_MAX_EXAMPLES
# (default 300); FUZZ_SEED; FUZZ_KEEP=1 keeps the work directory (service
# logs, reports) for a look after the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="${PWD}"
SCHEMATHESIS_VERSION="4.32.5"
VENV="${FUZZ_VENV:-${HOME}/.cache/canvas-backend/fuzz-venv}"
BIN_DIR="${FUZZ_BIN_DIR:-${CARGO_TARGET_DIR:-${ROOT}/target}/debug}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-300}"
# A hard stop per service, several times what a run takes (under a minute):
# a hung request or a runaway phase fails the run instead of stalling CI.
SERVICE_BUDGET_SECONDS=300

say() { printf '[fuzz-openapi] %s\n' "$*" >&2; }

WORK="$(mktemp -d -t fuzz-openapi.XXXXXX)"
PIDS=()
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "${pid}" 2>/dev/null || true
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    wait "${pid}" 2>/dev/null || true
  done
  if [[ "${FUZZ_KEEP:-0}" == 1 ]]; then
    say "work directory kept: ${WORK}"
  else
    rm -rf "${WORK}"
  fi
}
trap cleanup EXIT

# --- tools --------------------------------------------------------------------

install_schemathesis() {
  # Captured first: `pip show | grep -q` under pipefail fails when grep stops
  # reading early.
  local installed=""
  if [[ -x "${VENV}/bin/pip" ]]; then
    installed="$("${VENV}/bin/pip" show schemathesis 2>/dev/null || true)"
  fi
  if [[ ! -x "${VENV}/bin/schemathesis" ]] || ! grep -q "^Version: ${SCHEMATHESIS_VERSION}$" <<<"${installed}"; then
    say "installing schemathesis==${SCHEMATHESIS_VERSION} into ${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
  fi
}

build_services() {
  if [[ -n "${FUZZ_BIN_DIR:-}" ]]; then
    return
  fi
  # Incremental: after the test run this finds everything built already.
  cargo build --quiet -p canvas-service -p orchestrator
}

# --- services -----------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_service NAME PORT VAR=VALUE...: runs the binary with only these
# variables (no .env, no developer settings leaking in: zero configuration
# really is zero), from its own directory, and waits for /health.
start_service() {
  local name="$1" port="$2"
  shift 2
  local dir="${WORK}/${name}"
  mkdir -p "${dir}/data"
  (
    cd "${dir}"
    exec env -i PATH="${PATH}" HOME="${dir}" RUST_LOG=warn \
      PORT="${port}" BIND_ADDR=127.0.0.1 DATA_DIR="${dir}/data" \
      RATE_LIMIT_JOBS_PER_MINUTE=0 RATE_LIMIT_UPLOADS_PER_MINUTE=0 \
      RATE_LIMIT_SESSIONS_PER_MINUTE=0 DAILY_JOB_QUOTA=0 \
      "$@" "${BIN_DIR}/${name}"
  ) >"${dir}/service.log" 2>&1 &
  PIDS+=("$!")
  local _
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/health" 2>/dev/null; then
      return
    fi
    if ! kill -0 "$!" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  say "${name} did not start; its log:"
  cat "${dir}/service.log" >&2
  exit 1
}

# --- schemathesis ------------------------------------------------------------

# The configuration shared by both services.
# - checks: server errors and conformance to the document (status codes,
#   content types, response headers and schemas), 405 with a true `Allow`
#   for methods a path does not have, and — where an operation declares a
#   security scheme — that it is enforced. Left out on purpose: positive_data_acceptance
#   and negative_data_rejection, which judge the API by the request schemas
#   alone (a well-formed upload of bytes that are no image is rightly 415, a
#   well-formed id of a job that does not exist rightly 404), and the
#   resource-lifecycle checks, which assume REST conventions these routes do
#   not follow (DELETE /delete-image takes its key in the body).
# - no example database or cache: every run starts from the same state.
write_config() {
  local file="$1"
  local generation
  if [[ -n "${FUZZ_SEED:-}" ]]; then
    generation="seed = ${FUZZ_SEED}"
  else
    generation="generation.deterministic = true"
  fi
  cat >"${file}" <<EOF
${generation}
generation.max-examples = ${MAX_EXAMPLES}
generation.database = "none"
request-timeout = 10
cache.enabled = false
continue-on-failure = true

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_headers_conformance.enabled = true
response_schema_conformance.enabled = true
unsupported_method.enabled = true
allow_header_conformance.enabled = true
ignored_auth.enabled = true
EOF
}

# fuzz NAME PORT [extra config lines...]
fuzz() {
  local name="$1" port="$2"
  shift 2
  local config="${WORK}/${name}/schemathesis.toml"
  write_config "${config}"
  local line
  for line in "$@"; do
    printf '%s\n' "${line}" >>"${config}"
  done
  say "fuzzing ${name} (http://127.0.0.1:${port}/openapi.json, at most ${MAX_EXAMPLES} examples per operation and phase)"
  local status=0
  (
    cd "${WORK}/${name}"
    timeout --kill-after=10 "${SERVICE_BUDGET_SECONDS}" \
      "${VENV}/bin/schemathesis" --config-file "${config}" run --no-color \
      "http://127.0.0.1:${port}/openapi.json"
  ) || status=$?
  if [[ "${status}" != 0 ]]; then
    if [[ "${status}" == 124 ]]; then
      say "${name}: schemathesis ran past ${SERVICE_BUDGET_SECONDS} s"
    fi
    say "${name}: FAILED; the last lines of its log:"
    tail -n 40 "${WORK}/${name}/service.log" >&2
    FAILED+=("${name}")
  fi
}

install_schemathesis
build_services

CANVAS_PORT="$(free_port)"
ORCHESTRATOR_PORT="$(free_port)"
# A token of this run only: with it the fuzzer reaches the GPU start/stop
# handlers (no GPU host is configured, so they only report its status), and
# ignored_auth checks that requests without it are refused.
ADMIN_TOKEN="fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

start_service canvas-service "${CANVAS_PORT}"
start_service orchestrator "${ORCHESTRATOR_PORT}" ADMIN_TOKEN="${ADMIN_TOKEN}"

FAILED=()
START=${SECONDS}
fuzz canvas-service "${CANVAS_PORT}"
# The event stream of a pending job stays open (jobs never run here): read
# its first event, check it, and move on, rather than wait out the request
# timeout on every call.
fuzz orchestrator "${ORCHESTRATOR_PORT}" \
  "" "[auth.openapi.admin_token]" "bearer = \"${ADMIN_TOKEN}\"" \
  "" "[[operations]]" 'include-path = "/api/v1/jobs/{job_id}/events"' "max-stream-events = 1"

if [[ ${#FAILED[@]} -gt 0 ]]; then
  say "findings in: ${FAILED[*]} (after $((SECONDS - START)) s)"
  exit 1
fi
say "both services conform to their documents ($((SECONDS - START)) s)"

#!/usr/bin/env bash
# Runs the whole test suite on real parts, starting what it needs:
#   - moto (the AWS emulator: S3 now; SQS, DynamoDB, EC2 later), installed
#     with pip into a venv under ~/.cache/canvas-backend the first time;
#   - PostgreSQL, started with pg_ctlcluster if it is installed but down.
# REQUIRE_LIVE_BACKENDS=1 (the default here) makes a missing Postgres or moto
# fail the tests instead of skipping them.
#
# Environment it honours:
#   TEST_DATABASE_URL  admin URL of the Postgres server (default
#                      postgres://postgres@127.0.0.1:5432/postgres); each test
#                      creates its own database there.
#   MOTO_PORT          port for moto (default 5000); a moto already answering
#                      there is reused.
#   MOTO_VENV          where the venv lives.
#   CARGO_TARGET_DIR   honoured as cargo does.
#   SKIP_FUZZ=1        skips the schemathesis fuzzing of both services'
#                      OpenAPI documents (scripts/fuzz-openapi.sh).
#   SKIP_DEPLOY_CHECK=1 skips the packaging checks (scripts/check-deploy.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export REQUIRE_LIVE_BACKENDS="${REQUIRE_LIVE_BACKENDS:-1}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
MOTO_VERSION="5.2.5"
MOTO_PORT="${MOTO_PORT:-5000}"
MOTO_VENV="${MOTO_VENV:-$HOME/.cache/canvas-backend/moto-venv}"
export MOTO_URL="http://127.0.0.1:${MOTO_PORT}"
# Tests build their AWS settings themselves; these keep any SDK default
# chain from reaching for a real account or the instance metadata service.
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

log() { printf '[test.sh] %s\n' "$*" >&2; }

moto_answers() { curl -fsS -o /dev/null --max-time 2 "${MOTO_URL}/moto-api/" 2>/dev/null; }

start_moto() {
  if moto_answers; then
    log "moto already answers at ${MOTO_URL}; reusing it"
    return
  fi
  # Captured first: `pip show | grep -q` under pipefail fails when grep
  # stops reading early.
  local installed=""
  if [ -x "${MOTO_VENV}/bin/pip" ]; then
    installed="$("${MOTO_VENV}/bin/pip" show moto 2>/dev/null || true)"
  fi
  if [ ! -x "${MOTO_VENV}/bin/moto_server" ] || ! grep -q "^Version: ${MOTO_VERSION}$" <<<"${installed}"; then
    log "installing moto[server]==${MOTO_VERSION} into ${MOTO_VENV}"
    python3 -m venv "${MOTO_VENV}"
    "${MOTO_VENV}/bin/pip" install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
  fi
  MOTO_LOG="$(mktemp -t moto.XXXXXX.log)"
  "${MOTO_VENV}/bin/moto_server" -H 127.0.0.1 -p "${MOTO_PORT}" >"${MOTO_LOG}" 2>&1 &
  MOTO_PID=$!
  trap 'kill "${MOTO_PID}" 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    if moto_answers; then
      log "moto started at ${MOTO_URL} (log: ${MOTO_LOG})"
      return
    fi
    sleep 0.2
  done
  log "moto did not start; its log:"
  cat "${MOTO_LOG}" >&2
  exit 1
}

start_postgres() {
  local host port
  host="$(sed -E 's#^[a-z]+://([^@/]*@)?([^:/]+).*#\2#' <<<"${TEST_DATABASE_URL}")"
  port="$(sed -nE 's#^[a-z]+://([^@/]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"${TEST_DATABASE_URL}")"
  port="${port:-5432}"
  if pg_isready -q -h "${host}" -p "${port}" 2>/dev/null; then
    return
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    log "PostgreSQL is down; starting it"
    local version
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "${version}" main start || true
    for _ in $(seq 1 50); do
      pg_isready -q -h "${host}" -p "${port}" && return
      sleep 0.2
    done
  fi
  log "PostgreSQL is not reachable at ${host}:${port}; the live tests will fail (REQUIRE_LIVE_BACKENDS=${REQUIRE_LIVE_BACKENDS})"
}

drop_old_test_databases() {
  command -v psql >/dev/null 2>&1 || return 0
  psql "${TEST_DATABASE_URL}" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'canvas\_test\_%'" 2>/dev/null |
    while read -r db; do
      psql "${TEST_DATABASE_URL}" -qc "DROP DATABASE IF EXISTS \"${db}\"" >/dev/null 2>&1 || true
    done
}

start_moto
start_postgres
drop_old_test_databases

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast "$@"
fi

# Both services fuzzed through their OpenAPI documents (schemathesis, ~1
# min): a 5xx, or an answer the document does not declare, fails the run.
# Uses the binaries just built (same CARGO_TARGET_DIR).
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  ./scripts/fuzz-openapi.sh
fi

# Packaging and deployment files (Dockerfiles, compose, ECS task definition,
# deploy/): checked with no Docker engine or AWS account, ~2 min. Reuses
# MOTO_URL and TEST_DATABASE_URL from above, and the binaries just built.
if [ "${SKIP_DEPLOY_CHECK:-0}" != 1 ]; then
  ./scripts/check-deploy.sh
fi

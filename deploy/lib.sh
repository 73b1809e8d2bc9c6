# shellcheck shell=bash
# Sourced by deploy/*.sh, never run: the deployment settings with their
# defaults, logging, --dry-run, and the template renderer shared by the
# task definition and the IAM policies.
#
# Every script logs what it found as "ok: …" and what it had to do as
# "CHANGE: …": a second run of a script prints no CHANGE line.

if ((BASH_VERSINFO[0] < 4)); then
  echo "deploy scripts need bash 4 or later (on macOS: brew install bash)" >&2
  exit 1
fi
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${DEPLOY_DIR}/.." && pwd)"
SCRIPT_NAME="$(basename "$0")"
DRY_RUN="${DRY_RUN:-0}"
CHANGES=0

# Never page the AWS CLI's output into `less`; retry throttling the modern way.
export AWS_PAGER="" AWS_RETRY_MODE="${AWS_RETRY_MODE:-standard}"

# AWS_ENDPOINT_URL (an emulator such as moto) for every call: the AWS CLI v1
# ignores the variable for SQS and goes to the legacy endpoint instead.
aws() {
  if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    command aws --endpoint-url "${AWS_ENDPOINT_URL}" "$@"
  else
    command aws "$@"
  fi
}

log() { printf '[%s] %s\n' "${SCRIPT_NAME}" "$*" >&2; }
ok() { log "ok: $*"; }
change() {
  CHANGES=$((CHANGES + 1))
  if [[ "${DRY_RUN}" == 1 ]]; then
    log "CHANGE (dry run, not done): $*"
  else
    log "CHANGE: $*"
  fi
}
die() {
  log "error: $*"
  exit 1
}

# Runs a command that changes something; with --dry-run it is only shown.
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    log "would run: $(printf '%q ' "$@")"
    return 0
  fi
  "$@"
}

# --dry-run, --env-file FILE and --help, common to the three scripts. The
# script defines usage().
parse_args() {
  while (($#)); do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --env-file)
        [[ $# -ge 2 ]] || die "--env-file needs a file"
        [[ -r "$2" ]] || die "--env-file: cannot read $2"
        set -a
        # shellcheck disable=SC1090
        . "$2"
        set +a
        shift
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      *) die "unknown argument $1 (try --help)" ;;
    esac
    shift
  done
}

# Fails naming every variable of the list that is unset or blank.
require_vars() {
  local name missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("${name}")
  done
  if ((${#missing[@]})); then
    die "missing required variable(s): ${missing[*]} (see --help)"
  fi
}

require_commands() {
  local cmd
  for cmd in "$@"; do
    command -v "${cmd}" >/dev/null 2>&1 || die "'${cmd}' is not installed or not on PATH"
  done
}

# The settings every script shares. CONTRACT §3 aliases are honoured:
# AWS_DEFAULT_REGION for AWS_REGION, S3_BUCKET_NAME / AWS_S3_BUCKET for
# S3_BUCKET, CPU_QUEUE_URL beside CPU_SQS_QUEUE_URL in the services.
# Many of these are read only by render(), through indirection.
# shellcheck disable=SC2034
load_settings() {
  AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  S3_BUCKET="${S3_BUCKET:-${S3_BUCKET_NAME:-${AWS_S3_BUCKET:-}}}"
  require_vars AWS_REGION
  export AWS_REGION AWS_DEFAULT_REGION="${AWS_REGION}"

  APP_NAME="${APP_NAME:-canvas-backend}"
  [[ "${APP_NAME}" =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] ||
    die "APP_NAME=${APP_NAME}: use lower-case letters, digits and '-', at most 31 characters"

  DYNAMODB_TABLE="${DYNAMODB_TABLE:-task_store}"
  GPU_QUEUE_NAME="${GPU_QUEUE_NAME:-${APP_NAME}-gpu-jobs}"
  CPU_QUEUE_NAME="${CPU_QUEUE_NAME:-${APP_NAME}-cpu-jobs}"
  GPU_DLQ_NAME="${GPU_DLQ_NAME:-${GPU_QUEUE_NAME}-dlq}"
  CPU_DLQ_NAME="${CPU_DLQ_NAME:-${CPU_QUEUE_NAME}-dlq}"
  LOG_GROUP="${LOG_GROUP:-/ecs/${APP_NAME}}"
  TASK_ROLE_NAME="${TASK_ROLE_NAME:-${APP_NAME}-task}"
  EXECUTION_ROLE_NAME="${EXECUTION_ROLE_NAME:-${APP_NAME}-execution}"
  DATABASE_URL_SECRET_NAME="${DATABASE_URL_SECRET_NAME:-${APP_NAME}/database-url}"
  ADMIN_TOKEN_SECRET_NAME="${ADMIN_TOKEN_SECRET_NAME:-${APP_NAME}/admin-token}"
  ECR_REPO_PREFIX="${ECR_REPO_PREFIX:-${APP_NAME}}"
  CANVAS_REPOSITORY="${ECR_REPO_PREFIX}/canvas-service"
  ORCHESTRATOR_REPOSITORY="${ECR_REPO_PREFIX}/orchestrator"
  CLUSTER_NAME="${CLUSTER_NAME:-${APP_NAME}}"
  SERVICE_NAME="${SERVICE_NAME:-${APP_NAME}}"
  TASK_FAMILY="${TASK_FAMILY:-${APP_NAME}}"

  # Optional service settings that the task definition carries (blank =
  # the service's own default, as the services treat blank as unset).
  CLOUDFRONT_DOMAIN="${CLOUDFRONT_DOMAIN:-}"
  CORS_ORIGINS="${CORS_ORIGINS:-}"
  GPU_IDLE_MINUTES="${GPU_IDLE_MINUTES:-30}"
  JOB_TIMEOUT_MINUTES="${JOB_TIMEOUT_MINUTES:-60}"
  DATABASE_MAX_CONNECTIONS="${DATABASE_MAX_CONNECTIONS:-10}"
  RUST_LOG="${RUST_LOG:-info}"

  require_commands aws
}

# The account the credentials belong to (AWS_ACCOUNT_ID wins, so a dry
# run can be made without credentials).
resolve_account() {
  if [[ -z "${AWS_ACCOUNT_ID:-}" ]]; then
    AWS_ACCOUNT_ID="$(aws sts get-caller-identity --query Account --output text)" ||
      die "cannot reach AWS with these credentials (aws sts get-caller-identity failed)"
  fi
  [[ "${AWS_ACCOUNT_ID}" =~ ^[0-9]{12}$ ]] || die "AWS_ACCOUNT_ID=${AWS_ACCOUNT_ID} is not a 12-digit account id"
}

# render TEMPLATE: prints TEMPLATE with every ${NAME} replaced by the value
# of the shell variable NAME, escaped for a JSON string. Fails naming every
# placeholder whose variable is unset or blank.
render() {
  local template="$1" content name value
  local -a names missing=()
  [[ -r "${template}" ]] || die "cannot read ${template}"
  content="$(<"${template}")"
  # shellcheck disable=SC2016 # a literal ${, not an expansion
  mapfile -t names < <(grep -o '\${[A-Za-z_][A-Za-z0-9_]*}' "${template}" | sort -u | sed 's/^\${//; s/}$//')
  for name in "${names[@]}"; do
    if [[ -z "${!name:-}" ]]; then
      missing+=("${name}")
      continue
    fi
    value="${!name}"
    value="${value//\\/\\\\}"
    value="${value//\"/\\\"}"
    content="${content//"\${${name}}"/"${value}"}"
  done
  if ((${#missing[@]})); then
    die "${template#"${REPO_ROOT}"/}: no value for placeholder(s): ${missing[*]}"
  fi
  printf '%s\n' "${content}"
}

# Compares two JSON documents as IAM stores them (same key order, as we
# wrote them): equal once whitespace is removed.
same_json() {
  [[ "$(tr -d ' \t\n\r' <<<"$1")" == "$(tr -d ' \t\n\r' <<<"$2")" ]]
}

# A scratch directory removed on exit.
scratch_dir() {
  SCRATCH="$(mktemp -d -t canvas-deploy.XXXXXX)"
  trap 'rm -rf "${SCRATCH}"' EXIT
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -c1-64
  else
    shasum -a 256 "$1" | cut -c1-64
  fi
}

# The full ARN of a Secrets Manager secret (the task definition needs it).
secret_arn() {
  local arn
  if arn="$(aws secretsmanager describe-secret --secret-id "$1" --query ARN --output text 2>/dev/null)"; then
    printf '%s\n' "${arn}"
  elif [[ "${DRY_RUN}" == 1 ]]; then
    log "secret $1 not found (dry run: using a placeholder ARN)"
    printf 'arn:aws:secretsmanager:%s:%s:secret:%s-XXXXXX\n' "${AWS_REGION}" "${AWS_ACCOUNT_ID}" "$1"
  else
    die "secret $1 not found: run deploy/provision-aws.sh first"
  fi
}

# Renders ecs-task-definition.json for IMAGE_TAG and registers it, unless
# the family's latest revision came from the same rendering (the tag
# config-sha256 holds its hash): deploying the same thing twice registers
# nothing. Sets TASK_DEFINITION_ARN. Needs SCRATCH (scratch_dir).
# shellcheck disable=SC2034 # the *_SECRET_ARN variables are read by render()
ensure_task_definition() {
  local file hash latest arn="" latest_hash=""
  require_vars IMAGE_TAG S3_BUCKET CLOUDFRONT_DOMAIN CORS_ORIGINS GPU_INSTANCE_ID
  DATABASE_URL_SECRET_ARN="$(secret_arn "${DATABASE_URL_SECRET_NAME}")"
  ADMIN_TOKEN_SECRET_ARN="$(secret_arn "${ADMIN_TOKEN_SECRET_NAME}")"
  file="${SCRATCH}/task-definition.json"
  render "${REPO_ROOT}/ecs-task-definition.json" >"${file}"
  hash="$(sha256 "${file}")"
  if latest="$(aws ecs describe-task-definition --task-definition "${TASK_FAMILY}" --include TAGS \
    --query "[taskDefinition.taskDefinitionArn, tags[?key=='config-sha256'] | [0].value]" --output text 2>/dev/null)"; then
    read -r arn latest_hash <<<"${latest}"
  fi
  if [[ -n "${arn}" && "${latest_hash}" == "${hash}" ]]; then
    ok "task definition ${arn##*/} is this configuration (images :${IMAGE_TAG})"
    TASK_DEFINITION_ARN="${arn}"
    return
  fi
  change "register task definition ${TASK_FAMILY} (images :${IMAGE_TAG}, config ${hash:0:12})"
  TASK_DEFINITION_ARN="$(run aws ecs register-task-definition --cli-input-json "file://${file}" \
    --tags "key=config-sha256,value=${hash}" "key=Project,value=${APP_NAME}" \
    --query taskDefinition.taskDefinitionArn --output text)"
  TASK_DEFINITION_ARN="${TASK_DEFINITION_ARN:-${TASK_FAMILY}:(new revision)}"
}

finish() {
  if ((CHANGES == 0)); then
    log "done: nothing to change"
  elif [[ "${DRY_RUN}" == 1 ]]; then
    log "dry run done: ${CHANGES} change(s) would be made"
  else
    log "done: ${CHANGES} change(s) made"
  fi
}

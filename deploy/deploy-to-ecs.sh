#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Ships a version: ECR repositories, image build and push, the task
# definition with the account and region filled in, the service updated, and
# a wait until the rollout is stable. Idempotent: deploying the same IMAGE_TAG
# and settings again builds, pushes and registers nothing.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: deploy/deploy-to-ecs.sh [--dry-run] [--env-file FILE]

  1. ECR repositories ECR_REPO_PREFIX/canvas-service and …/orchestrator
     (immutable tags, scan on push, the last 30 images kept)
  2. docker build + push of Dockerfile.canvas and Dockerfile.orchestrator as
     :IMAGE_TAG (skipped for an image already in ECR; SKIP_DOCKER=1 skips
     the Docker steps entirely, for images pushed by CI)
  3. ecs-task-definition.json rendered (account, region, images, queues,
     secrets, roles) and registered unless the latest revision is the same
  4. the service moved to it (DESIRED_COUNT tasks, default 1, on the first
     deploy; later deploys keep the count) and, unless NO_WAIT=1, a wait of
     up to WAIT_TIMEOUT_SECONDS (900) for the rollout; a rollout the circuit
     breaker rolled back fails the script

Required: AWS_REGION, S3_BUCKET, CLOUDFRONT_DOMAIN, CORS_ORIGINS,
GPU_INSTANCE_ID (as for provision-aws.sh). IMAGE_TAG defaults to the git
commit (a tree with uncommitted changes needs an explicit IMAGE_TAG).
Optional: DESIRED_COUNT, SKIP_DOCKER, NO_WAIT, WAIT_TIMEOUT_SECONDS,
DOCKER_PLATFORM (linux/amd64, as the task definition's X86_64), GPU_IDLE_MINUTES,
JOB_TIMEOUT_MINUTES, DATABASE_MAX_CONNECTIONS, RUST_LOG, and the names of
provision-aws.sh and setup-ecs-service.sh.
Rollback: IMAGE_TAG=<an earlier tag> SKIP_DOCKER=1 deploy/deploy-to-ecs.sh
EOF
}

parse_args "$@"
load_settings
require_vars S3_BUCKET CLOUDFRONT_DOMAIN CORS_ORIGINS GPU_INSTANCE_ID
SKIP_DOCKER="${SKIP_DOCKER:-0}"
NO_WAIT="${NO_WAIT:-0}"
DESIRED_COUNT="${DESIRED_COUNT:-1}"
WAIT_TIMEOUT_SECONDS="${WAIT_TIMEOUT_SECONDS:-900}"
DOCKER_PLATFORM="${DOCKER_PLATFORM:-linux/amd64}"
[[ "${DESIRED_COUNT}" =~ ^[0-9]+$ ]] || die "DESIRED_COUNT=${DESIRED_COUNT} is not a number"
[[ "${WAIT_TIMEOUT_SECONDS}" =~ ^[0-9]+$ ]] || die "WAIT_TIMEOUT_SECONDS=${WAIT_TIMEOUT_SECONDS} is not a number"

if [[ -z "${IMAGE_TAG:-}" ]]; then
  require_commands git
  IMAGE_TAG="$(git -C "${REPO_ROOT}" rev-parse --short=12 HEAD)" || die "not a git checkout: set IMAGE_TAG"
  if [[ -n "$(git -C "${REPO_ROOT}" status --porcelain --untracked-files=no)" ]]; then
    die "the work tree has uncommitted changes: commit them, or set IMAGE_TAG to name this build"
  fi
fi
[[ "${IMAGE_TAG}" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "IMAGE_TAG=${IMAGE_TAG} is not a valid image tag"
resolve_account
scratch_dir
REGISTRY="${AWS_ACCOUNT_ID}.dkr.ecr.${AWS_REGION}.amazonaws.com"
log "deploying :${IMAGE_TAG} to ${CLUSTER_NAME}/${SERVICE_NAME} (account ${AWS_ACCOUNT_ID}, region ${AWS_REGION})"

# Keep the last 30 images of each repository; older ones can no longer be
# rolled back to.
LIFECYCLE_POLICY='{"rules":[{"rulePriority":1,"description":"keep the last 30 images","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":30},"action":{"type":"expire"}}]}'

ensure_repository() {
  local repo="$1" policy
  if aws ecr describe-repositories --repository-names "${repo}" >/dev/null 2>&1; then
    ok "ECR repository ${repo}"
  else
    change "create ECR repository ${repo} (immutable tags, scan on push)"
    run aws ecr create-repository --repository-name "${repo}" --image-tag-mutability IMMUTABLE \
      --image-scanning-configuration scanOnPush=true --encryption-configuration encryptionType=AES256 \
      --tags "Key=Project,Value=${APP_NAME}" >/dev/null
  fi
  policy="$(aws ecr get-lifecycle-policy --repository-name "${repo}" --query lifecyclePolicyText --output text 2>/dev/null || true)"
  if same_json "${policy}" "${LIFECYCLE_POLICY}"; then
    ok "ECR repository ${repo}: lifecycle policy"
  else
    change "ECR repository ${repo}: keep the last 30 images"
    run aws ecr put-lifecycle-policy --repository-name "${repo}" --lifecycle-policy-text "${LIFECYCLE_POLICY}" >/dev/null
  fi
}

image_in_ecr() {
  aws ecr describe-images --repository-name "$1" --image-ids "imageTag=${IMAGE_TAG}" >/dev/null 2>&1
}

# build_and_push REPOSITORY DOCKERFILE
build_and_push() {
  local repo="$1" dockerfile="$2" uri="${REGISTRY}/$1:${IMAGE_TAG}"
  if image_in_ecr "${repo}"; then
    ok "image ${repo}:${IMAGE_TAG} is in ECR"
    return
  fi
  if [[ "${SKIP_DOCKER}" == 1 ]]; then
    log "warning: ${repo}:${IMAGE_TAG} is not in ECR and SKIP_DOCKER=1: tasks of this revision cannot start until it is pushed"
    return
  fi
  change "build and push ${uri}"
  run docker build --platform "${DOCKER_PLATFORM}" -f "${REPO_ROOT}/${dockerfile}" -t "${uri}" "${REPO_ROOT}"
  run docker push "${uri}"
}

docker_login() {
  if [[ "${SKIP_DOCKER}" == 1 ]] || { image_in_ecr "${CANVAS_REPOSITORY}" && image_in_ecr "${ORCHESTRATOR_REPOSITORY}"; }; then
    return
  fi
  log "docker login ${REGISTRY}"
  if [[ "${DRY_RUN}" != 1 ]]; then
    require_commands docker
    aws ecr get-login-password | docker login --username AWS --password-stdin "${REGISTRY}" >/dev/null
  fi
}

update_service() {
  local current service_td desired
  current="$(aws ecs describe-services --cluster "${CLUSTER_NAME}" --services "${SERVICE_NAME}" \
    --query "services[?status=='ACTIVE'] | [0].[taskDefinition, to_string(desiredCount)]" --output text 2>/dev/null || echo None)"
  [[ "${current}" != None* ]] || die "service ${SERVICE_NAME} not found in cluster ${CLUSTER_NAME}: run deploy/setup-ecs-service.sh first"
  read -r service_td desired <<<"${current}"
  local -a count=()
  if [[ "${desired}" == 0 && "${DESIRED_COUNT}" != 0 ]]; then
    count=(--desired-count "${DESIRED_COUNT}")
  fi
  if [[ "${service_td}" == "${TASK_DEFINITION_ARN}" && ${#count[@]} -eq 0 ]]; then
    ok "service ${SERVICE_NAME} runs ${TASK_DEFINITION_ARN##*/} (${desired} task(s))"
    return
  fi
  change "service ${SERVICE_NAME}: ${service_td##*/} → ${TASK_DEFINITION_ARN##*/}${count[*]:+ (${DESIRED_COUNT} task(s))}"
  run aws ecs update-service --cluster "${CLUSTER_NAME}" --service "${SERVICE_NAME}" \
    --task-definition "${TASK_DEFINITION_ARN}" ${count[@]+"${count[@]}"} >/dev/null
}

# Waits until one deployment is left and it runs the desired count; fails
# when the circuit breaker rolled the deployment back.
wait_stable() {
  local deadline state deployments running desired rollout reason
  deadline=$((SECONDS + WAIT_TIMEOUT_SECONDS))
  while :; do
    state="$(aws ecs describe-services --cluster "${CLUSTER_NAME}" --services "${SERVICE_NAME}" \
      --query "services[0].[to_string(length(deployments)), to_string(runningCount), to_string(desiredCount), deployments[?status=='PRIMARY'] | [0].rolloutState, deployments[?status=='PRIMARY'] | [0].rolloutStateReason]" \
      --output text)"
    IFS=$'\t' read -r deployments running desired rollout reason <<<"${state}"
    if [[ "${rollout}" == FAILED ]]; then
      die "the rollout failed (${reason}); ECS rolls back to the previous revision. Logs: aws logs tail ${LOG_GROUP} --since 30m"
    fi
    if [[ "${deployments}" == 1 && "${running}" == "${desired}" ]]; then
      ok "service ${SERVICE_NAME} is stable: ${running}/${desired} task(s) on ${TASK_DEFINITION_ARN##*/}"
      return
    fi
    ((SECONDS < deadline)) ||
      die "not stable after ${WAIT_TIMEOUT_SECONDS} s (${deployments} deployments, ${running}/${desired} running); see: aws ecs describe-services --cluster ${CLUSTER_NAME} --services ${SERVICE_NAME}"
    log "waiting: ${deployments} deployment(s), ${running}/${desired} running, rollout ${rollout}"
    sleep 10
  done
}

ensure_repository "${CANVAS_REPOSITORY}"
ensure_repository "${ORCHESTRATOR_REPOSITORY}"
if [[ "${SKIP_DOCKER}" == 1 ]]; then
  log "SKIP_DOCKER=1: no docker build or push"
fi
docker_login
build_and_push "${CANVAS_REPOSITORY}" Dockerfile.canvas
build_and_push "${ORCHESTRATOR_REPOSITORY}" Dockerfile.orchestrator
ensure_task_definition
update_service
if [[ "${DRY_RUN}" == 1 || "${NO_WAIT}" == 1 ]]; then
  log "not waiting for the rollout (--dry-run or NO_WAIT=1)"
else
  wait_stable
fi
finish

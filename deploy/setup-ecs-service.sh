#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The ECS side, once: a cluster, the tasks' security group, and the Fargate
# service (created with 0 tasks; deploy-to-ecs.sh rolls out the images and
# sets the count). Idempotent: a second run changes nothing.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: deploy/setup-ecs-service.sh [--dry-run] [--env-file FILE]

Creates, in AWS_REGION (run deploy/provision-aws.sh first):
  ECS cluster CLUSTER_NAME (APP_NAME)
  security group SECURITY_GROUP_NAME (APP_NAME-tasks) in VPC_ID:
    in:  tcp 9000 and 8080 from ALB_SECURITY_GROUP_ID, or else INGRESS_CIDR
    out: tcp 443 (AWS APIs, ECR, S3) and DATABASE_EGRESS_PORTS (5432 6543,
         Supabase) — nothing else
  ECS service SERVICE_NAME (APP_NAME): Fargate, rolling deployments with the
    circuit breaker (a failing rollout returns to the previous revision),
    0 tasks until the first deploy-to-ecs.sh; if the task definition family
    has no revision yet one is registered (images :IMAGE_TAG, default
    "bootstrap", never started)

Required: AWS_REGION, one of ALB_SECURITY_GROUP_ID / INGRESS_CIDR, and what
the task definition needs (S3_BUCKET, CLOUDFRONT_DOMAIN, CORS_ORIGINS,
GPU_INSTANCE_ID) when the family has no revision yet.
Optional: VPC_ID (the default VPC), SUBNET_IDS (comma-separated; the VPC's
default subnets), ASSIGN_PUBLIC_IP (ENABLED; DISABLED in private subnets with
a NAT gateway or VPC endpoints), CANVAS_TARGET_GROUP_ARN and
ORCHESTRATOR_TARGET_GROUP_ARN (an ALB's target groups, type ip, ports 9000 and
8080; only taken when the service is created), CONTAINER_INSIGHTS
(disabled|enabled), CLUSTER_NAME, SERVICE_NAME, SECURITY_GROUP_NAME.
EOF
}

parse_args "$@"
load_settings
if [[ -z "${ALB_SECURITY_GROUP_ID:-}" && -z "${INGRESS_CIDR:-}" ]]; then
  die "missing required variable: ALB_SECURITY_GROUP_ID (the load balancer's security group) or INGRESS_CIDR (e.g. 0.0.0.0/0 for tasks reached on their public IP)"
fi
SECURITY_GROUP_NAME="${SECURITY_GROUP_NAME:-${APP_NAME}-tasks}"
ASSIGN_PUBLIC_IP="${ASSIGN_PUBLIC_IP:-ENABLED}"
CONTAINER_INSIGHTS="${CONTAINER_INSIGHTS:-disabled}"
DATABASE_EGRESS_PORTS="${DATABASE_EGRESS_PORTS:-5432 6543}"
IMAGE_TAG="${IMAGE_TAG:-bootstrap}"
[[ "${ASSIGN_PUBLIC_IP}" =~ ^(ENABLED|DISABLED)$ ]] || die "ASSIGN_PUBLIC_IP must be ENABLED or DISABLED"
[[ "${CONTAINER_INSIGHTS}" =~ ^(enabled|disabled|enhanced)$ ]] || die "CONTAINER_INSIGHTS must be enabled, disabled or enhanced"
resolve_account
scratch_dir

# --- cluster ----------------------------------------------------------------

setup_cluster() {
  local found
  found="$(aws ecs describe-clusters --clusters "${CLUSTER_NAME}" \
    --query "length(clusters[?status=='ACTIVE'])" --output text)"
  if [[ "${found}" == 1 ]]; then
    ok "cluster ${CLUSTER_NAME}"
  else
    change "create cluster ${CLUSTER_NAME}"
    run aws ecs create-cluster --cluster-name "${CLUSTER_NAME}" \
      --settings "name=containerInsights,value=${CONTAINER_INSIGHTS}" \
      --tags "key=Project,value=${APP_NAME}" >/dev/null
  fi
}

# --- network ----------------------------------------------------------------

setup_network() {
  if [[ -z "${VPC_ID:-}" ]]; then
    VPC_ID="$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)"
    [[ "${VPC_ID}" == vpc-* ]] || die "this region has no default VPC: set VPC_ID and SUBNET_IDS"
    ok "VPC ${VPC_ID} (the default VPC)"
  fi
  if [[ -z "${SUBNET_IDS:-}" ]]; then
    SUBNET_IDS="$(aws ec2 describe-subnets --filters "Name=vpc-id,Values=${VPC_ID}" Name=default-for-az,Values=true \
      --query 'Subnets[].SubnetId' --output text | tr '\t' ',')"
    [[ -n "${SUBNET_IDS}" && "${SUBNET_IDS}" != None ]] || die "VPC ${VPC_ID} has no default subnets: set SUBNET_IDS"
    ok "subnets ${SUBNET_IDS}"
  fi

  SECURITY_GROUP_ID="$(aws ec2 describe-security-groups \
    --filters "Name=vpc-id,Values=${VPC_ID}" "Name=group-name,Values=${SECURITY_GROUP_NAME}" \
    --query 'SecurityGroups[0].GroupId' --output text)"
  if [[ "${SECURITY_GROUP_ID}" == sg-* ]]; then
    ok "security group ${SECURITY_GROUP_NAME} (${SECURITY_GROUP_ID})"
  else
    change "create security group ${SECURITY_GROUP_NAME} in ${VPC_ID}"
    SECURITY_GROUP_ID="$(run aws ec2 create-security-group --group-name "${SECURITY_GROUP_NAME}" --vpc-id "${VPC_ID}" \
      --description "${APP_NAME} Fargate tasks: 9000 and 8080 in; HTTPS and Postgres out" \
      --tag-specifications "ResourceType=security-group,Tags=[{Key=Project,Value=${APP_NAME}},{Key=Name,Value=${SECURITY_GROUP_NAME}}]" \
      --query GroupId --output text)"
    SECURITY_GROUP_ID="${SECURITY_GROUP_ID:-sg-dry-run}"
  fi

  # One line per rule: protocol from to cidrs groups.
  # shellcheck disable=SC2016 # JMESPath literals
  local rules_query='[].[IpProtocol, to_string(FromPort), to_string(ToPort), join(`,`, IpRanges[].CidrIp), join(`,`, UserIdGroupPairs[].GroupId)]'
  local ingress="" egress="" port source
  if [[ "${SECURITY_GROUP_ID}" != sg-dry-run ]]; then
    ingress="$(aws ec2 describe-security-groups --group-ids "${SECURITY_GROUP_ID}" \
      --query "SecurityGroups[0].IpPermissions${rules_query}" --output text)"
    egress="$(aws ec2 describe-security-groups --group-ids "${SECURITY_GROUP_ID}" \
      --query "SecurityGroups[0].IpPermissionsEgress${rules_query}" --output text)"
  fi

  # Patterns over those lines (tab-separated; grep -E, as BSD grep has no -P).
  local t=$'\t'
  for port in 9000 8080; do
    if [[ -n "${ALB_SECURITY_GROUP_ID:-}" ]]; then
      source="${ALB_SECURITY_GROUP_ID}"
      if grep -qE "^tcp${t}${port}${t}${port}${t}[^${t}]*${t}(.*,)?${source}(,|$)" <<<"${ingress}"; then
        ok "ingress tcp ${port} from ${source}"
      else
        change "ingress tcp ${port} from ${source}"
        run aws ec2 authorize-security-group-ingress --group-id "${SECURITY_GROUP_ID}" --ip-permissions \
          "IpProtocol=tcp,FromPort=${port},ToPort=${port},UserIdGroupPairs=[{GroupId=${source},Description=load balancer}]" >/dev/null
      fi
    else
      source="${INGRESS_CIDR}"
      [[ "${source}" =~ ^[0-9.]+/[0-9]+$ ]] || die "INGRESS_CIDR=${source} is not an IPv4 CIDR (e.g. 0.0.0.0/0)"
      if grep -qE "^tcp${t}${port}${t}${port}${t}(.*,)?${source//./\\.}(,|${t}|$)" <<<"${ingress}"; then
        ok "ingress tcp ${port} from ${source}"
      else
        change "ingress tcp ${port} from ${source}"
        run aws ec2 authorize-security-group-ingress --group-id "${SECURITY_GROUP_ID}" --ip-permissions \
          "IpProtocol=tcp,FromPort=${port},ToPort=${port},IpRanges=[{CidrIp=${source},Description=${APP_NAME} clients}]" >/dev/null
      fi
    fi
  done

  # Egress: replace the default allow-all with what the services use.
  if grep -qE "^-1${t}(None|null)${t}(None|null)${t}(.*,)?0\.0\.0\.0/0" <<<"${egress}"; then
    change "security group ${SECURITY_GROUP_NAME}: remove the default allow-all egress"
    run aws ec2 revoke-security-group-egress --group-id "${SECURITY_GROUP_ID}" \
      --ip-permissions 'IpProtocol=-1,IpRanges=[{CidrIp=0.0.0.0/0}]' >/dev/null
  fi
  local description
  for port in 443 ${DATABASE_EGRESS_PORTS}; do
    [[ "${port}" =~ ^[0-9]+$ ]] || die "DATABASE_EGRESS_PORTS: ${port} is not a port"
    if grep -qE "^tcp${t}${port}${t}${port}${t}(.*,)?0\.0\.0\.0/0" <<<"${egress}"; then
      ok "egress tcp ${port}"
    else
      description="Postgres (Supabase)"
      [[ "${port}" != 443 ]] || description="AWS APIs and ECR and S3"
      change "egress tcp ${port} to 0.0.0.0/0 (${description})"
      run aws ec2 authorize-security-group-egress --group-id "${SECURITY_GROUP_ID}" --ip-permissions \
        "IpProtocol=tcp,FromPort=${port},ToPort=${port},IpRanges=[{CidrIp=0.0.0.0/0,Description=${description}}]" >/dev/null
    fi
  done
}

# --- service ----------------------------------------------------------------

setup_service() {
  local current groups
  current="$(aws ecs describe-services --cluster "${CLUSTER_NAME}" --services "${SERVICE_NAME}" \
    --query "services[?status=='ACTIVE'] | [0].[serviceName, join(',', networkConfiguration.awsvpcConfiguration.securityGroups || \`[]\`)]" \
    --output text 2>/dev/null || echo None)"
  if [[ "${current}" != None* ]]; then
    groups="${current#*$'\t'}"
    if [[ ",${groups}," == *",${SECURITY_GROUP_ID},"* ]]; then
      ok "service ${SERVICE_NAME} in ${CLUSTER_NAME}"
    else
      change "service ${SERVICE_NAME}: network configuration (security group ${SECURITY_GROUP_ID})"
      run aws ecs update-service --cluster "${CLUSTER_NAME}" --service "${SERVICE_NAME}" \
        --network-configuration "awsvpcConfiguration={subnets=[${SUBNET_IDS}],securityGroups=[${SECURITY_GROUP_ID}],assignPublicIp=${ASSIGN_PUBLIC_IP}}" >/dev/null
    fi
    return
  fi

  # The service needs a task definition to exist: reuse the family's latest
  # revision, or register a first one (never started: 0 tasks).
  local arn
  if arn="$(aws ecs describe-task-definition --task-definition "${TASK_FAMILY}" \
    --query taskDefinition.taskDefinitionArn --output text 2>/dev/null)"; then
    ok "task definition ${arn##*/}"
  else
    ensure_task_definition
    arn="${TASK_DEFINITION_ARN}"
  fi

  local -a balancers=()
  if [[ -n "${CANVAS_TARGET_GROUP_ARN:-}" || -n "${ORCHESTRATOR_TARGET_GROUP_ARN:-}" ]]; then
    require_vars CANVAS_TARGET_GROUP_ARN ORCHESTRATOR_TARGET_GROUP_ARN
    balancers=(--load-balancers
      "targetGroupArn=${CANVAS_TARGET_GROUP_ARN},containerName=canvas-service,containerPort=9000"
      "targetGroupArn=${ORCHESTRATOR_TARGET_GROUP_ARN},containerName=orchestrator,containerPort=8080"
      --health-check-grace-period-seconds 60)
  fi
  change "create service ${SERVICE_NAME} in ${CLUSTER_NAME} (Fargate, 0 tasks until the first deploy)"
  run aws ecs create-service --cluster "${CLUSTER_NAME}" --service-name "${SERVICE_NAME}" \
    --task-definition "${arn}" --desired-count 0 --launch-type FARGATE --platform-version LATEST \
    --network-configuration "awsvpcConfiguration={subnets=[${SUBNET_IDS}],securityGroups=[${SECURITY_GROUP_ID}],assignPublicIp=${ASSIGN_PUBLIC_IP}}" \
    --deployment-configuration "deploymentCircuitBreaker={enable=true,rollback=true},maximumPercent=200,minimumHealthyPercent=100" \
    --enable-ecs-managed-tags --propagate-tags SERVICE --tags "key=Project,value=${APP_NAME}" \
    ${balancers[@]+"${balancers[@]}"} >/dev/null
}

setup_cluster
setup_network
setup_service
finish

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Creates (or brings in line) the AWS resources the two services use.
# Idempotent: what exists and is as wanted is left alone ("ok: …"), what is
# missing or different is created or set ("CHANGE: …"); a second run changes
# nothing. Existing production resources (the bucket, the task_store table)
# are adopted, never recreated, and rules that others added to them are kept.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: deploy/provision-aws.sh [--dry-run] [--env-file FILE]

Creates or updates, in AWS_REGION:
  S3 bucket S3_BUCKET      public access blocked, ACLs off, SSE-S3, CORS for
                           CORS_ORIGINS (GET/HEAD), incomplete multipart
                           uploads aborted after 1 day
  SQS queues               GPU_QUEUE_NAME and CPU_QUEUE_NAME, each with a
                           dead-letter queue (<name>-dlq) and a redrive policy:
                           VisibilityTimeout QUEUE_VISIBILITY_TIMEOUT (300 s),
                           maxReceiveCount QUEUE_MAX_RECEIVE_COUNT (3)
  DynamoDB DYNAMODB_TABLE  on demand, key task_id, GSI status-created_at-index,
                           TTL on expires_at, point-in-time recovery
  CloudWatch log group     LOG_GROUP, LOG_RETENTION_DAYS (30) days
  Secrets Manager          DATABASE_URL_SECRET_NAME (value from DATABASE_URL,
                           needed only when the secret does not exist yet) and
                           ADMIN_TOKEN_SECRET_NAME (ADMIN_TOKEN, or generated)
  IAM roles                TASK_ROLE_NAME, EXECUTION_ROLE_NAME with the policies
                           in deploy/*-policy.json

Required: AWS_REGION (or AWS_DEFAULT_REGION), S3_BUCKET (or S3_BUCKET_NAME,
AWS_S3_BUCKET), CORS_ORIGINS (comma-separated frontend origins),
GPU_INSTANCE_ID (the GPU host the orchestrator starts and stops).
Optional: CLOUDFRONT_DISTRIBUTION_ARN (the CDN in front of the bucket: a
bucket policy lets it read objects, if the bucket has no policy yet), APP_NAME (canvas-backend; prefix of every default name),
DYNAMODB_TABLE (task_store), GPU_QUEUE_NAME, CPU_QUEUE_NAME, LOG_GROUP,
LOG_RETENTION_DAYS, TASK_ROLE_NAME, EXECUTION_ROLE_NAME, ECR_REPO_PREFIX,
DATABASE_URL_SECRET_NAME, ADMIN_TOKEN_SECRET_NAME, AWS_ACCOUNT_ID.
--dry-run shows the changes without making them.
EOF
}

parse_args "$@"
load_settings
require_vars S3_BUCKET CORS_ORIGINS GPU_INSTANCE_ID
QUEUE_VISIBILITY_TIMEOUT="${QUEUE_VISIBILITY_TIMEOUT:-300}"
QUEUE_MAX_RECEIVE_COUNT="${QUEUE_MAX_RECEIVE_COUNT:-3}"
QUEUE_RETENTION_SECONDS="${QUEUE_RETENTION_SECONDS:-345600}"
DLQ_RETENTION_SECONDS="${DLQ_RETENTION_SECONDS:-1209600}"
LOG_RETENTION_DAYS="${LOG_RETENTION_DAYS:-30}"
STATUS_INDEX="status-created_at-index"
TTL_ATTRIBUTE="expires_at"
LIFECYCLE_RULE_ID="abort-incomplete-multipart-uploads"
for n in QUEUE_VISIBILITY_TIMEOUT QUEUE_MAX_RECEIVE_COUNT QUEUE_RETENTION_SECONDS DLQ_RETENTION_SECONDS LOG_RETENTION_DAYS; do
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "${n}=${!n} is not a positive whole number"
done
[[ "${GPU_INSTANCE_ID}" =~ ^i-[0-9a-f]{8,17}$ ]] || die "GPU_INSTANCE_ID=${GPU_INSTANCE_ID} is not an EC2 instance id (i-…)"
resolve_account
scratch_dir
TAGS_SQS="Project=${APP_NAME}"

log "account ${AWS_ACCOUNT_ID}, region ${AWS_REGION}, app ${APP_NAME}"

# --- S3 ---------------------------------------------------------------------

cors_json() {
  local origin first=1
  local -a origins
  IFS=',' read -r -a origins <<<"${CORS_ORIGINS}"
  printf '{"CORSRules":[{"AllowedOrigins":['
  for origin in "${origins[@]}"; do
    origin="${origin//[[:space:]]/}"
    [[ -n "${origin}" ]] || continue
    [[ "${origin}" =~ ^(\*|https?://[^\",/]+)$ ]] || die "CORS_ORIGINS: ${origin} is not an origin (scheme://host[:port], or *)"
    ((first)) || printf ','
    printf '"%s"' "${origin}"
    first=0
  done
  printf '],"AllowedMethods":["GET","HEAD"],"AllowedHeaders":["*"],'
  printf '"ExposeHeaders":["ETag","Content-Length","Content-Type"],"MaxAgeSeconds":3600}]}\n'
}

# The CORS rule as get-bucket-cors shows it, one line, for comparing.
# shellcheck disable=SC2016 # JMESPath literals, not shell expansions
cors_summary_query='CORSRules[].[join(`,`, AllowedOrigins), join(`,`, AllowedMethods), join(`,`, AllowedHeaders || `[]`), join(`,`, ExposeHeaders || `[]`), to_string(MaxAgeSeconds)]'

lifecycle_rule='{"ID":"'"${LIFECYCLE_RULE_ID}"'","Status":"Enabled","Filter":{"Prefix":""},"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}}'

provision_bucket() {
  local err out
  err="${SCRATCH}/head-bucket.err"
  if aws s3api head-bucket --bucket "${S3_BUCKET}" >/dev/null 2>"${err}"; then
    ok "bucket ${S3_BUCKET} exists"
  elif grep -qE '\((404|NoSuchBucket)\)|Not Found' "${err}"; then
    change "create bucket ${S3_BUCKET}"
    if [[ "${AWS_REGION}" == us-east-1 ]]; then
      run aws s3api create-bucket --bucket "${S3_BUCKET}" --object-ownership BucketOwnerEnforced >/dev/null
    else
      run aws s3api create-bucket --bucket "${S3_BUCKET}" --object-ownership BucketOwnerEnforced \
        --create-bucket-configuration "LocationConstraint=${AWS_REGION}" >/dev/null
    fi
  elif grep -qE '\(403\)|Forbidden' "${err}"; then
    die "bucket ${S3_BUCKET} exists but these credentials may not use it (another account's bucket? choose another S3_BUCKET)"
  else
    die "head-bucket ${S3_BUCKET} failed: $(cat "${err}")"
  fi

  out="$(aws s3api get-public-access-block --bucket "${S3_BUCKET}" \
    --query 'PublicAccessBlockConfiguration.[BlockPublicAcls,IgnorePublicAcls,BlockPublicPolicy,RestrictPublicBuckets]' \
    --output text 2>/dev/null || true)"
  if [[ "${out}" == $'True\tTrue\tTrue\tTrue' ]]; then
    ok "bucket public access blocked"
  else
    change "block all public access to ${S3_BUCKET}"
    run aws s3api put-public-access-block --bucket "${S3_BUCKET}" --public-access-block-configuration \
      BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
  fi

  out="$(aws s3api get-bucket-encryption --bucket "${S3_BUCKET}" \
    --query 'ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm' \
    --output text 2>/dev/null || true)"
  if [[ "${out}" == AES256 || "${out}" == aws:kms* ]]; then
    ok "bucket encryption ${out}"
  else
    change "default encryption SSE-S3 on ${S3_BUCKET}"
    run aws s3api put-bucket-encryption --bucket "${S3_BUCKET}" --server-side-encryption-configuration \
      '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'
  fi

  cors_json >"${SCRATCH}/cors.json"
  local wanted
  # What get-bucket-cors would show for our rule.
  wanted="$(tr -d '[:space:]' <<<"${CORS_ORIGINS}" | sed 's/,,*/,/g; s/^,//; s/,$//')"$'\tGET,HEAD\t*\tETag,Content-Length,Content-Type\t3600'
  out="$(aws s3api get-bucket-cors --bucket "${S3_BUCKET}" --query "${cors_summary_query}" --output text 2>/dev/null || true)"
  if [[ "${out}" == "${wanted}" ]]; then
    ok "bucket CORS allows GET/HEAD from ${CORS_ORIGINS}"
  else
    change "bucket CORS: GET/HEAD from ${CORS_ORIGINS}"
    run aws s3api put-bucket-cors --bucket "${S3_BUCKET}" --cors-configuration "file://${SCRATCH}/cors.json"
  fi

  # CloudFront (origin access control) reads the private bucket: the bucket
  # policy is one document, so it is only written when the bucket has none.
  if [[ -n "${CLOUDFRONT_DISTRIBUTION_ARN:-}" ]]; then
    [[ "${CLOUDFRONT_DISTRIBUTION_ARN}" =~ ^arn:aws:cloudfront::[0-9]{12}:distribution/[A-Z0-9]+$ ]] ||
      die "CLOUDFRONT_DISTRIBUTION_ARN=${CLOUDFRONT_DISTRIBUTION_ARN} is not a CloudFront distribution ARN"
    out="$(aws s3api get-bucket-policy --bucket "${S3_BUCKET}" --query Policy --output text 2>/dev/null || true)"
    if [[ "${out}" == *CloudFrontReadsObjects* && "${out}" == *"${CLOUDFRONT_DISTRIBUTION_ARN}"* ]]; then
      ok "bucket policy lets ${CLOUDFRONT_DISTRIBUTION_ARN##*/} read objects"
    elif [[ -n "${out}" && "${out}" != None ]]; then
      log "note: bucket ${S3_BUCKET} has a policy of its own; add a statement allowing cloudfront.amazonaws.com s3:GetObject with aws:SourceArn ${CLOUDFRONT_DISTRIBUTION_ARN} if it lacks one"
    else
      printf '%s\n' "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"CloudFrontReadsObjects\",\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"cloudfront.amazonaws.com\"},\"Action\":\"s3:GetObject\",\"Resource\":\"arn:aws:s3:::${S3_BUCKET}/*\",\"Condition\":{\"StringEquals\":{\"AWS:SourceArn\":\"${CLOUDFRONT_DISTRIBUTION_ARN}\"}}}]}" >"${SCRATCH}/bucket-policy.json"
      change "bucket policy: CloudFront distribution ${CLOUDFRONT_DISTRIBUTION_ARN##*/} reads objects"
      run aws s3api put-bucket-policy --bucket "${S3_BUCKET}" --policy "file://${SCRATCH}/bucket-policy.json"
    fi
  fi

  # The lifecycle configuration is one document: our rule is added to the
  # rules already there, which are kept.
  local rules days
  if rules="$(aws s3api get-bucket-lifecycle-configuration --bucket "${S3_BUCKET}" --query 'Rules' --output json 2>"${err}")"; then
    days="$(aws s3api get-bucket-lifecycle-configuration --bucket "${S3_BUCKET}" \
      --query "Rules[?ID=='${LIFECYCLE_RULE_ID}' && Status=='Enabled'] | [0].AbortIncompleteMultipartUpload.DaysAfterInitiation" \
      --output text)"
    if [[ "${days}" == 1 ]]; then
      ok "bucket lifecycle aborts incomplete multipart uploads after 1 day"
      return
    fi
    if grep -q "\"${LIFECYCLE_RULE_ID}\"" <<<"${rules}"; then
      die "bucket ${S3_BUCKET} has a lifecycle rule ${LIFECYCLE_RULE_ID} that differs from ours; remove or fix it by hand"
    fi
    rules="${rules%]*}"
    if grep -q '{' <<<"${rules}"; then
      rules="${rules},${lifecycle_rule}]"
    else
      rules="[${lifecycle_rule}]"
    fi
  elif grep -q NoSuchLifecycleConfiguration "${err}"; then
    rules="[${lifecycle_rule}]"
  else
    die "get-bucket-lifecycle-configuration ${S3_BUCKET} failed: $(cat "${err}")"
  fi
  printf '{"Rules":%s}\n' "${rules}" >"${SCRATCH}/lifecycle.json"
  change "bucket lifecycle: abort incomplete multipart uploads after 1 day"
  run aws s3api put-bucket-lifecycle-configuration --bucket "${S3_BUCKET}" \
    --lifecycle-configuration "file://${SCRATCH}/lifecycle.json"
}

# --- SQS --------------------------------------------------------------------

queue_arn() { printf 'arn:aws:sqs:%s:%s:%s' "${AWS_REGION}" "${AWS_ACCOUNT_ID}" "$1"; }

# ensure_queue NAME RETENTION [DLQ_NAME]
ensure_queue() {
  local name="$1" retention="$2" dlq="${3:-}" url attrs current wanted redrive=""
  if [[ -n "${dlq}" ]]; then
    redrive="{\"deadLetterTargetArn\":\"$(queue_arn "${dlq}")\",\"maxReceiveCount\":${QUEUE_MAX_RECEIVE_COUNT}}"
    attrs="{\"VisibilityTimeout\":\"${QUEUE_VISIBILITY_TIMEOUT}\",\"MessageRetentionPeriod\":\"${retention}\",\"SqsManagedSseEnabled\":\"true\",\"RedrivePolicy\":\"${redrive//\"/\\\"}\"}"
    wanted="${QUEUE_VISIBILITY_TIMEOUT} ${retention} $(queue_arn "${dlq}") ${QUEUE_MAX_RECEIVE_COUNT}"
  else
    attrs="{\"VisibilityTimeout\":\"${QUEUE_VISIBILITY_TIMEOUT}\",\"MessageRetentionPeriod\":\"${retention}\",\"SqsManagedSseEnabled\":\"true\"}"
    wanted="${QUEUE_VISIBILITY_TIMEOUT} ${retention} - -"
  fi
  printf '%s\n' "${attrs}" >"${SCRATCH}/queue-${name}.json"

  if ! url="$(aws sqs get-queue-url --queue-name "${name}" --query QueueUrl --output text 2>/dev/null)"; then
    change "create queue ${name}${dlq:+ (dead letters to ${dlq} after ${QUEUE_MAX_RECEIVE_COUNT} receives)}"
    run aws sqs create-queue --queue-name "${name}" --attributes "file://${SCRATCH}/queue-${name}.json" \
      --tags "${TAGS_SQS}" >/dev/null
    return
  fi
  local vis ret policy arn max
  read -r vis ret policy < <(aws sqs get-queue-attributes --queue-url "${url}" \
    --attribute-names VisibilityTimeout MessageRetentionPeriod RedrivePolicy \
    --query 'Attributes.[VisibilityTimeout, MessageRetentionPeriod, RedrivePolicy]' --output text | tr '\t' ' ')
  arn="-"
  max="-"
  if [[ "${policy}" =~ \"deadLetterTargetArn\":\ *\"([^\"]+)\" ]]; then arn="${BASH_REMATCH[1]}"; fi
  if [[ "${policy}" =~ \"maxReceiveCount\":\ *\"?([0-9]+) ]]; then max="${BASH_REMATCH[1]}"; fi
  current="${vis} ${ret} ${arn} ${max}"
  if [[ "${current}" == "${wanted}" ]]; then
    ok "queue ${name} (visibility ${vis} s${dlq:+, redrive to ${dlq} after ${max} receives})"
  elif [[ -z "${dlq}" && "${vis} ${ret}" == "${QUEUE_VISIBILITY_TIMEOUT} ${retention}" ]]; then
    ok "queue ${name} (visibility ${vis} s)"
  else
    change "queue ${name}: set visibility ${QUEUE_VISIBILITY_TIMEOUT} s, retention ${retention} s${dlq:+, redrive to ${dlq} after ${QUEUE_MAX_RECEIVE_COUNT} receives} (was: ${current})"
    run aws sqs set-queue-attributes --queue-url "${url}" --attributes "file://${SCRATCH}/queue-${name}.json"
  fi
}

# --- DynamoDB ---------------------------------------------------------------

provision_table() {
  local described status billing rcu wcu keys ttl pitr throughput=""
  if ! described="$(aws dynamodb describe-table --table-name "${DYNAMODB_TABLE}" \
    --query 'Table.[TableStatus, BillingModeSummary.BillingMode, ProvisionedThroughput.ReadCapacityUnits, ProvisionedThroughput.WriteCapacityUnits]' \
    --output text 2>/dev/null)"; then
    change "create table ${DYNAMODB_TABLE} (on demand, GSI ${STATUS_INDEX})"
    run aws dynamodb create-table --table-name "${DYNAMODB_TABLE}" \
      --billing-mode PAY_PER_REQUEST \
      --attribute-definitions AttributeName=task_id,AttributeType=S AttributeName=status,AttributeType=S AttributeName=created_at,AttributeType=N \
      --key-schema AttributeName=task_id,KeyType=HASH \
      --global-secondary-indexes "IndexName=${STATUS_INDEX},KeySchema=[{AttributeName=status,KeyType=HASH},{AttributeName=created_at,KeyType=RANGE}],Projection={ProjectionType=ALL}" \
      --deletion-protection-enabled \
      --tags "Key=Project,Value=${APP_NAME}" >/dev/null
    run aws dynamodb wait table-exists --table-name "${DYNAMODB_TABLE}"
  else
    read -r status billing rcu wcu <<<"${described}"
    ok "table ${DYNAMODB_TABLE} exists (${status})"
    if [[ "${billing}" != PAY_PER_REQUEST ]]; then
      # (Old tables have no BillingModeSummary: they are provisioned.)
      log "note: table ${DYNAMODB_TABLE} has provisioned capacity (${rcu} RCU, ${wcu} WCU), not on demand; left as it is"
      throughput=",\"ProvisionedThroughput\":{\"ReadCapacityUnits\":${rcu},\"WriteCapacityUnits\":${wcu}}"
    fi
    keys="$(aws dynamodb describe-table --table-name "${DYNAMODB_TABLE}" \
      --query "Table.GlobalSecondaryIndexes[?IndexName=='${STATUS_INDEX}'] | [0].KeySchema[].[AttributeName, KeyType]" \
      --output text | tr '\t\n' '  ' | sed 's/ *$//')"
    if [[ "${keys}" == "status HASH created_at RANGE" ]]; then
      ok "index ${STATUS_INDEX} (status HASH, created_at RANGE)"
    elif [[ -z "${keys}" || "${keys}" == None ]]; then
      change "add index ${STATUS_INDEX} to ${DYNAMODB_TABLE}"
      run aws dynamodb update-table --table-name "${DYNAMODB_TABLE}" \
        --attribute-definitions AttributeName=status,AttributeType=S AttributeName=created_at,AttributeType=N \
        --global-secondary-index-updates "[{\"Create\":{\"IndexName\":\"${STATUS_INDEX}\",\"KeySchema\":[{\"AttributeName\":\"status\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"created_at\",\"KeyType\":\"RANGE\"}],\"Projection\":{\"ProjectionType\":\"ALL\"}${throughput}}}]" >/dev/null
      # TTL and backups are refused while the table is UPDATING.
      run aws dynamodb wait table-exists --table-name "${DYNAMODB_TABLE}"
    else
      die "table ${DYNAMODB_TABLE}: index ${STATUS_INDEX} has keys '${keys}', the services need 'status HASH created_at RANGE'"
    fi
  fi

  ttl="$(aws dynamodb describe-time-to-live --table-name "${DYNAMODB_TABLE}" \
    --query 'TimeToLiveDescription.[TimeToLiveStatus, AttributeName]' --output text 2>/dev/null || echo "ABSENT None")"
  case "${ttl}" in
    ENABLED$'\t'"${TTL_ATTRIBUTE}" | ENABLING$'\t'"${TTL_ATTRIBUTE}") ok "TTL on ${TTL_ATTRIBUTE}" ;;
    ENABLED* | ENABLING*) die "table ${DYNAMODB_TABLE} has TTL on another attribute (${ttl}); the idempotency records expire through ${TTL_ATTRIBUTE}" ;;
    *)
      change "TTL on ${DYNAMODB_TABLE}.${TTL_ATTRIBUTE}"
      run aws dynamodb update-time-to-live --table-name "${DYNAMODB_TABLE}" \
        --time-to-live-specification "Enabled=true,AttributeName=${TTL_ATTRIBUTE}" >/dev/null
      ;;
  esac

  pitr="$(aws dynamodb describe-continuous-backups --table-name "${DYNAMODB_TABLE}" \
    --query 'ContinuousBackupsDescription.PointInTimeRecoveryDescription.PointInTimeRecoveryStatus' \
    --output text 2>/dev/null || echo ABSENT)"
  if [[ "${pitr}" == ENABLED ]]; then
    ok "point-in-time recovery"
  else
    change "point-in-time recovery on ${DYNAMODB_TABLE}"
    run aws dynamodb update-continuous-backups --table-name "${DYNAMODB_TABLE}" \
      --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true >/dev/null
  fi
}

# --- CloudWatch Logs --------------------------------------------------------

provision_log_group() {
  local found retention
  read -r found retention < <(aws logs describe-log-groups --log-group-name-prefix "${LOG_GROUP}" \
    --query "[length(logGroups[?logGroupName=='${LOG_GROUP}']), logGroups[?logGroupName=='${LOG_GROUP}'] | [0].retentionInDays]" \
    --output text)
  if [[ "${found}" == 0 ]]; then
    change "create log group ${LOG_GROUP}"
    run aws logs create-log-group --log-group-name "${LOG_GROUP}" --tags "Project=${APP_NAME}"
    retention=None
  else
    ok "log group ${LOG_GROUP}"
  fi
  if [[ "${retention}" == "${LOG_RETENTION_DAYS}" ]]; then
    ok "log retention ${LOG_RETENTION_DAYS} days"
  else
    change "log retention ${LOG_RETENTION_DAYS} days (was ${retention})"
    run aws logs put-retention-policy --log-group-name "${LOG_GROUP}" --retention-in-days "${LOG_RETENTION_DAYS}"
  fi
}

# --- Secrets Manager --------------------------------------------------------

# ensure_secret NAME VARIABLE DESCRIPTION: creates the secret from the
# variable's value when it does not exist; an existing secret is never
# overwritten (rotate with `aws secretsmanager put-secret-value`).
ensure_secret() {
  local name="$1" variable="$2" description="$3" deleted
  if deleted="$(aws secretsmanager describe-secret --secret-id "${name}" --query DeletedDate --output text 2>/dev/null)"; then
    [[ "${deleted}" == None ]] ||
      die "secret ${name} is scheduled for deletion; restore it: aws secretsmanager restore-secret --secret-id ${name}"
    ok "secret ${name} exists (value unchanged)"
    return
  fi
  [[ -n "${!variable:-}" ]] || die "secret ${name} does not exist yet: set ${variable} to its value for this first run"
  (umask 077 && printf '%s' "${!variable}" >"${SCRATCH}/secret")
  change "create secret ${name} (${description})"
  run aws secretsmanager create-secret --name "${name}" --description "${description}" \
    --secret-string "file://${SCRATCH}/secret" --tags "Key=Project,Value=${APP_NAME}" >/dev/null
  rm -f "${SCRATCH}/secret"
}

# --- IAM --------------------------------------------------------------------

# ensure_role ROLE TRUST_TEMPLATE POLICY_NAME POLICY_TEMPLATE DESCRIPTION
ensure_role() {
  local role="$1" trust policy_name="$3" policy current description="$5"
  trust="$(render "$2")"
  policy="$(render "$4")"
  printf '%s\n' "${trust}" >"${SCRATCH}/trust-${role}.json"
  printf '%s\n' "${policy}" >"${SCRATCH}/policy-${role}.json"
  if current="$(aws iam get-role --role-name "${role}" --query Role.AssumeRolePolicyDocument --output json 2>/dev/null)"; then
    if same_json "${current}" "${trust}"; then
      ok "role ${role}"
    else
      change "role ${role}: trust policy from ${2#"${REPO_ROOT}"/}"
      run aws iam update-assume-role-policy --role-name "${role}" --policy-document "file://${SCRATCH}/trust-${role}.json"
    fi
  else
    change "create role ${role}"
    run aws iam create-role --role-name "${role}" --description "${description}" \
      --assume-role-policy-document "file://${SCRATCH}/trust-${role}.json" \
      --tags "Key=Project,Value=${APP_NAME}" >/dev/null
  fi
  if current="$(aws iam get-role-policy --role-name "${role}" --policy-name "${policy_name}" --query PolicyDocument --output json 2>/dev/null)" &&
    same_json "${current}" "${policy}"; then
    ok "role ${role}: policy ${policy_name}"
  else
    change "role ${role}: policy ${policy_name} from ${4#"${REPO_ROOT}"/}"
    run aws iam put-role-policy --role-name "${role}" --policy-name "${policy_name}" \
      --policy-document "file://${SCRATCH}/policy-${role}.json"
  fi
}

provision_bucket
ensure_queue "${GPU_DLQ_NAME}" "${DLQ_RETENTION_SECONDS}"
ensure_queue "${CPU_DLQ_NAME}" "${DLQ_RETENTION_SECONDS}"
ensure_queue "${GPU_QUEUE_NAME}" "${QUEUE_RETENTION_SECONDS}" "${GPU_DLQ_NAME}"
ensure_queue "${CPU_QUEUE_NAME}" "${QUEUE_RETENTION_SECONDS}" "${CPU_DLQ_NAME}"
provision_table
provision_log_group
if [[ -z "${ADMIN_TOKEN:-}" ]]; then
  # Only used if the secret does not exist yet.
  ADMIN_TOKEN="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
fi
ensure_secret "${DATABASE_URL_SECRET_NAME}" DATABASE_URL "Postgres connection string of canvas-service (Supabase session pooler)"
ensure_secret "${ADMIN_TOKEN_SECRET_NAME}" ADMIN_TOKEN "Bearer token of the orchestrator's POST /api/v1/gpu/start|stop"
ensure_role "${TASK_ROLE_NAME}" "${DEPLOY_DIR}/task-role-trust-policy.json" \
  "${APP_NAME}-task" "${DEPLOY_DIR}/task-role-policy.json" \
  "Credentials of the canvas-service and orchestrator containers"
ensure_role "${EXECUTION_ROLE_NAME}" "${DEPLOY_DIR}/execution-role-trust-policy.json" \
  "${APP_NAME}-execution" "${DEPLOY_DIR}/execution-role-policy.json" \
  "ECS agent: pulls the images, writes the logs, reads the task secrets"

cat >&2 <<EOF
[${SCRIPT_NAME}] the services' settings (the task definition gets them from deploy-to-ecs.sh):
  S3_BUCKET=${S3_BUCKET}
  SQS_QUEUE_URL=https://sqs.${AWS_REGION}.amazonaws.com/${AWS_ACCOUNT_ID}/${GPU_QUEUE_NAME}
  CPU_SQS_QUEUE_URL=https://sqs.${AWS_REGION}.amazonaws.com/${AWS_ACCOUNT_ID}/${CPU_QUEUE_NAME}
  GPU_DLQ_URL=https://sqs.${AWS_REGION}.amazonaws.com/${AWS_ACCOUNT_ID}/${GPU_DLQ_NAME}
  CPU_DLQ_URL=https://sqs.${AWS_REGION}.amazonaws.com/${AWS_ACCOUNT_ID}/${CPU_DLQ_NAME}
  DYNAMODB_TABLE=${DYNAMODB_TABLE}
  GPU_INSTANCE_ID=${GPU_INSTANCE_ID}
EOF
finish

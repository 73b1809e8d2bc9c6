"""Creates in a moto server what the backend expects to find in AWS, so that
`docker compose --profile local up` runs with no AWS account.

Run by the compose service `init` (moto's own image, which has boto3) after
moto is healthy; idempotent, so it can be run again at any time. Reads the
same variables as the services (.env):

  AWS_ENDPOINT_URL                 the moto server (http://moto:5000)
  S3_BUCKET                        bucket, with CORS for CORS_ORIGINS and a
                                   public-read policy (LOCAL ONLY: the browser
                                   fetches objects from moto directly)
  SQS_QUEUE_URL, CPU_SQS_QUEUE_URL the queues (names = last path segment),
  GPU_DLQ_URL, CPU_DLQ_URL         with dead-letter queues and redrive
                                   (VisibilityTimeout 300 s, maxReceiveCount 3)
  DYNAMODB_TABLE                   task table, GSI status-created_at-index, TTL
  GPU_INSTANCE_ID                  a stopped EC2 instance with this id: moto's
                                   ids are random, so its generator is seeded
                                   (MOTO_SEED, 42) right before the instance is
                                   created, which makes the id predictable
"""

import json
import os
import sys
import time
import urllib.request

import boto3
from botocore.exceptions import ClientError

VISIBILITY_TIMEOUT = "300"
MAX_RECEIVE_COUNT = 3
STATUS_INDEX = "status-created_at-index"


def env(name, default=None):
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        sys.exit(f"init-moto: {name} is not set (see .env.docker.example)")
    return default


ENDPOINT = env("AWS_ENDPOINT_URL")
REGION = env("AWS_REGION", env("AWS_DEFAULT_REGION", "us-east-1"))
SESSION = boto3.session.Session(
    aws_access_key_id=env("AWS_ACCESS_KEY_ID", env("AWS_ACCESS_KEY", "testing")),
    aws_secret_access_key=env("AWS_SECRET_ACCESS_KEY", env("AWS_ACCESS_SECRET", "testing")),
    region_name=REGION,
)


def client(service):
    return SESSION.client(service, endpoint_url=ENDPOINT)


def say(message):
    print(f"init-moto: {message}", flush=True)


def wait_for_moto():
    for _ in range(60):
        try:
            urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=2)
            return
        except OSError:
            time.sleep(1)
    sys.exit(f"init-moto: no moto server answers at {ENDPOINT}")


def bucket():
    name = env("S3_BUCKET", env("S3_BUCKET_NAME", env("AWS_S3_BUCKET", "canvas-local")))
    s3 = client("s3")
    try:
        s3.head_bucket(Bucket=name)
    except ClientError:
        kwargs = {} if REGION == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": REGION}}
        s3.create_bucket(Bucket=name, **kwargs)
    origins = [o.strip() for o in env("CORS_ORIGINS", "*").split(",") if o.strip()]
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": origins, "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag", "Content-Length", "Content-Type"],
        "MaxAgeSeconds": 3600}]})
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [{
        "ID": "abort-incomplete-multipart-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    # Local only: in AWS the bucket is private and CloudFront serves it.
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "LocalBrowserReads", "Effect": "Allow", "Principal": "*",
                       "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*"}]}))
    say(f"bucket {name} (objects at http://{name}.s3.localhost:5000/<key>)")


def queue_name(url_variable, default):
    return env(url_variable, default).rstrip("/").rsplit("/", 1)[-1]


def queues():
    sqs = client("sqs")
    pairs = [
        (queue_name("SQS_QUEUE_URL", "canvas-gpu-jobs"), queue_name("GPU_DLQ_URL", "canvas-gpu-jobs-dlq")),
        (queue_name("CPU_SQS_QUEUE_URL", env("CPU_QUEUE_URL", "canvas-cpu-jobs")),
         queue_name("CPU_DLQ_URL", "canvas-cpu-jobs-dlq")),
    ]
    for main, dlq in pairs:
        dlq_url = sqs.create_queue(QueueName=dlq, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {
            "VisibilityTimeout": VISIBILITY_TIMEOUT,
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
        }
        try:
            url = sqs.get_queue_url(QueueName=main)["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        except ClientError:
            url = sqs.create_queue(QueueName=main, Attributes=attributes)["QueueUrl"]
        say(f"queue {main} → dead letters to {dlq} after {MAX_RECEIVE_COUNT} receives")


def table():
    name = env("DYNAMODB_TABLE", "task_store")
    dynamodb = client("dynamodb")
    try:
        dynamodb.describe_table(TableName=name)
    except ClientError:
        dynamodb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "task_id", "AttributeType": "S"},
                {"AttributeName": "status", "AttributeType": "S"},
                {"AttributeName": "created_at", "AttributeType": "N"},
            ],
            KeySchema=[{"AttributeName": "task_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[{
                "IndexName": STATUS_INDEX,
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                              {"AttributeName": "created_at", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }],
        )
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    say(f"table {name} (GSI {STATUS_INDEX}, TTL on expires_at)")


def gpu_instance():
    wanted = os.environ.get("GPU_INSTANCE_ID", "").strip()
    if not wanted:
        say("GPU_INSTANCE_ID not set: no GPU host (the orchestrator treats GPU jobs as always runnable)")
        return
    ec2 = client("ec2")
    try:
        found = ec2.describe_instances(InstanceIds=[wanted])["Reservations"]
    except ClientError:
        found = []
    if not found:
        seed = env("MOTO_SEED", "42")
        request = urllib.request.Request(f"{ENDPOINT}/moto-api/seed?a={seed}", method="POST")
        urllib.request.urlopen(request, timeout=5)
        created = ec2.run_instances(
            ImageId="ami-12c6146b", InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Name", "Value": "canvas-gpu-local"}]}],
        )["Instances"][0]["InstanceId"]
        if created != wanted:
            ec2.terminate_instances(InstanceIds=[created])
            sys.exit(f"init-moto: moto (seed {seed}) made instance {created}, not {wanted}: "
                     f"set GPU_INSTANCE_ID={created} in .env (another moto version?)")
        ec2.stop_instances(InstanceIds=[wanted])
        say(f"GPU host {wanted} created, stopped (the orchestrator starts it for GPU jobs)")
    else:
        state = found[0]["Instances"][0]["State"]["Name"]
        say(f"GPU host {wanted} exists ({state})")


def main():
    wait_for_moto()
    bucket()
    queues()
    table()
    gpu_instance()
    say("done")


if __name__ == "__main__":
    main()

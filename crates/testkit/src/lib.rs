//! Fixtures for tests on real parts, shared by every crate's tests: a fresh
//! Postgres database, and on moto a bucket, a queue with its dead-letter
//! queue, the `task_store` table with its GSI, a stopped EC2 instance; and
//! [`http::TestClient`], which drives a service's router in-process.
//!
//! When Postgres or moto is not reachable, [`live_backends`] says so loudly
//! and the test skips — unless `REQUIRE_LIVE_BACKENDS=1`, where it fails.
//! Tests panic freely here: a broken fixture is a failed test.

pub mod auth;
pub mod fault_proxy;
pub mod http;

pub use fault_proxy::FaultProxy;

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// The moto server the tests use (`MOTO_URL`, default 127.0.0.1:5000).
pub fn moto_url() -> String {
    std::env::var("MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned())
}

/// An admin URL of the Postgres server (`TEST_DATABASE_URL`).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn required() -> bool {
    std::env::var("REQUIRE_LIVE_BACKENDS").is_ok_and(|v| v == "1" || v == "true")
}

async fn postgres_up() -> bool {
    let Ok(options) = postgres_admin_url().parse::<sqlx::postgres::PgConnectOptions>() else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            sqlx::ConnectOptions::connect(&options)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn moto_up() -> bool {
    reqwest::Client::new()
        .get(format!("{}/moto-api/", moto_url()))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok()
}

/// Which live backends a test needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub postgres: bool,
    pub moto: bool,
}

/// Whether the needed backends answer; panics when they must
/// (`REQUIRE_LIVE_BACKENDS=1`) and do not, else prints a loud skip notice.
pub async fn live_backends(needs: Needs) -> bool {
    let mut missing = vec![];
    if needs.postgres && !postgres_up().await {
        missing.push(format!("PostgreSQL at {}", postgres_admin_url()));
    }
    if needs.moto && !moto_up().await {
        missing.push(format!("moto at {}", moto_url()));
    }
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    if required() {
        panic!("REQUIRE_LIVE_BACKENDS=1 but {missing} is not reachable");
    }
    eprintln!(
        "\n!!! SKIPPED: {missing} is not reachable; run scripts/test.sh to test on live backends !!!\n"
    );
    false
}

/// A short unique name with a prefix.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A fresh, empty database on the Postgres server; its URL.
pub async fn create_database() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = format!("canvas_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the Postgres server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// The SDK configuration for moto.
pub async fn aws() -> aws_config::SdkConfig {
    common::aws::AwsSettings::emulator(&moto_url())
        .sdk_config()
        .await
}

pub async fn s3_client() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws().await)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket; its name.
pub async fn create_bucket() -> String {
    let name = unique("canvas-test");
    s3_client()
        .await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create a bucket on moto");
    name
}

/// Polls `check` every 100 ms until it holds: true, or false once `limit`
/// has passed. For "recovers by itself" assertions that must not sleep a
/// fixed time.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Awaits `request` and says how long it took.
pub async fn timed<F: std::future::Future>(request: F) -> (F::Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let out = request.await;
    (out, started.elapsed())
}

/// A loopback port that was free a moment ago, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Delays every message sent to `queue_url` by `seconds` (SQS `DelaySeconds`):
/// a test that must watch a job while it is still `pending` gets that long
/// before a worker can take it.
pub async fn delay_queue(queue_url: &str, seconds: u32) {
    aws_sdk_sqs::Client::new(&aws().await)
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::DelaySeconds, seconds.to_string())
        .send()
        .await
        .unwrap();
}

/// A queue with its dead-letter queue and a redrive policy after
/// `max_receives`, as production has; (queue URL, DLQ URL).
pub async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receives: u32,
) -> (String, String) {
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap().to_owned();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    (queue.queue_url().unwrap().to_owned(), dlq_url)
}

/// The `task_store` table with the production GSI `status-created_at-index`.
pub async fn create_table(dynamo: &aws_sdk_dynamodb::Client, name: &str) {
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    dynamo
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("task_id", ScalarAttributeType::S))
        .attribute_definitions(attribute("status", ScalarAttributeType::S))
        .attribute_definitions(attribute("created_at", ScalarAttributeType::N))
        .key_schema(key("task_id", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(common::aws::TASK_STATUS_INDEX)
                .key_schema(key("status", KeyType::Hash))
                .key_schema(key("created_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The environment of an orchestrator on moto: fresh GPU and CPU queues
/// (with DLQs, redrive after `max_receives`) and a fresh table.
pub async fn orchestrator_aws_env(max_receives: u32) -> Vec<(String, String)> {
    let sdk = aws().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (gpu, gpu_dlq) = create_queue_pair(&sqs, &unique("gpu"), max_receives).await;
    let (cpu, cpu_dlq) = create_queue_pair(&sqs, &unique("cpu"), max_receives).await;
    let table = unique("task_store");
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await;
    let mut env = emulator_env();
    env.extend([
        ("SQS_QUEUE_URL".to_owned(), gpu),
        ("CPU_SQS_QUEUE_URL".to_owned(), cpu),
        ("GPU_DLQ_URL".to_owned(), gpu_dlq),
        ("CPU_DLQ_URL".to_owned(), cpu_dlq),
        ("DYNAMODB_TABLE".to_owned(), table),
    ]);
    env
}

/// The AWS variables that point a service at moto.
pub fn emulator_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", moto_url()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A stopped instance, as the GPU host is between jobs; its id.
pub async fn create_stopped_instance(ec2: &aws_sdk_ec2::Client) -> String {
    let run = ec2
        .run_instances()
        .image_id("ami-12345678")
        .instance_type(aws_sdk_ec2::types::InstanceType::G4dnXlarge)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let id = run.instances()[0].instance_id().unwrap().to_owned();
    ec2.stop_instances().instance_ids(&id).send().await.unwrap();
    id
}

pub async fn instance_state(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let out = ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default()
}

/// A local endpoint that accepts connections and never answers: a dependency
/// that hangs rather than refuses. Connections are held until the returned
/// listener task ends (with the test's runtime). Its `http://` address.
pub async fn unresponsive_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

/// Declares each test body once per backend set, so the same assertions run
/// on both: `mod embedded` calls it with the `embedded:` builder, and the
/// second module (named by the caller) with what the live builder yields,
/// skipping the test when that is `None` (live backends not reachable).
///
/// ```ignore
/// testkit::on_both_backends!(
///     embedded: super::TestApp::embedded(),
///     live: super::TestApp::live();
///     upload_works, delete_works,
/// );
/// ```
#[macro_export]
macro_rules! on_both_backends {
    (embedded: $embedded:expr, $live:ident: $live_builder:expr; $($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($embedded).await
                }
            )*
        }
        mod $live {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(builder) = $live_builder.await {
                        super::$name(builder).await
                    }
                }
            )*
        }
    };
}

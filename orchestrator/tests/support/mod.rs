//! Starts the orchestrator the way `main` does — `OrchestratorConfig::from_env`
//! then `App::from_config` — on real parts: SQLite always; SQS, DynamoDB and
//! EC2 on moto when it is reachable (each test gets its own queues, table and
//! instance). With `REQUIRE_LIVE_BACKENDS=1` an unreachable moto fails the
//! test instead of skipping it. `Adapter` plays the old Python worker
//! adapter against the same parts.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod inference;

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;
use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use common::config::Env;
use orchestrator::{App, OrchestratorConfig, router};
use serde_json::Value;
use tempfile::TempDir;
use testkit::http::TestClient;

pub const FRONTEND: &str = "http://localhost:3000";
/// The CDN origin the tests' image URLs point at, listed in
/// `IMAGE_URL_ORIGINS` (listed on purpose, so the worker does not resolve it).
pub const IMAGE_ORIGIN: &str = "https://cdn.example.test";
/// Receives before a message is dead-lettered, in every test queue.
pub const MAX_RECEIVES: u32 = 2;

#[allow(unused_imports)] // each test binary uses some of them
pub use testkit::{aws, create_stopped_instance, http::TestResponse, instance_state, moto_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    Embedded,
    Aws,
}

pub struct TestAppBuilder {
    backends: Backends,
    env: Vec<(String, String)>,
}

impl TestAppBuilder {
    pub fn backends(&self) -> Backends {
        self.backends
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Back to the zero-configuration image origins (or whatever else the
    /// test sets).
    pub fn without_image_origins(mut self) -> Self {
        self.env.retain(|(k, _)| k != "IMAGE_URL_ORIGINS");
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut env = self.env;
        // A second orchestrator on the same embedded store names its DATA_DIR.
        if !env.iter().any(|(k, _)| k == "DATA_DIR") {
            env.push(("DATA_DIR".into(), dir.path().display().to_string()));
        }
        let config = OrchestratorConfig::from_env(&Env::from_pairs(env.clone()))
            .expect("valid test configuration");
        let app = Arc::new(App::from_config(&config).await.expect("the app starts"));
        let sdk = match self.backends {
            Backends::Aws => Some(aws().await),
            Backends::Embedded => None,
        };
        TestApp {
            backends: self.backends,
            // Every error, 404 included, carries the CORS headers.
            client: TestClient::new(router(app.clone(), &config.http)).errors_allow_origin("*"),
            app,
            dir,
            env,
            sqs: sdk.as_ref().map(aws_sdk_sqs::Client::new),
            dynamo: sdk.as_ref().map(aws_sdk_dynamodb::Client::new),
        }
    }
}

pub struct TestApp {
    pub backends: Backends,
    pub app: Arc<App>,
    /// The router, and the access token requests carry once signed in.
    client: TestClient,
    pub dir: TempDir,
    pub env: Vec<(String, String)>,
    pub sqs: Option<aws_sdk_sqs::Client>,
    pub dynamo: Option<aws_sdk_dynamodb::Client>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.app.shutdown.cancel();
    }
}

impl TestApp {
    pub fn embedded() -> TestAppBuilder {
        TestAppBuilder {
            backends: Backends::Embedded,
            env: vec![
                ("QUEUE_MAX_RECEIVE_COUNT".into(), MAX_RECEIVES.to_string()),
                ("IMAGE_URL_ORIGINS".into(), IMAGE_ORIGIN.into()),
            ],
        }
    }

    /// SQS + DynamoDB on moto, each test with its own queues and table.
    pub async fn aws() -> Option<TestAppBuilder> {
        let needs = testkit::Needs {
            postgres: false,
            moto: true,
        };
        if !testkit::live_backends(needs).await {
            return None;
        }
        Some(TestAppBuilder {
            backends: Backends::Aws,
            env: {
                let mut env = testkit::orchestrator_aws_env(MAX_RECEIVES).await;
                env.push(("IMAGE_URL_ORIGINS".into(), IMAGE_ORIGIN.into()));
                env
            },
        })
    }

    /// A second orchestrator on the same parts as `app` (its queues, table
    /// or SQLite file), as a second replica would be.
    pub fn builder_like(app: &TestApp) -> TestAppBuilder {
        TestAppBuilder {
            backends: app.backends,
            env: app.env.clone(),
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The router itself, for streaming responses.
    pub fn router(&self) -> Router {
        self.client.router()
    }

    /// Every request from now on carries `Authorization: Bearer <token>`
    /// (unless it sets its own).
    pub fn sign_in(&self, token: &str) {
        self.client.sign_in(token);
    }

    /// Requests from now on are anonymous.
    pub fn sign_out(&self) {
        self.client.sign_out();
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        self.client.send(request).await
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.client.get_with(uri, &[("origin", FRONTEND)]).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> TestResponse {
        self.post_with(uri, body, &[]).await
    }

    pub async fn post_with(
        &self,
        uri: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let headers: Vec<(&str, &str)> = [("origin", FRONTEND)]
            .into_iter()
            .chain(headers.iter().copied())
            .collect();
        self.client
            .json_with(Method::POST, uri, &body, &headers)
            .await
    }

    /// Submits and returns the job id, asserting the 202 contract.
    pub async fn submit(&self, uri: &str, body: Value) -> String {
        let response = self.post(uri, body).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
        let json = response.json();
        assert_eq!(json["status"], "pending");
        json["job_id"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let response = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()
    }

    pub fn adapter(&self) -> Adapter<'_> {
        Adapter { app: self }
    }

    /// Every task record, as (task_id, status, error_message).
    pub async fn all_tasks(&self) -> Vec<(String, Option<String>, Option<String>)> {
        match &self.dynamo {
            Some(dynamo) => {
                let out = dynamo
                    .scan()
                    .table_name(self.var("DYNAMODB_TABLE").unwrap())
                    .send()
                    .await
                    .unwrap();
                out.items()
                    .iter()
                    // Idempotency keys and quota counts share the table.
                    .filter(|i| {
                        let id = i["task_id"].as_s().unwrap();
                        !id.starts_with("idempotency#") && !id.starts_with("quota#")
                    })
                    .map(|i| {
                        let s = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
                        (s("task_id").unwrap(), s("status"), s("error_message"))
                    })
                    .collect()
            }
            None => {
                use sqlx::{Connection, Row};
                let mut conn = sqlx::SqliteConnection::connect(&self.sqlite_url())
                    .await
                    .unwrap();
                sqlx::query("SELECT task_id, status, error_message FROM tasks")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            }
        }
    }

    pub fn sqlite_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.dir.path().join("orchestrator.db").display()
        )
    }

    pub async fn sqlite(&self, statement: &str) {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&self.sqlite_url())
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// The old Python worker adapter, played against the same parts: it reads
/// the queue directly (SQS `ReceiveMessage`, or the embedded queue) and
/// writes the task record with plain, unconditional updates (DynamoDB
/// `UpdateItem`, or SQL on the embedded table).
pub struct Adapter<'a> {
    app: &'a TestApp,
}

pub struct Received {
    pub body: Value,
    pub receipt: String,
}

impl Adapter<'_> {
    fn queue_url(&self, queue: &str) -> String {
        let name = if queue == "gpu" {
            "SQS_QUEUE_URL"
        } else {
            "CPU_SQS_QUEUE_URL"
        };
        self.app.var(name).unwrap().to_owned()
    }

    /// One message from `queue` ("gpu" or "cpu"), hidden for `visibility`.
    pub async fn receive(&self, queue: &str, visibility: Duration) -> Option<Received> {
        match &self.app.sqs {
            Some(sqs) => {
                let out = sqs
                    .receive_message()
                    .queue_url(self.queue_url(queue))
                    .max_number_of_messages(1)
                    .wait_time_seconds(1)
                    .visibility_timeout(i32::try_from(visibility.as_secs()).unwrap())
                    .send()
                    .await
                    .unwrap();
                let message = out.messages().first()?;
                Some(Received {
                    body: serde_json::from_str(message.body().unwrap()).unwrap(),
                    receipt: message.receipt_handle().unwrap().to_owned(),
                })
            }
            None => {
                let q = if queue == "gpu" {
                    &self.app.app.gpu_queue
                } else {
                    &self.app.app.cpu_queue
                };
                let message = q
                    .receive(1, Duration::from_millis(500), visibility)
                    .await
                    .unwrap()
                    .pop()?;
                Some(Received {
                    body: serde_json::from_str(&message.body).unwrap(),
                    receipt: message.receipt,
                })
            }
        }
    }

    pub async fn delete(&self, queue: &str, receipt: &str) {
        match &self.app.sqs {
            Some(sqs) => {
                sqs.delete_message()
                    .queue_url(self.queue_url(queue))
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                let q = if queue == "gpu" {
                    &self.app.app.gpu_queue
                } else {
                    &self.app.app.cpu_queue
                };
                q.delete(receipt).await.unwrap();
            }
        }
    }

    /// Sets string attributes and `updated_at`, with no condition, as the
    /// old adapters did.
    pub async fn update(&self, task_id: &str, attributes: &[(&str, &str)], updated_at: i64) {
        match &self.app.dynamo {
            Some(dynamo) => {
                let mut set = vec!["updated_at = :updated_at".to_owned()];
                let mut update = dynamo
                    .update_item()
                    .table_name(self.app.var("DYNAMODB_TABLE").unwrap())
                    .key("task_id", AttributeValue::S(task_id.to_owned()))
                    .expression_attribute_values(
                        ":updated_at",
                        AttributeValue::N(format!("{updated_at}.25")),
                    );
                for (i, (name, value)) in attributes.iter().enumerate() {
                    set.push(format!("#a{i} = :v{i}"));
                    update = update
                        .expression_attribute_names(format!("#a{i}"), *name)
                        .expression_attribute_values(
                            format!(":v{i}"),
                            AttributeValue::S((*value).to_owned()),
                        );
                }
                update
                    .update_expression(format!("SET {}", set.join(", ")))
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                let mut statement = format!(
                    "INSERT OR IGNORE INTO tasks (task_id) VALUES ('{task_id}'); UPDATE tasks SET updated_at = {updated_at}"
                );
                for (name, value) in attributes {
                    statement.push_str(&format!(", {name} = '{value}'"));
                }
                statement.push_str(&format!(" WHERE task_id = '{task_id}';"));
                self.app.sqlite(&statement).await;
            }
        }
    }
}

//! Starts canvas-service the way `main` does — from an environment, through
//! `CanvasConfig::from_env` and `App::from_config` — on real parts:
//! SQLite + a temp directory always, and Postgres + S3 on moto when they are
//! reachable. With `REQUIRE_LIVE_BACKENDS=1` an unreachable one is a failure;
//! otherwise those tests are skipped with a loud message.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod images;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::{Body, Bytes},
    http::{Method, Request, StatusCode, header},
};
use canvas_service::{App, CanvasConfig, router};
use common::config::{Env, HttpSettings};
use serde_json::Value;
use tempfile::TempDir;
use testkit::http::TestClient;

#[allow(unused_imports)] // each test binary uses some of them
pub use testkit::{create_bucket, create_database, http::TestResponse, moto_url, s3_client};

pub const CDN: &str = "https://cdn.example.test";
pub const FRONTEND: &str = "http://localhost:3000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite + a local directory, objects served by the service.
    Embedded,
    /// Postgres + S3 on moto, objects behind a (pretend) CDN.
    Live,
}

pub struct TestApp {
    pub backends: Backends,
    pub app: Arc<App>,
    /// The router, and the access token requests carry once signed in.
    client: TestClient,
    http: HttpSettings,
    pub dir: TempDir,
    pub env: Vec<(String, String)>,
    s3: Option<(aws_sdk_s3::Client, String)>,
}

pub struct TestAppBuilder {
    backends: Backends,
    env: Vec<(String, String)>,
}

impl TestAppBuilder {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = self.env;
        let mut s3 = None;
        match self.backends {
            Backends::Embedded => {
                env.push(("DATA_DIR".into(), dir.path().display().to_string()));
                // SUPABASE_URL marks a deployment, which must name its
                // database: name the embedded one.
                if env.iter().any(|(k, _)| k == "SUPABASE_URL")
                    && !env.iter().any(|(k, _)| k == "DATABASE_URL")
                {
                    env.push((
                        "DATABASE_URL".into(),
                        format!("sqlite://{}", dir.path().join("canvas.db").display()),
                    ));
                }
            }
            Backends::Live => {
                env.push((
                    "SPOOL_DIR".into(),
                    dir.path().join("spool").display().to_string(),
                ));
                if !env.iter().any(|(k, _)| k == "DATABASE_URL") {
                    env.push(("DATABASE_URL".into(), create_database().await));
                }
                if !env.iter().any(|(k, _)| k == "S3_BUCKET") {
                    env.push(("S3_BUCKET".into(), create_bucket().await));
                }
                s3 = env
                    .iter()
                    .find(|(k, _)| k == "S3_BUCKET")
                    .map(|(_, v)| v.clone());
            }
        }
        let config = CanvasConfig::from_env(&Env::from_pairs(env.clone()))
            .expect("valid test configuration");
        let app = Arc::new(App::from_config(&config).await.expect("the app starts"));
        let s3 = match s3 {
            Some(bucket) => Some((s3_client().await, bucket)),
            None => None,
        };
        TestApp {
            backends: self.backends,
            client: TestClient::new(router(app.clone(), &config.http)),
            http: config.http,
            app,
            dir,
            env,
            s3,
        }
    }
}

impl TestApp {
    pub fn embedded() -> TestAppBuilder {
        TestAppBuilder {
            backends: Backends::Embedded,
            env: vec![],
        }
    }

    /// `None` (after a loud message) when the live backends are not up.
    pub async fn live() -> Option<TestAppBuilder> {
        let needs = testkit::Needs {
            postgres: true,
            moto: true,
        };
        if !testkit::live_backends(needs).await {
            return None;
        }
        Some(TestAppBuilder {
            backends: Backends::Live,
            env: vec![
                ("AWS_ENDPOINT_URL".into(), moto_url()),
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("CLOUDFRONT_DOMAIN".into(), CDN.into()),
            ],
        })
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The URL the service must give for `key`.
    pub fn expected_url(&self, key: &str) -> String {
        match self.backends {
            Backends::Embedded => format!(
                "{}/{key}",
                self.var("PUBLIC_BASE_URL")
                    .unwrap_or("http://localhost:9000")
                    .trim_end_matches('/')
            ),
            Backends::Live => format!("{CDN}/{key}"),
        }
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
        self.client.get_with(uri, &[]).await
    }

    pub async fn json(&self, method: Method, uri: &str, body: Value) -> TestResponse {
        self.client
            .json_with(method, uri, &body, &[("origin", FRONTEND)])
            .await
    }

    pub async fn post(&self, uri: &str, body: Value) -> TestResponse {
        self.json(Method::POST, uri, body).await
    }

    pub async fn delete(&self, uri: &str, body: Value) -> TestResponse {
        self.json(Method::DELETE, uri, body).await
    }

    pub async fn new_session(&self) -> String {
        let response = self
            .send(Request::post("/session").body(Body::empty()).unwrap())
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        response.json()["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned()
    }

    /// `POST /upload` as a browser's FormData does: `session_id`, then
    /// `file` with its file name and content type.
    pub async fn upload(
        &self,
        session_id: &str,
        file_name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> TestResponse {
        self.upload_parts(&[
            Part::text("session_id", session_id),
            Part::file("file", file_name, content_type, bytes),
        ])
        .await
    }

    pub async fn upload_parts(&self, parts: &[Part<'_>]) -> TestResponse {
        let (content_type, body) = multipart_body(parts);
        self.send(
            Request::post("/upload")
                .header(header::CONTENT_TYPE, content_type)
                .header(header::ORIGIN, FRONTEND)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// The service on a real server on `127.0.0.1:0`, as `main` runs it:
    /// what the slow-client tests need (a router driven directly has no
    /// connection to stall).
    pub async fn serve(&self) -> RunningServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(common::http::serve_on(
            listener,
            self.client.router(),
            self.http.deadlines,
            async move {
                let _ = stopped.await;
            },
            std::time::Duration::from_secs(60),
        ));
        RunningServer { addr, stop, task }
    }

    /// The object's bytes, read the way a browser would: from the service
    /// itself (embedded) or from the bucket behind the CDN (live).
    pub async fn object(&self, key: &str) -> Option<Bytes> {
        match &self.s3 {
            None => {
                let response = self.get(&format!("/{key}")).await;
                (response.status == StatusCode::OK).then_some(response.body)
            }
            Some((client, bucket)) => {
                match client.get_object().bucket(bucket).key(key).send().await {
                    Ok(object) => Some(
                        object
                            .body
                            .collect()
                            .await
                            .expect("read object")
                            .into_bytes(),
                    ),
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
                    Err(e) => panic!("get {key}: {e:?}"),
                }
            }
        }
    }

    /// Every object key under `prefix`.
    pub async fn object_keys(&self, prefix: &str) -> Vec<String> {
        match &self.s3 {
            None => {
                let root = self.dir.path().join("objects");
                let mut keys = vec![];
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let path = entry.path();
                        if path.is_dir() {
                            stack.push(path);
                        } else {
                            let key = path
                                .strip_prefix(&root)
                                .unwrap()
                                .to_string_lossy()
                                .replace('\\', "/");
                            if key.starts_with(prefix) {
                                keys.push(key);
                            }
                        }
                    }
                }
                keys
            }
            Some((client, bucket)) => client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .expect("list objects")
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
        }
    }

    /// Writes an object straight into the store, as a worker does.
    pub async fn put_object(&self, key: &str, bytes: &[u8]) {
        self.app
            .store
            .put_bytes(key, Bytes::copy_from_slice(bytes), "image/png")
            .await
            .expect("put object");
    }

    /// Runs SQL on the service's own database (SQLite file or Postgres).
    pub async fn sql(&self, statement: &str) {
        use sqlx::Connection;
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        match self
            .var("DATABASE_URL")
            .filter(|url| url.starts_with("postgres"))
        {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to Postgres");
                sqlx::raw_sql(statement)
                    .execute(&mut conn)
                    .await
                    .expect("run SQL");
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("canvas.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("open SQLite");
                sqlx::raw_sql(statement)
                    .execute(&mut conn)
                    .await
                    .expect("run SQL");
            }
        }
    }
}

/// A server started by [`TestApp::serve`].
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<bool>,
}

impl RunningServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the graceful shutdown; resolves once the server has stopped.
    pub async fn shut_down(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the server task ends cleanly");
    }
}

/// A multipart form as a browser's FormData encodes it: its content type
/// (with the boundary) and its bytes.
pub fn multipart_body(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "----canvasTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part.file {
            Some((file_name, content_type)) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", part.name).as_bytes(),
            ),
        }
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub struct Part<'a> {
    name: &'a str,
    file: Option<(&'a str, &'a str)>,
    bytes: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn text(name: &'a str, value: &'a str) -> Self {
        Self {
            name,
            file: None,
            bytes: value.as_bytes(),
        }
    }

    pub fn file(name: &'a str, file_name: &'a str, content_type: &'a str, bytes: &'a [u8]) -> Self {
        Self {
            name,
            file: Some((file_name, content_type)),
            bytes,
        }
    }
}

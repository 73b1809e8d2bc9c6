//! The calls the scenarios make, each returning what a scenario counts: the
//! id or key on success, else the status code (if any answer came) and the
//! answer's first bytes.

use std::time::Duration;

use reqwest::{
    Client, StatusCode, header,
    multipart::{Form, Part},
};
use serde_json::Value;

use super::{BoxError, jobs::Kind, stats::truncate};

/// Long enough that a service answers every request (its own dependency
/// timeouts are 2 s): a missing answer is a finding, not a client limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request that did not get the answer it wanted.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `None`: no answer at all (connection refused or reset, timeout).
    pub status: Option<StatusCode>,
    pub detail: String,
}

impl Failure {
    fn no_answer(e: impl std::fmt::Display) -> Self {
        Self {
            status: None,
            detail: format!("no answer: {e}"),
        }
    }

    fn answered(status: StatusCode, text: &str) -> Self {
        Self {
            status: Some(status),
            detail: format!("{status}: {}", truncate(text, 200)),
        }
    }

    /// The status code, or `no answer`, as a table cell.
    pub fn code(&self) -> String {
        self.status
            .map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Failure {}

/// A client for loopback only (no proxy from the environment), keeping up
/// to `pool` idle connections.
pub fn client(pool: usize) -> Result<Client, BoxError> {
    Ok(Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()?)
}

/// Sends a request; the answer's status and body text.
async fn send(request: reqwest::RequestBuilder) -> Result<(StatusCode, String), Failure> {
    let response = request
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(Failure::no_answer)?;
    let status = response.status();
    let text = response.text().await.map_err(Failure::no_answer)?;
    Ok((status, text))
}

/// The string field `field` of a JSON answer with status `want`.
fn field_of(
    status: StatusCode,
    text: &str,
    want: StatusCode,
    field: &str,
) -> Result<String, Failure> {
    if status != want {
        return Err(Failure::answered(status, text));
    }
    let body: Value = serde_json::from_str(text).map_err(|_| Failure::answered(status, text))?;
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::answered(status, text))
}

/// Submits a job of `kind`; its id on 202.
pub async fn submit(client: &Client, base: &str, kind: &Kind) -> Result<String, Failure> {
    let (status, text) = send(
        client
            .post(format!("{base}{}", kind.route))
            .header(header::CONTENT_TYPE, "application/json")
            .body(kind.body),
    )
    .await?;
    field_of(status, &text, StatusCode::ACCEPTED, "job_id")
}

/// `GET /api/v1/jobs/{id}`: `(status, result_url)` on 200.
pub async fn job_status(
    client: &Client,
    base: &str,
    id: &str,
) -> Result<(String, Option<String>), Failure> {
    let (status, text) = send(client.get(format!("{base}/api/v1/jobs/{id}"))).await?;
    let job_status = field_of(status, &text, StatusCode::OK, "status")?;
    let result_url = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|b| b["result_url"].as_str().map(str::to_owned));
    Ok((job_status, result_url))
}

/// `POST /api/v1/jobs/{id}/cancel`: 200 with the job now `cancelled`.
pub async fn cancel(client: &Client, base: &str, id: &str) -> Result<(), Failure> {
    let (status, text) = send(client.post(format!("{base}/api/v1/jobs/{id}/cancel"))).await?;
    field_of(status, &text, StatusCode::OK, "status").map(|_| ())
}

/// A new canvas session's id.
pub async fn new_session(client: &Client, base: &str) -> Result<String, BoxError> {
    let (status, text) = send(client.post(format!("{base}/session"))).await?;
    Ok(field_of(status, &text, StatusCode::OK, "session_id")?)
}

/// A multipart upload to `session`; the stored key on 200.
pub async fn upload(
    client: &Client,
    base: &str,
    session: &str,
    file: Part,
    timeout: Duration,
) -> Result<String, Failure> {
    let form = Form::new()
        .text("session_id", session.to_owned())
        .part("file", file);
    let response = client
        .post(format!("{base}/upload"))
        .multipart(form)
        .timeout(timeout)
        .send()
        .await
        .map_err(Failure::no_answer)?;
    let status = response.status();
    let text = response.text().await.map_err(Failure::no_answer)?;
    field_of(status, &text, StatusCode::OK, "key")
}

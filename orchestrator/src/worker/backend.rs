//! The inference API on a GPU or CPU host, as the old adapters drove it:
//! `POST {backend}{api_path}` with the request body answers `{"job_id"}`,
//! then `GET {backend}/api/v1/jobs/{job_id}` reports its status.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub enum BackendError {
    /// Worth another try later: the host is down, busy or restarting.
    Transient(String),
    /// The backend refused the job itself (4xx): retrying will not help.
    Refused(String),
    /// The backend does not know this job id (it restarted and lost it).
    UnknownJob,
}

/// A backend job's state.
#[derive(Debug, PartialEq)]
pub enum BackendStatus {
    Running,
    Completed { result_url: Option<String> },
    Failed { error: String },
}

#[derive(Clone)]
pub struct Backend {
    http: reqwest::Client,
    base_url: String,
}

impl Backend {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Submits the job; its backend id.
    pub async fn submit(
        &self,
        api_path: &str,
        request_body: &Value,
    ) -> Result<String, BackendError> {
        let response = self
            .http
            .post(format!("{}{api_path}", self.base_url))
            .json(request_body)
            .send()
            .await
            .map_err(|e| BackendError::Transient(format!("backend unreachable: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(BackendError::Transient(format!(
                "backend answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(BackendError::Refused(format!(
                "backend refused the job ({status}): {}",
                text_of(&body, &["detail", "error", "message"]).unwrap_or_default()
            )));
        }
        text_of(&body, &["job_id", "id", "task_id"])
            .ok_or_else(|| BackendError::Transient("backend answered without a job_id".to_owned()))
    }

    pub async fn status(&self, job_id: &str) -> Result<BackendStatus, BackendError> {
        let response = self
            .http
            .get(format!("{}/api/v1/jobs/{job_id}", self.base_url))
            .send()
            .await
            .map_err(|e| BackendError::Transient(format!("backend unreachable: {e}")))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Err(BackendError::UnknownJob);
        }
        if !status.is_success() {
            return Err(BackendError::Transient(format!(
                "backend answered {status}"
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| BackendError::Transient(format!("unreadable status: {e}")))?;
        let state = text_of(&body, &["status", "state"])
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match state.as_str() {
            "completed" | "succeeded" | "success" | "done" => BackendStatus::Completed {
                result_url: text_of(&body, &["result_url", "result_s3_uri", "output_url", "url"]),
            },
            "failed" | "error" | "cancelled" | "canceled" => BackendStatus::Failed {
                error: text_of(&body, &["error", "error_message", "detail", "message"])
                    .unwrap_or_else(|| "the backend reported a failure".to_owned()),
            },
            _ => BackendStatus::Running,
        })
    }
}

/// The first of `names` that is a string (or number) in `body`.
fn text_of(body: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| match body.get(*name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

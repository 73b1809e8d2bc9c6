//! The one error type of both APIs. It renders as FastAPI did,
//! `{"detail": "<message>"}`, which is what the frontend reads.
//!
//! Client mistakes carry a message meant for the client. Anything unexpected
//! is logged with its cause and answered with a generic message: a database
//! or AWS error string never reaches the client.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    /// Seconds for a `Retry-After` header (429 and 503 answers).
    retry_after: Option<u64>,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After: <seconds>` header to the answer.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 429: the caller went over a rate limit or quota; `retry_after`
    /// seconds until it may try again.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail).retry_after(retry_after)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 408: the client did not send its whole request in time.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, detail)
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
    }

    /// A request that parsed but whose `field` is not acceptable.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {problem}"),
        )
    }

    /// A dependency (`part`: "database", "object store", …) is down or slow.
    /// Logged here so callers only have to say what failed.
    pub fn unavailable(part: &str, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(part, error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{part} is unavailable, try again shortly"),
        )
    }

    /// Something that should not happen. The cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                detail: self.detail,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// A JSON body that did not parse: 415 without the JSON content type, 413
/// over the body limit, 422 for a wrong shape (naming the field, as FastAPI
/// does), 400 for bytes that are not JSON at all — and 408 for a body that
/// did not arrive before the request's deadline.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if let Some(timed_out) = crate::http::timed_out(&rejection) {
            return timed_out.into();
        }
        let status = rejection.status();
        let detail = match &rejection {
            JsonRejection::JsonDataError(e) => e.body_text(),
            JsonRejection::JsonSyntaxError(e) => e.body_text(),
            JsonRejection::MissingJsonContentType(_) => {
                "Expected a request with `Content-Type: application/json`".to_owned()
            }
            other => other.body_text(),
        };
        // axum's texts start with a generic prefix; the useful part follows.
        let detail = detail
            .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            .to_owned();
        Self::new(status, detail)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let detail = rejection
            .body_text()
            .trim_start_matches("Failed to deserialize query string: ")
            .to_owned();
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_detail_and_hides_internal_causes() {
        let response = ApiError::internal("password=hunter2 connection refused").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"detail": "Internal server error"}));
    }
}

//! `POST /api/v1/{kind}/jobs|tasks`: one handler per job kind, generated from
//! the kinds table (`jobs/kinds.rs`), each a thin face over `jobs::submit`.

use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use common::{ApiError, caller::Caller, extract::ApiJson, rate_limit::ClientKey};

use super::AppState;
use crate::jobs::{
    JobRequest,
    submit::{JobAccepted, SubmitError, Submitter, submit},
};

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::Invalid(invalid) => {
                ApiError::invalid_field(&invalid.field, invalid.problem)
            }
            SubmitError::Conflict(detail) => ApiError::conflict(detail),
            SubmitError::Refused {
                detail,
                retry_after,
            } => ApiError::too_many_requests(detail, retry_after),
            SubmitError::Unavailable { part, cause } => ApiError::unavailable(part, cause),
            SubmitError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

async fn accept<T: JobRequest>(
    State(app): State<AppState>,
    client: Option<Extension<ClientKey>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<T>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let submitter = Submitter {
        // The rate-limit layer names the client; without it (a router
        // driven directly) every caller is one client.
        client: client.map_or_else(|| ClientKey::of(None, None), |c| c.0),
        owner_id: caller.user_id,
        idempotency_key: idempotency_key(&headers)?,
    };
    let accepted = submit(&app.intake, request, submitter).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

macro_rules! submit_handlers {
    ($($handler:ident => $request:ident {
        name: $name:literal, route: $route:literal, queue: $queue:ident,
        api_path: $api_path:literal, task_type: $task_type:expr $(,)?
    }),* $(,)?) => {
        $(
            /// Accepts the job: 202 at once, whether or not the host is up.
            #[utoipa::path(post, path = $route, tag = "jobs",
                request_body = crate::jobs::kinds::$request,
                params(("Idempotency-Key" = Option<String>, Header,
                    description = "Repeat a submit safely: the same key and body within 24 h return the same job")),
                responses(
                    (status = 202, body = JobAccepted),
                    (status = 400, description = "Body is not JSON, or a malformed Idempotency-Key", body = common::error::ErrorBody),
                    (status = 408, description = "The body did not arrive within REQUEST_TIMEOUT_SECONDS", body = common::error::ErrorBody),
                    (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
                    (status = 409, description = "Idempotency-Key reused with a different body", body = common::error::ErrorBody),
                    (status = 413, description = "Body larger than 64 KiB", body = common::error::ErrorBody),
                    (status = 415, description = "Not `Content-Type: application/json`", body = common::error::ErrorBody),
                    (status = 422, description = "Invalid field, or an image URL outside the allowed origins; `detail` names it", body = common::error::ErrorBody),
                    (status = 429, description = "Rate limit, daily quota or queue backlog reached; see `Retry-After`", body = common::error::ErrorBody,
                        headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
                    (status = 503, description = "Task store or queue unavailable; the job was not accepted", body = common::error::ErrorBody),
                ))]
            pub async fn $handler(
                state: State<AppState>,
                client: Option<Extension<ClientKey>>,
                caller: Caller,
                headers: HeaderMap,
                body: ApiJson<crate::jobs::kinds::$request>,
            ) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
                accept(state, client, caller, headers, body).await
            }
        )*

        /// The submit routes of every kind, with their OpenAPI operations.
        pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
            utoipa_axum::router::OpenApiRouter::new()
                $(.routes(utoipa_axum::routes!($handler)))*
        }
    };
}

crate::jobs::kinds::with_job_kinds!(submit_handlers);

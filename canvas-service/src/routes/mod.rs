//! The HTTP surface: one file per endpoint, gathered here into the router
//! and the OpenAPI document, which are built from the same route list.

mod add_image;
mod delete_image;
mod health;
mod list_images;
mod objects;
mod session;
mod store_errors;
mod update_position;
mod upload;

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::Method,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
pub use common::extract::ApiJson;
use common::rate_limit::{RateLimit, limit};
use common::{ApiError, auth::BearerSecurity, caller::Caller, config::HttpSettings};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{App, db::ImageRecord};

type AppState = Arc<App>;

/// JSON bodies are small; uploads have their own limit.
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Room for an upload's form fields and part headers beside the file.
const FORM_OVERHEAD: usize = 256 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "canvas-service",
        description = "Canvas sessions, image uploads and positions. Errors are `{\"detail\": \"…\"}`."
    ),
    components(schemas(common::error::ErrorBody)),
    modifiers(&BearerSecurity)
)]
struct ApiDoc;

/// The per-client limits of the routes that cost something.
struct Limits {
    uploads: Arc<RateLimit>,
    sessions: Arc<RateLimit>,
}

/// `upload_limit` bounds a whole upload request (file plus form overhead).
fn api(upload_limit: usize, limits: Limits) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::root))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(session::create_session))
                .layer(middleware::from_fn_with_state(limits.sessions, limit)),
        )
        .routes(routes!(list_images::list_images))
        .routes(routes!(add_image::add_image))
        .routes(routes!(update_position::update_position))
        .routes(routes!(delete_image::delete_image))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        // The upload checks MAX_UPLOAD_BYTES on the file itself, while
        // streaming; this bounds the request as a whole.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload::upload))
                .layer(DefaultBodyLimit::max(upload_limit))
                // Its body may take UPLOAD_TIMEOUT_SECONDS, not the 15 s of
                // the other routes.
                .layer(axum::middleware::from_fn(common::http::upload_deadline))
                // Before the body is read: a refused upload costs nothing.
                .layer(middleware::from_fn_with_state(limits.uploads, limit)),
        )
}

/// The OpenAPI document of every endpoint, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let limits = Limits {
        uploads: RateLimit::off("uploads"),
        sessions: RateLimit::off("new sessions"),
    };
    api(0, limits).split_for_parts().1
}

/// The complete service: API routes, `/openapi.json`, the object files (when
/// stored locally) and the shared middleware.
pub fn router(app: AppState, http: &HttpSettings) -> Router {
    let upload_limit = usize::try_from(app.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(FORM_OVERHEAD);
    let limits = Limits {
        uploads: app.uploads_rate.clone(),
        sessions: app.sessions_rate.clone(),
    };
    let (api_routes, doc) = api(upload_limit, limits).split_for_parts();
    let doc = Arc::new(doc);
    let routes = api_routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(objects::serve_object)
        .with_state(app.clone());
    // Inside the shared middleware (CORS stays outermost), and inside the
    // latency metric, so refused calls are counted too.
    let routes = common::auth::layer(routes, app.auth.clone()).layer(
        middleware::from_fn_with_state(app.metrics.clone(), record_latency),
    );
    common::http::with_middleware(routes, http)
}

/// Request latency by route template, not raw path: keys and ids would
/// explode the label set.
async fn record_latency(
    State(metrics): State<Arc<crate::telemetry::Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Only the standard methods as labels: a client must not be able to
    // mint new series.
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = matched
        .or_else(|| {
            response
                .extensions()
                .get::<objects::ServedRoute>()
                .map(|r| r.0.to_owned())
        })
        .unwrap_or_else(|| "unmatched".to_owned());
    metrics.http_request(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The API's own paths; every other GET is an object file (or a 404).
const API_PATHS: &[&str] = &[
    "/session",
    "/upload",
    "/images",
    "/add-image",
    "/update-position",
    "/delete-image",
];

/// Requests served without an account in every `AUTH_MODE`: object files are
/// public by URL (as behind the CDN), and `GET /` and the health checks too.
pub fn is_public(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD) && !API_PATHS.contains(&path)
}

/// Whether `caller` may use the session: it exists and is theirs, or
/// belongs to no one (anonymous, or created before accounts).
async fn may_use_session(app: &App, caller: &Caller, id: uuid::Uuid) -> Result<bool, ApiError> {
    Ok(match app.db.session(id).await? {
        None => false,
        Some(session) => !app.checks_owners() || caller.may_access(session.owner_id.as_deref()),
    })
}

/// For the endpoints that do not need the session otherwise: `false` when
/// it is someone else's. No read at all with accounts off.
async fn is_someone_elses(app: &App, caller: &Caller, id: uuid::Uuid) -> Result<bool, ApiError> {
    if !app.checks_owners() {
        return Ok(false);
    }
    Ok(match app.db.session(id).await? {
        None => false,
        Some(session) => !caller.may_access(session.owner_id.as_deref()),
    })
}

/// An image as the frontend sees it: `url` is `<origin>/<key>`.
#[derive(Serialize, ToSchema)]
pub struct ImageOut {
    pub key: String,
    pub url: String,
    pub x: f64,
    pub y: f64,
    /// Pixels; absent for images added before dimensions were recorded.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl ImageOut {
    async fn from_record(app: &App, record: ImageRecord) -> Result<Self, ApiError> {
        Ok(Self {
            url: app.store.url(&record.key).await?,
            key: record.key,
            x: record.x,
            y: record.y,
            width: record.width,
            height: record.height,
        })
    }
}

/// Parses a session id from a client: 422 naming the field when malformed.
pub fn parse_session_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::invalid_field("session_id", "is not a valid UUID"))
}

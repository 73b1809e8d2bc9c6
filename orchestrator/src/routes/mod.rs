//! The HTTP surface: the router and the OpenAPI document, built from the
//! same route list.

mod errors;
mod events;
mod gpu;
mod health;
pub mod jobs;
mod submit;

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use common::{ApiError, auth::BearerSecurity, config::HttpSettings};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::App;

pub type AppState = Arc<App>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "Accepts GPU and CPU jobs (202 at once), reports their status, and manages the GPU host. Errors are `{\"detail\": \"…\"}`."
    ),
    components(schemas(common::error::ErrorBody)),
    modifiers(&AdminToken, &BearerSecurity)
)]
struct ApiDoc;

/// Declares the `admin_token` scheme the GPU start/stop operations name:
/// `Authorization: Bearer $ADMIN_TOKEN`.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "admin_token",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// `jobs_rate` limits the submit routes per client.
fn api(jobs_rate: Arc<common::rate_limit::RateLimit>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(submit::routes().layer(middleware::from_fn_with_state(
            jobs_rate,
            common::rate_limit::limit,
        )))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(events::job_events))
        .routes(routes!(health::root))
        .routes(routes!(health::health))
        .routes(routes!(health::health_v1))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(gpu::gpu_status))
        .routes(routes!(gpu::debug_gpu_instance))
        .routes(routes!(gpu::start_gpu))
        .routes(routes!(gpu::stop_gpu))
        // Job requests are small JSON documents.
        .layer(DefaultBodyLimit::max(64 * 1024))
}

/// The OpenAPI document of every endpoint, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api(common::rate_limit::RateLimit::off("job submits"))
        .split_for_parts()
        .1
}

pub fn router(app: AppState, http: &HttpSettings) -> Router {
    let (routes, doc) = api(app.jobs_rate.clone()).split_for_parts();
    let doc = Arc::new(doc);
    let routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("Not Found") });
    // Inside the shared middleware (CORS outermost), and inside the latency
    // metric so refused calls are counted too.
    let routes = common::auth::layer(routes, app.auth.clone())
        .layer(middleware::from_fn(record_latency))
        .with_state(app);
    common::http::with_middleware(routes, http)
}

/// Request latency by route template (not raw path: ids would explode the
/// label set).
async fn record_latency(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only the standard methods as labels: a client must not be able to
    // mint new series.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    crate::metrics::http_request(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

//! The HTTP front door both services share: the middleware stack (CORS,
//! request ids, tracing, sensitive headers) and a server that cuts slow
//! clients (header and body deadlines) and drains in-flight requests on
//! SIGTERM/SIGINT before exiting.

mod deadline;
mod lifecycle;
mod server;

pub use deadline::{DeadlineBody, RequestDeadline, RequestTimedOut, timed_out, upload_deadline};
pub use lifecycle::{Lifecycle, lifecycle};
pub use server::serve_on;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, Request, header},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use tokio::net::TcpListener;

use crate::config::HttpSettings;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// CORS as the frontend needs it: no credentials are ever sent, JSON `POST`
/// and `DELETE` are preflighted, and object downloads use `fetch(url,
/// {mode: "cors"})`, so range and cache headers are exposed. An empty origin
/// list (or `*`) allows any origin, for local development. A refused
/// preflight is logged at WARN with the origin and the allowed list: in the
/// browser it shows only as a failed request, so the log is where a
/// mistyped `CORS_ORIGINS` is found.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Checked when the settings were read; a bad one is skipped, not fatal.
        let allowed: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
            .collect();
        let listed = origins.join(",");
        AllowOrigin::predicate(move |origin, request| {
            let allowed = allowed.contains(origin);
            // tower-http answers every OPTIONS with an Origin as a preflight.
            if !allowed && request.method == Method::OPTIONS {
                log_refused_preflight(origin, request, &listed);
            }
            allowed
        })
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::RANGE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            REQUEST_ID,
        ])
        .expose_headers([
            REQUEST_ID,
            header::ETAG,
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
        ])
        .max_age(Duration::from_secs(3600))
}

/// The longest origin a log line repeats; a real one is far shorter.
const LOGGED_ORIGIN_MAX: usize = 256;

fn log_refused_preflight(
    origin: &HeaderValue,
    request: &axum::http::request::Parts,
    allowed: &str,
) {
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let origin: String = origin.chars().take(LOGGED_ORIGIN_MAX).collect();
    let requested_method = request
        .headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::warn!(
        origin = %origin,
        allowed = %allowed,
        path = %request.uri.path(),
        requested_method,
        "CORS preflight refused: the origin is not in CORS_ORIGINS"
    );
}

/// Wraps a service's router in the shared middleware. CORS is the outermost
/// layer so that every response — errors, 404s and 413s included — carries
/// the CORS headers the browser needs to read its status.
pub fn with_middleware(router: Router, settings: &HttpSettings) -> Router {
    router
        // A known path with a method it does not have: 405 with `Allow` (axum
        // adds it), and a `{"detail"}` body like every other error, as
        // FastAPI answered, instead of an empty one.
        .method_not_allowed_fallback(|| async {
            crate::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            settings.trusted_proxy_hops,
            crate::rate_limit::identify_client,
        ))
        .layer(axum::middleware::map_response(close_when_draining))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(cors_layer(&settings.cors_origins))
}

/// While draining, every response asks its HTTP/1 client to close the
/// connection, so the next request goes to a task that is staying.
async fn close_when_draining(mut response: axum::response::Response) -> axum::response::Response {
    if lifecycle().is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A listening socket that could not be opened, named for the operator:
/// `canvas-service: cannot listen on 0.0.0.0:9000: address already in use`.
#[derive(Debug, thiserror::Error)]
#[error("{service}: cannot listen on {addr}: {reason}")]
pub struct BindError {
    pub service: String,
    pub addr: SocketAddr,
    pub reason: String,
    #[source]
    pub source: std::io::Error,
}

/// Opens `settings.bind:settings.port` for `service`.
pub async fn bind(settings: &HttpSettings, service: &str) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::new(settings.bind, settings.port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError {
            service: service.to_owned(),
            addr,
            reason: match source.kind() {
                std::io::ErrorKind::AddrInUse => "address already in use".to_owned(),
                std::io::ErrorKind::AddrNotAvailable => {
                    "address not available on this machine".to_owned()
                }
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => source.to_string(),
            },
            source,
        })
}

/// Binds `settings.bind:settings.port` and serves until SIGTERM or SIGINT,
/// then drains (see [`serve_listener`]). Returns whether every request in
/// flight finished within `SHUTDOWN_GRACE_SECONDS` (`false`: the deadline
/// cut some).
pub async fn serve(
    router: Router,
    settings: &HttpSettings,
    service: &str,
) -> Result<bool, BindError> {
    let listener = bind(settings, service).await?;
    Ok(serve_listener(listener, router, settings, service, shutdown_signal()).await)
}

/// Serves on an already-bound `listener`. When `signal` resolves: `/ready`
/// turns 503 and responses close their connections at once; for
/// `SHUTDOWN_DELAY_SECONDS` everything is still served (a load balancer
/// needs that long to stop routing here); then no new connections are
/// accepted, event streams are told to end, and requests in flight get
/// `SHUTDOWN_GRACE_SECONDS` to finish — each also within its own request
/// deadline, so a stalled client cannot hold the exit. Returns whether they
/// all finished.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    service: &str,
    signal: impl std::future::Future<Output = ()>,
) -> bool {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, service, "listening"),
        Err(_) => tracing::info!(service, "listening"),
    }
    let delay = settings.shutdown_delay;
    let stop_accepting = async move {
        signal.await;
        lifecycle().begin_drain();
        tokio::time::sleep(delay).await;
        lifecycle().close_streams();
    };
    let drained = serve_on(
        listener,
        router,
        settings.deadlines,
        stop_accepting,
        settings.shutdown_grace,
    )
    .await;
    if drained {
        tracing::info!(service, "stopped");
    } else {
        tracing::warn!(
            service,
            grace_seconds = settings.shutdown_grace.as_secs(),
            "stopped at the shutdown deadline with requests still in flight"
        );
    }
    drained
}

/// Resolves on the first SIGTERM (ECS, docker stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining requests in flight");
}

/// `<binary> healthcheck`: GET `http://127.0.0.1:<port>/health` over a plain
/// TCP connection and report whether it answered 200 — for Docker's
/// `HEALTHCHECK` and ECS health checks, with no curl in the image.
pub async fn healthcheck(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
        )
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Ok(true))
    )
}

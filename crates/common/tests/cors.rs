//! CORS through `common::http::with_middleware`, the stack both services
//! run: an allowed origin's preflight is answered with its origin, and a
//! refused one leaves a WARN line naming the origin and the allowed list
//! (the browser shows the operator nothing but a failed request).

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
    routing::post,
};
use common::config::{Env, HttpSettings};
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;

/// Every log line written while a test runs, as text.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn service(cors_origins: &str) -> Router {
    let settings = HttpSettings::from_env(&Env::from_pairs([("CORS_ORIGINS", cors_origins)]), 9000)
        .expect("valid settings");
    let routes = Router::new().route("/update-position", post(|| async { "ok" }));
    common::http::with_middleware(routes, &settings)
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/update-position")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn a_refused_preflight_is_logged_with_the_origin_and_the_allowed_list() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // This test's thread only (the current-thread runtime runs everything
    // on it).
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = service("http://localhost:3000, https://canvas.example.com");

    let allowed = router
        .clone()
        .oneshot(preflight("https://canvas.example.com"))
        .await
        .expect("response");
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://canvas.example.com"
    );
    assert!(
        !logs.text().contains("WARN"),
        "an allowed preflight logs no warning: {}",
        logs.text()
    );

    let refused = router
        .clone()
        .oneshot(preflight("https://evil.example.net"))
        .await
        .expect("response");
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "a refused origin gets no Access-Control-Allow-Origin"
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("WARN") && line.contains("CORS preflight refused"))
        .unwrap_or_else(|| panic!("no WARN line for the refused preflight in:\n{text}"));
    assert!(line.contains("https://evil.example.net"), "{line}");
    assert!(
        line.contains("http://localhost:3000,https://canvas.example.com"),
        "{line}"
    );
    assert!(
        line.contains("requested_method=\"POST\"") || line.contains("requested_method=POST"),
        "{line}"
    );
}

#[tokio::test]
async fn any_origin_is_allowed_when_no_list_is_set() {
    let response = service("")
        .oneshot(preflight("https://anywhere.example"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

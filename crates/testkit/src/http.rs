//! Driving a service's router in a test without a socket, the same way for
//! both services: requests go through the whole router (middleware
//! included), optionally signed in, and come back as a [`TestResponse`]
//! whose body has been read.

use std::sync::Mutex;

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A service's router, and the access token its requests carry once
/// signed in.
pub struct TestClient {
    router: Router,
    token: Mutex<Option<String>>,
    /// The `Access-Control-Allow-Origin` every error answer must carry,
    /// checked by [`TestResponse::assert_error`] when set.
    error_allow_origin: Option<String>,
}

impl TestClient {
    pub fn new(router: Router) -> Self {
        Self {
            router,
            token: Mutex::new(None),
            error_allow_origin: None,
        }
    }

    /// Every error answer must carry `Access-Control-Allow-Origin: origin`
    /// (the browser hides the status of one that does not).
    pub fn errors_allow_origin(mut self, origin: &str) -> Self {
        self.error_allow_origin = Some(origin.to_owned());
        self
    }

    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Every request from now on carries `Authorization: Bearer <token>`
    /// (unless it sets its own).
    pub fn sign_in(&self, token: &str) {
        *self.token.lock().expect("token lock") = Some(token.to_owned());
    }

    /// Requests from now on are anonymous.
    pub fn sign_out(&self) {
        *self.token.lock().expect("token lock") = None;
    }

    pub async fn send(&self, mut request: Request<Body>) -> TestResponse {
        let token = self.token.lock().expect("token lock").clone();
        if let Some(token) = token
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}")
                    .parse()
                    .expect("a token is a header value"),
            );
        }
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("read the response body")
            .to_bytes();
        TestResponse {
            status,
            headers,
            body,
            error_allow_origin: self.error_allow_origin.clone(),
        }
    }

    /// `GET uri` with the given extra headers.
    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::empty()).expect("a valid request"))
            .await
    }

    /// A JSON request (`Content-Type: application/json`) with the given
    /// extra headers.
    pub async fn json_with(
        &self,
        method: Method,
        uri: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(
            request
                .body(Body::from(body.to_string()))
                .expect("a valid request"),
        )
        .await
    }
}

/// A response whose body has been read.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    error_allow_origin: Option<String>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and that the body is `{"detail": "<text>"}` (and,
    /// when the client says so, the CORS header); returns the text.
    pub fn assert_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        if let Some(origin) = &self.error_allow_origin {
            assert_eq!(
                self.headers
                    .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                    .and_then(|v| v.to_str().ok()),
                Some(origin.as_str()),
                "errors carry CORS headers"
            );
        }
        let detail = self.json()["detail"].as_str().map(str::to_owned);
        detail.unwrap_or_else(|| panic!("no string detail in {}", self.text()))
    }
}

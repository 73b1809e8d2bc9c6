//! `GET /<key>`: with local storage, this service is its own CDN and serves
//! the objects at the same paths CloudFront would. Every other unknown path
//! is a JSON 404.

use axum::{
    extract::{Request, State},
    http::Method,
    response::{IntoResponse, Response},
};
use common::ApiError;

use super::AppState;

pub async fn serve_object(State(app): State<AppState>, request: Request) -> Response {
    let method = request.method();
    match &app.local_files {
        Some(files) if method == Method::GET || method == Method::HEAD => {
            let key = request.uri().path().trim_start_matches('/');
            files.serve(key, method, request.headers()).await
        }
        _ => ApiError::not_found("Not Found").into_response(),
    }
}

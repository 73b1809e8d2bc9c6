//! `GET /<key>`: with local storage, this service is its own CDN and serves
//! the objects at the same paths CloudFront would — `Content-Type`, a strong
//! `ETag` (`If-None-Match` → 304), a single byte range (206, or 416 when
//! unsatisfiable) and cache headers. Every other unknown path is a JSON 404.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use common::ApiError;
use tokio_util::io::ReaderStream;

use super::AppState;
use crate::{
    image_kind::{ImageKind, SNIFF_LEN, content_type_for_key},
    storage::LocalStore,
    telemetry::Metrics,
};

/// The route label the latency metric gives served objects (the fallback
/// has no matched path of its own).
pub const OBJECT_ROUTE: &str = "/{key}";

pub async fn serve_object(State(app): State<AppState>, request: Request) -> Response {
    let method = request.method();
    match &app.local_files {
        Some(files) if method == Method::GET || method == Method::HEAD => {
            let key = request.uri().path().trim_start_matches('/');
            let mut response =
                match serve(&app.metrics, files, key, method, request.headers()).await {
                    Ok(response) => response,
                    Err(e) => e.into_response(),
                };
            response.extensions_mut().insert(ServedRoute(OBJECT_ROUTE));
            response
        }
        _ => ApiError::not_found("Not Found").into_response(),
    }
}

/// Marks a response served by a route the router did not match by path.
#[derive(Debug, Clone, Copy)]
pub struct ServedRoute(pub &'static str);

async fn serve(
    metrics: &Metrics,
    files: &LocalStore,
    key: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let opened = metrics.object_store_call("read", files.read_object(key));
    let Some(mut object) = opened.await? else {
        return Err(ApiError::not_found("Not Found"));
    };
    let len = object.size();
    let etag = format!("\"{}\"", object.version());
    let content_type = match content_type_for_key(key) {
        Some(t) => t,
        None => ImageKind::sniff(&object.head(SNIFF_LEN).await?)
            .map_or("application/octet-stream", ImageKind::mime),
    };

    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "public, max-age=86400")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");

    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if etag_matches {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(ApiError::internal);
    }

    builder = builder.header(header::CONTENT_TYPE, content_type);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let (status, start, count) = match range {
        Some(RangeRequest::Satisfiable { start, end }) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(RangeRequest::Unsatisfiable) => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .map_err(ApiError::internal);
        }
        // An unparseable or multi-part range is ignored (RFC 9110 allows it).
        Some(RangeRequest::Ignored) | None => (StatusCode::OK, 0, len),
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, count);
    if method == Method::HEAD {
        return builder.body(Body::empty()).map_err(ApiError::internal);
    }
    let reader = object.read(start, count).await?;
    builder
        .body(Body::from_stream(ReaderStream::new(reader)))
        .map_err(ApiError::internal)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Satisfiable { start: u64, end: u64 },
    Unsatisfiable,
    Ignored,
}

/// Parses a single `bytes=` range against an object of `len` bytes.
fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|s| (s, len.saturating_sub(1))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Ignored,
        Some((start, _)) if len == 0 || start >= len => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Satisfiable { start, end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Satisfiable { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Satisfiable { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Satisfiable { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-500", 100),
            Satisfiable { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=50-500", 100),
            Satisfiable { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=9-1", 100), Ignored);
        assert_eq!(parse_range("bytes=x-1", 100), Ignored);
    }
}

//! `POST /upload` (multipart: `session_id`, `file`): stores a new image in
//! the session. The object is written before the row, and removed again if
//! the row cannot be written, so neither outlives a failed upload.

use axum::{
    Json,
    extract::{Multipart, State, multipart::MultipartRejection},
};
use common::{ApiError, caller::Caller};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, ImageOut, may_use_session, parse_session_id};
use crate::{
    db::NewImage,
    keys::upload_key,
    spool::{SpooledFile, inspect, multipart_error, small_text, spool},
    storage::{ObjectStore, StoreError},
    telemetry::UploadMeter,
};

/// The multipart form the browser sends.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documents the form; the handler reads it as a stream
pub struct UploadForm {
    /// The canvas session (UUID).
    #[schema(format = Uuid)]
    session_id: String,
    /// The image: PNG, JPEG, WebP or GIF, at most `MAX_UPLOAD_BYTES`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Uploads an image. Its type is read from its bytes; its width and height
/// are recorded and returned. At most `MAX_CONCURRENT_UPLOADS` are received
/// at once, each within `UPLOAD_TIMEOUT_SECONDS`.
#[utoipa::path(post, path = "/upload", tag = "canvas",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = ImageOut),
        (status = 400, description = "Not a well-formed multipart/form-data body", body = common::error::ErrorBody),
        (status = 401, description = "Missing (AUTH_MODE=required) or invalid access token", body = common::error::ErrorBody),
        (status = 404, description = "No such session, or another user's", body = common::error::ErrorBody),
        (status = 408, description = "The body did not arrive within the upload deadline", body = common::error::ErrorBody),
        (status = 413, description = "Larger than MAX_UPLOAD_BYTES, or more pixels (width × height) than MAX_IMAGE_PIXELS", body = common::error::ErrorBody),
        (status = 415, description = "Not an accepted image, or not what it claims to be", body = common::error::ErrorBody),
        (status = 422, description = "Missing or malformed field", body = common::error::ErrorBody),
        (status = 429, description = "Rate limit reached; see `Retry-After`", body = common::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "MAX_CONCURRENT_UPLOADS uploads in progress (see Retry-After), or a dependency is down", body = common::error::ErrorBody),
    ))]
pub async fn upload(
    State(app): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<ImageOut>, ApiError> {
    // Counted by result, also when the client goes away mid-upload (the
    // meter is then dropped unfinished).
    let mut meter = app.metrics.upload_meter();
    let answer = receive(&app, &caller, multipart, &mut meter).await;
    meter.finish(match &answer {
        Ok(_) => axum::http::StatusCode::OK,
        Err(e) => e.status(),
    });
    answer
}

async fn receive(
    app: &AppState,
    caller: &Caller,
    multipart: Result<Multipart, MultipartRejection>,
    meter: &mut UploadMeter,
) -> Result<Json<ImageOut>, ApiError> {
    // Before a byte of the body is read: held until the answer is ready.
    let _slot = app.upload_slots.try_take()?;
    let mut multipart = multipart.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let mut session_id: Option<Uuid> = None;
    let mut file: Option<SpooledFile> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("session_id") if session_id.is_some() => {
                return Err(ApiError::invalid_field("session_id", "send it once"));
            }
            Some("session_id") => {
                let id = parse_session_id(&small_text(field, "session_id", 128).await?)?;
                // Checked before the file when the form sends it first, so
                // an upload to an unknown session is refused before spooling.
                if !may_use_session(app, caller, id).await? {
                    return Err(ApiError::not_found("Session not found"));
                }
                session_id = Some(id);
            }
            Some("file") if file.is_none() => {
                let spooled = spool(
                    field,
                    app.store.spool_dir(),
                    app.max_upload_bytes,
                    &mut meter.bytes,
                );
                file = Some(spooled.await?);
            }
            Some("file") => {
                return Err(ApiError::invalid_field("file", "send one file per upload"));
            }
            // Unknown fields are read and dropped, within a small bound.
            _ => {
                small_text(field, "field", 64 * 1024).await?;
            }
        }
    }
    let session_id =
        session_id.ok_or_else(|| ApiError::invalid_field("session_id", "field required"))?;
    let file = file.ok_or_else(|| ApiError::invalid_field("file", "field required"))?;
    let image = inspect(&file, app.max_image_pixels).await?;

    let key = upload_key(session_id, &image.extension);
    if let Err(e) = app
        .store
        .put_file(&key, file.path(), image.kind.mime())
        .await
    {
        // A put that timed out or lost its connection may still have
        // landed in the bucket; no row will ever point at it.
        if matches!(e, StoreError::Unavailable(_)) {
            remove_orphan(app.store.clone(), key);
        }
        return Err(e.into());
    }
    let added = app
        .db
        .add_image(&NewImage {
            session_id,
            key: key.clone(),
            content_type: Some(image.kind.mime().to_owned()),
            size: i64::try_from(file.size).ok(),
            width: image.width,
            height: image.height,
            x: 0.0,
            y: 0.0,
        })
        .await;
    let record = match added {
        Ok(Some(record)) => record,
        failed => {
            // No row, so no one can see the object: remove it now (the
            // store is up: it just took the object), and keep trying in the
            // background if that fails.
            if let Err(e) = app.store.delete(&key).await {
                tracing::warn!(%key, error = %e, "could not remove the object after a failed row insert; retrying");
                remove_orphan(app.store.clone(), key);
            }
            return Err(match failed {
                Ok(_) => ApiError::not_found("Session not found"),
                Err(e) => e.into(),
            });
        }
    };
    Ok(Json(ImageOut::from_record(app, record).await?))
}

/// Removes an object no row points at, in the background, several times
/// over about half a minute — also after a delete succeeds: a put that timed
/// out on our side may still be in flight (its bytes in a socket buffer
/// somewhere) and land after the first delete. Deletes are idempotent, and
/// failed uploads are rare, so the extra calls cost little.
fn remove_orphan(store: std::sync::Arc<dyn ObjectStore>, key: String) {
    tokio::spawn(async move {
        let mut removed = false;
        for wait in [0, 1, 2, 4, 8, 15] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            match store.delete(&key).await {
                Ok(()) => removed = true,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "could not remove an orphaned object yet")
                }
            }
        }
        if !removed {
            tracing::error!(%key, "orphaned object: no row points at it and it could not be removed");
        }
    });
}

//! Request extractors whose rejections render as `{"detail": …}` like every
//! other error of the API.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
};

use crate::ApiError;

/// `Json<T>` with FastAPI-style errors: 422 naming the field for a wrong
/// shape, 400 for bytes that are not JSON, 415 without the JSON content type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

//! How the routes answer when a part fails: a part that is down or slow is
//! 503 (logged, naming the part), anything else a logged 500 whose cause
//! never reaches the client.

use common::ApiError;

use crate::{db::DbError, storage::StoreError};

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(cause) => ApiError::unavailable("database", cause),
            DbError::Other(cause) => ApiError::internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => ApiError::unavailable("object store", cause),
            StoreError::Other(cause) => ApiError::internal(cause),
        }
    }
}

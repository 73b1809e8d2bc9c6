//! The stores' errors as HTTP answers: a part that is down is 503 naming it,
//! anything else a 500 (the cause only in the log).

use common::ApiError;

use crate::{queue::QueueError, tasks::TaskStoreError};

impl From<TaskStoreError> for ApiError {
    fn from(err: TaskStoreError) -> Self {
        match err {
            TaskStoreError::Unavailable(cause) => ApiError::unavailable("task store", cause),
            other => ApiError::internal(other),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Unavailable(cause) => ApiError::unavailable("job queue", cause),
            QueueError::Other(cause) => ApiError::internal(cause),
        }
    }
}

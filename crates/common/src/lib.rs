//! What both services share: typed configuration read from the environment,
//! the AWS SDK configuration, the object store, the HTTP bootstrap (CORS,
//! request ids, tracing, graceful shutdown) and the one API error type.

pub mod auth;
pub mod aws;
pub mod caller;
pub mod config;
pub mod error;
pub mod extract;
pub mod http;
pub mod image_kind;
pub mod object_store;
pub mod rate_limit;
pub mod readiness;
pub mod sqlite;
pub mod telemetry;

pub use error::ApiError;

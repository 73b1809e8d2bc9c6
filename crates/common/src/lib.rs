//! What both services share: typed configuration read from the environment,
//! the AWS SDK configuration and error classifier, the HTTP bootstrap (CORS,
//! request ids, tracing, graceful shutdown), accounts, rate limits,
//! readiness and the one API error type. Nothing here knows about canvases
//! or jobs.

pub mod auth;
pub mod aws;
pub mod caller;
pub mod config;
pub mod error;
pub mod extract;
pub mod http;
pub mod rate_limit;
pub mod readiness;
pub mod sqlite;
pub mod telemetry;

pub use error::ApiError;

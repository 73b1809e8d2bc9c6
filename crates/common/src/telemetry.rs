//! Logging set-up: human-readable lines by default, one JSON object per line
//! with `LOG_FORMAT=json` (what CloudWatch Logs Insights queries best).
//! The level comes from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string(&["LOG_FORMAT"]).as_deref() {
            None | Some("text") | Some("pretty") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(ConfigError::new(
                "LOG_FORMAT",
                format!("{other:?} is not a log format (use text or json)"),
            )),
        }
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls
/// are ignored), so tests can call it freely.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,aws_config=warn,aws_smithy_runtime=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
}

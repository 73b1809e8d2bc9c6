//! Starts canvas-service: read the configuration, open its parts, serve.
//! `canvas-service healthcheck` instead exits 0 when `GET /health` on
//! `PORT` answers 200 (container health checks without curl).

use std::sync::Arc;

use canvas_service::{App, CanvasConfig, router};
use common::config::{Env, load_dotenv};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    load_dotenv();
    let config = match CanvasConfig::from_env(&Env::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("canvas-service: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return if common::http::healthcheck(config.http.port).await {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    common::telemetry::init(config.log_format);
    let app = match App::from_config(&config).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(error = %e, "canvas-service could not start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match common::http::serve(router(app, &config.http), &config.http, "canvas-service").await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        // The shutdown deadline cut requests in flight.
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(error = %e, "canvas-service could not serve");
            std::process::ExitCode::FAILURE
        }
    }
}

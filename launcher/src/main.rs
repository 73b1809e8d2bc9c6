//! `cargo run` from the repository root: the whole backend in one process,
//! canvas-service on `CANVAS_PORT` (9000) and orchestrator on
//! `ORCHESTRATOR_PORT` (8080), each configured from the environment as it
//! would be alone (zero configuration: SQLite and files under `DATA_DIR`).
//! With `GPU_BACKEND_URL` / `CPU_BACKEND_URL` pointing at a local inference
//! API, the orchestrator also runs the worker: a complete system.
//! Ctrl-C stops both, draining requests in flight.

use std::{process::ExitCode, sync::Arc};

use common::config::{Env, load_dotenv};

#[tokio::main]
async fn main() -> ExitCode {
    load_dotenv();
    let env = Env::from_process();
    let port = |name: &'static str, default: u16| env.parse_or::<u16>(&[name], default);
    let (canvas_port, orchestrator_port) =
        match (port("CANVAS_PORT", 9000), port("ORCHESTRATOR_PORT", 8080)) {
            (Ok(c), Ok(o)) => (c, o),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("canvas-backend: {e}");
                return ExitCode::from(2);
            }
        };
    // The orchestrator accepts image URLs of the canvas it runs beside;
    // both must agree on that origin when CANVAS_PORT moves it.
    let env = match env.lookup(&["PUBLIC_BASE_URL"]) {
        Some(_) => env.clone(),
        None => env
            .clone()
            .with("PUBLIC_BASE_URL", format!("http://localhost:{canvas_port}")),
    };
    let canvas_config =
        canvas_service::CanvasConfig::from_env(&env.clone().with("PORT", canvas_port.to_string()));
    let orchestrator_config = orchestrator::OrchestratorConfig::from_env(
        &env.clone().with("PORT", orchestrator_port.to_string()),
    );
    let (canvas_config, orchestrator_config) = match (canvas_config, orchestrator_config) {
        (Ok(c), Ok(o)) => (c, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("canvas-backend: {e}");
            return ExitCode::from(2);
        }
    };
    common::telemetry::init(canvas_config.log_format);

    let canvas = match canvas_service::App::from_config(&canvas_config).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(error = %e, "canvas-service could not start");
            return ExitCode::FAILURE;
        }
    };
    let jobs = match orchestrator::App::from_config(&orchestrator_config).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(error = %e, "orchestrator could not start");
            return ExitCode::FAILURE;
        }
    };
    let workers = jobs.spawn_background();

    // Each server stops on the same Ctrl-C / SIGTERM and drains its requests.
    let (canvas_result, orchestrator_result) = tokio::join!(
        common::http::serve(
            canvas_service::router(canvas, &canvas_config.http),
            &canvas_config.http,
            "canvas-service"
        ),
        common::http::serve(
            orchestrator::router(jobs.clone(), &orchestrator_config.http),
            &orchestrator_config.http,
            "orchestrator"
        ),
    );
    jobs.shutdown.cancel();
    for worker in workers {
        let _ = worker.await;
    }
    match (canvas_result, orchestrator_result) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "the backend stopped with an error");
            ExitCode::FAILURE
        }
    }
}

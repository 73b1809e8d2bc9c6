//! `cargo run` from the repository root: the whole backend in one process,
//! canvas-service on `CANVAS_PORT` (9000) and orchestrator on
//! `ORCHESTRATOR_PORT` (8080), each configured from the environment as it
//! would be alone (zero configuration: SQLite and files under `DATA_DIR`).
//! With `GPU_BACKEND_URL` / `CPU_BACKEND_URL` pointing at a local inference
//! API, the orchestrator also runs the worker: a complete system.
//! Ctrl-C stops both, draining requests in flight. If either cannot start
//! (a port taken, a bad setting, a database it cannot reach), neither runs:
//! the message names the service and the address, and the exit code is not 0.

use std::{process::ExitCode, sync::Arc};

use common::config::{Env, load_dotenv};
use tokio_util::sync::CancellationToken;

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
        (Err(e), _) => return fail(2, &format!("canvas-service: {e}")),
        (_, Err(e)) => return fail(2, &format!("orchestrator: {e}")),
    };
    common::telemetry::init(canvas_config.log_format);

    // Both ports first: if either is taken, nothing starts at all (rather
    // than one service running, half up, until Ctrl-C).
    let (canvas_listener, orchestrator_listener) = match tokio::join!(
        common::http::bind(&canvas_config.http, "canvas-service"),
        common::http::bind(&orchestrator_config.http, "orchestrator"),
    ) {
        (Ok(c), Ok(o)) => (c, o),
        (Err(e), _) | (_, Err(e)) => return fail(1, &e.to_string()),
    };
    let canvas = match canvas_service::App::from_config(&canvas_config).await {
        Ok(app) => Arc::new(app),
        Err(e) => return fail(1, &format!("canvas-service: cannot start: {e}")),
    };
    let jobs = match orchestrator::App::from_config(&orchestrator_config).await {
        Ok(app) => Arc::new(app),
        Err(e) => return fail(1, &format!("orchestrator: cannot start: {e}")),
    };
    let workers = jobs.spawn_background();

    // Each server stops on the same Ctrl-C / SIGTERM and drains its requests.
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        common::http::shutdown_signal().await;
        signal.cancel();
    });
    let (canvas_drained, orchestrator_drained) = tokio::join!(
        common::http::serve_listener(
            canvas_listener,
            canvas_service::router(canvas, &canvas_config.http),
            &canvas_config.http,
            "canvas-service",
            stop.clone().cancelled_owned(),
        ),
        common::http::serve_listener(
            orchestrator_listener,
            orchestrator::router(jobs.clone(), &orchestrator_config.http),
            &orchestrator_config.http,
            "orchestrator",
            stop.clone().cancelled_owned(),
        ),
    );
    jobs.shutdown.cancel();
    for worker in workers {
        let _ = worker.await;
    }
    if canvas_drained && orchestrator_drained {
        ExitCode::SUCCESS
    } else {
        // The shutdown deadline cut requests in flight.
        ExitCode::FAILURE
    }
}

/// Says what stopped the backend, on stderr (logs may go elsewhere), and
/// gives the exit code.
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{message}");
    tracing::error!("{message}");
    ExitCode::from(code)
}

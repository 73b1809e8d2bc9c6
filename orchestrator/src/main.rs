//! The orchestrator binary:
//! - `orchestrator` / `orchestrator serve`: the API (and, with
//!   `GPU_BACKEND_URL`/`CPU_BACKEND_URL`, in-process workers);
//! - `orchestrator worker --queue gpu|cpu|<queue url> …`: the worker adapter
//!   on a GPU or CPU host;
//! - `orchestrator healthcheck`: exit 0 when `GET /health` on `PORT`
//!   answers 200 (container health checks without curl).

use std::{process::ExitCode, sync::Arc};

use common::config::{Env, load_dotenv};
use orchestrator::{App, OrchestratorConfig, router, worker};

#[tokio::main]
async fn main() -> ExitCode {
    load_dotenv();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match OrchestratorConfig::from_env(&Env::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config).await,
        Some("worker") => worker::cli::run(config, &args[1..]).await,
        Some("healthcheck") => {
            if common::http::healthcheck(config.http.port).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(other) => {
            eprintln!("orchestrator: unknown command {other:?} (serve, worker or healthcheck)");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: OrchestratorConfig) -> ExitCode {
    common::telemetry::init(config.log_format);
    let app = match App::from_config(&config).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            tracing::error!(error = %e, "orchestrator could not start");
            return ExitCode::FAILURE;
        }
    };
    let workers = app.spawn_background();
    let result = common::http::serve(
        router(app.clone(), &config.http),
        &config.http,
        "orchestrator",
    )
    .await;
    app.shutdown.cancel();
    for worker in workers {
        let _ = worker.await;
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // The shutdown deadline cut requests in flight.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            tracing::error!(error = %e, "orchestrator could not serve");
            ExitCode::FAILURE
        }
    }
}

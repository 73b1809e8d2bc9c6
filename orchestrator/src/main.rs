//! Starts the orchestrator. `orchestrator` or `orchestrator serve` serves the
//! API; `orchestrator healthcheck` asks a running one for `/health` (exit
//! 0/1), for container health checks without curl.

use std::{process::ExitCode, sync::Arc};

use common::config::{Env, load_dotenv};
use orchestrator::{App, OrchestratorConfig, router};

#[tokio::main]
async fn main() -> ExitCode {
    load_dotenv();
    let command = std::env::args().nth(1);
    let config = match OrchestratorConfig::from_env(&Env::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    match command.as_deref() {
        None | Some("serve") => serve(config).await,
        Some("healthcheck") => healthcheck(config.http.port).await,
        Some(other) => {
            eprintln!("orchestrator: unknown command {other:?} (use serve or healthcheck)");
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
    app.spawn_background();
    let result = common::http::serve(
        router(app.clone(), &config.http),
        &config.http,
        "orchestrator",
    )
    .await;
    app.shutdown.cancel();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "orchestrator stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// GET http://127.0.0.1:$PORT/health with a short timeout, over a plain TCP
/// connection: the image carries no curl.
async fn healthcheck(port: u16) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(
            head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
        )
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), attempt).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

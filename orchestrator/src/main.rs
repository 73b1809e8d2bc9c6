//! The orchestrator binary:
//! - `orchestrator` / `orchestrator serve`: the API (and, with
//!   `GPU_BACKEND_URL`/`CPU_BACKEND_URL`, in-process workers);
//! - `orchestrator worker --queue gpu|cpu|<queue url> …`: the worker adapter
//!   on a GPU or CPU host;
//! - `orchestrator healthcheck`: exit 0 when `GET /health` on `PORT`
//!   answers 200 (container health checks without curl).

use std::{process::ExitCode, sync::Arc, time::Duration};

use common::config::{Env, load_dotenv};
use orchestrator::{
    App, OrchestratorConfig,
    app::Stores,
    jobs::QueueName,
    queue::{JobQueue, SqsQueue},
    router,
    worker::{Worker, WorkerSettings},
};
use tokio_util::sync::CancellationToken;

const WORKER_USAGE: &str = "usage: orchestrator worker --queue gpu|cpu|<SQS queue URL> [--backend-url http://localhost:8000] \
[--concurrency 1] [--job-timeout 900] [--drain-seconds 60] [--visibility-seconds 120] [--poll-millis 500] [--kind gpu|cpu (with a queue URL)]";

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
        Some("worker") => match parse_worker_args(&args[1..]) {
            Ok((settings, queue_url)) => worker(config, settings, queue_url).await,
            Err(e) => {
                eprintln!("orchestrator worker: {e}\n{WORKER_USAGE}");
                ExitCode::from(2)
            }
        },
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

/// `--queue` and the other flags; a queue URL (rather than gpu/cpu) is
/// returned separately, and then `--kind` says which kind of host this is.
fn parse_worker_args(args: &[String]) -> Result<(WorkerSettings, Option<String>), String> {
    let mut queue = None;
    let mut kind = None;
    let mut settings = WorkerSettings::new(QueueName::Gpu, "http://localhost:8000");
    let mut pairs = args.iter();
    while let Some(flag) = pairs.next() {
        let value = pairs
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let seconds = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{flag}: {v:?} is not a positive number of seconds"))
        };
        match flag.as_str() {
            "--queue" => queue = Some(value.clone()),
            "--kind" => kind = Some(value.clone()),
            "--backend-url" => settings.backend_url = value.clone(),
            "--concurrency" => {
                settings.concurrency =
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("--concurrency: {value:?} is not a positive number")
                    })?;
            }
            "--job-timeout" => settings.job_timeout = seconds(value)?,
            "--drain-seconds" => settings.drain = seconds(value)?,
            "--visibility-seconds" => settings.visibility = seconds(value)?,
            "--poll-millis" => {
                let millis: u64 =
                    value.parse().ok().filter(|m| *m > 0).ok_or_else(|| {
                        format!("--poll-millis: {value:?} is not a positive number")
                    })?;
                settings.poll_min = Duration::from_millis(millis);
                settings.poll_max = settings.poll_min * 10;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let queue = queue.ok_or("--queue is required")?;
    let named = |name: &str| match name {
        "gpu" => Ok(QueueName::Gpu),
        "cpu" => Ok(QueueName::Cpu),
        other => Err(format!("{other:?} is neither gpu nor cpu")),
    };
    if queue.starts_with("http://") || queue.starts_with("https://") {
        settings.queue = named(kind.as_deref().unwrap_or("gpu"))?;
        Ok((settings, Some(queue)))
    } else {
        settings.queue = named(&queue)?;
        Ok((settings, None))
    }
}

async fn worker(
    config: OrchestratorConfig,
    settings: WorkerSettings,
    queue_url: Option<String>,
) -> ExitCode {
    common::telemetry::init(config.log_format);
    let stores = match Stores::open(&config).await {
        Ok(stores) => stores,
        Err(e) => {
            tracing::error!(error = %e, "worker could not start");
            return ExitCode::FAILURE;
        }
    };
    let queue: Arc<dyn JobQueue> = match queue_url {
        Some(url) => {
            let client = orchestrator::queue::sqs_client(&config.aws).await;
            Arc::new(SqsQueue::connect(client, &url, None).await)
        }
        None => stores.queue(settings.queue).clone(),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        common::http::shutdown_signal().await;
        stop.cancel();
    });
    let settings = WorkerSettings {
        image_urls: Arc::new(config.image_urls.clone()),
        ..settings
    };
    tracing::info!(
        allowed = settings.image_urls.describe(),
        "jobs whose image URLs point elsewhere are dead-lettered (IMAGE_URL_ORIGINS)"
    );
    Arc::new(Worker::new(stores.tasks, queue, settings))
        .run(shutdown)
        .await;
    ExitCode::SUCCESS
}

//! `orchestrator worker --queue gpu|cpu|<queue url> …`: the worker adapter
//! on a GPU or CPU host — its flags, and the run until SIGTERM.

use std::{process::ExitCode, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{Worker, WorkerSettings};
use crate::{
    OrchestratorConfig,
    jobs::QueueName,
    queue::{JobQueue, SqsQueue},
    stores::Stores,
};

pub const USAGE: &str = "usage: orchestrator worker --queue gpu|cpu|<SQS queue URL> [--backend-url http://localhost:8000] \
[--concurrency 1] [--job-timeout 900] [--drain-seconds 60] [--visibility-seconds 120] [--poll-millis 500] [--kind gpu|cpu (with a queue URL)]";

/// Parses the flags and runs the worker; exit 2 on bad flags.
pub async fn run(config: OrchestratorConfig, args: &[String]) -> ExitCode {
    match parse_args(args) {
        Ok((settings, queue_url)) => worker(config, settings, queue_url).await,
        Err(e) => {
            eprintln!("orchestrator worker: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `--queue` and the other flags; a queue URL (rather than gpu/cpu) is
/// returned separately, and then `--kind` says which kind of host this is.
pub fn parse_args(args: &[String]) -> Result<(WorkerSettings, Option<String>), String> {
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
            let client = crate::queue::sqs_client(&config.aws).await;
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

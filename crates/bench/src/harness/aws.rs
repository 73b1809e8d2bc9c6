//! AWS on moto: the queues and table an orchestrator runs on (made by
//! testkit's fixtures), a bucket for canvas-service, and the reads a soak
//! reconciles against — every message of a queue, every job record, every
//! object. The bench's own clients go to moto directly, never through a
//! fault proxy, and get generous timeouts: they count, they are not tested.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::aws::AwsSettings;

use super::{BoxError, require_loopback};

/// The longest SQS allows: a message received for counting stays hidden for
/// the rest of the run.
const HIDE_WHILE_COUNTING_SECONDS: i32 = 12 * 3600;

/// The moto the fixtures use (`MOTO_URL`), once it is known to answer.
pub async fn moto() -> Result<String, BoxError> {
    let url = testkit::moto_url();
    require_loopback("MOTO_URL", &url)?;
    let answers = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{url}/moto-api/"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .is_ok();
    if !answers {
        return Err(format!(
            "moto is not reachable at {url}; start it (the scripts/bench-*.sh do) or set MOTO_URL"
        )
        .into());
    }
    Ok(url)
}

async fn sdk(moto: &str) -> aws_config::SdkConfig {
    AwsSettings {
        dependency_timeout: Duration::from_secs(30),
        ..AwsSettings::emulator(moto)
    }
    .sdk_config()
    .await
}

/// `env` with `AWS_ENDPOINT_URL` replaced: the service reaches AWS there
/// (a fault proxy) while the queue URLs keep naming moto.
pub fn through(env: &[(String, String)], endpoint: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            let v = if k == "AWS_ENDPOINT_URL" { endpoint } else { v };
            (k.clone(), v.to_owned())
        })
        .collect()
}

/// Fresh GPU and CPU queues (each with a DLQ) and a fresh task table.
pub struct JobBackends {
    /// The orchestrator's variables for them, `AWS_ENDPOINT_URL` = moto.
    pub env: Vec<(String, String)>,
    pub gpu_queue: String,
    pub cpu_queue: String,
    pub table: String,
    sqs: aws_sdk_sqs::Client,
    dynamo: aws_sdk_dynamodb::Client,
}

impl JobBackends {
    /// `max_receives`: receives before a message is dead-lettered.
    pub async fn create(moto: &str, max_receives: u32) -> Result<Self, BoxError> {
        let env = testkit::orchestrator_aws_env(max_receives).await;
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("testkit gave no {name}"))
        };
        let sdk = sdk(moto).await;
        Ok(Self {
            gpu_queue: var("SQS_QUEUE_URL")?,
            cpu_queue: var("CPU_SQS_QUEUE_URL")?,
            table: var("DYNAMODB_TABLE")?,
            env,
            sqs: aws_sdk_sqs::Client::new(&sdk),
            dynamo: aws_sdk_dynamodb::Client::new(&sdk),
        })
    }

    pub fn dynamo(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamo
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    /// Visible messages of a queue.
    pub async fn visible(&self, queue: &str) -> Option<u64> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()?;
        out.attributes()?
            .get(&QueueAttributeName::ApproximateNumberOfMessages)?
            .parse()
            .ok()
    }

    /// Up to 10 messages, hidden for the rest of the run: their task ids
    /// (`None` for a body that names none) and receipt handles.
    async fn receive(
        &self,
        queue: &str,
        wait_seconds: i32,
    ) -> Result<Vec<(Option<String>, String)>, BoxError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(HIDE_WHILE_COUNTING_SECONDS)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "ReceiveMessage: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let id = m
                    .body()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                    .and_then(|b| b["task_id"].as_str().map(str::to_owned));
                (id, m.receipt_handle().unwrap_or_default().to_owned())
            })
            .collect())
    }

    /// The task id of every message left in a queue, each received once
    /// and left hidden. On moto each receive costs more the more messages
    /// the queue holds (visible or hidden), so this is for what is left
    /// after a [`Collector`], or for small queues.
    pub async fn drain(&self, queue: &str) -> Result<Vec<Option<String>>, BoxError> {
        let mut ids = Vec::new();
        let mut empty = 0;
        // An empty answer twice running: nothing visible is left.
        while empty < 2 {
            let batch = self.receive(queue, 0).await?;
            empty = if batch.is_empty() { empty + 1 } else { 0 };
            ids.extend(batch.into_iter().map(|(id, _)| id));
        }
        Ok(ids)
    }

    /// Takes every message off both queues as it arrives — received,
    /// recorded, deleted — until [`Collector::finish`]. No job record is
    /// touched: this counts messages, it runs no job. Without it a soak on
    /// moto slows down as the queues fill, since moto's `SendMessage` and
    /// `ReceiveMessage` each walk every message the queue holds.
    pub fn collect(self: &Arc<Self>) -> Collector {
        let stop = CancellationToken::new();
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let mut tasks = JoinSet::new();
        for queue in [self.gpu_queue.clone(), self.cpu_queue.clone()] {
            let (backends, stop, seen) = (self.clone(), stop.clone(), seen.clone());
            tasks.spawn(async move {
                loop {
                    let batch = backends.receive(&queue, 1).await?;
                    if batch.is_empty() && stop.is_cancelled() {
                        return Ok(());
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let mut delete = backends.sqs.delete_message_batch().queue_url(&queue);
                    for (i, (_, receipt)) in batch.iter().enumerate() {
                        delete = delete.entries(
                            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(receipt)
                                .build()?,
                        );
                    }
                    // A message whose delete fails stays hidden for the run:
                    // it is never counted twice.
                    let _ = delete.send().await;
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend(batch.into_iter().map(|(id, _)| id));
                }
            });
        }
        Collector { stop, seen, tasks }
    }

    /// Every job record: id → `status` (`unknown` when it has none). The
    /// table's other items (idempotency keys, quota counts) have a `#` in
    /// their id and are left out.
    pub async fn jobs(&self) -> Result<HashMap<String, String>, BoxError> {
        let mut jobs = HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .projection_expression("task_id, #s")
                .expression_attribute_names("#s", "status")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    format!("Scan: {}", aws_sdk_dynamodb::error::DisplayErrorContext(&e))
                })?;
            for item in page.items() {
                let Some(AttributeValue::S(id)) = item.get("task_id") else {
                    continue;
                };
                if id.contains('#') {
                    continue;
                }
                let status = match item.get("status") {
                    Some(AttributeValue::S(s)) => s.clone(),
                    _ => "unknown".to_owned(),
                };
                jobs.insert(id.clone(), status);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(jobs)
    }

    /// One record's status, read consistently; `None` without a record.
    pub async fn status_of(&self, id: &str) -> Result<Option<String>, BoxError> {
        let out = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("task_id", AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetItem: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })?;
        Ok(out.item().map(|item| match item.get("status") {
            Some(AttributeValue::S(s)) => s.clone(),
            _ => "unknown".to_owned(),
        }))
    }

    /// Best effort: moto keeps everything in memory until it stops.
    pub async fn delete(&self) {
        for (name, url) in &self.env {
            if name.ends_with("_URL") && name != "AWS_ENDPOINT_URL" {
                let _ = self.sqs.delete_queue().queue_url(url).send().await;
            }
        }
        let _ = self
            .dynamo
            .delete_table()
            .table_name(&self.table)
            .send()
            .await;
    }
}

/// Messages being taken off the queues (see [`JobBackends::collect`]).
pub struct Collector {
    stop: CancellationToken,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    tasks: JoinSet<Result<(), BoxError>>,
}

impl Collector {
    /// Stops once both queues answer empty, and gives every task id seen
    /// (`None` for a message that named none).
    pub async fn finish(mut self) -> Result<Vec<Option<String>>, BoxError> {
        self.stop.cancel();
        while let Some(done) = self.tasks.join_next().await {
            done??;
        }
        Ok(std::mem::take(
            &mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// A fresh bucket (testkit's), and what a soak counts in it.
pub struct Bucket {
    pub name: String,
    s3: aws_sdk_s3::Client,
}

impl Bucket {
    pub async fn create(moto: &str) -> Result<Self, BoxError> {
        let name = testkit::create_bucket().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk(moto).await)
                .force_path_style(true)
                .build(),
        );
        Ok(Self { name, s3 })
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Result<HashSet<String>, BoxError> {
        let mut keys = HashSet::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.name)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "ListObjectsV2: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )
                })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// Best effort: every object, then the bucket.
    pub async fn delete(&self) {
        if let Ok(keys) = self.keys().await {
            for key in keys {
                let _ = self
                    .s3
                    .delete_object()
                    .bucket(&self.name)
                    .key(key)
                    .send()
                    .await;
            }
        }
        let _ = self.s3.delete_bucket().bucket(&self.name).send().await;
    }
}

//! SQS queues: the GPU and CPU queues of the old system, each with the
//! dead-letter queue its redrive policy sends failed messages to.

use std::time::Duration;

use aws_sdk_sqs::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName},
};
use common::aws::AwsError;

use super::{JobQueue, QueueDepth, QueueError, QueueMessage};

pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
    /// The redrive policy's `maxReceiveCount`: how many attempts a
    /// dead-lettered job had (a DLQ message's own receive count restarts).
    max_receive_count: Option<u32>,
}

/// An SQS client whose calls fail within the dependency timeout
/// (`DEPENDENCY_TIMEOUT_SECONDS`) when SQS does not answer; a long poll
/// gets its wait on top (see `receive_from`).
pub async fn client(aws: &common::aws::AwsSettings) -> Client {
    let sdk = aws.sdk_config_for(common::aws::AwsService::Sqs).await;
    Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .timeout_config(common::aws::call_timeouts(aws.dependency_timeout))
            .build(),
    )
}

impl SqsQueue {
    /// Reads the queue's redrive policy once; an unreachable queue is not
    /// fatal here (readiness reports it).
    pub async fn connect(client: Client, url: &str, dlq_url: Option<&str>) -> Self {
        let mut queue = Self {
            client,
            url: url.to_owned(),
            dlq_url: dlq_url.map(str::to_owned),
            max_receive_count: None,
        };
        // Bounded: start-up must not wait long on an SQS that hangs.
        let policy = tokio::time::timeout(Duration::from_secs(5), queue.redrive_policy()).await;
        if let Ok(Some((max_receive_count, dlq_arn))) = policy {
            queue.max_receive_count = max_receive_count;
            // Without GPU_DLQ_URL / CPU_DLQ_URL, the redrive policy says
            // where failed messages go.
            if queue.dlq_url.is_none() {
                queue.dlq_url = match dlq_arn {
                    Some(arn) => {
                        tokio::time::timeout(Duration::from_secs(5), queue.url_of_arn(&arn))
                            .await
                            .ok()
                            .flatten()
                    }
                    None => None,
                };
            }
        }
        if queue.dlq_url.is_none() {
            tracing::warn!(queue = %queue.url, "no dead-letter queue known: jobs whose messages give up are only caught by the reaper");
        }
        queue
    }

    /// The redrive policy: `maxReceiveCount` and the DLQ's ARN.
    async fn redrive_policy(&self) -> Option<(Option<u32>, Option<String>)> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .ok()?;
        let policy = attributes
            .attributes()?
            .get(&QueueAttributeName::RedrivePolicy)?
            .clone();
        let policy: serde_json::Value = serde_json::from_str(&policy).ok()?;
        let max = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let arn = policy["deadLetterTargetArn"].as_str().map(str::to_owned);
        Some((max, arn))
    }

    /// `arn:aws:sqs:<region>:<account>:<name>` → its queue URL.
    async fn url_of_arn(&self, arn: &str) -> Option<String> {
        let mut parts = arn.rsplitn(3, ':');
        let name = parts.next()?;
        let account = parts.next()?;
        self.client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .ok()?
            .queue_url()
            .map(str::to_owned)
    }

    async fn receive_from(
        &self,
        url: &str,
        max: u32,
        wait: Duration,
        visibility: Duration,
        dead: bool,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.clamp(1, 10)).unwrap_or(10))
            // Below the SDK's 20 s read timeout, so an empty long poll
            // is not mistaken for a dead connection.
            .wait_time_seconds(i32::try_from(wait.as_secs().min(10)).unwrap_or(10))
            .visibility_timeout(seconds(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(TRIED_ATTRIBUTE)
            // A long poll legitimately waits up to 10 s for a message: its
            // deadline is the wait plus a margin, not the dependency timeout.
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(common::aws::call_timeouts(Duration::from_secs(14))),
            )
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    message_id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: receive_count(
                        m,
                        dead.then_some(self.max_receive_count).flatten(),
                    ),
                })
            })
            .collect())
    }
}

fn seconds(d: Duration) -> i32 {
    // SQS allows 0..=43200 s of visibility.
    i32::try_from(d.as_secs().min(43_200)).unwrap_or(43_200)
}

fn classify<E, R>(err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // A queue being created (or just deleted and re-made) is back shortly.
    let failure = AwsError::classify(&err, &["NonExistentQueue", "QueueDoesNotExist"]);
    if failure.transient {
        QueueError::Unavailable(failure.to_string())
    } else {
        QueueError::Other(failure.to_string())
    }
}

fn count(
    attributes: Option<&std::collections::HashMap<QueueAttributeName, String>>,
    name: &QueueAttributeName,
) -> u64 {
    attributes
        .and_then(|a| a.get(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, body: &str) -> Result<(), QueueError> {
        // On the submit path: the client's dependency timeout bounds it.
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        self.receive_from(&self.url, max, wait, visibility, false)
            .await
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(timeout))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(classify)?;
        Ok(QueueDepth {
            visible: count(
                output.attributes(),
                &QueueAttributeName::ApproximateNumberOfMessages,
            ),
            in_flight: count(
                output.attributes(),
                &QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
        })
    }

    async fn receive_dead(&self, max: u32) -> Result<Vec<QueueMessage>, QueueError> {
        match &self.dlq_url {
            None => Ok(vec![]),
            Some(url) => {
                self.receive_from(url, max, Duration::ZERO, Duration::from_secs(30), true)
                    .await
            }
        }
    }

    async fn dead_letter(&self, message: &QueueMessage) -> Result<(), QueueError> {
        match &self.dlq_url {
            Some(dlq) => {
                self.client
                    .send_message()
                    .queue_url(dlq)
                    .message_body(&message.body)
                    .message_attributes(
                        TRIED_ATTRIBUTE,
                        MessageAttributeValue::builder()
                            .data_type("Number")
                            .string_value(message.receive_count.to_string())
                            .build()
                            .map_err(|e| QueueError::Other(e.to_string()))?,
                    )
                    .send()
                    .await
                    .map_err(classify)?;
                self.delete(&message.receipt).await
            }
            // No DLQ known to this process: hide it for SQS's maximum so it
            // is not retried in a loop; the queue's redrive policy moves it
            // once its receives are used up.
            None => {
                self.set_visibility(&message.receipt, Duration::from_secs(43_200))
                    .await
            }
        }
    }

    async fn delete_dead(&self, receipt: &str) -> Result<(), QueueError> {
        let Some(url) = &self.dlq_url else {
            return Ok(());
        };
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// The attribute `dead_letter` stamps on a message it moves: how often it was
/// really tried (SQS counts receives afresh on the dead-letter queue).
const TRIED_ATTRIBUTE: &str = "tried";

/// How often a message was tried: what `dead_letter` recorded when it moved
/// it; for a dead letter the redrive policy moved, `used_up` (its receives
/// ran out); else SQS's own count of receives.
fn receive_count(message: &aws_sdk_sqs::types::Message, used_up: Option<u32>) -> u32 {
    let marked = message
        .message_attributes()
        .and_then(|a| a.get(TRIED_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .and_then(|c| c.parse().ok());
    let counted = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok());
    marked.or(used_up).or(counted).unwrap_or(1)
}

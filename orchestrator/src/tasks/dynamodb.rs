//! The production task store: the DynamoDB table the old system used
//! (`task_store`, partition key `task_id`, GSI `status-created_at-index`).
//! Items keep exactly the attributes of `CONTRACT.md` §2, so old and new
//! adapters can update them; the orchestrator adds `kind`, `queue` and
//! `attempts`, and `owner_id` for a signed-in submitter. Idempotency keys live in the same table under
//! `idempotency#<hash>` ids, without a `status`, so they never appear in
//! the GSI.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::query::builders::QueryFluentBuilder,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure, Select},
};
use common::aws::AwsError;

use super::JobStatus;
use super::{
    IdempotencyClaim, NewTask, QuotaCount, StatusChange, StoredStatus, TaskRecord, TaskStore,
    TaskStoreError, Transition,
};

pub use common::aws::TASK_STATUS_INDEX as STATUS_INDEX;

/// Present (`true`) on an item whose queue message is not yet known to be
/// sent; removed when the submit confirms it. Old adapters never read it.
const AWAITING_QUEUE: &str = "awaiting_queue";

type Item = HashMap<String, AttributeValue>;

pub struct DynamoTaskStore {
    client: Client,
    table: String,
}

impl DynamoTaskStore {
    pub async fn new(aws: &common::aws::AwsSettings, table: &str) -> Self {
        let sdk = aws.sdk_config_for(common::aws::AwsService::DynamoDb).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .timeout_config(common::aws::call_timeouts(aws.dependency_timeout))
            .build();
        Self {
            client: Client::from_conf(config),
            table: table.to_owned(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A query on the status GSI.
    fn index_query(&self) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(STATUS_INDEX)
    }

    /// Up to `limit` records of `query`, page after page (bounded: the
    /// filter may leave most pages empty).
    async fn records(
        &self,
        query: QueryFluentBuilder,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, TaskStoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        for _ in 0..50 {
            let page = query
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            found.extend(page.items().iter().map(record));
            if found.len() >= limit {
                found.truncate(limit);
                break;
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(found)
    }

    /// The `processing` count and latest update of GPU jobs in one status,
    /// through the GSI.
    async fn scan_status(
        &self,
        status: &str,
        job_types: &[&str],
        since: Option<i64>,
        count_only: bool,
    ) -> Result<(u64, Option<i64>), TaskStoreError> {
        let mut count = 0u64;
        let mut latest: Option<i64> = None;
        let mut start: Option<Item> = None;
        // Bounded: the GSI holds one status's jobs, paged by 1 MB.
        for _ in 0..50 {
            let filter: Vec<String> = (0..job_types.len()).map(|i| format!(":t{i}")).collect();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATUS_INDEX)
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":s", AttributeValue::S(status.to_owned()))
                .filter_expression(format!("job_type IN ({})", filter.join(", ")))
                .set_exclusive_start_key(start.take());
            query = match since {
                Some(since) => query
                    .key_condition_expression("#s = :s AND created_at >= :since")
                    .expression_attribute_values(":since", AttributeValue::N(since.to_string())),
                None => query.key_condition_expression("#s = :s"),
            };
            for (i, job_type) in job_types.iter().enumerate() {
                query = query.expression_attribute_values(
                    format!(":t{i}"),
                    AttributeValue::S((*job_type).to_owned()),
                );
            }
            if count_only {
                query = query.select(Select::Count);
            }
            let page = query.send().await.map_err(classify)?;
            count += u64::try_from(page.count()).unwrap_or(0);
            for item in page.items() {
                if let Some(updated) = number(item, "updated_at") {
                    latest = Some(latest.map_or(updated, |l| l.max(updated)));
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok((count, latest))
    }
}

/// Sorts SDK failures: no answer, throttling, server-side failures and a
/// missing table (being created, or a wrong name that the readiness check
/// reports) are "unavailable" (503 and retry); the rest are bugs.
fn classify<E, R>(err: SdkError<E, R>) -> TaskStoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let failure = AwsError::classify(&err, &["ResourceNotFoundException"]);
    if failure.transient {
        TaskStoreError::Unavailable(failure.to_string())
    } else {
        TaskStoreError::Other(failure.to_string())
    }
}

fn string(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        Some(AttributeValue::N(n)) => Some(n.clone()),
        _ => None,
    }
}

/// A number attribute. Python adapters write `time.time()`, a float.
fn number(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) | Some(AttributeValue::S(n)) => {
            n.parse::<f64>().ok().map(|f| f as i64)
        }
        _ => None,
    }
}

fn record(item: &Item) -> TaskRecord {
    TaskRecord {
        task_id: string(item, "task_id").unwrap_or_default(),
        status: string(item, "status").map(StoredStatus::from),
        job_type: string(item, "job_type"),
        kind: string(item, "kind"),
        queue: string(item, "queue"),
        created_at: number(item, "created_at"),
        updated_at: number(item, "updated_at"),
        result_url: string(item, "result_url"),
        result_s3_uri: string(item, "result_s3_uri"),
        error: string(item, "error"),
        error_message: string(item, "error_message"),
        attempts: number(item, "attempts"),
        comfy_job_id: string(item, "comfy_job_id"),
        api_job_id: string(item, "api_job_id"),
        owner_id: string(item, "owner_id"),
        awaiting_queue: matches!(item.get(AWAITING_QUEUE), Some(AttributeValue::Bool(true))),
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The status found when a conditional update was refused.
fn refused<R>(
    err: SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
) -> Result<Transition, TaskStoreError>
where
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service)
            if service.err().is_conditional_check_failed_exception() =>
        {
            let current = match service.err() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(e) => {
                    e.item().and_then(|item| string(item, "status")).map(StoredStatus::from)
                }
                _ => None,
            };
            Ok(Transition::Refused { current })
        }
        other => Err(classify(other)),
    }
}

#[async_trait::async_trait]
impl TaskStore for DynamoTaskStore {
    async fn create(&self, task: &NewTask) -> Result<(), TaskStoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("task_id", s(&task.task_id))
            .item("status", s(JobStatus::Pending.as_str()))
            .item("job_type", s(task.kind.api_path))
            .item("kind", s(task.kind.name))
            .item("queue", s(task.kind.queue.as_str()))
            .item("created_at", n(task.now))
            .item("updated_at", n(task.now));
        // An extra attribute: the old adapters update items by name and
        // never read it.
        if let Some(owner) = &task.owner_id {
            put = put.item("owner_id", s(owner));
        }
        if task.awaiting_queue {
            put = put.item(AWAITING_QUEUE, AttributeValue::Bool(true));
        }
        let result = put
            .condition_expression("attribute_not_exists(task_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Err(TaskStoreError::AlreadyExists(task.task_id.clone()))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, TaskStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.item().map(record))
    }

    async fn get_many(&self, task_ids: &[String]) -> Result<Vec<TaskRecord>, TaskStoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        // BatchGetItem refuses a key named twice.
        let mut unique: Vec<&String> = task_ids.iter().collect();
        unique.sort();
        unique.dedup();
        let task_ids = unique;
        let mut records = Vec::with_capacity(task_ids.len());
        // BatchGetItem takes 100 keys; what it leaves unprocessed (throttling)
        // is asked again, a bounded number of times.
        for chunk in task_ids.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([("task_id".to_owned(), s(id))]))
                .collect();
            for _ in 0..5 {
                if keys.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| TaskStoreError::Other(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(classify)?;
                if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                    records.extend(items.iter().map(record));
                }
                if let Some(left) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    keys = left.keys().to_vec();
                }
            }
        }
        Ok(records)
    }

    async fn transition(
        &self,
        task_id: &str,
        from: &[JobStatus],
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        let allowed: Vec<JobStatus> = from.iter().copied().filter(|s| !s.is_final()).collect();
        if allowed.is_empty() {
            return Ok(Transition::Refused {
                current: self.get(task_id).await?.and_then(|r| r.status),
            });
        }
        let names: Vec<String> = (0..allowed.len()).map(|i| format!(":from{i}")).collect();
        let mut set = vec!["#status = :to", "updated_at = :now"];
        if change.error_message.is_some() {
            set.push("error_message = :error");
        }
        if change.attempts.is_some() {
            set.push("attempts = :attempts");
        }
        let detail_sets: Vec<String> = (0..change.details.len())
            .map(|i| format!("#d{i} = :d{i}"))
            .collect();
        set.extend(detail_sets.iter().map(String::as_str));
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression(format!("#status IN ({})", names.join(", ")))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(change.to.as_str()))
            .expression_attribute_values(":now", n(change.now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, status) in names.iter().zip(&allowed) {
            update = update.expression_attribute_values(name, s(status.as_str()));
        }
        if let Some(error) = &change.error_message {
            update = update.expression_attribute_values(":error", s(error));
        }
        if let Some(attempts) = change.attempts {
            update = update.expression_attribute_values(":attempts", n(attempts));
        }
        for (i, (detail, value)) in change.details.iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#d{i}"), detail.attribute())
                .expression_attribute_values(format!(":d{i}"), s(value));
        }
        match update.send().await {
            Ok(_) => Ok(Transition::Applied),
            Err(e) => refused(e),
        }
    }

    async fn fail_if_stale(
        &self,
        task_id: &str,
        status: JobStatus,
        before: i64,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        // A final status is never overwritten, even when named.
        if status.is_final() {
            return Ok(Transition::Refused {
                current: self.get(task_id).await?.and_then(|r| r.status),
            });
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression("SET #status = :to, updated_at = :now, error_message = :error")
            .condition_expression("#status = :stale AND updated_at < :before")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(change.to.as_str()))
            .expression_attribute_values(":now", n(change.now))
            .expression_attribute_values(
                ":error",
                s(change.error_message.as_deref().unwrap_or("timed out")),
            )
            .expression_attribute_values(":stale", s(status.as_str()))
            .expression_attribute_values(":before", n(before))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Transition::Applied),
            Err(e) => refused(e),
        }
    }

    async fn stale(
        &self,
        status: JobStatus,
        before: i64,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, TaskStoreError> {
        let query = self
            .index_query()
            .key_condition_expression("#s = :status")
            .filter_expression("updated_at < :before")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":before", n(before));
        self.records(query, limit).await
    }

    async fn confirm_queued(&self, task_id: &str) -> Result<Transition, TaskStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression("REMOVE #awaiting")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#awaiting", AWAITING_QUEUE)
            .expression_attribute_values(":pending", s(JobStatus::Pending.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Transition::Applied),
            Err(e) => refused(e),
        }
    }

    async fn fail_unqueued(
        &self,
        task_id: &str,
        change: &StatusChange,
    ) -> Result<Transition, TaskStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(task_id))
            .update_expression(
                "SET #status = :to, updated_at = :now, error_message = :error REMOVE #awaiting",
            )
            .condition_expression("#status = :pending AND #awaiting = :true")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#awaiting", AWAITING_QUEUE)
            .expression_attribute_values(":to", s(change.to.as_str()))
            .expression_attribute_values(":now", n(change.now))
            .expression_attribute_values(
                ":error",
                s(change.error_message.as_deref().unwrap_or("not queued")),
            )
            .expression_attribute_values(":pending", s(JobStatus::Pending.as_str()))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Transition::Applied),
            Err(e) => refused(e),
        }
    }

    async fn unqueued(&self, before: i64, limit: usize) -> Result<Vec<TaskRecord>, TaskStoreError> {
        // The GSI's `pending` partition, oldest first; the filter keeps the
        // few still awaiting their message however long the backlog is.
        let query = self
            .index_query()
            .key_condition_expression("#s = :status AND created_at < :before")
            .filter_expression("#awaiting = :true")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#awaiting", AWAITING_QUEUE)
            .expression_attribute_values(":status", s(JobStatus::Pending.as_str()))
            .expression_attribute_values(":before", n(before))
            .expression_attribute_values(":true", AttributeValue::Bool(true));
        self.records(query, limit).await
    }

    async fn gpu_activity(
        &self,
        gpu_job_types: &[&str],
        since: i64,
    ) -> Result<(u64, Option<i64>), TaskStoreError> {
        // Every processing job counts; only the jobs created since `since`
        // give the latest update, whatever their status (as on SQLite).
        let (processing, _) = self
            .scan_status("processing", gpu_job_types, None, true)
            .await?;
        let mut latest = None;
        for status in ["processing", "completed", "failed", "cancelled", "pending"] {
            let (_, last) = self
                .scan_status(status, gpu_job_types, Some(since), false)
                .await?;
            latest = latest.max(last);
        }
        Ok((processing, latest))
    }

    async fn claim_idempotency_key(
        &self,
        key_hash: &str,
        fingerprint: &str,
        task_id: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<IdempotencyClaim, TaskStoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("task_id", s(&format!("idempotency#{key_hash}")))
            .item("job_id", s(task_id))
            .item("fingerprint", s(fingerprint))
            .item("expires_at", n(now + ttl_seconds))
            .condition_expression("attribute_not_exists(task_id) OR expires_at <= :now")
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(IdempotencyClaim::Claimed),
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let old = match service.err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => e.item().cloned(),
                    _ => None,
                };
                let old = old.ok_or_else(|| {
                    TaskStoreError::Other("idempotency record without attributes".into())
                })?;
                Ok(IdempotencyClaim::Existing {
                    task_id: string(&old, "job_id").unwrap_or_default(),
                    fingerprint: string(&old, "fingerprint").unwrap_or_default(),
                })
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn release_idempotency_key(
        &self,
        key_hash: &str,
        task_id: &str,
    ) -> Result<(), TaskStoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("task_id", s(&format!("idempotency#{key_hash}")))
            .condition_expression("job_id = :job")
            .expression_attribute_values(":job", s(task_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already taken over by another job: nothing of ours to free.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn count_daily_job(
        &self,
        client: &str,
        day: &str,
        limit: u64,
        expires_at: i64,
    ) -> Result<QuotaCount, TaskStoreError> {
        // Like the idempotency records: no `status`, so never in the GSI;
        // `expires_at` is the table's TTL attribute.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(&format!("quota#{day}#{client}")))
            .update_expression("SET expires_at = :exp ADD used :one")
            .condition_expression("attribute_not_exists(used) OR used < :limit")
            .expression_attribute_values(":exp", n(expires_at))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(QuotaCount::Counted {
                used: output
                    .attributes()
                    .and_then(|a| number(a, "used"))
                    .and_then(|u| u64::try_from(u).ok())
                    .unwrap_or(1),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(QuotaCount::Exhausted)
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn uncount_daily_job(&self, client: &str, day: &str) -> Result<(), TaskStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("task_id", s(&format!("quota#{day}#{client}")))
            .update_expression("ADD used :minus")
            .condition_expression("used > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn ping(&self) -> Result<(), TaskStoreError> {
        // GetItem needs only the permission the service already has.
        self.client
            .get_item()
            .table_name(&self.table)
            .key("task_id", s("readiness-probe"))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

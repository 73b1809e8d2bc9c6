//! What every `TaskStore` must do, written once and run on both
//! implementations: the embedded SQLite table and DynamoDB (moto). Each
//! behaviour is one function taking the backend set under test; the store is
//! that of an orchestrator started the way `main` starts it, with no
//! background loop running (no reaper or sweep touches these records). Times
//! are passed in, as the trait takes them, so nothing here waits on a clock.

mod support;

use std::sync::Arc;

use orchestrator::{
    jobs::{JobKind, JobStatus, kinds::gpu_job_types},
    tasks::{
        Detail, IdempotencyClaim, NewTask, QuotaCount, StatusChange, StoredStatus, TaskRecord,
        TaskStore, TaskStoreError, Transition,
    },
};
use support::{TestApp, TestAppBuilder};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    create_then_get_reads_a_pending_record,
    creating_an_existing_id_is_already_exists_and_keeps_the_first,
    get_of_an_unknown_id_is_none,
    get_many_returns_the_known_and_leaves_out_the_unknown,
    transition_applies_from_a_listed_status_with_what_comes_with_it,
    transition_from_an_unlisted_status_is_refused_with_the_current_one,
    transition_of_an_unknown_task_is_refused_and_creates_nothing,
    a_final_status_is_never_overwritten_by_transition,
    fail_if_stale_fails_only_a_job_not_updated_since_before,
    fail_if_stale_leaves_a_job_in_another_status,
    fail_if_stale_never_overwrites_a_final_status,
    stale_lists_the_jobs_not_updated_since_before_oldest_first,
    confirm_queued_clears_awaiting_while_pending_and_is_idempotent,
    fail_unqueued_fails_only_a_pending_job_still_awaiting_its_message,
    unqueued_lists_pending_jobs_still_awaiting_their_message,
    an_idempotency_key_maps_to_its_first_task_until_released,
    an_expired_idempotency_key_can_be_claimed_again,
    the_daily_quota_counts_up_to_its_limit_and_gives_back,
    gpu_activity_counts_processing_gpu_jobs_and_their_latest_update,
    ping_answers,
);

const GPU_JOB: &str = "/api/v1/camera-angle/jobs";
const CPU_JOB: &str = "/api/v1/face-mask/jobs";
/// Every status, for "from any status".
const ALL: [JobStatus; 5] = [
    JobStatus::Pending,
    JobStatus::Processing,
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// A fixed moment in the past; records are stamped relative to it.
fn t0() -> i64 {
    orchestrator::unix_now() - 100_000
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn task(id: &str, now: i64) -> NewTask {
    NewTask {
        task_id: id.to_owned(),
        kind: JobKind::named("camera-angle").expect("a kind"),
        now,
        owner_id: None,
        awaiting_queue: false,
    }
}

/// Written before its queue message is known to be sent (the AWS submit).
fn awaiting(id: &str, now: i64) -> NewTask {
    NewTask {
        awaiting_queue: true,
        ..task(id, now)
    }
}

/// The record's status as a lower-case name: the one place that reads
/// `TaskRecord::status`.
fn status_of(record: &TaskRecord) -> Option<String> {
    record.status.as_ref().map(|s| s.as_str().to_owned())
}

/// A refusal that found `status`: the one place that builds `Refused`.
fn refused(status: Option<&str>) -> Transition {
    Transition::Refused {
        current: status.map(StoredStatus::from),
    }
}

fn ids(records: &[TaskRecord]) -> Vec<String> {
    records.iter().map(|r| r.task_id.clone()).collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

struct Subject {
    _app: TestApp,
    tasks: Arc<dyn TaskStore>,
}

async fn subject(builder: TestAppBuilder) -> Subject {
    let app = builder.start().await;
    let tasks = app.app.tasks.clone();
    Subject { _app: app, tasks }
}

impl Subject {
    async fn create(&self, task: &NewTask) {
        self.tasks.create(task).await.expect("create");
    }

    async fn record(&self, id: &str) -> TaskRecord {
        self.tasks
            .get(id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("no record {id}"))
    }

    async fn status(&self, id: &str) -> Option<String> {
        status_of(&self.record(id).await)
    }

    async fn transition(
        &self,
        id: &str,
        from: &[JobStatus],
        to: JobStatus,
        now: i64,
    ) -> Transition {
        self.tasks
            .transition(id, from, &StatusChange::to(to, now))
            .await
            .expect("transition")
    }

    /// A new job taken to `status` through the statuses a worker uses,
    /// last updated at `updated`.
    async fn job_in(&self, status: JobStatus, created: i64, updated: i64) -> String {
        let id = new_id();
        self.create(&task(&id, created)).await;
        self.put_in(&id, status, updated).await;
        id
    }

    async fn put_in(&self, id: &str, status: JobStatus, updated: i64) {
        let from = [JobStatus::Pending, JobStatus::Processing];
        if status != JobStatus::Pending {
            assert_eq!(
                self.transition(id, &from, status, updated).await,
                Transition::Applied
            );
        }
    }

    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        task_id: &str,
        now: i64,
    ) -> IdempotencyClaim {
        self.tasks
            .claim_idempotency_key(key, fingerprint, task_id, now, 60)
            .await
            .expect("claim")
    }

    async fn count(&self, client: &str, day: &str, limit: u64) -> QuotaCount {
        let expires_at = orchestrator::unix_now() + 2 * 86_400;
        self.tasks
            .count_daily_job(client, day, limit, expires_at)
            .await
            .expect("count")
    }
}

fn existing(task_id: &str, fingerprint: &str) -> IdempotencyClaim {
    IdempotencyClaim::Existing {
        task_id: task_id.to_owned(),
        fingerprint: fingerprint.to_owned(),
    }
}

async fn create_then_get_reads_a_pending_record(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (id, t0) = (new_id(), t0());
    s.create(&NewTask {
        owner_id: Some("user-1".to_owned()),
        ..task(&id, t0)
    })
    .await;
    let record = s.record(&id).await;
    let expected = TaskRecord {
        task_id: id.clone(),
        status: Some(JobStatus::Pending.into()),
        job_type: Some(GPU_JOB.to_owned()),
        kind: Some("camera-angle".to_owned()),
        queue: Some("gpu".to_owned()),
        created_at: Some(t0),
        updated_at: Some(t0),
        owner_id: Some("user-1".to_owned()),
        awaiting_queue: false,
        ..TaskRecord::default()
    };
    assert_eq!(record, expected);
    let other = new_id();
    s.create(&awaiting(&other, t0)).await;
    assert!(s.record(&other).await.awaiting_queue);
    assert_eq!(s.record(&other).await.owner_id, None);
}

async fn creating_an_existing_id_is_already_exists_and_keeps_the_first(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (id, t0) = (new_id(), t0());
    s.create(&task(&id, t0)).await;
    s.transition(&id, &[JobStatus::Pending], JobStatus::Processing, t0 + 1)
        .await;
    let again = NewTask {
        kind: JobKind::named("face-mask").expect("a kind"),
        ..task(&id, t0 + 5)
    };
    match s.tasks.create(&again).await {
        Err(TaskStoreError::AlreadyExists(taken)) => assert_eq!(taken, id),
        other => panic!("a second create gave {other:?}"),
    }
    let record = s.record(&id).await;
    assert_eq!(status_of(&record).as_deref(), Some("processing"));
    assert_eq!(record.job_type.as_deref(), Some(GPU_JOB));
    assert_eq!(record.created_at, Some(t0));
}

async fn get_of_an_unknown_id_is_none(builder: TestAppBuilder) {
    let s = subject(builder).await;
    assert_eq!(s.tasks.get(&new_id()).await.expect("get"), None);
}

async fn get_many_returns_the_known_and_leaves_out_the_unknown(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let (a, b, c) = (new_id(), new_id(), new_id());
    for id in [&a, &b, &c] {
        s.create(&task(id, t0)).await;
    }
    s.transition(&c, &[JobStatus::Pending], JobStatus::Completed, t0 + 1)
        .await;
    let found = s
        .tasks
        .get_many(&[a.clone(), new_id(), c.clone()])
        .await
        .expect("get_many");
    assert_eq!(sorted(ids(&found)), sorted(vec![a.clone(), c.clone()]));
    // The same records `get` reads.
    for record in &found {
        assert_eq!(record, &s.record(&record.task_id).await);
    }
    assert!(s.tasks.get_many(&[]).await.expect("get_many").is_empty());
    assert!(
        s.tasks
            .get_many(&[new_id()])
            .await
            .expect("get_many")
            .is_empty()
    );
}

async fn transition_applies_from_a_listed_status_with_what_comes_with_it(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (id, t0) = (new_id(), t0());
    s.create(&task(&id, t0)).await;
    let start = StatusChange {
        attempts: Some(1),
        ..StatusChange::to(JobStatus::Processing, t0 + 5).detail(Detail::ComfyJobId, "comfy-1")
    };
    let from = [JobStatus::Pending, JobStatus::Processing];
    assert_eq!(
        s.tasks.transition(&id, &from, &start).await.expect("start"),
        Transition::Applied
    );
    let record = s.record(&id).await;
    assert_eq!(status_of(&record).as_deref(), Some("processing"));
    assert_eq!(record.updated_at, Some(t0 + 5));
    assert_eq!(record.attempts, Some(1));
    assert_eq!(record.comfy_job_id.as_deref(), Some("comfy-1"));

    let done = StatusChange::to(JobStatus::Completed, t0 + 9)
        .detail(Detail::ResultS3Uri, "https://cdn.example.test/r.png")
        .detail(Detail::ApiJobId, "api-1");
    assert_eq!(
        s.tasks
            .transition(&id, &[JobStatus::Processing], &done)
            .await
            .expect("finish"),
        Transition::Applied
    );
    let record = s.record(&id).await;
    assert_eq!(status_of(&record).as_deref(), Some("completed"));
    assert_eq!(record.updated_at, Some(t0 + 9));
    assert_eq!(
        record.result_s3_uri.as_deref(),
        Some("https://cdn.example.test/r.png")
    );
    assert_eq!(record.api_job_id.as_deref(), Some("api-1"));
    // What the change did not name is kept.
    assert_eq!(record.comfy_job_id.as_deref(), Some("comfy-1"));
    assert_eq!(record.attempts, Some(1));
    assert_eq!(record.created_at, Some(t0));

    let other = new_id();
    s.create(&task(&other, t0)).await;
    let failed = StatusChange::to(JobStatus::Failed, t0 + 3)
        .error("backend said no")
        .detail(Detail::ResultUrl, "https://cdn.example.test/partial.png");
    assert_eq!(
        s.tasks
            .transition(&other, &[JobStatus::Pending], &failed)
            .await
            .expect("fail"),
        Transition::Applied
    );
    let record = s.record(&other).await;
    assert_eq!(status_of(&record).as_deref(), Some("failed"));
    assert_eq!(record.error_message.as_deref(), Some("backend said no"));
    assert_eq!(
        record.result_url.as_deref(),
        Some("https://cdn.example.test/partial.png")
    );
}

async fn transition_from_an_unlisted_status_is_refused_with_the_current_one(
    builder: TestAppBuilder,
) {
    let s = subject(builder).await;
    let t0 = t0();
    let id = s.job_in(JobStatus::Processing, t0, t0 + 1).await;
    let before = s.record(&id).await;
    let change = StatusChange::to(JobStatus::Completed, t0 + 7).error("should not land");
    assert_eq!(
        s.tasks
            .transition(&id, &[JobStatus::Pending], &change)
            .await
            .expect("transition"),
        refused(Some("processing"))
    );
    assert_eq!(s.record(&id).await, before, "a refused change wrote");
    // No listed status at all: refused too.
    assert_eq!(
        s.tasks
            .transition(&id, &[], &change)
            .await
            .expect("transition"),
        refused(Some("processing"))
    );
    assert_eq!(s.record(&id).await, before);
}

async fn transition_of_an_unknown_task_is_refused_and_creates_nothing(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let id = new_id();
    assert_eq!(
        s.transition(&id, &ALL, JobStatus::Processing, t0()).await,
        refused(None)
    );
    assert_eq!(s.tasks.get(&id).await.expect("get"), None);
}

async fn a_final_status_is_never_overwritten_by_transition(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    for final_status in [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let id = s.job_in(final_status, t0, t0 + 1).await;
        let before = s.record(&id).await;
        for to in ALL {
            // Even a caller that lists the final status itself.
            let change = StatusChange::to(to, t0 + 2).error("overwritten");
            assert_eq!(
                s.tasks
                    .transition(&id, &ALL, &change)
                    .await
                    .expect("transition"),
                refused(Some(final_status.as_str())),
                "{final_status} → {to}"
            );
        }
        assert_eq!(s.record(&id).await, before);
    }
}

fn timed_out(now: i64) -> StatusChange {
    StatusChange::to(JobStatus::Failed, now).error("timed out: no progress")
}

async fn fail_if_stale_fails_only_a_job_not_updated_since_before(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let id = s.job_in(JobStatus::Processing, t0, t0 + 10).await;
    // Updated exactly at `before`: not older than it.
    assert_eq!(
        s.tasks
            .fail_if_stale(&id, JobStatus::Processing, t0 + 10, &timed_out(t0 + 50))
            .await
            .expect("fail_if_stale"),
        refused(Some("processing"))
    );
    assert_eq!(s.status(&id).await.as_deref(), Some("processing"));
    assert_eq!(
        s.tasks
            .fail_if_stale(&id, JobStatus::Processing, t0 + 11, &timed_out(t0 + 50))
            .await
            .expect("fail_if_stale"),
        Transition::Applied
    );
    let record = s.record(&id).await;
    assert_eq!(status_of(&record).as_deref(), Some("failed"));
    assert_eq!(
        record.error_message.as_deref(),
        Some("timed out: no progress")
    );
    assert_eq!(record.updated_at, Some(t0 + 50));
    // A pending job goes the same way.
    let pending = s.job_in(JobStatus::Pending, t0, t0).await;
    assert_eq!(
        s.tasks
            .fail_if_stale(&pending, JobStatus::Pending, t0 + 1, &timed_out(t0 + 50))
            .await
            .expect("fail_if_stale"),
        Transition::Applied
    );
    assert_eq!(s.status(&pending).await.as_deref(), Some("failed"));
}

async fn fail_if_stale_leaves_a_job_in_another_status(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let id = s.job_in(JobStatus::Processing, t0, t0 + 10).await;
    assert_eq!(
        s.tasks
            .fail_if_stale(&id, JobStatus::Pending, t0 + 1000, &timed_out(t0 + 1000))
            .await
            .expect("fail_if_stale"),
        refused(Some("processing"))
    );
    assert_eq!(s.status(&id).await.as_deref(), Some("processing"));
    assert_eq!(
        s.tasks
            .fail_if_stale(&new_id(), JobStatus::Pending, t0 + 1000, &timed_out(t0))
            .await
            .expect("fail_if_stale"),
        refused(None)
    );
}

async fn fail_if_stale_never_overwrites_a_final_status(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    for final_status in [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let id = s.job_in(final_status, t0, t0 + 10).await;
        let before = s.record(&id).await;
        for stale in [JobStatus::Pending, JobStatus::Processing] {
            assert_eq!(
                s.tasks
                    .fail_if_stale(&id, stale, t0 + 1000, &timed_out(t0 + 1000))
                    .await
                    .expect("fail_if_stale"),
                refused(Some(final_status.as_str()))
            );
        }
        assert_eq!(s.record(&id).await, before);
    }
}

async fn stale_lists_the_jobs_not_updated_since_before_oldest_first(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let a = s.job_in(JobStatus::Processing, t0, t0 + 10).await;
    let b = s.job_in(JobStatus::Processing, t0 + 1, t0 + 20).await;
    let _recent = s.job_in(JobStatus::Processing, t0 + 2, t0 + 30).await;
    let pending = s.job_in(JobStatus::Pending, t0 + 3, t0 + 3).await;
    let _done = s.job_in(JobStatus::Completed, t0 + 4, t0 + 5).await;

    let stale = |status, before, limit| {
        let tasks = s.tasks.clone();
        async move { ids(&tasks.stale(status, before, limit).await.expect("stale")) }
    };
    assert_eq!(
        stale(JobStatus::Processing, t0 + 30, 10).await,
        [a.clone(), b.clone()]
    );
    assert_eq!(
        stale(JobStatus::Processing, t0 + 30, 1).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        stale(JobStatus::Processing, t0 + 10, 10).await,
        Vec::<String>::new()
    );
    assert_eq!(stale(JobStatus::Pending, t0 + 30, 10).await, [pending]);
    // The records are whole.
    let listed = s
        .tasks
        .stale(JobStatus::Processing, t0 + 11, 10)
        .await
        .expect("stale");
    assert_eq!(listed, [s.record(&a).await]);
}

async fn confirm_queued_clears_awaiting_while_pending_and_is_idempotent(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let id = new_id();
    s.create(&awaiting(&id, t0)).await;
    assert!(s.record(&id).await.awaiting_queue);
    assert_eq!(
        s.tasks.confirm_queued(&id).await.expect("confirm"),
        Transition::Applied
    );
    let record = s.record(&id).await;
    assert!(!record.awaiting_queue);
    assert_eq!(status_of(&record).as_deref(), Some("pending"));
    assert_eq!(record.updated_at, Some(t0));
    assert_eq!(
        s.tasks.confirm_queued(&id).await.expect("confirm again"),
        Transition::Applied
    );
    // A job created without awaiting: nothing to clear, still applied.
    let plain = s.job_in(JobStatus::Pending, t0, t0).await;
    assert_eq!(
        s.tasks.confirm_queued(&plain).await.expect("confirm"),
        Transition::Applied
    );
    // Past pending: refused with what it is.
    let running = new_id();
    s.create(&awaiting(&running, t0)).await;
    s.put_in(&running, JobStatus::Processing, t0 + 1).await;
    assert_eq!(
        s.tasks.confirm_queued(&running).await.expect("confirm"),
        refused(Some("processing"))
    );
    let unknown = new_id();
    assert_eq!(
        s.tasks.confirm_queued(&unknown).await.expect("confirm"),
        refused(None)
    );
    assert_eq!(s.tasks.get(&unknown).await.expect("get"), None);
}

fn not_queued(now: i64) -> StatusChange {
    StatusChange::to(JobStatus::Failed, now).error("not queued: the queue refused it")
}

async fn fail_unqueued_fails_only_a_pending_job_still_awaiting_its_message(
    builder: TestAppBuilder,
) {
    let s = subject(builder).await;
    let t0 = t0();
    let id = new_id();
    s.create(&awaiting(&id, t0)).await;
    assert_eq!(
        s.tasks
            .fail_unqueued(&id, &not_queued(t0 + 5))
            .await
            .expect("fail_unqueued"),
        Transition::Applied
    );
    let record = s.record(&id).await;
    assert_eq!(status_of(&record).as_deref(), Some("failed"));
    assert_eq!(
        record.error_message.as_deref(),
        Some("not queued: the queue refused it")
    );
    assert_eq!(record.updated_at, Some(t0 + 5));
    assert!(!record.awaiting_queue);
    assert_eq!(
        s.tasks
            .fail_unqueued(&id, &not_queued(t0 + 6))
            .await
            .expect("fail_unqueued"),
        refused(Some("failed"))
    );

    // A confirm that won the race: the job stays pending.
    let confirmed = new_id();
    s.create(&awaiting(&confirmed, t0)).await;
    s.tasks.confirm_queued(&confirmed).await.expect("confirm");
    assert_eq!(
        s.tasks
            .fail_unqueued(&confirmed, &not_queued(t0 + 5))
            .await
            .expect("fail_unqueued"),
        refused(Some("pending"))
    );
    assert_eq!(s.status(&confirmed).await.as_deref(), Some("pending"));

    // Never awaiting at all (the embedded intake, or an old submit).
    let plain = s.job_in(JobStatus::Pending, t0, t0).await;
    assert_eq!(
        s.tasks
            .fail_unqueued(&plain, &not_queued(t0 + 5))
            .await
            .expect("fail_unqueued"),
        refused(Some("pending"))
    );

    // An adapter took it up after all.
    let taken = new_id();
    s.create(&awaiting(&taken, t0)).await;
    s.put_in(&taken, JobStatus::Processing, t0 + 1).await;
    assert_eq!(
        s.tasks
            .fail_unqueued(&taken, &not_queued(t0 + 5))
            .await
            .expect("fail_unqueued"),
        refused(Some("processing"))
    );
    assert_eq!(
        s.tasks
            .fail_unqueued(&new_id(), &not_queued(t0 + 5))
            .await
            .expect("fail_unqueued"),
        refused(None)
    );
}

async fn unqueued_lists_pending_jobs_still_awaiting_their_message(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let created = |id: &str, at: i64| awaiting(id, at);
    let (oldest, older, newer) = (new_id(), new_id(), new_id());
    s.create(&created(&oldest, t0)).await;
    s.create(&created(&older, t0 + 3)).await;
    s.create(&created(&newer, t0 + 10)).await;
    // Not listed: confirmed, never awaiting, failed, taken up.
    let confirmed = new_id();
    s.create(&created(&confirmed, t0)).await;
    s.tasks.confirm_queued(&confirmed).await.expect("confirm");
    s.job_in(JobStatus::Pending, t0, t0).await;
    let failed = new_id();
    s.create(&created(&failed, t0 + 1)).await;
    s.tasks
        .fail_unqueued(&failed, &not_queued(t0 + 2))
        .await
        .expect("fail_unqueued");
    let taken = new_id();
    s.create(&created(&taken, t0 + 2)).await;
    s.put_in(&taken, JobStatus::Processing, t0 + 4).await;

    let unqueued = |before, limit| {
        let tasks = s.tasks.clone();
        async move { ids(&tasks.unqueued(before, limit).await.expect("unqueued")) }
    };
    assert_eq!(unqueued(t0 + 10, 10).await, [oldest.clone(), older.clone()]);
    assert_eq!(
        unqueued(t0 + 11, 10).await,
        [oldest.clone(), older.clone(), newer.clone()]
    );
    assert_eq!(unqueued(t0 + 11, 1).await, std::slice::from_ref(&oldest));
    assert_eq!(unqueued(t0, 10).await, Vec::<String>::new());
    let listed = s.tasks.unqueued(t0 + 1, 10).await.expect("unqueued");
    assert_eq!(listed, [s.record(&oldest).await]);
    assert!(listed[0].awaiting_queue);
}

async fn an_idempotency_key_maps_to_its_first_task_until_released(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let key = testkit::unique("key-hash");
    assert_eq!(
        s.claim(&key, "fp-1", "task-1", t0).await,
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.claim(&key, "fp-2", "task-2", t0 + 1).await,
        existing("task-1", "fp-1")
    );
    // Only the task that holds the key frees it.
    s.tasks
        .release_idempotency_key(&key, "task-2")
        .await
        .expect("release");
    assert_eq!(
        s.claim(&key, "fp-2", "task-2", t0 + 2).await,
        existing("task-1", "fp-1")
    );
    s.tasks
        .release_idempotency_key(&key, "task-1")
        .await
        .expect("release");
    assert_eq!(
        s.claim(&key, "fp-3", "task-3", t0 + 3).await,
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.claim(&key, "fp-4", "task-4", t0 + 4).await,
        existing("task-3", "fp-3")
    );
    // Releasing a key nobody claimed is fine; keys are independent.
    let other = testkit::unique("key-hash");
    s.tasks
        .release_idempotency_key(&other, "task-9")
        .await
        .expect("release");
    assert_eq!(
        s.claim(&other, "fp-9", "task-9", t0).await,
        IdempotencyClaim::Claimed
    );
    // The keys are not jobs.
    assert!(
        s.tasks
            .stale(JobStatus::Pending, t0 + 100_000, 100)
            .await
            .expect("stale")
            .is_empty()
    );
}

async fn an_expired_idempotency_key_can_be_claimed_again(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let key = testkit::unique("key-hash");
    // Claimed at t0 for 60 s: held through t0 + 59, free from t0 + 60.
    assert_eq!(
        s.claim(&key, "fp-1", "task-1", t0).await,
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.claim(&key, "fp-2", "task-2", t0 + 59).await,
        existing("task-1", "fp-1")
    );
    assert_eq!(
        s.claim(&key, "fp-2", "task-2", t0 + 60).await,
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        s.claim(&key, "fp-3", "task-3", t0 + 61).await,
        existing("task-2", "fp-2")
    );
    // The task that held it before cannot free the new claim.
    s.tasks
        .release_idempotency_key(&key, "task-1")
        .await
        .expect("release");
    assert_eq!(
        s.claim(&key, "fp-3", "task-3", t0 + 62).await,
        existing("task-2", "fp-2")
    );
}

async fn the_daily_quota_counts_up_to_its_limit_and_gives_back(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let client = testkit::unique("client");
    let day = "2026-12-01";
    assert_eq!(
        s.count(&client, day, 2).await,
        QuotaCount::Counted { used: 1 }
    );
    assert_eq!(
        s.count(&client, day, 2).await,
        QuotaCount::Counted { used: 2 }
    );
    assert_eq!(s.count(&client, day, 2).await, QuotaCount::Exhausted);
    assert_eq!(s.count(&client, day, 2).await, QuotaCount::Exhausted);
    // A job that was then not accepted gives its count back.
    s.tasks
        .uncount_daily_job(&client, day)
        .await
        .expect("uncount");
    assert_eq!(
        s.count(&client, day, 2).await,
        QuotaCount::Counted { used: 2 }
    );
    // Per client and per day.
    let other = testkit::unique("client");
    assert_eq!(
        s.count(&other, day, 2).await,
        QuotaCount::Counted { used: 1 }
    );
    assert_eq!(
        s.count(&client, "2026-12-02", 2).await,
        QuotaCount::Counted { used: 1 }
    );
    // Never below zero: giving back more than was counted is ignored.
    let fresh = testkit::unique("client");
    s.tasks
        .uncount_daily_job(&fresh, day)
        .await
        .expect("uncount");
    assert_eq!(
        s.count(&fresh, day, 5).await,
        QuotaCount::Counted { used: 1 }
    );
    s.tasks
        .uncount_daily_job(&fresh, day)
        .await
        .expect("uncount");
    s.tasks
        .uncount_daily_job(&fresh, day)
        .await
        .expect("uncount");
    assert_eq!(
        s.count(&fresh, day, 5).await,
        QuotaCount::Counted { used: 1 }
    );
    // The counts are not jobs.
    assert!(
        s.tasks
            .stale(JobStatus::Pending, orchestrator::unix_now() + 10, 100)
            .await
            .expect("stale")
            .is_empty()
    );
}

async fn gpu_activity_counts_processing_gpu_jobs_and_their_latest_update(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let t0 = t0();
    let gpu = gpu_job_types();
    assert!(gpu.contains(&GPU_JOB) && !gpu.contains(&CPU_JOB));
    let since = t0 + 50;
    assert_eq!(
        s.tasks.gpu_activity(&gpu, since).await.expect("activity"),
        (0, None)
    );
    s.job_in(JobStatus::Processing, t0 + 100, t0 + 110).await;
    s.job_in(JobStatus::Completed, t0 + 100, t0 + 150).await;
    s.job_in(JobStatus::Pending, t0 + 120, t0 + 120).await;
    // CPU work is not GPU activity.
    let cpu = new_id();
    s.create(&NewTask {
        kind: JobKind::named("face-mask").expect("a kind"),
        ..task(&cpu, t0 + 100)
    })
    .await;
    s.put_in(&cpu, JobStatus::Processing, t0 + 200).await;
    assert_eq!(
        s.tasks.gpu_activity(&gpu, since).await.expect("activity"),
        (1, Some(t0 + 150))
    );
    // A job created before `since` still counts while it is processing.
    assert_eq!(
        s.tasks
            .gpu_activity(&gpu, t0 + 100)
            .await
            .expect("activity")
            .0,
        1
    );
}

async fn ping_answers(builder: TestAppBuilder) {
    subject(builder).await.tasks.ping().await.expect("ping");
}

/// Where the implementations break the trait's word today. Each behaviour is
/// written once like the others; the backend that lacks it is `#[ignore]`d
/// with the reason, so `cargo nextest run --run-ignored only` shows it fail.
mod divergences {
    use super::*;

    /// The trait: "the latest `updated_at` among those created since
    /// `since`": a job created before `since` does not count, whatever its
    /// status (its `processing` still counts in the first number).
    async fn gpu_activity_leaves_out_the_update_of_a_job_created_before_since(
        builder: TestAppBuilder,
    ) {
        let s = subject(builder).await;
        let t0 = t0();
        s.job_in(JobStatus::Processing, t0, t0 + 110).await;
        assert_eq!(
            s.tasks
                .gpu_activity(&gpu_job_types(), t0 + 50)
                .await
                .expect("activity"),
            (1, None)
        );
    }

    #[tokio::test]
    async fn embedded_gpu_activity_leaves_out_the_update_of_a_job_created_before_since() {
        gpu_activity_leaves_out_the_update_of_a_job_created_before_since(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn aws_gpu_activity_leaves_out_the_update_of_a_job_created_before_since() {
        if let Some(builder) = TestApp::aws().await {
            gpu_activity_leaves_out_the_update_of_a_job_created_before_since(builder).await;
        }
    }

    /// A cancelled GPU job is GPU activity as much as a completed one.
    async fn gpu_activity_counts_the_update_of_a_cancelled_job(builder: TestAppBuilder) {
        let s = subject(builder).await;
        let t0 = t0();
        s.job_in(JobStatus::Cancelled, t0 + 100, t0 + 120).await;
        assert_eq!(
            s.tasks
                .gpu_activity(&gpu_job_types(), t0 + 50)
                .await
                .expect("activity"),
            (0, Some(t0 + 120))
        );
    }

    #[tokio::test]
    async fn embedded_gpu_activity_counts_the_update_of_a_cancelled_job() {
        gpu_activity_counts_the_update_of_a_cancelled_job(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn aws_gpu_activity_counts_the_update_of_a_cancelled_job() {
        if let Some(builder) = TestApp::aws().await {
            gpu_activity_counts_the_update_of_a_cancelled_job(builder).await;
        }
    }

    /// The module's word: "a final status is never overwritten" — also not
    /// by a caller that names a final status as the stale one.
    async fn fail_if_stale_named_with_a_final_status_refuses(builder: TestAppBuilder) {
        let s = subject(builder).await;
        let t0 = t0();
        let id = s.job_in(JobStatus::Completed, t0, t0 + 10).await;
        assert_eq!(
            s.tasks
                .fail_if_stale(&id, JobStatus::Completed, t0 + 1000, &timed_out(t0 + 1000))
                .await
                .expect("fail_if_stale"),
            refused(Some("completed"))
        );
        assert_eq!(s.status(&id).await.as_deref(), Some("completed"));
    }

    #[tokio::test]
    async fn embedded_fail_if_stale_named_with_a_final_status_refuses() {
        fail_if_stale_named_with_a_final_status_refuses(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn aws_fail_if_stale_named_with_a_final_status_refuses() {
        if let Some(builder) = TestApp::aws().await {
            fail_if_stale_named_with_a_final_status_refuses(builder).await;
        }
    }

    /// `get_many` with one id twice: read once or twice, not an error (the
    /// watcher asks with the keys of a map today, so never twice).
    async fn get_many_with_an_id_twice_reads_it(builder: TestAppBuilder) {
        let s = subject(builder).await;
        let id = s.job_in(JobStatus::Pending, t0(), t0()).await;
        let found = s
            .tasks
            .get_many(&[id.clone(), id.clone()])
            .await
            .expect("get_many");
        assert!(!found.is_empty());
        assert!(found.iter().all(|r| r.task_id == id));
    }

    #[tokio::test]
    async fn embedded_get_many_with_an_id_twice_reads_it() {
        get_many_with_an_id_twice_reads_it(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn aws_get_many_with_an_id_twice_reads_it() {
        if let Some(builder) = TestApp::aws().await {
            get_many_with_an_id_twice_reads_it(builder).await;
        }
    }
}

-- The embedded orchestrator: the task table (the same attributes as the
-- DynamoDB `task_store` items), idempotency keys, and the durable queues.

CREATE TABLE IF NOT EXISTS tasks (
    task_id       TEXT PRIMARY KEY NOT NULL,
    status        TEXT,
    job_type      TEXT,
    kind          TEXT,
    queue         TEXT,
    created_at    INTEGER,
    updated_at    INTEGER,
    result_url    TEXT,
    result_s3_uri TEXT,
    error         TEXT,
    error_message TEXT,
    comfy_job_id  TEXT,
    api_job_id    TEXT,
    attempts      INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_status_updated ON tasks(status, updated_at);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    key_hash    TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- One row per message. A message is visible when visible_at (ms) has
-- passed; receiving it bumps receive_count, hides it for the visibility
-- timeout and gives it a new receipt. Past max_receive_count it is marked
-- dead instead of delivered: the dead letters of that queue.
CREATE TABLE IF NOT EXISTS queue_messages (
    id            TEXT PRIMARY KEY NOT NULL,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    dead          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages(queue, dead, visible_at);
CREATE INDEX IF NOT EXISTS queue_messages_receipt ON queue_messages(receipt);

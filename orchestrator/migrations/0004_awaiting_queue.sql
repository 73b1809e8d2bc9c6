-- 1 while a job's record exists but its queue message is not yet known to
-- be sent (the AWS submit path: two separate calls). Workers of ours do not
-- run such a job; the settle sweep fails it if its submit never confirmed.
ALTER TABLE tasks ADD COLUMN awaiting_queue INTEGER NOT NULL DEFAULT 0;

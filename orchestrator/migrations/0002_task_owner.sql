-- Optional user accounts: the Supabase user (`sub`) who submitted the job;
-- NULL for anonymous jobs and every job from before accounts.
ALTER TABLE tasks ADD COLUMN owner_id TEXT;

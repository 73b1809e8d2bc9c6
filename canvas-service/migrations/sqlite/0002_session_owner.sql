-- Optional user accounts: the Supabase user (`sub`) a session belongs to;
-- NULL for anonymous sessions and those created before accounts.
ALTER TABLE sessions ADD COLUMN owner_id TEXT;

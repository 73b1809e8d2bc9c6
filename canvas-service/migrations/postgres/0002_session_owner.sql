-- Optional user accounts: the Supabase user (`sub`) a session belongs to;
-- NULL for anonymous sessions and every row created before accounts. A
-- nullable column without a default: Postgres adds it without rewriting or
-- touching the existing rows.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS owner_id text;

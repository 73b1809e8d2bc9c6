-- Brings a Supabase database to the schema this service needs.
--
-- Runs on an empty database (creates everything) and on the production one
-- that already holds `sessions` and `images` with rows: nothing here drops,
-- rewrites or constrains existing rows. New columns are nullable with no
-- default, which Postgres adds without touching the table's rows.

CREATE TABLE IF NOT EXISTS sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS images (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    s3_key       text NOT NULL,
    content_type text,
    size         bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    pos_x        double precision DEFAULT 0,
    pos_y        double precision DEFAULT 0
);

ALTER TABLE images ADD COLUMN IF NOT EXISTS width integer;
ALTER TABLE images ADD COLUMN IF NOT EXISTS height integer;

-- The indexes production already has, under whatever name: each is created
-- only when no index on exactly those columns exists yet, so an existing
-- database does not get a duplicate.
DO $$
DECLARE
    wanted record;
BEGIN
    FOR wanted IN
        SELECT * FROM (VALUES
            ('idx_images_session_id',  'session_id'),
            ('idx_images_created_at',  'created_at'),
            ('idx_images_session_pos', 'session_id, pos_x, pos_y'),
            -- New: /delete-image asks whether another session uses a key.
            ('idx_images_s3_key',      's3_key')
        ) AS w(name, columns)
    LOOP
        IF NOT EXISTS (
            SELECT 1
            FROM pg_index i
            JOIN pg_class t ON t.oid = i.indrelid
            WHERE t.oid = 'images'::regclass
              AND (
                  SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
                  FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
              ) = wanted.columns
        ) THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON images (%s)', wanted.name, wanted.columns);
        END IF;
    END LOOP;
END
$$;

-- The embedded schema: the same tables as Supabase, in SQLite's types.
-- Ids are UUID strings; rowid keeps insertion order for listings.
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS images (
    id           TEXT PRIMARY KEY NOT NULL,
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    s3_key       TEXT NOT NULL,
    content_type TEXT,
    size         INTEGER,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    pos_x        REAL DEFAULT 0,
    pos_y        REAL DEFAULT 0,
    width        INTEGER,
    height       INTEGER
);

CREATE INDEX IF NOT EXISTS idx_images_session_id ON images(session_id);
CREATE INDEX IF NOT EXISTS idx_images_s3_key ON images(s3_key);

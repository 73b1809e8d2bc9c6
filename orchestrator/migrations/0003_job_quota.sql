-- Daily job quota: how many jobs each client (a hashed user id or address)
-- submitted on a UTC day. The DynamoDB table keeps the same counts as
-- `quota#<day>#<client>` items with a TTL.
CREATE TABLE IF NOT EXISTS job_quota (
    client TEXT NOT NULL,
    day TEXT NOT NULL,
    used INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client, day)
);

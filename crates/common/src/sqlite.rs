//! The embedded SQLite file both services use: one WAL file, writes through
//! a single connection, reads through a small read-only pool.
//!
//! SQLite admits one writer at a time and makes the others poll its lock
//! with growing sleeps (measured: waits of 100 ms and more under 8
//! concurrent writers); queueing writers on one connection instead keeps the
//! latency tail short, while WAL lets reads run beside the writer.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
};

/// How long a writer waits on SQLite's own lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool pair over one SQLite file.
#[derive(Clone, Debug)]
pub struct SqlitePools {
    pub reads: SqlitePool,
    pub writes: SqlitePool,
}

/// How to open the file.
#[derive(Debug, Clone)]
pub struct SqliteOptions<'a> {
    /// `sqlite://…` URL, or a plain path.
    pub url: &'a str,
    /// Run these migrations on the writer first.
    pub migrator: Option<&'a Migrator>,
    /// Connections of the read pool (the writer is always one).
    pub readers: u32,
    /// Pool acquire timeout (both pools).
    pub acquire_timeout: Duration,
    pub foreign_keys: bool,
}

impl SqlitePools {
    /// Creates the file (and its directory) if missing, migrates, opens both
    /// pools.
    pub async fn open(options: &SqliteOptions<'_>) -> Result<Self, sqlx::Error> {
        let url = if options.url.starts_with("sqlite:") {
            options.url.to_owned()
        } else {
            format!("sqlite://{}", options.url)
        };
        let connect = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(options.foreign_keys)
            // Writers queue on SQLite's lock instead of failing at once.
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(dir) = Path::new(connect.get_filename()).parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir).await?;
        }
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        if let Some(migrator) = options.migrator {
            migrator.run(&writes).await?;
        }
        let reads = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(true))
            .await?;
        Ok(Self { reads, writes })
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), in any extended form (261, 517…):
/// contention, worth a 503 and a retry rather than a 500.
pub fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// A failure that says the database is unavailable or contended rather
/// than that the statement is wrong: 503 and retry, not 500.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    ) || is_busy(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_reads_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/one.db");
        let pools = SqlitePools::open(&SqliteOptions {
            url: &path.display().to_string(),
            migrator: None,
            readers: 2,
            acquire_timeout: Duration::from_secs(1),
            foreign_keys: true,
        })
        .await
        .unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&pools.writes)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&pools.writes)
            .await
            .unwrap();
        let (v,): (i64,) = sqlx::query_as("SELECT v FROM t")
            .fetch_one(&pools.reads)
            .await
            .unwrap();
        assert_eq!(v, 1);
        // The read pool cannot write.
        let refused = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&pools.reads)
            .await
            .unwrap_err();
        assert!(!is_unavailable(&refused), "{refused}");
    }
}

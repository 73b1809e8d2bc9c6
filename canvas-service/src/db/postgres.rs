//! The production metadata store: Supabase Postgres, tables `sessions` and
//! `images` as the old service left them (plus nullable `width`/`height`).

use std::{str::FromStr, time::Duration};

use sqlx::{
    Row,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
};
use uuid::Uuid;

use super::{CanvasStore, DbError, ImageRecord, NewImage, SessionRecord, dimension};
use crate::config::DatabaseSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresCanvasStore {
    pool: PgPool,
}

impl PostgresCanvasStore {
    /// The pool connects lazily, so the service starts (and reports "not
    /// ready") while the database is down. Migrations, when enabled, are
    /// retried for a while: a task often starts before its database is
    /// reachable.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, sqlx::Error> {
        let mut options = PgConnectOptions::from_str(&settings.url)?
            // No startup `options` (such as statement_timeout): poolers
            // in front of Supabase may refuse unknown startup parameters.
            .application_name("canvas-service");
        if !settings.statement_cache {
            options = options.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .test_before_acquire(true)
            .connect_lazy_with(options);
        if settings.run_migrations {
            let mut attempt = 1;
            loop {
                match MIGRATOR.run(&pool).await {
                    Ok(()) => break,
                    Err(sqlx::migrate::MigrateError::Execute(e))
                        if attempt < 6 && is_connectivity(&e) =>
                    {
                        tracing::warn!(attempt, error = %e, "database not reachable yet, retrying migrations");
                        tokio::time::sleep(Duration::from_secs(2 * attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Self { pool })
    }
}

fn is_connectivity(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    )
}

fn record(row: &PgRow) -> Result<ImageRecord, sqlx::Error> {
    Ok(ImageRecord {
        key: row.try_get("s3_key")?,
        // Rows from the old service may hold NULL positions.
        x: row.try_get::<Option<f64>, _>("pos_x")?.unwrap_or(0.0),
        y: row.try_get::<Option<f64>, _>("pos_y")?.unwrap_or(0.0),
        width: dimension(row.try_get::<Option<i32>, _>("width")?.map(i64::from)),
        height: dimension(row.try_get::<Option<i32>, _>("height")?.map(i64::from)),
    })
}

const SELECT_IMAGE: &str = "SELECT s3_key, pos_x, pos_y, width, height FROM images
     WHERE session_id = $1 AND s3_key = $2 ORDER BY created_at, id LIMIT 1";

#[async_trait::async_trait]
impl CanvasStore for PostgresCanvasStore {
    async fn create_session(&self, id: Uuid, owner_id: Option<&str>) -> Result<(), DbError> {
        sqlx::query("INSERT INTO sessions (id, owner_id) VALUES ($1, $2)")
            .bind(id)
            .bind(owner_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, DbError> {
        let found = sqlx::query("SELECT owner_id FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let owner_id = found
            .map(|row| row.try_get::<Option<String>, _>("owner_id"))
            .transpose()?;
        Ok(owner_id.map(|owner_id| SessionRecord { owner_id }))
    }

    async fn add_image(&self, image: &NewImage) -> Result<Option<ImageRecord>, DbError> {
        // The existing table has no unique (session_id, s3_key) constraint,
        // and one cannot be added without risking existing rows. Locking the
        // session row serialises adds to one session instead, so "add the
        // same key twice keeps one row" holds under concurrency too.
        let mut tx = self.pool.begin().await?;
        let session = sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE")
            .bind(image.session_id)
            .fetch_optional(&mut *tx)
            .await?;
        if session.is_none() {
            return Ok(None);
        }
        if let Some(row) = sqlx::query(SELECT_IMAGE)
            .bind(image.session_id)
            .bind(&image.key)
            .fetch_optional(&mut *tx)
            .await?
        {
            tx.commit().await?;
            return Ok(Some(record(&row)?));
        }
        let row = sqlx::query(
            "INSERT INTO images (id, session_id, s3_key, content_type, size, width, height, pos_x, pos_y)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING s3_key, pos_x, pos_y, width, height",
        )
        .bind(Uuid::new_v4())
        .bind(image.session_id)
        .bind(&image.key)
        .bind(&image.content_type)
        .bind(image.size)
        .bind(image.width.and_then(|w| i32::try_from(w).ok()))
        .bind(image.height.and_then(|h| i32::try_from(h).ok()))
        .bind(image.x)
        .bind(image.y)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(record(&row)?))
    }

    async fn list_images(&self, session_id: Uuid) -> Result<Vec<ImageRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT s3_key, pos_x, pos_y, width, height FROM images
             WHERE session_id = $1 ORDER BY created_at, id",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn update_position(
        &self,
        session_id: Uuid,
        key: &str,
        x: f64,
        y: f64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE images SET pos_x = $3, pos_y = $4 WHERE session_id = $1 AND s3_key = $2",
        )
        .bind(session_id)
        .bind(key)
        .bind(x)
        .bind(y)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_image(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM images WHERE session_id = $1 AND s3_key = $2")
            .bind(session_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn key_used_elsewhere(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let found =
            sqlx::query("SELECT 1 FROM images WHERE s3_key = $1 AND session_id <> $2 LIMIT 1")
                .bind(key)
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

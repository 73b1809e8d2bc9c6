//! The embedded metadata store: one SQLite file in WAL mode, writes through
//! a single connection and reads through a small pool
//! (`common::sqlite::SqlitePools`).

use common::sqlite::{SqliteOptions, SqlitePools};
use sqlx::{
    Row,
    sqlite::{SqlitePool, SqliteRow},
};
use uuid::Uuid;

use super::{CanvasStore, DbError, ImageRecord, NewImage, SessionRecord, dimension};
use crate::config::DatabaseSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteCanvasStore {
    reads: SqlitePool,
    writes: SqlitePool,
}

impl SqliteCanvasStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, sqlx::Error> {
        let SqlitePools { reads, writes } = SqlitePools::open(&SqliteOptions {
            url: &settings.url,
            migrator: settings.run_migrations.then_some(&MIGRATOR),
            readers: settings.max_connections.clamp(1, 8),
            acquire_timeout: settings.acquire_timeout,
            foreign_keys: true,
        })
        .await?;
        Ok(Self { reads, writes })
    }
}

fn record(row: &SqliteRow) -> Result<ImageRecord, sqlx::Error> {
    Ok(ImageRecord {
        key: row.try_get("s3_key")?,
        x: row.try_get::<Option<f64>, _>("pos_x")?.unwrap_or(0.0),
        y: row.try_get::<Option<f64>, _>("pos_y")?.unwrap_or(0.0),
        width: dimension(row.try_get("width")?),
        height: dimension(row.try_get("height")?),
    })
}

#[async_trait::async_trait]
impl CanvasStore for SqliteCanvasStore {
    async fn create_session(&self, id: Uuid, owner_id: Option<&str>) -> Result<(), DbError> {
        sqlx::query("INSERT INTO sessions (id, owner_id) VALUES ($1, $2)")
            .bind(id.to_string())
            .bind(owner_id)
            .execute(&self.writes)
            .await?;
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, DbError> {
        let found = sqlx::query("SELECT owner_id FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.reads)
            .await?;
        let owner_id = found
            .map(|row| row.try_get::<Option<String>, _>("owner_id"))
            .transpose()?;
        Ok(owner_id.map(|owner_id| SessionRecord { owner_id }))
    }

    async fn add_image(&self, image: &NewImage) -> Result<Option<ImageRecord>, DbError> {
        let session = image.session_id.to_string();
        // One statement is atomic in SQLite: no duplicate under concurrency.
        sqlx::query(
            "INSERT INTO images (id, session_id, s3_key, content_type, size, width, height, pos_x, pos_y)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $2)
               AND NOT EXISTS (SELECT 1 FROM images WHERE session_id = $2 AND s3_key = $3)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(&session)
        .bind(&image.key)
        .bind(&image.content_type)
        .bind(image.size)
        .bind(image.width.map(i64::from))
        .bind(image.height.map(i64::from))
        .bind(image.x)
        .bind(image.y)
        .execute(&self.writes)
        .await?;
        let row = sqlx::query(
            "SELECT s3_key, pos_x, pos_y, width, height FROM images
             WHERE session_id = $1 AND s3_key = $2 ORDER BY rowid LIMIT 1",
        )
        .bind(&session)
        .bind(&image.key)
        .fetch_optional(&self.writes)
        .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    async fn list_images(&self, session_id: Uuid) -> Result<Vec<ImageRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT s3_key, pos_x, pos_y, width, height FROM images
             WHERE session_id = $1 ORDER BY rowid",
        )
        .bind(session_id.to_string())
        .fetch_all(&self.reads)
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
        .bind(session_id.to_string())
        .bind(key)
        .bind(x)
        .bind(y)
        .execute(&self.writes)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_image(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM images WHERE session_id = $1 AND s3_key = $2")
            .bind(session_id.to_string())
            .bind(key)
            .execute(&self.writes)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn key_used_elsewhere(&self, session_id: Uuid, key: &str) -> Result<bool, DbError> {
        let found =
            sqlx::query("SELECT 1 FROM images WHERE s3_key = $1 AND session_id <> $2 LIMIT 1")
                .bind(key)
                .bind(session_id.to_string())
                .fetch_optional(&self.reads)
                .await?;
        Ok(found.is_some())
    }

    async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }
}

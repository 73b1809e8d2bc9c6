//! A fresh Postgres database for one run, on the server the tests use
//! (`TEST_DATABASE_URL`). Its name starts `canvas_bench_`, not testkit's
//! `canvas_test_`: the test command drops those when it starts, and it may
//! start while a soak runs.

use sqlx::Connection;

use super::{BoxError, require_loopback};

pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

impl Database {
    pub async fn create() -> Result<Self, BoxError> {
        let admin = testkit::postgres_admin_url();
        require_loopback("TEST_DATABASE_URL", &admin)?;
        let name = format!("canvas_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .map_err(|e| format!("cannot reach Postgres at {admin}: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok(Self { admin, name, url })
    }

    /// The `s3_key` of every row of `images` (a key held twice appears twice).
    pub async fn image_keys(&self) -> Result<Vec<String>, BoxError> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT s3_key FROM images")
            .fetch_all(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    /// Best effort, after the service has stopped.
    pub async fn drop_database(&self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

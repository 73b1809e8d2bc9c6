//! The migrations meet the production Supabase database: tables that
//! already exist, with rows, indexes under other names and NULL positions.
//! Every row must survive untouched and be readable through the API.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use sqlx::{Connection, Row};
use support::{TestApp, images};

/// The schema of `CONTRACT.md` §1, as Supabase holds it today.
const SUPABASE_SCHEMA: &str = "
CREATE TABLE sessions (id uuid primary key default gen_random_uuid(), created_at timestamptz not null default now());
CREATE TABLE images (id uuid primary key default gen_random_uuid(),
       session_id uuid not null references sessions(id) on delete cascade,
       s3_key text not null, content_type text, size bigint,
       created_at timestamptz not null default now(),
       pos_x double precision default 0, pos_y double precision default 0);
CREATE INDEX images_session_id_idx ON images(session_id);
CREATE INDEX images_created_at_idx ON images(created_at);
CREATE INDEX images_session_pos_idx ON images(session_id, pos_x, pos_y);
INSERT INTO sessions (id, created_at) VALUES ('11111111-1111-4111-8111-111111111111', '2025-01-01T00:00:00Z');
INSERT INTO images (id, session_id, s3_key, content_type, size, created_at, pos_x, pos_y) VALUES
  ('aaaaaaaa-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 'images/11111111-1111-4111-8111-111111111111/old.png', 'image/png', 1234, '2025-01-01T00:00:01Z', 10.5, -20.25),
  ('aaaaaaaa-0000-4000-8000-000000000002', '11111111-1111-4111-8111-111111111111', 'comfyui-results/old.png', NULL, NULL, '2025-01-01T00:00:02Z', NULL, NULL);
";

async fn snapshot(url: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(
        "SELECT id::text, session_id::text, s3_key, coalesce(content_type, '∅'), coalesce(size, -1),
                created_at::text, coalesce(pos_x::text, '∅'), coalesce(pos_y::text, '∅')
         FROM images ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (0..8)
            .map(|i| r.try_get::<String, _>(i).unwrap_or_else(|_| r.get::<i64, _>(i).to_string()))
            .collect::<Vec<_>>()
            .join("|")
    })
    .collect()
}

#[tokio::test]
async fn migrations_keep_existing_supabase_rows() {
    let Some(builder) = TestApp::live().await else {
        return;
    };
    let url = support::create_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(SUPABASE_SCHEMA)
        .execute(&mut conn)
        .await
        .unwrap();
    let before = snapshot(&url).await;
    assert_eq!(before.len(), 2);

    let app = builder.env("DATABASE_URL", &url).start().await;
    assert_eq!(
        snapshot(&url).await,
        before,
        "rows untouched by the migration"
    );

    // New columns are nullable, and no duplicate index was added.
    let columns = sqlx::query(
        "SELECT column_name, is_nullable, column_default IS NULL AS no_default FROM information_schema.columns
         WHERE table_name = 'images' AND column_name IN ('width', 'height') ORDER BY column_name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(columns.len(), 2);
    for column in &columns {
        assert_eq!(column.get::<String, _>("is_nullable"), "YES");
        assert!(column.get::<bool, _>("no_default"));
    }
    let indexes: Vec<String> =
        sqlx::query("SELECT indexname::text FROM pg_indexes WHERE tablename = 'images' ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(
        indexes,
        [
            "idx_images_s3_key",
            "images_created_at_idx",
            "images_pkey",
            "images_session_id_idx",
            "images_session_pos_idx"
        ]
    );

    // The old rows read back through the API, NULL positions as 0.
    let listed = app
        .get("/images?session_id=11111111-1111-4111-8111-111111111111")
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let items = listed.json()["items"].clone();
    assert_eq!(
        items[0]["key"],
        "images/11111111-1111-4111-8111-111111111111/old.png"
    );
    assert_eq!(
        (items[0]["x"].clone(), items[0]["y"].clone()),
        (json!(10.5), json!(-20.25))
    );
    assert_eq!(items[0]["width"], json!(null));
    assert_eq!(items[1]["key"], "comfyui-results/old.png");
    assert_eq!(
        (items[1]["x"].clone(), items[1]["y"].clone()),
        (json!(0.0), json!(0.0))
    );

    // The old session keeps working: a new upload lands after the old rows.
    let response = app
        .upload(
            "11111111-1111-4111-8111-111111111111",
            "n.png",
            "image/png",
            &images::png(2, 2),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(snapshot(&url).await.len(), 3);

    // A second start (a redeploy) runs the migrations again, harmlessly.
    let again = TestApp::live()
        .await
        .unwrap()
        .env("DATABASE_URL", &url)
        .start()
        .await;
    assert_eq!(
        again
            .get("/images?session_id=11111111-1111-4111-8111-111111111111")
            .await
            .json()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn migrations_create_everything_on_an_empty_database() {
    let Some(builder) = TestApp::live().await else {
        return;
    };
    let url = support::create_database().await;
    let app = builder.env("DATABASE_URL", &url).start().await;
    let session = app.new_session().await;
    assert_eq!(
        app.upload(&session, "a.png", "image/png", &images::png(1, 1))
            .await
            .status,
        StatusCode::OK
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('sessions', 'images') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(tables, ["images", "sessions"]);
}

/// Every session as (id, created_at).
async fn sessions(conn: &mut sqlx::PgConnection) -> Vec<(String, String)> {
    sqlx::query("SELECT id::text, created_at::text FROM sessions ORDER BY id")
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Accounts add `sessions.owner_id`: nullable, no default, the existing
/// sessions untouched and (unowned) still reachable by id once accounts are
/// on.
#[tokio::test]
async fn owner_column_leaves_existing_sessions_alone() {
    let Some(builder) = TestApp::live().await else {
        return;
    };
    let url = support::create_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(SUPABASE_SCHEMA)
        .execute(&mut conn)
        .await
        .unwrap();
    let before = sessions(&mut conn).await;
    assert!(!before.is_empty());

    let key = testkit::auth::SigningKey::es256("key-1");
    let project = testkit::auth::Project::start(&[&key]).await;
    let app = builder
        .env("DATABASE_URL", &url)
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_URL", &project.url)
        .start()
        .await;
    let after = sessions(&mut conn).await;
    assert_eq!(after, before, "sessions untouched by the migration");
    let column = sqlx::query(
        "SELECT is_nullable, column_default IS NULL AS no_default FROM information_schema.columns
         WHERE table_name = 'sessions' AND column_name = 'owner_id'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(column.get::<String, _>("is_nullable"), "YES");
    assert!(column.get::<bool, _>("no_default"));
    let owners: i64 = sqlx::query("SELECT count(*) FROM sessions WHERE owner_id IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(owners, 0);

    // A signed-in user holding an old session's id still reaches it.
    app.sign_in(&key.sign(&project.claims("alice")));
    let listed = app
        .get("/images?session_id=11111111-1111-4111-8111-111111111111")
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 2);
    // A new session records its owner.
    let session = app.new_session().await;
    let owner: Option<String> = sqlx::query("SELECT owner_id FROM sessions WHERE id = $1::uuid")
        .bind(&session)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some("alice"));
}

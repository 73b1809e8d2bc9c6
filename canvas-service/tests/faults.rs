//! The network to a live part cut under a running service, through
//! `testkit::FaultProxy`: Postgres behind one proxy, moto (S3) behind
//! another, so each can be cut alone. For both ways of failing — refused
//! and reset (`break_networking`) or accepted and silent (`blackhole`):
//! requests that need the part answer 503 naming it within the dependency
//! timeout (2 s), requests that do not keep answering, `/health` stays 200,
//! `/ready` names the part, and after `restore_networking` the same service
//! serves again without a restart. An upload cut mid-way leaves no row
//! without an object and no object without a row.
//!
//! The embedded parts (SQLite, the local directory) are inside the process
//! and cannot be cut; they are not tested here.

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use support::{TestApp, images};
use testkit::{FaultProxy, timed};

/// A correctness bound on "within the dependency timeout" (2 s), with room
/// for a loaded machine; not a benchmark.
const PROMPT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Cut {
    Refuse,
    Blackhole,
}

impl Cut {
    fn apply(self, proxy: &FaultProxy) {
        match self {
            Cut::Refuse => proxy.break_networking(),
            Cut::Blackhole => proxy.blackhole(),
        }
    }
}

/// A live service whose Postgres and S3 are each reached through a proxy.
/// Both proxies must live as long as the service (dropping one cuts it).
struct Faulty {
    app: TestApp,
    postgres: FaultProxy,
    s3: FaultProxy,
}

async fn faulty() -> Option<Faulty> {
    let builder = TestApp::live().await?;
    // The fixtures (database, bucket) are made directly, not through the
    // proxies, so only the service's own traffic is cut.
    let (postgres, database_url) = FaultProxy::in_front_of(&testkit::create_database().await).await;
    let (s3, _) = FaultProxy::in_front_of(&testkit::moto_url()).await;
    let app = builder
        .env("DATABASE_URL", &database_url)
        .env("S3_BUCKET", &testkit::create_bucket().await)
        .env("AWS_ENDPOINT_URL", &s3.url())
        .start()
        .await;
    Some(Faulty { app, postgres, s3 })
}

/// Polls `/ready` until it is 200; false after 15 s.
async fn ready_again(app: &TestApp) -> bool {
    testkit::eventually(Duration::from_secs(15), || async {
        app.get("/ready").await.status == StatusCode::OK
    })
    .await
}

async fn images_of(app: &TestApp, session: &str) -> Vec<String> {
    let listed = app.get(&format!("/images?session_id={session}")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let mut keys: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["key"].as_str().expect("key").to_owned())
        .collect();
    keys.sort();
    keys
}

async fn database_cut(cut: Cut) {
    let Some(Faulty {
        app,
        postgres,
        s3: _s3,
    }) = faulty().await
    else {
        return;
    };
    let session = app.new_session().await;

    cut.apply(&postgres);
    let (response, took) = timed(
        app.send(
            axum::http::Request::post("/session")
                .body(axum::body::Body::empty())
                .unwrap(),
        ),
    )
    .await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database"), "{detail}");
    assert!(took < PROMPT, "a cut database answered after {took:?}");
    let (listed, took) = timed(app.get(&format!("/images?session_id={session}"))).await;
    listed.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < PROMPT, "{took:?}");

    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let (ready, took) = timed(app.get("/ready")).await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database"), "{detail}");
    assert!(!detail.contains("object store"), "S3 is fine: {detail}");
    assert!(took < PROMPT, "{took:?}");

    postgres.restore_networking();
    assert!(
        ready_again(&app).await,
        "not ready after the database came back"
    );
    app.new_session().await;
    assert_eq!(images_of(&app, &session).await, Vec::<String>::new());
}

async fn s3_cut(cut: Cut) {
    let Some(Faulty {
        app,
        s3,
        postgres: _postgres,
    }) = faulty().await
    else {
        return;
    };
    let session = app.new_session().await;
    let first = app
        .upload(&session, "a.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let first_key = first.json()["key"].as_str().expect("key").to_owned();

    cut.apply(&s3);
    let (response, took) =
        timed(app.upload(&session, "b.png", "image/png", &images::png(2, 2))).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    assert!(took < PROMPT, "a cut S3 answered after {took:?}");

    // Listing needs only the database (CDN URLs are made, not fetched).
    let (keys, took) = timed(images_of(&app, &session)).await;
    assert_eq!(keys, vec![first_key.clone()]);
    assert!(took < PROMPT, "{took:?}");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let (ready, took) = timed(app.get("/ready")).await;
    let detail = ready.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    assert_eq!(ready.json()["checks"]["database"], "ok");
    assert!(took < PROMPT, "{took:?}");

    s3.restore_networking();
    assert!(ready_again(&app).await, "not ready after S3 came back");
    let again = app
        .upload(&session, "c.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert!(app.object(&first_key).await.is_some());
    rows_and_objects_agree(&app, &session).await;
}

/// Every row has its object and every object its row, once the background
/// removal of orphans (retried while S3 was cut) has run; polled, bounded.
async fn rows_and_objects_agree(app: &TestApp, session: &str) {
    let started = Instant::now();
    loop {
        let rows = images_of(app, session).await;
        let mut objects = app.object_keys(&format!("images/{session}/")).await;
        objects.sort();
        if rows == objects {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rows {rows:?} and objects {objects:?} disagree"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// S3 goes silent while an upload is on its way: the upload is 503 within
/// the (size-scaled) timeout, and nothing half-done remains.
async fn s3_cut_mid_upload(cut: Cut) {
    let Some(Faulty {
        app,
        s3,
        postgres: _postgres,
    }) = faulty().await
    else {
        return;
    };
    let session = app.new_session().await;
    // A 1 MiB body (the pixel data is not inspected); the cut lands when
    // half of it has reached S3, so the put is cut in its middle.
    let mut body = images::png(64, 64);
    body.resize(1024 * 1024, 0);
    match cut {
        Cut::Refuse => s3.break_after(512 * 1024),
        Cut::Blackhole => s3.blackhole_after(512 * 1024),
    }
    let (response, took) = timed(app.upload(&session, "big.png", "image/png", &body)).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("object store"), "{detail}");
    // An upload's deadline is the dependency timeout plus its body at
    // 1 MiB/s: 3 s here; the bound leaves room for a loaded machine.
    assert!(took < Duration::from_secs(5), "{took:?}");
    s3.restore_networking();
    assert!(ready_again(&app).await, "not ready after S3 came back");
    rows_and_objects_agree(&app, &session).await;
    let prefix = format!("images/{session}/");
    assert!(
        app.object_keys(&prefix).await.is_empty(),
        "the cut upload left an object"
    );
}

#[tokio::test]
async fn database_refused() {
    database_cut(Cut::Refuse).await
}

#[tokio::test]
async fn database_blackholed() {
    database_cut(Cut::Blackhole).await
}

#[tokio::test]
async fn s3_refused() {
    s3_cut(Cut::Refuse).await
}

#[tokio::test]
async fn s3_blackholed() {
    s3_cut(Cut::Blackhole).await
}

#[tokio::test]
async fn s3_refused_mid_upload() {
    s3_cut_mid_upload(Cut::Refuse).await
}

#[tokio::test]
async fn s3_blackholed_mid_upload() {
    s3_cut_mid_upload(Cut::Blackhole).await
}

//! What every `CanvasStore` must do, written once and run on both
//! implementations: SQLite and Postgres. Each behaviour is one function
//! taking the backend set under test; the store is that of a canvas service
//! started the way `main` starts it (a fresh SQLite file, or a fresh Postgres
//! database with the migrations applied).

mod support;

use std::sync::Arc;

use canvas_service::db::{CanvasStore, ImageRecord, NewImage, SessionRecord};
use support::{TestApp, TestAppBuilder};
use uuid::Uuid;

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    a_session_reads_back_with_its_owner,
    creating_an_existing_session_fails_and_keeps_the_first,
    add_image_to_an_unknown_session_is_none_and_stores_nothing,
    add_image_returns_the_row_and_the_same_key_twice_keeps_the_first,
    list_images_is_oldest_first_and_only_the_sessions_own,
    update_position_stores_any_float_exactly,
    update_position_of_a_key_not_in_the_session_is_false,
    remove_image_takes_one_sessions_key_and_is_false_the_second_time,
    key_used_elsewhere_looks_only_at_other_sessions,
    ping_answers,
);

struct Subject {
    _app: TestApp,
    db: Arc<dyn CanvasStore>,
}

async fn subject(builder: TestAppBuilder) -> Subject {
    let app = builder.start().await;
    let db = app.app.db.clone();
    Subject { _app: app, db }
}

fn image(session_id: Uuid, key: &str, x: f64, y: f64) -> NewImage {
    NewImage {
        session_id,
        key: key.to_owned(),
        content_type: Some("image/png".to_owned()),
        size: Some(1234),
        width: Some(640),
        height: Some(480),
        x,
        y,
    }
}

fn record(key: &str, x: f64, y: f64, size: Option<(u32, u32)>) -> ImageRecord {
    ImageRecord {
        key: key.to_owned(),
        x,
        y,
        width: size.map(|(w, _)| w),
        height: size.map(|(_, h)| h),
    }
}

impl Subject {
    async fn session(&self) -> Uuid {
        let id = Uuid::new_v4();
        self.db.create_session(id, None).await.expect("session");
        id
    }

    async fn add(&self, image: &NewImage) -> Option<ImageRecord> {
        self.db.add_image(image).await.expect("add_image")
    }

    async fn keys(&self, session_id: Uuid) -> Vec<String> {
        self.list(session_id)
            .await
            .into_iter()
            .map(|r| r.key)
            .collect()
    }

    async fn list(&self, session_id: Uuid) -> Vec<ImageRecord> {
        self.db.list_images(session_id).await.expect("list_images")
    }
}

async fn a_session_reads_back_with_its_owner(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (anonymous, owned) = (Uuid::new_v4(), Uuid::new_v4());
    s.db.create_session(anonymous, None).await.expect("create");
    s.db.create_session(owned, Some("user-1"))
        .await
        .expect("create");
    assert_eq!(
        s.db.session(anonymous).await.expect("session"),
        Some(SessionRecord { owner_id: None })
    );
    assert_eq!(
        s.db.session(owned).await.expect("session"),
        Some(SessionRecord {
            owner_id: Some("user-1".to_owned())
        })
    );
    assert_eq!(s.db.session(Uuid::new_v4()).await.expect("session"), None);
}

async fn creating_an_existing_session_fails_and_keeps_the_first(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let id = Uuid::new_v4();
    s.db.create_session(id, Some("user-1"))
        .await
        .expect("create");
    s.db.add_image(&image(id, "images/a.png", 1.0, 2.0))
        .await
        .expect("add");
    assert!(s.db.create_session(id, None).await.is_err());
    assert_eq!(
        s.db.session(id).await.expect("session"),
        Some(SessionRecord {
            owner_id: Some("user-1".to_owned())
        })
    );
    assert_eq!(s.keys(id).await, ["images/a.png"]);
}

async fn add_image_to_an_unknown_session_is_none_and_stores_nothing(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let unknown = Uuid::new_v4();
    assert_eq!(s.add(&image(unknown, "images/a.png", 0.0, 0.0)).await, None);
    assert!(s.list(unknown).await.is_empty());
    assert_eq!(s.db.session(unknown).await.expect("session"), None);
    let other = s.session().await;
    assert!(
        !s.db
            .key_used_elsewhere(other, "images/a.png")
            .await
            .expect("used elsewhere")
    );
}

async fn add_image_returns_the_row_and_the_same_key_twice_keeps_the_first(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let session = s.session().await;
    let key = "comfyui-results/2026/11/job-42_00001_.png";
    let first = record(key, 10.5, -3.25, Some((640, 480)));
    assert_eq!(
        s.add(&image(session, key, 10.5, -3.25)).await,
        Some(first.clone())
    );
    // The second add answers the row that is there, not its own values.
    let again = NewImage {
        width: Some(1),
        height: None,
        ..image(session, key, 99.0, 99.0)
    };
    assert_eq!(s.add(&again).await, Some(first.clone()));
    assert_eq!(s.list(session).await, [first]);
    // No dimensions known: none read back.
    let plain = NewImage {
        width: None,
        height: None,
        ..image(session, "paid-api-results/b.webp", 0.0, 0.0)
    };
    assert_eq!(
        s.add(&plain).await,
        Some(record("paid-api-results/b.webp", 0.0, 0.0, None))
    );
}

async fn list_images_is_oldest_first_and_only_the_sessions_own(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (session, other) = (s.session().await, s.session().await);
    assert!(s.list(session).await.is_empty());
    assert!(s.list(Uuid::new_v4()).await.is_empty());
    // Names that sort the other way round: the order is insertion's.
    let keys: Vec<String> = (0..6).rev().map(|i| format!("images/s/{i}.png")).collect();
    for (i, key) in keys.iter().enumerate() {
        s.add(&image(session, key, i as f64, 0.0)).await;
        s.add(&image(other, &format!("images/o/{i}.png"), 0.0, 0.0))
            .await;
    }
    assert_eq!(s.keys(session).await, keys);
    // A removed and re-added key goes on top.
    assert!(s.db.remove_image(session, &keys[0]).await.expect("remove"));
    s.add(&image(session, &keys[0], 0.0, 0.0)).await;
    let mut expected = keys[1..].to_vec();
    expected.push(keys[0].clone());
    assert_eq!(s.keys(session).await, expected);
    assert_eq!(s.list(other).await.len(), 6);
}

async fn update_position_stores_any_float_exactly(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let session = s.session().await;
    let key = "images/s/a.png";
    s.add(&image(session, key, 0.0, 0.0)).await;
    for (x, y) in [
        (0.1 + 0.2, -1_234.567_890_123_456_7),
        (1e300, -1e-300),
        (f64::MAX, f64::MIN_POSITIVE),
        (5e-324, -123_456_789.987_654_32),
        (0.0, 0.0),
    ] {
        assert!(
            s.db.update_position(session, key, x, y)
                .await
                .expect("update_position")
        );
        let stored = s.list(session).await.remove(0);
        assert_eq!(
            (stored.x.to_bits(), stored.y.to_bits()),
            (x.to_bits(), y.to_bits()),
            "stored ({}, {}) for ({x}, {y})",
            stored.x,
            stored.y
        );
    }
    // The dimensions stay.
    assert_eq!(s.list(session).await[0].width, Some(640));
}

async fn update_position_of_a_key_not_in_the_session_is_false(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (session, other) = (s.session().await, s.session().await);
    s.add(&image(other, "images/o/a.png", 1.0, 1.0)).await;
    assert!(
        !s.db
            .update_position(session, "images/o/a.png", 5.0, 5.0)
            .await
            .expect("update_position")
    );
    assert!(
        !s.db
            .update_position(Uuid::new_v4(), "images/o/a.png", 5.0, 5.0)
            .await
            .expect("update_position")
    );
    assert_eq!(s.list(other).await[0].x, 1.0);
}

async fn remove_image_takes_one_sessions_key_and_is_false_the_second_time(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (session, other) = (s.session().await, s.session().await);
    let key = "comfyui-results/shared.png";
    s.add(&image(session, key, 0.0, 0.0)).await;
    s.add(&image(session, "images/s/keep.png", 0.0, 0.0)).await;
    s.add(&image(other, key, 0.0, 0.0)).await;
    assert!(s.db.remove_image(session, key).await.expect("remove"));
    assert!(!s.db.remove_image(session, key).await.expect("remove again"));
    assert!(
        !s.db
            .remove_image(Uuid::new_v4(), key)
            .await
            .expect("remove from no session")
    );
    assert_eq!(s.keys(session).await, ["images/s/keep.png"]);
    assert_eq!(s.keys(other).await, [key]);
}

async fn key_used_elsewhere_looks_only_at_other_sessions(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (a, b) = (s.session().await, s.session().await);
    let key = "comfyui-results/shared.png";
    let used = |session: Uuid| {
        let db = s.db.clone();
        async move {
            db.key_used_elsewhere(session, key)
                .await
                .expect("used elsewhere")
        }
    };
    assert!(!used(a).await);
    s.add(&image(a, key, 0.0, 0.0)).await;
    assert!(!used(a).await, "its own session is not elsewhere");
    assert!(used(b).await);
    s.add(&image(b, key, 0.0, 0.0)).await;
    assert!(used(a).await);
    s.db.remove_image(a, key).await.expect("remove");
    assert!(!used(b).await);
    assert!(used(a).await);
}

async fn ping_answers(builder: TestAppBuilder) {
    subject(builder).await.db.ping().await.expect("ping");
}

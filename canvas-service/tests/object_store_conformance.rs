//! What every `ObjectStore` must do, written once and run on both
//! implementations: the local directory and S3 (moto). Each behaviour is one
//! function taking the backend set under test; the store is that of a canvas
//! service started the way `main` starts it. The trait has no read, so an
//! object is read back the way a browser gets it: from the service's own
//! file route (local) or from the bucket behind the CDN (S3).

mod support;

// The trait's home; the one line to change if it moves.
use canvas_service::storage::ObjectStore;

use std::sync::Arc;

use bytes::Bytes;
use support::{TestApp, TestAppBuilder, images};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    put_bytes_stores_an_object_that_reads_back,
    put_again_overwrites,
    put_file_stores_a_spooled_file,
    exists_is_false_for_what_was_never_stored,
    delete_removes_and_deleting_twice_is_fine,
    url_is_the_origin_then_exactly_the_key,
    keys_from_every_writer_are_stored,
    check_answers,
);

struct Subject {
    app: TestApp,
    store: Arc<dyn ObjectStore>,
}

async fn subject(builder: TestAppBuilder) -> Subject {
    let app = builder.start().await;
    let store = app.app.store.clone();
    Subject { app, store }
}

impl Subject {
    async fn put(&self, key: &str, bytes: &[u8]) {
        self.store
            .put_bytes(key, Bytes::copy_from_slice(bytes), "image/png")
            .await
            .expect("put_bytes");
    }

    async fn exists(&self, key: &str) -> bool {
        self.store.exists(key).await.expect("exists")
    }
}

fn key(prefix: &str) -> String {
    format!("{prefix}/{}.png", uuid::Uuid::new_v4())
}

async fn put_bytes_stores_an_object_that_reads_back(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let key = key("comfyui-results");
    let png = images::png(8, 8);
    s.put(&key, &png).await;
    assert!(s.exists(&key).await);
    assert_eq!(s.app.object(&key).await.as_deref(), Some(&png[..]));
}

async fn put_again_overwrites(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let key = key("comfyui-results");
    s.put(&key, &images::png(8, 8)).await;
    let newer = images::png(16, 4);
    s.put(&key, &newer).await;
    assert_eq!(s.app.object(&key).await.as_deref(), Some(&newer[..]));
}

async fn put_file_stores_a_spooled_file(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let key = key("images/s");
    // Bigger than one read buffer, so streaming from disk is exercised.
    let mut bytes = images::png(8, 8);
    bytes.extend((0..300_000u32).map(|i| (i % 251) as u8));
    let spooled = s
        .store
        .spool_dir()
        .join(format!("{}.part", uuid::Uuid::new_v4()));
    tokio::fs::write(&spooled, &bytes).await.expect("spool");
    s.store
        .put_file(&key, &spooled, "image/png")
        .await
        .expect("put_file");
    // The caller removes what is left, as the upload route does.
    let _ = tokio::fs::remove_file(&spooled).await;
    assert!(s.exists(&key).await);
    assert_eq!(s.app.object(&key).await.as_deref(), Some(&bytes[..]));
}

async fn exists_is_false_for_what_was_never_stored(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let key = key("images/s");
    assert!(!s.exists(&key).await);
    // A prefix of a stored key is not an object.
    s.put(&key, &images::png(8, 8)).await;
    assert!(!s.exists("images/s").await);
    assert!(!s.exists("images").await);
}

async fn delete_removes_and_deleting_twice_is_fine(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let (gone, kept) = (key("images/s"), key("images/s"));
    s.put(&gone, &images::png(8, 8)).await;
    s.put(&kept, &images::png(8, 8)).await;
    s.store.delete(&gone).await.expect("delete");
    assert!(!s.exists(&gone).await);
    assert_eq!(s.app.object(&gone).await, None);
    s.store.delete(&gone).await.expect("delete again");
    s.store
        .delete(&key("never-stored"))
        .await
        .expect("delete what never was");
    assert!(s.exists(&kept).await);
}

async fn url_is_the_origin_then_exactly_the_key(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let key = key("comfyui-results/2026/11");
    s.put(&key, &images::png(8, 8)).await;
    let url = s.store.url(&key).await.expect("url");
    assert_eq!(url, s.app.expected_url(&key));
    // What the frontend does: `new URL(url).pathname.substring(1)`.
    let parsed = reqwest::Url::parse(&url).expect("an absolute URL");
    assert_eq!(&parsed.path()[1..], key);
    assert!(parsed.query().is_none() && parsed.fragment().is_none());
}

async fn keys_from_every_writer_are_stored(builder: TestAppBuilder) {
    let s = subject(builder).await;
    let id = uuid::Uuid::new_v4();
    for key in [
        format!("images/{id}/{id}.jpeg"),
        format!("comfyui-results/2026/11/{id}_00001_.png"),
        format!("paid-api-results/{id}/out-1.webp"),
        format!("face-mask/{id}/A_b-c.d.png"),
    ] {
        s.put(&key, &images::png(8, 8)).await;
        assert!(s.exists(&key).await, "{key}");
    }
}

async fn check_answers(builder: TestAppBuilder) {
    subject(builder).await.store.check().await.expect("check");
}

/// Where the implementations disagree today. The behaviour is written once
/// like the others; the backend that lacks it is `#[ignore]`d with the
/// reason, so `cargo nextest run --run-ignored only` shows it fail.
mod divergences {
    use super::*;

    /// A key that `validate_key` refuses (it would need percent-encoding in
    /// a URL, or climbs out of the store) is never stored.
    async fn a_key_outside_the_key_alphabet_is_refused(builder: TestAppBuilder) {
        let s = subject(builder).await;
        for bad in ["../escape.png", "images/a b.png", "images/a%20b.png"] {
            let put = s
                .store
                .put_bytes(bad, Bytes::from_static(b"x"), "image/png")
                .await;
            assert!(put.is_err(), "stored {bad:?}");
            assert!(!s.exists(bad).await, "{bad:?} exists");
        }
    }

    #[tokio::test]
    async fn embedded_a_key_outside_the_key_alphabet_is_refused() {
        a_key_outside_the_key_alphabet_is_refused(TestApp::embedded()).await;
    }

    #[tokio::test]
    async fn live_a_key_outside_the_key_alphabet_is_refused() {
        if let Some(builder) = TestApp::live().await {
            a_key_outside_the_key_alphabet_is_refused(builder).await;
        }
    }
}

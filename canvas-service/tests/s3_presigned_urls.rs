//! Without `CLOUDFRONT_DOMAIN`, object URLs are presigned S3 GETs that a
//! browser (or GPU host) can fetch directly.

mod support;

use axum::http::StatusCode;
use support::{TestApp, images};

#[tokio::test]
async fn urls_are_presigned_gets_when_no_cdn_is_set() {
    let Some(builder) = TestApp::live().await else {
        return;
    };
    let app = builder
        .without("CLOUDFRONT_DOMAIN")
        .env("PRESIGN_EXPIRY_SECONDS", "600")
        .start()
        .await;
    let session = app.new_session().await;
    let png = images::png(3, 3);
    let response = app.upload(&session, "a.png", "image/png", &png).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let key = response.json()["key"].as_str().unwrap().to_owned();
    let url = response.json()["url"].as_str().unwrap().to_owned();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("X-Amz-Expires=600"), "{url}");
    assert!(url.contains(&key), "{url}");
    let fetched = reqwest::get(&url).await.expect("fetch the presigned URL");
    assert_eq!(fetched.status(), reqwest::StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), png.as_slice());
}

//! With no CDN, the service serves its objects itself at `/<key>`, as
//! CloudFront would: the frontend displays and downloads them from there.

mod support;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use support::{TestApp, images};

async fn uploaded(app: &TestApp) -> (String, Vec<u8>, String) {
    let session = app.new_session().await;
    let png = images::png(4, 4);
    let response = app.upload(&session, "a.png", "image/png", &png).await;
    let field = |name: &str| response.json()[name].as_str().unwrap().to_owned();
    (field("key"), png, field("url"))
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::get(uri).header(header::ORIGIN, support::FRONTEND)
}

#[tokio::test]
async fn objects_are_served_with_type_etag_cache_and_cors() {
    let app = TestApp::embedded()
        .env("PUBLIC_BASE_URL", "http://127.0.0.1:9000/")
        .start()
        .await;
    let (key, png, url) = uploaded(&app).await;
    assert_eq!(url, format!("http://127.0.0.1:9000/{key}"));
    let response = app
        .send(get(&format!("/{key}")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.as_ref(), png.as_slice());
    assert_eq!(response.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(
        response.headers[header::CONTENT_LENGTH],
        png.len().to_string().as_str()
    );
    assert_eq!(response.headers[header::ACCEPT_RANGES], "bytes");
    assert!(
        response.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    assert_eq!(response.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let etag = response.headers[header::ETAG].clone();

    let revalidated = app
        .send(
            get(&format!("/{key}"))
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.headers[header::ETAG], etag);

    let head = app
        .send(
            Request::head(format!("/{key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        png.len().to_string().as_str()
    );
}

#[tokio::test]
async fn byte_ranges() {
    let app = TestApp::embedded().start().await;
    let (key, png, _) = uploaded(&app).await;
    let len = png.len();
    for (range, start, end) in [
        ("bytes=0-7", 0, 7),
        ("bytes=8-", 8, len - 1),
        ("bytes=-4", len - 4, len - 1),
    ] {
        let response = app
            .send(
                get(&format!("/{key}"))
                    .header(header::RANGE, range)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(response.body.as_ref(), &png[start..=end], "{range}");
        assert_eq!(
            response.headers[header::CONTENT_RANGE],
            format!("bytes {start}-{end}/{len}").as_str()
        );
    }
    let response = app
        .send(
            get(&format!("/{key}"))
                .header(header::RANGE, format!("bytes={len}-"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.headers[header::CONTENT_RANGE],
        format!("bytes */{len}").as_str()
    );
}

#[tokio::test]
async fn worker_results_are_served_and_nothing_outside_the_store() {
    let app = TestApp::embedded().start().await;
    app.put_object("comfyui-results/out.webp", &images::webp(2, 2))
        .await;
    let response = app.get("/comfyui-results/out.webp").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers[header::CONTENT_TYPE], "image/webp");
    // An object with no extension is typed from its bytes.
    app.put_object("paid-api-results/noext", &images::gif(1, 1))
        .await;
    assert_eq!(
        app.get("/paid-api-results/noext").await.headers[header::CONTENT_TYPE],
        "image/gif"
    );

    // The database file sits beside the objects, never among them.
    std::fs::write(app.dir.path().join("secret.txt"), "no").unwrap();
    for path in [
        "/../canvas.db",
        "/..%2fcanvas.db",
        "/images/../../canvas.db",
        "/secret.txt",
        "/canvas.db",
        "/comfyui-results",
        "/comfyui-results/",
        "/comfyui-results/out.webp/x",
    ] {
        let response = app.get(path).await;
        response.assert_error(StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_delete_leaves_no_empty_directory_behind_but_the_store_root() {
    let app = TestApp::embedded().start().await;
    let objects = app.dir.path().join("objects");
    let (first, _, _) = uploaded(&app).await;
    let session = first.split('/').nth(1).unwrap().to_owned();
    let second = app
        .upload(&session, "b.png", "image/png", &images::png(2, 2))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let app_ref = &app;
    let delete = |key: String| {
        let body = serde_json::json!({"session_id": session, "s3_key": key});
        async move { app_ref.delete("/delete-image", body).await.status }
    };

    assert_eq!(delete(first).await, StatusCode::OK);
    assert!(
        objects.join("images").join(&session).is_dir(),
        "the session's other image still lives there"
    );
    assert_eq!(delete(second).await, StatusCode::OK);
    assert!(!objects.join("images").join(&session).exists());
    assert!(!objects.join("images").exists());
    assert!(objects.is_dir(), "the store's root is never removed");
    assert_eq!(app.get("/ready").await.status, StatusCode::OK);
    // And the store still takes new objects.
    let (again, png, _) = uploaded(&app).await;
    assert_eq!(app.object(&again).await.as_deref(), Some(png.as_slice()));
}

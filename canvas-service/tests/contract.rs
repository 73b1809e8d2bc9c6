//! The canvas contract (`CONTRACT.md` §1) and the guards on uploads and
//! keys, run with the same test bodies against both sets of backends:
//! `embedded::*` on SQLite + a local directory, `live::*` on Postgres + S3
//! (moto).

mod support;

use axum::http::{Method, StatusCode, header};
use serde_json::json;
use support::{Backends, Part, TestApp, TestAppBuilder, images};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    operations_endpoints,
    session_ids_are_uuid_v4,
    upload_stores_the_image_and_lists_it,
    uploads_of_each_image_type,
    listing_is_in_insertion_order,
    upload_refuses_what_is_not_the_image_it_claims,
    upload_over_the_limit_is_413_and_leaves_nothing,
    upload_field_errors_are_4xx,
    add_image_adopts_worker_results_once,
    add_image_guards_keys,
    update_position_stores_floats_exactly,
    delete_image_removes_row_and_unshared_object,
    delete_image_never_touches_another_sessions_data,
    failed_row_insert_removes_the_object,
    concurrent_adds_keep_one_row,
    cors_for_the_frontend,
    bad_input_is_never_a_500,
    keys_the_file_system_cannot_hold_are_404,
    methods_a_route_lacks_are_405_with_detail,
);

fn key_of(response: &support::TestResponse) -> String {
    response.json()["key"].as_str().expect("key").to_owned()
}

async fn operations_endpoints(builder: TestAppBuilder) {
    let app = builder.start().await;
    let health = app.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        json!({"status": "healthy", "service": "canvas-service"})
    );
    assert_eq!(app.get("/").await.json()["service"], "canvas-service");
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(
        ready.json()["checks"],
        json!({"database": "ok", "object_store": "ok"})
    );

    let doc = app.get("/openapi.json").await.json();
    for (path, method) in [
        ("/", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/session", "post"),
        ("/upload", "post"),
        ("/images", "get"),
        ("/add-image", "post"),
        ("/update-position", "post"),
        ("/delete-image", "delete"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["ImageOut"].is_object());
}

async fn session_ids_are_uuid_v4(builder: TestAppBuilder) {
    let app = builder.start().await;
    let a = app.new_session().await;
    let b = app.new_session().await;
    assert_ne!(a, b);
    let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4);
}

async fn upload_stores_the_image_and_lists_it(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let png = images::png(640, 480);
    let response = app.upload(&session, "Photo.PNG", "image/png", &png).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    let key = key_of(&response);
    let prefix = format!("images/{session}/");
    let file = key
        .strip_prefix(&prefix)
        .expect("key under images/<session>/");
    let (id, ext) = file.split_once('.').expect("an extension");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{key}");
    assert_eq!(ext, "png");
    assert_eq!(body["url"], app.expected_url(&key));
    assert_eq!(body["x"], json!(0.0));
    assert_eq!(body["y"], json!(0.0));
    assert_eq!(body["width"], 640);
    assert_eq!(body["height"], 480);
    assert_eq!(app.object(&key).await.as_deref(), Some(png.as_slice()));

    let listed = app.get(&format!("/images?session_id={session}")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.json(),
        json!({"items": [{"key": key, "url": app.expected_url(&key), "x": 0.0, "y": 0.0, "width": 640, "height": 480}]})
    );
    // An unknown session simply has no images, as before.
    let empty = app
        .get(&format!("/images?session_id={}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(empty.json(), json!({"items": []}));
}

async fn uploads_of_each_image_type(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    // (file name, declared type, bytes, expected extension, width, height)
    let cases = [
        (
            "a.jpeg",
            "image/jpeg",
            images::jpeg(320, 200),
            "jpeg",
            320,
            200,
        ),
        ("b.jpg", "image/jpg", images::jpeg(1, 2), "jpg", 1, 2),
        ("c.gif", "image/gif", images::gif(7, 9), "gif", 7, 9),
        (
            "d.webp",
            "image/webp",
            images::webp(1024, 768),
            "webp",
            1024,
            768,
        ),
        // No extension, generic type: named after its bytes.
        (
            "blob",
            "application/octet-stream",
            images::png(5, 5),
            "png",
            5,
            5,
        ),
        // A non-image extension is replaced by the real one.
        (
            "download.bin",
            "image/webp",
            images::webp(3, 3),
            "webp",
            3,
            3,
        ),
    ];
    for (name, content_type, bytes, ext, width, height) in cases {
        let response = app.upload(&session, name, content_type, &bytes).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{name}: {}",
            response.text()
        );
        let key = key_of(&response);
        assert!(key.ends_with(&format!(".{ext}")), "{name} → {key}");
        assert_eq!(response.json()["width"], width, "{name}");
        assert_eq!(response.json()["height"], height, "{name}");
        assert_eq!(
            app.object(&key).await.as_deref(),
            Some(bytes.as_slice()),
            "{name}"
        );
    }
}

async fn listing_is_in_insertion_order(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    app.put_object("comfyui-results/gen-1.png", &images::png(1, 1))
        .await;
    let mut expected = vec![];
    for i in 0..3 {
        let response = app
            .upload(
                &session,
                &format!("{i}.png"),
                "image/png",
                &images::png(2, 2),
            )
            .await;
        expected.push(key_of(&response));
        if i == 1 {
            let added = app
                .post("/add-image", json!({"session_id": session, "s3_key": "comfyui-results/gen-1.png", "x": 5, "y": 6}))
                .await;
            assert_eq!(added.status, StatusCode::OK, "{}", added.text());
            expected.push("comfyui-results/gen-1.png".to_owned());
        }
    }
    let listed = app
        .get(&format!("/images?session_id={session}"))
        .await
        .json();
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, expected);
}

async fn upload_refuses_what_is_not_the_image_it_claims(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let cases: [(&str, &str, Vec<u8>); 6] = [
        (
            "notes.txt",
            "text/plain",
            b"just some text, long enough".to_vec(),
        ),
        (
            "evil.png",
            "image/png",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        ),
        // Declared PNG, bytes JPEG.
        ("photo", "image/png", images::jpeg(10, 10)),
        // Named .gif, bytes PNG.
        ("photo.gif", "application/octet-stream", images::png(10, 10)),
        // Declared as something else entirely.
        ("photo.png", "text/html", images::png(10, 10)),
        // The signature alone is not an image.
        ("cut.png", "image/png", b"\x89PNG\r\n\x1a\n".to_vec()),
    ];
    for (name, content_type, bytes) in cases {
        let response = app.upload(&session, name, content_type, &bytes).await;
        let detail = response.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(!detail.is_empty(), "{name}");
    }
    assert!(
        app.object_keys(&format!("images/{session}/"))
            .await
            .is_empty()
    );
    assert_eq!(
        app.get(&format!("/images?session_id={session}"))
            .await
            .json(),
        json!({"items": []})
    );
}

async fn upload_over_the_limit_is_413_and_leaves_nothing(builder: TestAppBuilder) {
    let app = builder.env("MAX_UPLOAD_BYTES", "4096").start().await;
    let session = app.new_session().await;
    let mut big = images::png(100, 100);
    big.resize(4097, 0);
    let detail = app
        .upload(&session, "big.png", "image/png", &big)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail.contains("4096"), "{detail}");
    // Exactly at the limit is fine.
    big.truncate(4096);
    assert_eq!(
        app.upload(&session, "ok.png", "image/png", &big)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.object_keys(&format!("images/{session}/")).await.len(),
        1
    );
    // Nothing left behind in the spool.
    let spool = match app.backends {
        Backends::Embedded => app.dir.path().join("spool"),
        Backends::Live => app.dir.path().join("spool"),
    };
    assert_eq!(std::fs::read_dir(spool).unwrap().count(), 0);
}

async fn upload_field_errors_are_4xx(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let png = images::png(1, 1);
    let unknown = uuid::Uuid::new_v4().to_string();
    app.upload(&unknown, "a.png", "image/png", &png)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let detail = app
        .upload("not-a-uuid", "a.png", "image/png", &png)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("session_id"), "{detail}");
    let detail = app
        .upload_parts(&[Part::text("session_id", &session)])
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("file"), "{detail}");
    let detail = app
        .upload_parts(&[Part::file("file", "a.png", "image/png", &png)])
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("session_id"), "{detail}");
    // File first, then an unknown session: refused, and nothing stored.
    app.upload_parts(&[
        Part::file("file", "a.png", "image/png", &png),
        Part::text("session_id", &unknown),
    ])
    .await
    .assert_error(StatusCode::NOT_FOUND);
    // File first, then a known session: fine (FormData order varies).
    let ok = app
        .upload_parts(&[
            Part::file("file", "a.png", "image/png", &png),
            Part::text("session_id", &session),
        ])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    // Not multipart at all: 400, "not a well-formed multipart/form-data
    // body" as the OpenAPI document declares (415 on this route is for a
    // file that is not an accepted image).
    let response = app.post("/upload", json!({"session_id": session})).await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );
    assert!(response.json()["detail"].is_string());
    assert_eq!(
        app.object_keys(&format!("images/{unknown}/")).await,
        Vec::<String>::new()
    );
}

async fn add_image_adopts_worker_results_once(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let key = "comfyui-results/2026/11/job-42_00001_.png";
    app.put_object(key, &images::png(8, 8)).await;
    let first = app
        .post(
            "/add-image",
            json!({"session_id": session, "s3_key": key, "x": 12.5, "y": -3}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["key"], key);
    assert_eq!(first.json()["url"], app.expected_url(key));
    assert_eq!(first.json()["x"], json!(12.5));
    assert_eq!(first.json()["y"], json!(-3.0));
    // Again: still one row, and x/y default to 0 when left out.
    let again = app
        .post("/add-image", json!({"session_id": session, "s3_key": key}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let items = app
        .get(&format!("/images?session_id={session}"))
        .await
        .json()["items"]
        .clone();
    assert_eq!(items.as_array().unwrap().len(), 1);

    let other_key = "paid-api-results/x.png";
    app.put_object(other_key, &images::png(1, 1)).await;
    let defaults = app
        .post(
            "/add-image",
            json!({"session_id": session, "s3_key": other_key}),
        )
        .await
        .json();
    assert_eq!(
        (defaults["x"].clone(), defaults["y"].clone()),
        (json!(0.0), json!(0.0))
    );

    // A session's own upload may be added again (to another place) too.
    let own = key_of(
        &app.upload(&session, "a.png", "image/png", &images::png(1, 1))
            .await,
    );
    assert_eq!(
        app.post("/add-image", json!({"session_id": session, "s3_key": own}))
            .await
            .status,
        StatusCode::OK
    );
}

async fn add_image_guards_keys(builder: TestAppBuilder) {
    let app = builder.start().await;
    let mine = app.new_session().await;
    let theirs = app.new_session().await;
    let their_upload = key_of(
        &app.upload(&theirs, "a.png", "image/png", &images::png(1, 1))
            .await,
    );

    let detail = app
        .post(
            "/add-image",
            json!({"session_id": mine, "s3_key": their_upload}),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert!(detail.contains("another session"), "{detail}");
    app.post(
        "/add-image",
        json!({"session_id": mine, "s3_key": "comfyui-results/missing.png"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND);
    app.put_object("comfyui-results/there.png", &images::png(1, 1))
        .await;
    app.post(
        "/add-image",
        json!({"session_id": uuid::Uuid::new_v4(), "s3_key": "comfyui-results/there.png"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND);
    app.post(
        "/add-image",
        json!({"session_id": "nope", "s3_key": "comfyui-results/there.png"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    for bad in [
        "comfyui-results/../images/x.png".to_owned(),
        "/comfyui-results/there.png".to_owned(),
        "comfyui-results/a\u{0}b.png".to_owned(),
        "comfyui-results/a\nb.png".to_owned(),
        "comfyui-results/a%2Fb.png".to_owned(),
        "comfyui-results/a b.png".to_owned(),
        "comfyui-results/a?b.png".to_owned(),
        "".to_owned(),
        format!("comfyui-results/{}", "a".repeat(1020)),
    ] {
        app.post("/add-image", json!({"session_id": mine, "s3_key": bad}))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        app.get(&format!("/images?session_id={mine}")).await.json(),
        json!({"items": []})
    );
}

async fn update_position_stores_floats_exactly(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let key = key_of(
        &app.upload(&session, "a.png", "image/png", &images::png(1, 1))
            .await,
    );
    let generated = "comfyui-results/moved.png";
    app.put_object(generated, &images::png(1, 1)).await;
    app.post(
        "/add-image",
        json!({"session_id": session, "s3_key": generated}),
    )
    .await;

    for (x, y) in [
        (0.1 + 0.2, -1e-300),
        (-123456.789, 1.7976931348623157e308),
        (0.0, -0.5),
    ] {
        let response = app
            .post(
                "/update-position",
                json!({"session_id": session, "s3_key": key, "x": x, "y": y}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert_eq!(
            response.json(),
            json!({"success": true, "s3_key": key, "x": x, "y": y})
        );
        let listed = app
            .get(&format!("/images?session_id={session}"))
            .await
            .json();
        let item = &listed["items"][0];
        assert_eq!((item["x"].as_f64(), item["y"].as_f64()), (Some(x), Some(y)));
    }
    // Generated images are moved the same way.
    let moved = app
        .post(
            "/update-position",
            json!({"session_id": session, "s3_key": generated, "x": 1.5, "y": 2.5}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);

    let other = app.new_session().await;
    app.post(
        "/update-position",
        json!({"session_id": other, "s3_key": key, "x": 1, "y": 1}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND);
    app.post(
        "/update-position",
        json!({"session_id": session, "s3_key": "images/nope.png", "x": 1, "y": 1}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND);
    let detail = app
        .post(
            "/update-position",
            json!({"session_id": session, "s3_key": key, "x": "left", "y": 1}),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains('x'), "{detail}");
}

async fn delete_image_removes_row_and_unshared_object(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let key = key_of(
        &app.upload(&session, "a.png", "image/png", &images::png(1, 1))
            .await,
    );
    let response = app
        .delete(
            "/delete-image",
            json!({"session_id": session, "s3_key": key}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"success": true, "s3_key": key, "message": "Image deleted successfully"})
    );
    assert_eq!(
        app.get(&format!("/images?session_id={session}"))
            .await
            .json(),
        json!({"items": []})
    );
    assert_eq!(app.object(&key).await, None);
    // Twice: nothing left to delete.
    app.delete(
        "/delete-image",
        json!({"session_id": session, "s3_key": key}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND);
}

async fn delete_image_never_touches_another_sessions_data(builder: TestAppBuilder) {
    let app = builder.start().await;
    let a = app.new_session().await;
    let b = app.new_session().await;
    let a_upload = key_of(
        &app.upload(&a, "a.png", "image/png", &images::png(1, 1))
            .await,
    );

    // B cannot delete A's upload, by any route.
    app.delete(
        "/delete-image",
        json!({"session_id": b, "s3_key": a_upload}),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN);
    assert!(app.object(&a_upload).await.is_some());
    assert_eq!(
        app.get(&format!("/images?session_id={a}")).await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A generated image on both canvases: deleting it from one keeps the
    // object for the other; deleting it from the last removes it.
    let shared = "comfyui-results/shared.png";
    app.put_object(shared, &images::png(1, 1)).await;
    for session in [&a, &b] {
        app.post(
            "/add-image",
            json!({"session_id": session, "s3_key": shared}),
        )
        .await;
    }
    assert_eq!(
        app.delete("/delete-image", json!({"session_id": a, "s3_key": shared}))
            .await
            .status,
        StatusCode::OK
    );
    assert!(app.object(shared).await.is_some(), "still on B's canvas");
    assert_eq!(
        app.get(&format!("/images?session_id={b}")).await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.delete("/delete-image", json!({"session_id": a, "s3_key": shared}))
        .await
        .assert_error(StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete("/delete-image", json!({"session_id": b, "s3_key": shared}))
            .await
            .status,
        StatusCode::OK
    );
    assert!(app.object(shared).await.is_none());

    app.delete(
        "/delete-image",
        json!({"session_id": "x", "s3_key": shared}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    app.delete(
        "/delete-image",
        json!({"session_id": a, "s3_key": "../etc/passwd"}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST);
}

async fn failed_row_insert_removes_the_object(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    match app.backends {
        Backends::Embedded => {
            app.sql("CREATE TRIGGER refuse_images BEFORE INSERT ON images BEGIN SELECT RAISE(ABORT, 'refused'); END;")
                .await
        }
        Backends::Live => {
            app.sql(
                "CREATE FUNCTION refuse_images() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                 CREATE TRIGGER refuse_images BEFORE INSERT ON images FOR EACH ROW EXECUTE FUNCTION refuse_images();",
            )
            .await
        }
    }
    let response = app
        .upload(&session, "a.png", "image/png", &images::png(1, 1))
        .await;
    let detail = response.assert_error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        detail, "Internal server error",
        "no database text reaches the client"
    );
    assert_eq!(
        app.object_keys(&format!("images/{session}/")).await,
        Vec::<String>::new()
    );
}

async fn concurrent_adds_keep_one_row(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    let key = "comfyui-results/race.png";
    app.put_object(key, &images::png(1, 1)).await;
    let body = json!({"session_id": session, "s3_key": key});
    let adds = (0..8).map(|_| app.post("/add-image", body.clone()));
    for response in futures_util::future::join_all(adds).await {
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    let items = app
        .get(&format!("/images?session_id={session}"))
        .await
        .json()["items"]
        .clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
}

async fn cors_for_the_frontend(builder: TestAppBuilder) {
    let app = builder
        .env(
            "CORS_ORIGINS",
            "http://localhost:3000,https://canvas.example.com",
        )
        .start()
        .await;
    for method in ["POST", "DELETE"] {
        let preflight = app
            .send(
                axum::http::Request::builder()
                    .method(Method::OPTIONS)
                    .uri("/delete-image")
                    .header(header::ORIGIN, "https://canvas.example.com")
                    .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
                    .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(
            preflight.status.is_success(),
            "{method}: {}",
            preflight.status
        );
        assert_eq!(
            preflight.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://canvas.example.com"
        );
        let methods = preflight.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains(method), "{methods}");
        let headers = preflight.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap();
        assert!(headers.contains("content-type"), "{headers}");
    }
    // Errors carry the headers too, so the browser can read the status.
    let missing = app
        .post(
            "/update-position",
            json!({"session_id": uuid::Uuid::new_v4(), "s3_key": "a.png", "x": 0, "y": 0}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        support::FRONTEND
    );
    // An origin not on the list gets no CORS grant.
    let foreign = app
        .send(
            axum::http::Request::get("/health")
                .header(header::ORIGIN, "https://evil.example")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert!(
        foreign
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

async fn bad_input_is_never_a_500(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    // Each body with what it is: not JSON (400), JSON of the wrong shape
    // (422), over the body limit (413). A number out of f64's range cannot
    // be read (400) where the route reads it; `/delete-image` has no `x`,
    // ignores it, and looks the key up (404).
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const SHAPE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
    const BIG: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;
    let cases = [
        ("".to_owned(), [BAD, BAD, BAD]),
        ("null".to_owned(), [SHAPE, SHAPE, SHAPE]),
        ("[]".to_owned(), [SHAPE, SHAPE, SHAPE]),
        ("{".to_owned(), [BAD, BAD, BAD]),
        ("{\"session_id\": 1}".to_owned(), [SHAPE, SHAPE, SHAPE]),
        (
            format!("{{\"session_id\": \"{session}\"}}"),
            [SHAPE, SHAPE, SHAPE],
        ),
        (
            format!("{{\"session_id\": \"{session}\", \"s3_key\": 5, \"x\": 1, \"y\": 1}}"),
            [SHAPE, SHAPE, SHAPE],
        ),
        (
            format!(
                "{{\"session_id\": \"{session}\", \"s3_key\": \"a.png\", \"x\": 1e999, \"y\": 1}}"
            ),
            [BAD, BAD, StatusCode::NOT_FOUND],
        ),
        (
            format!(
                "{{\"session_id\": \"{session}\", \"s3_key\": \"{}\"}}",
                "k".repeat(100_000)
            ),
            [BIG, BIG, BIG],
        ),
    ];
    for (route, (method, path)) in [
        (Method::POST, "/add-image"),
        (Method::POST, "/update-position"),
        (Method::DELETE, "/delete-image"),
    ]
    .into_iter()
    .enumerate()
    {
        for (body, expected) in &cases {
            let response = app
                .send(
                    axum::http::Request::builder()
                        .method(method.clone())
                        .uri(path)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(axum::body::Body::from(body.clone()))
                        .unwrap(),
                )
                .await;
            assert_eq!(
                response.status,
                expected[route],
                "{method} {path} {:.60}: {}",
                body,
                response.text()
            );
            assert!(response.json()["detail"].is_string(), "{}", response.text());
        }
        // Without a JSON content type.
        let response = app
            .send(
                axum::http::Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(axum::body::Body::from("{}"))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path}"
        );
    }
    for query in [
        "/images",
        "/images?session_id=",
        "/images?session_id=zzz",
        "/images?session_id=%FF",
    ] {
        app.get(query)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let response = app
        .send(
            axum::http::Request::post("/upload")
                .header(header::CONTENT_TYPE, "multipart/form-data; boundary=xyz")
                .body(axum::body::Body::from("--xyz\r\ngarbage"))
                .unwrap(),
        )
        .await;
    // A multipart body that breaks off: malformed, 400.
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );
    assert!(response.json()["detail"].is_string(), "{}", response.text());
    app.get("/no/such/route")
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

/// A key segment longer than a file name may be (found by the OpenAPI
/// fuzzer: `POST /add-image` with such a key was a 500 on the local store)
/// names no object: 404 on every route that looks one up.
async fn keys_the_file_system_cannot_hold_are_404(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    // The directory exists, so the file system would get to judge the name:
    // the key check refuses such a segment first (400), and an object route
    // can never find one (404).
    app.put_object("comfyui-results/there.png", &images::png(1, 1))
        .await;
    let long = "a".repeat(300);
    for key in [format!("{long}.png"), format!("comfyui-results/{long}.png")] {
        app.post("/add-image", json!({"session_id": session, "s3_key": key}))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        app.delete(
            "/delete-image",
            json!({"session_id": session, "s3_key": key}),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST);
        app.post(
            "/update-position",
            json!({"session_id": session, "s3_key": key, "x": 1.0, "y": 2.0}),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST);
        app.get(&format!("/{key}"))
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
}

/// A method a route does not have: 405 with `Allow` and a `{"detail"}` body,
/// as FastAPI answered (it was an empty body).
async fn methods_a_route_lacks_are_405_with_detail(builder: TestAppBuilder) {
    let app = builder.start().await;
    for (method, uri, allow) in [
        (Method::GET, "/session", "POST"),
        (Method::POST, "/delete-image", "DELETE"),
        (Method::PUT, "/images", "GET,HEAD"),
    ] {
        let response = app
            .send(
                axum::http::Request::builder()
                    .method(method.clone())
                    .uri(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            response.assert_error(StatusCode::METHOD_NOT_ALLOWED),
            "Method Not Allowed",
            "{method} {uri}"
        );
        assert_eq!(response.headers[header::ALLOW], allow, "{method} {uri}");
    }
}

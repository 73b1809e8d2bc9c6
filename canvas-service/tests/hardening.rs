//! The limits that let the canvas service face the internet: a trickled
//! upload is cut at its deadline and leaves nothing behind, excess
//! concurrent uploads are told to come back, decompression bombs are
//! refused from their header, over-long key segments are client errors, and
//! served objects say `nosniff`. The slow-client cases run the real server
//! on 127.0.0.1:0 and speak HTTP over raw TCP.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::http::{StatusCode, header};
use serde_json::json;
use support::{Part, RunningServer, TestApp, TestAppBuilder, images, multipart_body};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    a_trickled_upload_is_cut_and_leaves_nothing,
    excess_concurrent_uploads_are_503_with_retry_after,
    decompression_bombs_are_413_and_never_stored,
    overlong_key_segments_are_4xx_never_500,
);

/// Bounds a wait that must end on its own; reaching it fails the test.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// `POST /upload` as raw HTTP/1.1: the request head and the form.
fn upload_request(session: &str, image: &[u8], expect_continue: bool) -> (Vec<u8>, Vec<u8>) {
    let (content_type, body) = multipart_body(&[
        Part::text("session_id", session),
        Part::file("file", "a.png", "image/png", image),
    ]);
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{expect}\r\n",
        body.len()
    );
    (head.into_bytes(), body)
}

/// Everything the server sends until it closes the connection (a reset
/// counts as closing: the server may close with our bytes unread).
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response head (through the blank line), e.g. an interim `100 Continue`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read a response head");
        assert_eq!(
            n,
            1,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status and body of a whole raw response.
fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// Nothing of an upload outlived it: no row, no object, no spool file.
async fn nothing_stored(app: &TestApp, session: &str) {
    assert_eq!(
        app.get(&format!("/images?session_id={session}"))
            .await
            .json(),
        json!({"items": []})
    );
    assert_eq!(app.object_keys("images/").await, Vec::<String>::new());
    let spool = app.dir.path().join("spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
}

async fn a_trickled_upload_is_cut_and_leaves_nothing(builder: TestAppBuilder) {
    let app = builder.env("REQUEST_TIMEOUT_SECONDS", "1").start().await;
    let session = app.new_session().await;
    let server = app.serve().await;
    let (head, body) = upload_request(&session, &images::png(64, 64), false);
    // The session id and the file's part headers go at once, so the file is
    // being spooled when the deadline passes; its bytes then trickle.
    let file_starts = body
        .windows(4)
        .position(|w| w == b"\x89PNG")
        .expect("the PNG in the form");
    let (mut reader, mut writer) = TcpStream::connect(server.addr)
        .await
        .expect("connect")
        .into_split();
    writer.write_all(&head).await.expect("send the head");
    writer
        .write_all(&body[..file_starts])
        .await
        .expect("send the form's start");
    let sent = Arc::new(AtomicUsize::new(file_starts));
    let trickle = tokio::spawn({
        let sent = sent.clone();
        let body = body.clone();
        async move {
            for byte in &body[file_starts..] {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let raw = tokio::time::timeout(HANG_GUARD, read_until_closed(&mut reader))
        .await
        .expect("the server cuts the upload");
    trickle.abort();
    assert!(
        sent.load(Ordering::Relaxed) < body.len(),
        "the whole body was sent before the server answered"
    );
    // The answer is a 408 naming the setting — unless the close with our
    // bytes unread reset the connection before we read it.
    if !raw.is_empty() {
        let (status, detail) = parse_response(&raw);
        assert_eq!(status, 408, "{detail}");
        assert!(detail.contains("REQUEST_TIMEOUT_SECONDS"), "{detail}");
    }
    nothing_stored(&app, &session).await;
    server.shut_down().await;
}

async fn excess_concurrent_uploads_are_503_with_retry_after(builder: TestAppBuilder) {
    let app = builder.env("MAX_CONCURRENT_UPLOADS", "2").start().await;
    let session = app.new_session().await;
    let server = app.serve().await;
    let png = images::png(8, 8);
    let (head, body) = upload_request(&session, &png, true);

    // Two uploads that stop after their headers. hyper sends `100 Continue`
    // when the handler first reads the body, after it took its slot: once
    // both have it, both slots are held.
    let mut held = vec![];
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(&head).await.expect("send the head");
        let interim = tokio::time::timeout(HANG_GUARD, read_head(&mut stream))
            .await
            .expect("100 Continue");
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        held.push(stream);
    }

    let client = reqwest::Client::new();
    let upload = || {
        let form = reqwest::multipart::Form::new()
            .text("session_id", session.clone())
            .part(
                "file",
                reqwest::multipart::Part::bytes(png.clone())
                    .file_name("a.png")
                    .mime_str("image/png")
                    .expect("a MIME type"),
            );
        client.post(server.url("/upload")).multipart(form).send()
    };
    let refused = upload().await.expect("the third upload is answered");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after > 0);
    let detail = refused.json::<serde_json::Value>().await.expect("JSON")["detail"]
        .as_str()
        .expect("a detail")
        .to_owned();
    assert!(detail.contains("MAX_CONCURRENT_UPLOADS"), "{detail}");

    // The held uploads finish normally, and their slots come back.
    for mut stream in held {
        stream.write_all(&body).await.expect("send the body");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let accepted = upload().await.expect("a later upload is answered");
    assert_eq!(accepted.status(), StatusCode::OK);
    let listed = app.get(&format!("/images?session_id={session}")).await;
    assert_eq!(listed.json()["items"].as_array().map(Vec::len), Some(3));
    server.shut_down().await;
}

async fn decompression_bombs_are_413_and_never_stored(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    for (name, mime, bytes, dimensions) in [
        (
            "bomb.png",
            "image/png",
            images::png(100_000, 100_000),
            "100000 × 100000",
        ),
        (
            "bomb.jpg",
            "image/jpeg",
            images::jpeg(65_535, 65_535),
            "65535 × 65535",
        ),
        (
            "bomb.gif",
            "image/gif",
            images::gif(65_535, 65_535),
            "65535 × 65535",
        ),
        (
            "bomb.webp",
            "image/webp",
            images::webp(16_384, 16_384),
            "16384 × 16384",
        ),
    ] {
        assert!(bytes.len() < 200, "{name} is a tiny file");
        let response = app.upload(&session, name, mime, &bytes).await;
        let detail = response.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
        assert!(detail.contains(dimensions), "{name}: {detail}");
        assert!(detail.contains("100000000"), "{name}: {detail}");
        assert!(detail.contains("MAX_IMAGE_PIXELS"), "{name}: {detail}");
    }
    nothing_stored(&app, &session).await;

    // Exactly at the limit, and an everyday image, pass.
    for (width, height) in [(10_000, 10_000), (640, 480)] {
        let response = app
            .upload(&session, "ok.png", "image/png", &images::png(width, height))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        assert_eq!(response.json()["width"], width);
        assert_eq!(response.json()["height"], height);
    }
}

async fn overlong_key_segments_are_4xx_never_500(builder: TestAppBuilder) {
    let app = builder.start().await;
    let session = app.new_session().await;
    // 256 bytes: one more than a file name may have.
    let too_long = format!("comfyui-results/{}.png", "a".repeat(252));
    for (path, body) in [
        (
            "/add-image",
            json!({"session_id": session, "s3_key": too_long}),
        ),
        (
            "/update-position",
            json!({"session_id": session, "s3_key": too_long, "x": 1, "y": 2}),
        ),
    ] {
        let detail = app
            .post(path, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        assert!(detail.contains("255"), "{path}: {detail}");
    }
    app.delete(
        "/delete-image",
        json!({"session_id": session, "s3_key": too_long}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST);
    for path in [
        format!("/images/{}.png", "x".repeat(256)),
        format!("/{too_long}"),
    ] {
        app.get(&path).await.assert_error(StatusCode::NOT_FOUND);
    }

    // 255 bytes is a valid key on both stores.
    let longest = format!("comfyui-results/{}.png", "b".repeat(251));
    app.put_object(&longest, &images::png(2, 2)).await;
    let added = app
        .post(
            "/add-image",
            json!({"session_id": session, "s3_key": longest}),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text());
    assert_eq!(
        app.object(&longest).await.as_deref(),
        Some(&images::png(2, 2)[..])
    );
}

/// Embedded only: with S3 the objects are served by S3/CloudFront, which
/// cannot store this header per object (see the README: a CloudFront
/// response headers policy adds it).
#[tokio::test]
async fn served_objects_carry_nosniff() {
    let app = TestApp::embedded().start().await;
    let session = app.new_session().await;
    let uploaded = app
        .upload(&session, "a.png", "image/png", &images::png(4, 4))
        .await;
    let key = uploaded.json()["key"].as_str().expect("key").to_owned();
    let full = app.get(&format!("/{key}")).await;
    assert_eq!(full.status, StatusCode::OK);
    let etag = full.headers[header::ETAG].clone();
    let ranged = app
        .send(
            axum::http::Request::get(format!("/{key}"))
                .header(header::RANGE, "bytes=0-3")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    let revalidated = app
        .send(
            axum::http::Request::get(format!("/{key}"))
                .header(header::IF_NONE_MATCH, etag)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    for response in [&full, &ranged, &revalidated] {
        assert_eq!(
            response.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{}",
            response.status
        );
    }
}

/// Embedded only: this is about the connection, which is the same whatever
/// stores the data. A JSON body that trickles past its deadline is a 408
/// (not a 400), and the graceful shutdown does not wait for it beyond it.
#[tokio::test]
async fn a_trickled_json_body_is_408_and_shutdown_does_not_wait_for_it() {
    let app = TestApp::embedded()
        .env("REQUEST_TIMEOUT_SECONDS", "1")
        .start()
        .await;
    let session = app.new_session().await;
    let server: RunningServer = app.serve().await;
    let body = json!({"session_id": session, "s3_key": "comfyui-results/x.png"}).to_string();
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "POST /add-image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..5]
            )
            .as_bytes(),
        )
        .await
        .expect("send the head and a little");
    // The shutdown starts while the body is stalled; it completes once the
    // body's deadline has cut the request.
    let shut_down = tokio::spawn(server.shut_down());
    let raw = tokio::time::timeout(HANG_GUARD, read_until_closed(&mut stream))
        .await
        .expect("the stalled request is cut");
    let (status, detail) = parse_response(&raw);
    assert_eq!(status, 408, "{detail}");
    assert!(detail.contains("REQUEST_TIMEOUT_SECONDS"), "{detail}");
    tokio::time::timeout(HANG_GUARD, shut_down)
        .await
        .expect("the server stops")
        .expect("cleanly");
}

/// Embedded only, as above. The upload route has its own deadline: with
/// `UPLOAD_TIMEOUT_SECONDS=1` (and the 15 s default for the rest) a stalled
/// upload is cut after 1 s, and the 408 names that setting.
#[tokio::test]
async fn the_upload_route_has_its_own_deadline() {
    let app = TestApp::embedded()
        .env("UPLOAD_TIMEOUT_SECONDS", "1")
        .start()
        .await;
    let session = app.new_session().await;
    let server = app.serve().await;
    let (head, body) = upload_request(&session, &images::png(64, 64), false);
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(&head).await.expect("send the head");
    stream
        .write_all(&body[..body.len() / 2])
        .await
        .expect("send half the form");
    let raw = tokio::time::timeout(HANG_GUARD, read_until_closed(&mut stream))
        .await
        .expect("the stalled upload is cut");
    let (status, detail) = parse_response(&raw);
    assert_eq!(status, 408, "{detail}");
    assert!(
        detail.contains("within 1 s (UPLOAD_TIMEOUT_SECONDS)"),
        "{detail}"
    );
    nothing_stored(&app, &session).await;
    server.shut_down().await;
}

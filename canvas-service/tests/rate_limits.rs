//! The per-client limits on what costs something — new sessions and uploads
//! — through the HTTP surface on both backend sets: a burst past the limit
//! gets 429 with `Retry-After` and CORS headers, passes again after the wait,
//! and reads are never limited. Time is compressed by configuration (30 a
//! minute refills a token every 2 s — slow enough that the live backends'
//! request time does not refill the bucket mid-burst), not by long sleeps.

mod support;

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode, header},
};
use support::{FRONTEND, TestApp, TestAppBuilder, images};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();
    session_creation_is_limited_per_client,
    uploads_are_limited_and_a_refused_one_stores_nothing,
);

async fn new_session_from(app: &TestApp, peer: &str) -> support::TestResponse {
    let mut request = Request::post("/session")
        .header(header::ORIGIN, FRONTEND)
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    app.send(request).await
}

fn retry_after(response: &support::TestResponse) -> u64 {
    response.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn session_creation_is_limited_per_client(builder: TestAppBuilder) {
    let app = builder
        .env("RATE_LIMIT_SESSIONS_PER_MINUTE", "30")
        .env("RATE_LIMIT_SESSIONS_BURST", "2")
        .start()
        .await;
    let client = "198.51.100.30:1234";
    let mut sessions = vec![];
    for _ in 0..2 {
        let response = new_session_from(&app, client).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        sessions.push(response.json()["session_id"].as_str().unwrap().to_owned());
    }
    let refused = new_session_from(&app, client).await;
    let detail = refused.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(detail.contains("new sessions"), "{detail}");
    assert!((1..=2).contains(&retry_after(&refused)));
    assert!(
        refused
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "the frontend must be able to read the 429"
    );
    // Another client is not affected, and reads are never limited.
    let other = new_session_from(&app, "198.51.100.31:1234").await;
    assert_eq!(other.status, StatusCode::OK);
    for _ in 0..20 {
        let listed = app
            .get(&format!("/images?session_id={}", sessions[0]))
            .await;
        assert_eq!(listed.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_secs(retry_after(&refused))).await;
    assert_eq!(new_session_from(&app, client).await.status, StatusCode::OK);
}

async fn uploads_are_limited_and_a_refused_one_stores_nothing(builder: TestAppBuilder) {
    let app = builder
        .env("RATE_LIMIT_UPLOADS_PER_MINUTE", "30")
        .env("RATE_LIMIT_UPLOADS_BURST", "2")
        .start()
        .await;
    let session = app.new_session().await;
    let png = images::png(4, 3);
    for _ in 0..2 {
        let response = app.upload(&session, "a.png", "image/png", &png).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    let refused = app.upload(&session, "a.png", "image/png", &png).await;
    let detail = refused.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(detail.contains("uploads"), "{detail}");
    let wait = retry_after(&refused);
    let prefix = format!("images/{session}/");
    assert_eq!(app.object_keys(&prefix).await.len(), 2);
    let listed = app.get(&format!("/images?session_id={session}")).await;
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let response = app.upload(&session, "a.png", "image/png", &png).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

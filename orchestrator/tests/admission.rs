//! What keeps the orchestrator safe to expose, through its HTTP surface on
//! both backend sets: job image URLs must point at the allowed origins (the
//! API refuses the rest with 422, the worker dead-letters what got onto the
//! queue some other way), the per-client submit rate limit, the backlog cap
//! and the daily quota shared by two orchestrators on one store.

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use orchestrator::tasks::NewTask;
use orchestrator::{
    jobs::{JobKind, QueueName},
    worker::{Outcome, Worker, WorkerSettings},
};
use serde_json::{Value, json};
use support::{
    FRONTEND, IMAGE_ORIGIN, TestApp, TestAppBuilder, TestResponse,
    inference::{Inference, Mode},
};
use tokio_util::sync::CancellationToken;

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();
    image_url_tricks_are_refused_naming_the_field,
    the_canvas_origins_are_accepted_by_default,
    the_worker_dead_letters_urls_it_must_not_fetch,
    a_burst_past_the_limit_waits_for_retry_after,
    clients_are_told_apart_behind_trusted_proxies,
    the_backlog_cap_refuses_until_the_queue_drains,
    the_daily_quota_is_shared_by_two_orchestrators,
    signed_in_users_are_counted_by_their_sub,
);

const CAMERA: &str = "/api/v1/camera-angle/jobs";
const QWEN: &str = "/api/v1/qwen-image-edit/jobs";
const FACE_MASK: &str = "/api/v1/face-mask/tasks";
const FULL_SWAP: &str = "/api/v1/full-face-swap/tasks";

fn image(path: &str) -> String {
    format!("{IMAGE_ORIGIN}/{path}")
}

/// A POST as a client at `peer` (the TCP peer the server would see), with
/// extra headers.
async fn post_from(
    app: &TestApp,
    uri: &str,
    body: &Value,
    peer: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ORIGIN, FRONTEND);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::from(body.to_string())).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    app.send(request).await
}

async fn image_url_tricks_are_refused_naming_the_field(builder: TestAppBuilder) {
    let app = builder.start().await;
    let refused = [
        // userinfo: the host is really evil.example
        "https://cdn.example.test@evil.example/a.png",
        // a look-alike host
        "https://cdn.example.test.evil.example/a.png",
        // the instance metadata service: the GPU host's role credentials
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        // ComfyUI's own API on the host
        "http://127.0.0.1:8188/prompt",
        "http://10.0.0.12/a.png",
        "http://[::1]:9000/a.png",
        // 127.0.0.1 spelled as a number
        "http://2130706433/a.png",
        "http://localhost:9000/images/s/a.png",
        // right host, wrong scheme or port
        "http://cdn.example.test/a.png",
        "https://cdn.example.test:8443/a.png",
        "ftp://cdn.example.test/a.png",
        "file:///etc/passwd",
        "gopher://cdn.example.test/a.png",
    ];
    for url in refused {
        let detail = app
            .post(CAMERA, json!({"image_url": url}))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.starts_with("image_url:"), "{url}: {detail}");
    }
    // Every URL field of every kind is checked, and named.
    let evil = "http://169.254.169.254/latest/meta-data/";
    for (uri, body, field) in [
        (
            QWEN,
            json!({"image_url": image("a.png"), "prompt": "p", "image2_url": evil}),
            "image2_url",
        ),
        (
            QWEN,
            json!({"image_url": image("a.png"), "prompt": "p", "image3_url": evil}),
            "image3_url",
        ),
        (
            FULL_SWAP,
            json!({"source_image_url": image("a.png"), "target_face_url": evil}),
            "target_face_url",
        ),
        (
            FULL_SWAP,
            json!({"source_image_url": evil, "target_face_url": image("a.png")}),
            "source_image_url",
        ),
        (
            "/api/v1/face-swap/tasks",
            json!({"masked_image_url": evil, "target_face_url": image("a.png")}),
            "masked_image_url",
        ),
        (FACE_MASK, json!({"image_url": evil}), "image_url"),
    ] {
        let detail = app
            .post(uri, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.starts_with(&format!("{field}:")), "{uri}: {detail}");
    }
    // Nothing refused was recorded.
    assert!(app.all_tasks().await.is_empty());
    // The listed origin itself passes, in any letter case.
    app.submit(
        CAMERA,
        json!({"image_url": "https://CDN.Example.Test/images/s/a.png"}),
    )
    .await;
}

async fn the_canvas_origins_are_accepted_by_default(builder: TestAppBuilder) {
    // Zero configuration: the canvas on this machine, as `cargo run` serves it.
    let app = builder.without_image_origins().start().await;
    for url in [
        "http://localhost:9000/images/s/a.png",
        "http://127.0.0.1:9000/images/s/a.png",
    ] {
        app.submit(FACE_MASK, json!({"image_url": url})).await;
    }
    app.post(FACE_MASK, json!({"image_url": image("a.png")}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    drop(app);

    // Deployed: the CDN named by CLOUDFRONT_DOMAIN (a bare host means https).
    let app = TestApp::embedded()
        .without_image_origins()
        .env("CLOUDFRONT_DOMAIN", "d111.cloudfront.net")
        .start()
        .await;
    app.submit(
        FACE_MASK,
        json!({"image_url": "https://d111.cloudfront.net/images/s/a.png"}),
    )
    .await;
    app.post(
        FACE_MASK,
        json!({"image_url": "http://localhost:9000/images/s/a.png"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn the_worker_dead_letters_urls_it_must_not_fetch(builder: TestAppBuilder) {
    // The CDN origin is allowed by name, but that name resolves to this
    // machine: the API cannot tell (it checks text only), the worker can.
    let app = builder
        .without_image_origins()
        .env("CLOUDFRONT_DOMAIN", "http://localhost:9")
        .start()
        .await;
    let job = app
        .submit(
            FACE_MASK,
            json!({"image_url": "http://localhost:9/images/s/a.png"}),
        )
        .await;
    // And a message that never went through the API at all.
    let smuggled = uuid::Uuid::new_v4().to_string();
    app.app
        .tasks
        .create(&NewTask {
            task_id: smuggled.clone(),
            kind: JobKind::named("face-mask").expect("a kind"),
            now: 1_700_000_000,
            owner_id: None,
            awaiting_queue: false,
        })
        .await
        .unwrap();
    app.app
        .queue(QueueName::Cpu)
        .send(
            &json!({
                "task_id": smuggled,
                "task_type": "face_mask",
                "api_path": "/api/v1/face-mask/jobs",
                "request_body": {"image_url": "http://169.254.169.254/latest/meta-data/"},
            })
            .to_string(),
        )
        .await
        .unwrap();

    let backend = Inference::start(Mode::CompletesAfter(1)).await;
    let settings = WorkerSettings {
        image_urls: app.app.image_urls.clone(),
        visibility: Duration::from_secs(5),
        ..WorkerSettings::new(QueueName::Cpu, &backend.url)
    };
    let worker = Arc::new(Worker::new(
        app.app.tasks.clone(),
        app.app.queue(QueueName::Cpu).clone(),
        settings,
    ));
    let release = CancellationToken::new();
    let mut outcomes = vec![];
    for _ in 0..2 {
        let message = app
            .app
            .queue(QueueName::Cpu)
            .receive(1, Duration::from_secs(2), Duration::from_secs(5))
            .await
            .unwrap()
            .pop()
            .expect("a message");
        outcomes.push(worker.handle(message, &release).await);
    }
    assert_eq!(outcomes, [Outcome::DeadLettered, Outcome::DeadLettered]);
    assert_eq!(backend.submitted().len(), 0, "nothing reached the backend");
    for id in [&job, &smuggled] {
        let view = app.job(id).await;
        assert_eq!(view["status"], "failed", "{view}");
        let error = view["error"].as_str().unwrap();
        assert!(error.contains("image_url"), "{error}");
    }
    assert!(
        app.job(&job).await["error"]
            .as_str()
            .unwrap()
            .contains("non-public address"),
    );
    // Both messages wait in the dead letters, none on the queue.
    let dead = app
        .app
        .queue(QueueName::Cpu)
        .receive_dead(10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
}

async fn a_burst_past_the_limit_waits_for_retry_after(builder: TestAppBuilder) {
    // 30 a minute refills a token every 2 s: the test waits at most that
    // (and moto's latency cannot refill the bucket mid-burst).
    let app = builder
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "30")
        .env("RATE_LIMIT_JOBS_BURST", "3")
        .start()
        .await;
    let body = json!({"image_url": image("images/s/a.png")});
    let mut ids = vec![];
    for _ in 0..3 {
        let response = post_from(&app, FACE_MASK, &body, "198.51.100.7:4000", &[]).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
        ids.push(response.json()["job_id"].as_str().unwrap().to_owned());
    }
    let refused = post_from(&app, FACE_MASK, &body, "198.51.100.7:4001", &[]).await;
    let detail = refused.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(detail.contains("job submits"), "{detail}");
    let retry_after: u64 = refused.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        refused.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "*",
        "the browser must be able to read the 429"
    );
    // Reads are not limited.
    for _ in 0..20 {
        app.job(&ids[0]).await;
    }
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = post_from(&app, FACE_MASK, &body, "198.51.100.7:4002", &[]).await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
}

async fn clients_are_told_apart_behind_trusted_proxies(builder: TestAppBuilder) {
    let app = builder
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "1")
        .env("RATE_LIMIT_JOBS_BURST", "1")
        .env("TRUSTED_PROXY_HOPS", "1")
        .start()
        .await;
    let body = json!({"image_url": image("images/s/a.png")});
    // Every request comes from the load balancer; it appends the client.
    let lb = "10.0.3.4:55000";
    let a = [("x-forwarded-for", "203.0.113.10")];
    assert_eq!(
        post_from(&app, FACE_MASK, &body, lb, &a).await.status,
        StatusCode::ACCEPTED
    );
    // Another client behind the same balancer has its own bucket.
    let b = [("x-forwarded-for", "203.0.113.11")];
    assert_eq!(
        post_from(&app, FACE_MASK, &body, lb, &b).await.status,
        StatusCode::ACCEPTED
    );
    // The first client cannot escape by writing its own left-most entry.
    let spoofed = [("x-forwarded-for", "192.0.2.99, 203.0.113.10")];
    post_from(&app, FACE_MASK, &body, lb, &spoofed)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
}

async fn the_backlog_cap_refuses_until_the_queue_drains(builder: TestAppBuilder) {
    let app = builder
        .env("MAX_GPU_BACKLOG", "2")
        .env("QUEUE_DEPTH_POLL_SECONDS", "1")
        .start()
        .await;
    app.app.spawn_background();
    let body = json!({"image_url": image("images/s/a.png")});
    app.submit(CAMERA, body.clone()).await;
    app.submit(CAMERA, body.clone()).await;
    let refused = app.post(CAMERA, body.clone()).await;
    let detail = refused.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(detail.contains("GPU queue is full"), "{detail}");
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    // The cap is per queue: CPU work still goes in.
    app.submit(FACE_MASK, body.clone()).await;

    // A worker takes both GPU messages off the queue.
    let adapter = app.adapter();
    for _ in 0..2 {
        let received = adapter
            .receive("gpu", Duration::from_secs(30))
            .await
            .expect("a GPU message");
        adapter.delete("gpu", &received.receipt).await;
    }
    // Once the depth sweep has seen the empty queue, submits pass again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = app.post(CAMERA, body.clone()).await;
        if response.status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cap never lifted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn the_daily_quota_is_shared_by_two_orchestrators(builder: TestAppBuilder) {
    let builder = builder
        .env("DAILY_JOB_QUOTA", "3")
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "0");
    let first = builder.start().await;
    // The second orchestrator runs on the same task store (same SQLite
    // file, or the same DynamoDB table and queues).
    let mut second = TestApp::builder_like(&first);
    if first.backends == support::Backends::Embedded {
        second = second.env("DATA_DIR", &first.dir.path().display().to_string());
    }
    let second = second.start().await;
    let body = json!({"image_url": image("images/s/a.png")});
    let client = "198.51.100.20:5000";
    for app in [&first, &second, &first] {
        let response = post_from(app, FACE_MASK, &body, client, &[]).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    }
    for app in [&second, &first] {
        let refused = post_from(app, FACE_MASK, &body, client, &[]).await;
        let detail = refused.assert_error(StatusCode::TOO_MANY_REQUESTS);
        assert!(detail.contains("Daily job quota"), "{detail}");
        let retry_after: u64 = refused.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    }
    // Another client has its own quota; a refused submit left no job.
    let other = post_from(&second, FACE_MASK, &body, "198.51.100.21:5000", &[]).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text());
    assert_eq!(first.all_tasks().await.len(), 4);
    // An idempotent replay of an accepted job costs nothing.
    let keyed = [("idempotency-key", "replay-1")];
    let other_client = "198.51.100.22:5000";
    let mut ids = vec![];
    for _ in 0..5 {
        let response = post_from(&first, FACE_MASK, &body, other_client, &keyed).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
        ids.push(response.json()["job_id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
}

async fn signed_in_users_are_counted_by_their_sub(builder: TestAppBuilder) {
    let key = testkit::auth::SigningKey::es256("key-1");
    let project = testkit::auth::Project::start(&[&key]).await;
    let app = builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_URL", &project.url)
        .env("DAILY_JOB_QUOTA", "2")
        .env("RATE_LIMIT_JOBS_PER_MINUTE", "0")
        .start()
        .await;
    let body = json!({"image_url": image("images/s/a.png")});
    // Everyone behind one address (an office NAT): each user has a quota.
    let office = "198.51.100.40:6000";
    for user in ["alice", "bob"] {
        app.sign_in(&key.sign(&project.claims(user)));
        for _ in 0..2 {
            let response = post_from(&app, FACE_MASK, &body, office, &[]).await;
            assert_eq!(
                response.status,
                StatusCode::ACCEPTED,
                "{user}: {}",
                response.text()
            );
        }
        post_from(&app, FACE_MASK, &body, office, &[])
            .await
            .assert_error(StatusCode::TOO_MANY_REQUESTS);
    }
    // Anonymous callers from that address still have the address's quota,
    // and a user cannot spend it by signing out.
    app.sign_out();
    for _ in 0..2 {
        let response = post_from(&app, FACE_MASK, &body, office, &[]).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    }
    post_from(&app, FACE_MASK, &body, office, &[])
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
}

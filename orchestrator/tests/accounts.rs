//! Optional user accounts (`AUTH_MODE`): jobs submitted with a Supabase
//! access token belong to its `sub`, and read, stream and cancel answer 404
//! to anyone else — on SQLite and on SQS + DynamoDB (moto). Tokens are
//! signed with keys the test generates and checked against a local JWKS.

mod support;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde_json::json;
use support::{FRONTEND, TestApp, TestAppBuilder, TestResponse};
use testkit::auth::{Project, SigningKey, hs256};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    aws: super::TestApp::aws();

    owned_jobs_are_404_to_everyone_else,
    anonymous_jobs_stay_reachable_by_id,
    idempotency_keys_are_per_user,
    required_mode_refuses_anonymous_api_calls,
    bad_tokens_are_401_on_every_job_endpoint,
    legacy_hs256_secret,
);

const SUBMIT: &str = "/api/v1/camera-angle/jobs";
const IMAGE: &str = "https://cdn.example.test/images/s/a.png";

fn optional(builder: TestAppBuilder, project: &Project) -> TestAppBuilder {
    builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_URL", &project.url)
}

/// The `owner_id` stored with the job, read from the store itself.
async fn stored_owner(app: &TestApp, job: &str) -> Option<String> {
    match &app.dynamo {
        Some(dynamo) => {
            let item = dynamo
                .get_item()
                .table_name(app.var("DYNAMODB_TABLE").unwrap())
                .key(
                    "task_id",
                    aws_sdk_dynamodb::types::AttributeValue::S(job.to_owned()),
                )
                .send()
                .await
                .unwrap();
            item.item()
                .unwrap()
                .get("owner_id")
                .map(|v| v.as_s().unwrap().clone())
        }
        None => {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::SqliteConnection::connect(&app.sqlite_url())
                .await
                .unwrap();
            sqlx::query("SELECT owner_id FROM tasks WHERE task_id = $1")
                .bind(job)
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get(0)
        }
    }
}

/// GET, events and cancel of `job` as the current caller.
async fn read_stream_cancel(app: &TestApp, job: &str) -> Vec<(&'static str, TestResponse)> {
    vec![
        ("get", app.get(&format!("/api/v1/jobs/{job}")).await),
        (
            "events",
            app.get(&format!("/api/v1/jobs/{job}/events")).await,
        ),
        (
            "cancel",
            app.post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
                .await,
        ),
    ]
}

async fn owned_jobs_are_404_to_everyone_else(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    let alice = key.sign(&project.claims("alice"));
    let bob = key.sign(&project.claims("bob"));

    app.sign_in(&alice);
    let job = app.submit(SUBMIT, json!({"image_url": IMAGE})).await;
    assert_eq!(stored_owner(&app, &job).await.as_deref(), Some("alice"));

    for who in [Some(&bob), None] {
        match who {
            Some(token) => app.sign_in(token),
            None => app.sign_out(),
        }
        for (endpoint, response) in read_stream_cancel(&app, &job).await {
            assert_eq!(
                response.assert_error(StatusCode::NOT_FOUND),
                "Job not found",
                "{endpoint}"
            );
        }
    }

    // Nothing changed: the owner still sees it pending, then cancels it and
    // reads its (final) event stream.
    app.sign_in(&alice);
    assert_eq!(app.job(&job).await["status"], "pending");
    let cancelled = app
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["cancelled"], true);
    let events = app.get(&format!("/api/v1/jobs/{job}/events")).await;
    assert_eq!(events.status, StatusCode::OK);
    assert!(
        events.text().contains("\"status\":\"cancelled\""),
        "{}",
        events.text()
    );
}

async fn anonymous_jobs_stay_reachable_by_id(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    let job = app.submit(SUBMIT, json!({"image_url": IMAGE})).await;
    assert_eq!(stored_owner(&app, &job).await, None);
    app.sign_in(&key.sign(&project.claims("bob")));
    assert_eq!(app.job(&job).await["status"], "pending");
    let cancelled = app
        .post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
}

/// Submits with the same Idempotency-Key and body each time; the job id.
async fn submit(app: &TestApp) -> String {
    let response = app
        .post_with(
            SUBMIT,
            json!({"image_url": IMAGE}),
            &[("Idempotency-Key", "same-key")],
        )
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    response.json()["job_id"].as_str().unwrap().to_owned()
}

async fn idempotency_keys_are_per_user(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    app.sign_in(&key.sign(&project.claims("alice")));
    let alices = submit(&app).await;
    assert_eq!(submit(&app).await, alices, "the same user's retry");
    // Another user with the same key gets a job of their own, not Alice's.
    app.sign_in(&key.sign(&project.claims("bob")));
    let bobs = submit(&app).await;
    assert_ne!(bobs, alices);
    assert_eq!(stored_owner(&app, &bobs).await.as_deref(), Some("bob"));
    assert_eq!(submit(&app).await, bobs);
    app.sign_out();
    let anonymous = submit(&app).await;
    assert_ne!(anonymous, alices);
    assert_ne!(anonymous, bobs);
}

async fn required_mode_refuses_anonymous_api_calls(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = builder
        .env("AUTH_MODE", "required")
        .env("SUPABASE_URL", &project.url)
        .start()
        .await;
    for path in [
        "/",
        "/health",
        "/api/v1/health",
        "/ready",
        "/metrics",
        "/openapi.json",
    ] {
        let response = app.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
    }
    let job = "11111111-1111-4111-8111-111111111111";
    let refused = [
        app.post(SUBMIT, json!({"image_url": IMAGE})).await,
        app.get(&format!("/api/v1/jobs/{job}")).await,
        app.get(&format!("/api/v1/jobs/{job}/events")).await,
        app.post(&format!("/api/v1/jobs/{job}/cancel"), json!({}))
            .await,
        app.get("/api/v1/gpu").await,
    ];
    for response in &refused {
        assert_eq!(
            response.assert_error(StatusCode::UNAUTHORIZED),
            "Sign in: this API needs an access token"
        );
        let challenge = response.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    // GPU start/stop keep their own bearer token (ADMIN_TOKEN), which is
    // not a user's: the accounts layer leaves them to it.
    let start = app
        .post_with(
            "/api/v1/gpu/start",
            json!({}),
            &[("authorization", "Bearer admin")],
        )
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN, "{}", start.text());
    // Preflights need no token and allow the Authorization header.
    let preflight = app
        .send(
            Request::builder()
                .method(Method::OPTIONS)
                .uri(SUBMIT)
                .header(header::ORIGIN, FRONTEND)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization,content-type,idempotency-key",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    let allowed = preflight.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    app.sign_in(&key.sign(&project.claims("alice")));
    let job = app.submit(SUBMIT, json!({"image_url": IMAGE})).await;
    assert_eq!(app.job(&job).await["status"], "pending");

    let doc = app.get("/openapi.json").await.json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        (SUBMIT, "post"),
        ("/api/v1/jobs/{job_id}", "get"),
        ("/api/v1/jobs/{job_id}/events", "get"),
        ("/api/v1/jobs/{job_id}/cancel", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["401"].is_object(),
            "{method} {path} does not declare 401"
        );
    }
}

async fn bad_tokens_are_401_on_every_job_endpoint(builder: TestAppBuilder) {
    let key = SigningKey::rs256("rsa-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    let job = app.submit(SUBMIT, json!({"image_url": IMAGE})).await;
    let mut wrong_audience = project.claims("alice");
    wrong_audience["aud"] = json!("anon");
    for token in [
        key.sign(&project.expired_claims("alice")),
        key.sign(&wrong_audience),
        testkit::auth::unsigned(&project.claims("alice")),
    ] {
        app.sign_in(&token);
        let submitted = app.post(SUBMIT, json!({"image_url": IMAGE})).await;
        submitted.assert_error(StatusCode::UNAUTHORIZED);
        for (endpoint, response) in read_stream_cancel(&app, &job).await {
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{endpoint}");
        }
    }
    app.sign_out();
    assert_eq!(app.job(&job).await["status"], "pending");
}

async fn legacy_hs256_secret(builder: TestAppBuilder) {
    let secret = "super-secret-jwt-token-with-at-least-32-characters";
    let app = builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_JWT_SECRET", secret)
        .start()
        .await;
    let claims = |sub: &str| json!({"sub": sub, "aud": "authenticated", "exp": 4_000_000_000u64});
    app.sign_in(&hs256(secret, &claims("alice")));
    let job = app.submit(SUBMIT, json!({"image_url": IMAGE})).await;
    assert_eq!(stored_owner(&app, &job).await.as_deref(), Some("alice"));
    app.sign_in(&hs256(secret, &claims("bob")));
    let response = app.get(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(
        response.assert_error(StatusCode::NOT_FOUND),
        "Job not found"
    );
    app.sign_in(&hs256("not-the-secret", &claims("alice")));
    app.get(&format!("/api/v1/jobs/{job}"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

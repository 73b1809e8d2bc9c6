//! Optional user accounts (`AUTH_MODE`): Supabase access tokens checked
//! against a local JWKS server with keys the test generates, and sessions
//! scoped to their owner — on both backend sets.

mod support;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde_json::{Value, json};
use support::{FRONTEND, TestApp, TestAppBuilder, TestResponse, images};
use testkit::auth::{Project, SigningKey, hs256, tampered, unreachable_url, unsigned};

testkit::on_both_backends!(
    embedded: super::TestApp::embedded(),
    live: super::TestApp::live();

    valid_tokens_pass_and_bad_ones_are_401,
    unknown_key_id_refetches_the_jwks,
    jwks_refetch_is_rate_limited,
    unreachable_jwks_is_503,
    legacy_hs256_secret,
    required_mode_refuses_anonymous_api_calls,
    owned_sessions_are_404_to_everyone_else,
    anonymous_sessions_stay_reachable_by_id,
    accounts_off_ignores_tokens,
);

fn optional(builder: TestAppBuilder, project: &Project) -> TestAppBuilder {
    builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_URL", &project.url)
}

/// `POST /session` from the frontend's origin with `authorization` as is.
async fn create_session_with(app: &TestApp, authorization: &str) -> TestResponse {
    app.send(
        Request::post("/session")
            .header(header::ORIGIN, FRONTEND)
            .header(header::AUTHORIZATION, authorization)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// A 401 as the browser must see it: `WWW-Authenticate: Bearer…`, CORS
/// headers, and a `detail`.
fn assert_unauthorized(response: &TestResponse) -> String {
    let detail = response.assert_error(StatusCode::UNAUTHORIZED);
    let challenge = response.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        response
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "401 without CORS headers"
    );
    detail
}

async fn valid_tokens_pass_and_bad_ones_are_401(builder: TestAppBuilder) {
    let ec = SigningKey::es256("ec-1");
    let rsa = SigningKey::rs256("rsa-1");
    let project = Project::start(&[&ec, &rsa]).await;
    let app = optional(builder, &project).start().await;

    for key in [&ec, &rsa] {
        let token = key.sign(&project.claims("alice"));
        let created = create_session_with(&app, &format!("Bearer {token}")).await;
        assert_eq!(
            created.status,
            StatusCode::OK,
            "{}: {}",
            key.kid,
            created.text()
        );
    }
    // Anonymous calls work as before in optional mode.
    assert_eq!(app.new_session().await.len(), 36);

    let valid = ec.sign(&project.claims("alice"));
    let mut wrong_audience = project.claims("alice");
    wrong_audience["aud"] = json!("anon");
    let mut wrong_issuer = project.claims("alice");
    wrong_issuer["iss"] = json!("https://other.supabase.co/auth/v1");
    let mut no_subject = project.claims("alice");
    no_subject.as_object_mut().unwrap().remove("sub");
    let mut not_yet = project.claims("alice");
    not_yet["nbf"] = json!(not_yet["exp"].as_i64().unwrap() - 60);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            ec.sign(&project.expired_claims("alice")),
            "Access token expired",
        ),
        (
            "wrong aud",
            ec.sign(&wrong_audience),
            "Access token is for another audience",
        ),
        (
            "wrong iss",
            ec.sign(&wrong_issuer),
            "Access token is from another issuer",
        ),
        ("no sub", ec.sign(&no_subject), "Invalid access token"),
        ("nbf ahead", ec.sign(&not_yet), "Access token not valid yet"),
        (
            "tampered signature",
            tampered(&valid, &project.claims("mallory")),
            "Invalid access token",
        ),
        (
            "alg none",
            unsigned(&project.claims("alice")),
            "Invalid access token",
        ),
        (
            // No secret configured: HS256 is not accepted at all (and never
            // with a JWKS key as the secret).
            "hs256 without a secret",
            hs256("guess", &project.claims("alice")),
            "Access token algorithm not accepted",
        ),
        ("not a JWT", "abc.def".to_owned(), "Invalid access token"),
    ];
    for (case, token, expected) in cases {
        let response = create_session_with(&app, &format!("Bearer {token}")).await;
        assert_eq!(assert_unauthorized(&response), expected, "{case}");
    }
    let basic = create_session_with(&app, "Basic dXNlcjpwYXNz").await;
    assert_unauthorized(&basic);
    // A bad token is refused on reads too, not only on writes.
    app.sign_in(&ec.sign(&project.expired_claims("alice")));
    let listed = app
        .get("/images?session_id=11111111-1111-4111-8111-111111111111")
        .await;
    assert_eq!(listed.status, StatusCode::UNAUTHORIZED);
}

async fn unknown_key_id_refetches_the_jwks(builder: TestAppBuilder) {
    let first = SigningKey::es256("key-1");
    let project = Project::start(&[&first]).await;
    let app = optional(builder, &project)
        .env("AUTH_JWKS_REFRESH_SECONDS", "0")
        .start()
        .await;
    assert_eq!(project.fetches(), 0, "fetched on first use only");
    app.sign_in(&first.sign(&project.claims("alice")));
    app.new_session().await;
    app.new_session().await;
    assert_eq!(project.fetches(), 1, "keys are cached");

    // The project rotates: a token signed by the new key makes one refetch.
    let second = SigningKey::es256("key-2");
    project.publish(&second);
    app.sign_in(&second.sign(&project.claims("alice")));
    app.new_session().await;
    assert_eq!(project.fetches(), 2);
    app.new_session().await;
    assert_eq!(project.fetches(), 2);

    // A key id the project does not publish: refetched, still refused.
    let response = create_session_with(
        &app,
        &format!(
            "Bearer {}",
            first.sign_as("key-9", &project.claims("alice"))
        ),
    )
    .await;
    assert_eq!(
        assert_unauthorized(&response),
        "Access token signed by an unknown key"
    );
    assert_eq!(project.fetches(), 3);
}

async fn jwks_refetch_is_rate_limited(builder: TestAppBuilder) {
    let first = SigningKey::es256("key-1");
    let project = Project::start(&[&first]).await;
    // The default interval: one fetch a minute at most.
    let app = optional(builder, &project).start().await;
    app.sign_in(&first.sign(&project.claims("alice")));
    app.new_session().await;
    assert_eq!(project.fetches(), 1);

    let second = SigningKey::es256("key-2");
    project.publish(&second);
    for kid in ["key-2", "forged-1", "forged-2"] {
        let token = second.sign_as(kid, &project.claims("alice"));
        let response = create_session_with(&app, &format!("Bearer {token}")).await;
        assert_eq!(
            assert_unauthorized(&response),
            "Access token signed by an unknown key",
            "{kid}"
        );
    }
    assert_eq!(project.fetches(), 1, "no refetch within the interval");
    // Known keys keep working meanwhile.
    app.new_session().await;
    assert_eq!(project.fetches(), 1);
}

async fn unreachable_jwks_is_503(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let url = unreachable_url().await;
    let app = builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_URL", &url)
        .start()
        .await;
    let claims = json!({
        "sub": "alice", "aud": "authenticated", "iss": format!("{url}/auth/v1"),
        "exp": 4_000_000_000u64,
    });
    let response = create_session_with(&app, &format!("Bearer {}", key.sign(&claims))).await;
    let detail = response.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("auth keys"), "{detail}");
    assert!(response.headers.contains_key(header::RETRY_AFTER));
    // Anonymous callers do not need the keys.
    app.new_session().await;
}

async fn legacy_hs256_secret(builder: TestAppBuilder) {
    let secret = "super-secret-jwt-token-with-at-least-32-characters";
    let app = builder
        .env("AUTH_MODE", "optional")
        .env("SUPABASE_JWT_SECRET", secret)
        .start()
        .await;
    let claims = json!({"sub": "alice", "aud": "authenticated", "exp": 4_000_000_000u64});
    app.sign_in(&hs256(secret, &claims));
    let session = app.new_session().await;
    assert_eq!(list(&app, &session).await.status, StatusCode::OK);

    app.sign_in(&hs256("another-secret", &claims));
    assert_unauthorized(
        &app.send(
            Request::post("/session")
                .header(header::ORIGIN, FRONTEND)
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    );
    // Without a JWKS, asymmetric tokens are not accepted.
    app.sign_in(&SigningKey::es256("k").sign(&claims));
    assert_eq!(list(&app, &session).await.status, StatusCode::UNAUTHORIZED);
    // The owner is who the secret's token says.
    app.sign_in(&hs256(
        secret,
        &json!({"sub": "bob", "aud": "authenticated", "exp": 4_000_000_000u64}),
    ));
    assert_eq!(list(&app, &session).await.status, StatusCode::NOT_FOUND);
}

async fn required_mode_refuses_anonymous_api_calls(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = builder
        .env("AUTH_MODE", "required")
        .env("SUPABASE_URL", &project.url)
        .start()
        .await;
    for path in ["/", "/health", "/ready", "/openapi.json"] {
        let response = app.get(path).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
    }
    // The object route is public, as the CDN is: a missing object is 404,
    // not 401.
    assert_eq!(
        app.get("/images/11111111-1111-4111-8111-111111111111/x.png")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let session_id = "11111111-1111-4111-8111-111111111111";
    let anonymous = [
        app.send(
            Request::post("/session")
                .header(header::ORIGIN, FRONTEND)
                .body(Body::empty())
                .unwrap(),
        )
        .await,
        app.send(
            Request::get(format!("/images?session_id={session_id}"))
                .header(header::ORIGIN, FRONTEND)
                .body(Body::empty())
                .unwrap(),
        )
        .await,
        app.post(
            "/add-image",
            json!({"session_id": session_id, "s3_key": "comfyui-results/x.png"}),
        )
        .await,
        app.post(
            "/update-position",
            json!({"session_id": session_id, "s3_key": "comfyui-results/x.png", "x": 1, "y": 2}),
        )
        .await,
        app.delete(
            "/delete-image",
            json!({"session_id": session_id, "s3_key": "comfyui-results/x.png"}),
        )
        .await,
        app.upload(session_id, "a.png", "image/png", &images::png(2, 2))
            .await,
    ];
    for response in &anonymous {
        assert_eq!(
            assert_unauthorized(response),
            "Sign in: this API needs an access token"
        );
    }
    // Preflights never need a token, and allow the Authorization header.
    let preflight = app
        .send(
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/session")
                .header(header::ORIGIN, FRONTEND)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization,content-type",
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
    let session = app.new_session().await;
    let uploaded = app
        .upload(&session, "a.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.text());
    // A session from before accounts (no owner) stays reachable by id for
    // any signed-in user.
    let legacy = "22222222-2222-4222-8222-222222222222";
    app.sql(&format!("INSERT INTO sessions (id) VALUES ('{legacy}')"))
        .await;
    assert_eq!(list(&app, legacy).await.status, StatusCode::OK);
    let uploaded = app
        .upload(legacy, "b.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.text());

    // The OpenAPI document declares the bearer scheme and the 401s.
    let doc = app.get("/openapi.json").await.json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/session", "post"),
        ("/upload", "post"),
        ("/images", "get"),
        ("/add-image", "post"),
        ("/update-position", "post"),
        ("/delete-image", "delete"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["401"].is_object(),
            "{method} {path} does not declare 401"
        );
    }
}

async fn list(app: &TestApp, session: &str) -> TestResponse {
    app.get(&format!("/images?session_id={session}")).await
}

/// Every session endpoint, as the current caller: (name, status, body).
async fn every_endpoint(
    app: &TestApp,
    session: &str,
    uploaded_key: &str,
) -> Vec<(&'static str, StatusCode, Value)> {
    let result_key = "comfyui-results/owned.png";
    let mut out = vec![];
    let r = list(app, session).await;
    out.push(("list", r.status, r.json()));
    let r = app
        .upload(session, "c.png", "image/png", &images::png(3, 3))
        .await;
    out.push(("upload", r.status, r.json()));
    let r = app
        .post(
            "/add-image",
            json!({"session_id": session, "s3_key": result_key}),
        )
        .await;
    out.push(("add-image", r.status, r.json()));
    let r = app
        .post(
            "/update-position",
            json!({"session_id": session, "s3_key": uploaded_key, "x": 5, "y": 6}),
        )
        .await;
    out.push(("update-position", r.status, r.json()));
    let r = app
        .delete(
            "/delete-image",
            json!({"session_id": session, "s3_key": uploaded_key}),
        )
        .await;
    out.push(("delete-image", r.status, r.json()));
    out
}

async fn owned_sessions_are_404_to_everyone_else(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    let alice = key.sign(&project.claims("alice"));
    let bob = key.sign(&project.claims("bob"));
    app.put_object("comfyui-results/owned.png", &images::png(4, 4))
        .await;

    app.sign_in(&alice);
    let session = app.new_session().await;
    let uploaded = app
        .upload(&session, "a.png", "image/png", &images::png(2, 2))
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.text());
    let uploaded_key = uploaded.json()["key"].as_str().unwrap().to_owned();

    // Another user, and an anonymous caller, get what an unknown session
    // gets — and change nothing.
    let unknown = "33333333-3333-4333-8333-333333333333";
    for who in [Some(&bob), None] {
        match who {
            Some(token) => app.sign_in(token),
            None => app.sign_out(),
        }
        for (endpoint, status, body) in every_endpoint(&app, &session, &uploaded_key).await {
            assert_eq!(status, StatusCode::NOT_FOUND, "{endpoint}: {body}");
            let detail = body["detail"].as_str().unwrap().to_owned();
            let expected = match endpoint {
                "list" | "upload" | "add-image" => "Session not found",
                _ => "Image not found in this session",
            };
            assert_eq!(detail, expected, "{endpoint}");
        }
        // The same texts as for a session that does not exist.
        let r = app
            .upload(unknown, "c.png", "image/png", &images::png(3, 3))
            .await;
        assert_eq!(r.json()["detail"], "Session not found");
        let r = app
            .post(
                "/update-position",
                json!({"session_id": unknown, "s3_key": uploaded_key, "x": 5, "y": 6}),
            )
            .await;
        assert_eq!(r.json()["detail"], "Image not found in this session");
    }

    // The owner still has exactly their one image, where they put it, and
    // can use every endpoint.
    app.sign_in(&alice);
    let items = list(&app, &session).await.json()["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["key"], uploaded_key.as_str());
    assert_eq!(items[0]["x"], json!(0.0));
    for (endpoint, status, body) in every_endpoint(&app, &session, &uploaded_key).await {
        assert_eq!(status, StatusCode::OK, "{endpoint}: {body}");
    }
}

async fn anonymous_sessions_stay_reachable_by_id(builder: TestAppBuilder) {
    let key = SigningKey::es256("key-1");
    let project = Project::start(&[&key]).await;
    let app = optional(builder, &project).start().await;
    let session = app.new_session().await;
    let uploaded = app
        .upload(&session, "a.png", "image/png", &images::png(2, 2))
        .await;
    let uploaded_key = uploaded.json()["key"].as_str().unwrap().to_owned();
    app.put_object("comfyui-results/owned.png", &images::png(4, 4))
        .await;
    // A signed-in user holding the id may use it, as anyone could before.
    app.sign_in(&key.sign(&project.claims("bob")));
    for (endpoint, status, body) in every_endpoint(&app, &session, &uploaded_key).await {
        assert_eq!(status, StatusCode::OK, "{endpoint}: {body}");
    }
}

async fn accounts_off_ignores_tokens(builder: TestAppBuilder) {
    // Today's behaviour: no token is looked at, the session id is the
    // capability.
    let app = builder.start().await;
    let created = create_session_with(&app, "Bearer not-even-a-jwt").await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let session = created.json()["session_id"].as_str().unwrap().to_owned();
    app.sign_in("another-garbage-token");
    assert_eq!(list(&app, &session).await.status, StatusCode::OK);
}

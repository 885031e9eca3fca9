//! The session per request as the demo configures the library's
//! (`orm_core::axum`, whose own tests cover commit, rollback, panics,
//! timeouts, hang-ups and pool exhaustion in general): what a client of
//! the API sees when a handler panics, times out or fails to commit
//! (RealWorld error bodies, rolled back), that no database detail reaches
//! it, and that bodies are validated before a connection is taken.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use demo_app::entities::User;
use demo_app::error::ApiResult;
use demo_app::state::AppState;
use orm_core::axum::DbSession;
use serde_json::json;
use support::{request, send, TestApp};

fn ghost(name: &str) -> User {
    User {
        id: 0,
        username: name.to_owned(),
        email: format!("{name}@example.com"),
        password_hash: "x".to_owned(),
        bio: None,
        image: None,
    }
}

/// Writes a user (flushed: the INSERT has run inside the transaction), then
/// ends as the route's name says. Test-only routes, mounted under the real
/// middleware.
fn test_routes() -> Router<AppState> {
    async fn panics(mut db: DbSession) -> ApiResult<Json<serde_json::Value>> {
        db.add(ghost("panic"));
        db.flush().await?;
        panic!("a bug in a handler");
    }
    async fn slow(mut db: DbSession) -> ApiResult<Json<serde_json::Value>> {
        db.add(ghost("slow"));
        db.flush().await?;
        db.execute("SELECT pg_sleep(30)", &[]).await?;
        Ok(Json(json!({ "done": true })))
    }
    async fn bad_sql(mut db: DbSession) -> ApiResult<Json<serde_json::Value>> {
        db.execute("UPDATE no_such_table SET secret = 'swordfish'", &[]).await?;
        Ok(Json(json!({ "done": true })))
    }
    async fn conflict_at_commit(mut db: DbSession) -> ApiResult<Json<serde_json::Value>> {
        // Not flushed: the unique violation surfaces in the layer's commit.
        db.add(ghost("twin"));
        db.add(ghost("twin"));
        Ok(Json(json!({ "done": true })))
    }
    Router::new()
        .route("/test/panic", post(panics))
        .route("/test/slow", post(slow))
        .route("/test/conflict-at-commit", post(conflict_at_commit))
        .route("/test/bad-sql", post(bad_sql))
}

async fn post_to(app: &TestApp, path: &str) -> support::Answer {
    send(app.router(test_routes()), request(Method::POST, path, None, None)).await
}

#[tokio::test]
async fn a_panic_is_a_realworld_500_and_rolls_back() {
    let app = TestApp::new().await;
    let answer = post_to(&app, "/test/panic").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.json, json!({ "errors": { "server": ["internal error"] } }));
    // The 500 went through the session layer, which rolled back.
    assert_eq!(answer.stats.map(|stats| stats.statements), Some(1));
    assert_eq!(app.count("users").await, 0);
    app.assert_settles().await;
}

#[tokio::test]
async fn a_timeout_is_a_realworld_503_and_rolls_back() {
    let app = TestApp::with(1, Duration::from_millis(500)).await;
    let answer = post_to(&app, "/test/slow").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json, json!({ "errors": { "server": ["is temporarily unavailable; try again"] } }));
    app.assert_settles().await;
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn a_failed_commit_replaces_the_response_with_a_generic_conflict() {
    let app = TestApp::new().await;
    let answer = post_to(&app, "/test/conflict-at-commit").await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.json, json!({ "errors": { "request": ["conflicts with a concurrent change; try again"] } }));
    assert_eq!(app.count("users").await, 0);
    app.assert_settles().await;
}

#[tokio::test]
async fn database_details_never_reach_the_client() {
    let app = TestApp::configured(
        |config| {
            config.max_connections = 1;
            config.wait_timeout = Duration::from_millis(200);
        },
        Duration::from_secs(30),
    )
    .await;
    app.register("alice").await;
    // A taken user name is reported by field, without the constraint or the value.
    let body = json!({ "user": { "username": "alice", "email": "other@example.com", "password": "password123" } });
    let answer = app.call(Method::POST, "/api/users", None, Some(body)).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.json, json!({ "errors": { "username": ["has already been taken"] } }));
    assert_eq!(app.count("users").await, 1);

    // An SQL error: a generic 500.
    let answer = post_to(&app, "/test/bad-sql").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.json, json!({ "errors": { "server": ["internal error"] } }));

    // No connection to be had: a generic 503.
    let held = app.db.pool().get().await.unwrap();
    let answer = app.call(Method::GET, "/api/tags", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json, json!({ "errors": { "server": ["is temporarily unavailable; try again"] } }));
    drop(held);
    app.assert_settles().await;
}

/// A request to a route that takes a JSON body, with a body that parses
/// but fails validation, and the errors it must be answered with.
struct InvalidBody {
    method: Method,
    uri: String,
    authenticated: bool,
    body: serde_json::Value,
    blank_field: &'static str,
}

/// Every route of `routes/` that takes a JSON body (the handlers with a
/// `Valid<_>` argument).
fn invalid_bodies(slug: &str) -> Vec<InvalidBody> {
    let case = |method: Method, uri: String, authenticated: bool, body, blank_field| InvalidBody {
        method,
        uri,
        authenticated,
        body,
        blank_field,
    };
    vec![
        case(
            Method::POST,
            "/api/users".to_owned(),
            false,
            json!({ "user": { "username": "", "email": "bob@example.com", "password": "password123" } }),
            "username",
        ),
        case(
            Method::POST,
            "/api/users/login".to_owned(),
            false,
            json!({ "user": { "email": "alice@example.com", "password": " " } }),
            "password",
        ),
        case(Method::PUT, "/api/user".to_owned(), true, json!({ "user": { "email": null } }), "email"),
        case(
            Method::POST,
            "/api/articles".to_owned(),
            true,
            json!({ "article": { "title": "", "description": "d", "body": "b" } }),
            "title",
        ),
        case(Method::PUT, format!("/api/articles/{slug}"), true, json!({ "article": { "body": "" } }), "body"),
        case(
            Method::POST,
            format!("/api/articles/{slug}/comments"),
            true,
            json!({ "comment": { "body": "" } }),
            "body",
        ),
    ]
}

#[tokio::test]
async fn bodies_are_validated_before_a_connection_is_taken() {
    let wait = Duration::from_secs(5);
    let app = TestApp::configured(
        |config| {
            config.max_connections = 1;
            config.wait_timeout = wait;
        },
        Duration::from_secs(30),
    )
    .await;
    let token = app.register("alice").await;
    let article = json!({ "article": { "title": "Kept", "description": "d", "body": "b" } });
    let created = app.call(Method::POST, "/api/articles", Some(&token), Some(article)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let slug = created.json["article"]["slug"].as_str().unwrap().to_owned();

    // Every connection of the pool is busy elsewhere: a handler that took
    // one would answer 503 after `wait`.
    let held = app.db.pool().get().await.unwrap();
    for InvalidBody { method, uri, authenticated, body, blank_field } in invalid_bodies(&slug) {
        let token = authenticated.then_some(token.as_str());
        let started = std::time::Instant::now();
        let answer = app.call(method.clone(), &uri, token, Some(body)).await;
        let errors = json!({ "errors": { blank_field: ["can't be blank"] } });
        assert_eq!((answer.status, &answer.json), (StatusCode::UNPROCESSABLE_ENTITY, &errors), "{method} {uri}");
        assert_eq!(answer.stats.map_or(0, |stats| stats.statements), 0, "{method} {uri}");

        let mut broken = request(method.clone(), &uri, token, None);
        *broken.body_mut() = axum::body::Body::from("{not json");
        let answer = send(app.router(Router::new()), broken).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {uri}: {answer:?}");
        assert!(answer.json["errors"]["body"][0].is_string(), "{method} {uri}: {answer:?}");
        assert!(started.elapsed() < wait / 2, "{method} {uri} waited {:?}", started.elapsed());
    }
    // Authentication comes first, and needs no database: no session at all.
    let answer = app.call(Method::GET, "/api/user", None, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.stats, None);
    drop(held);
    // Nothing was written by the refused requests.
    assert_eq!((app.count("users").await, app.count("articles").await, app.count("comments").await), (1, 1, 0));
}

//! The demo app on a fresh database, driven in-process, for the integration tests.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use demo_app::app;
use demo_app::routes;
use demo_app::state::AppState;
use orm_core::axum::{SessionOutcome, COMMIT_TOKEN_HEADER};
use orm_core::{Database, DatabaseConfig, ReplicaConfig, ServedBy, SessionStats};
use orm_tests::{ReplicaPair, TestDb};
use serde_json::Value;
use tower::ServiceExt;

/// A migrated test database, the pool the app uses, and the app's state.
pub struct TestApp {
    pub test_db: TestDb,
    pub db: Database,
    pub state: AppState,
}

/// What a request returned.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
    /// What the request's session sent, if it opened one.
    pub stats: Option<SessionStats>,
    /// The `x-request-id` response header.
    pub request_id: Option<String>,
    /// The server the request's session used, if it opened one.
    pub served_by: Option<ServedBy>,
    /// The commit token the response handed out, if any.
    pub commit_token: Option<String>,
}

impl TestApp {
    /// A fresh, migrated database; the app's pool has `max_connections`
    /// connections and requests time out after `timeout`.
    pub async fn with(max_connections: usize, timeout: Duration) -> Self {
        Self::configured(|config| config.max_connections = max_connections, timeout).await
    }

    /// Like [`with`](Self::with), with any pool settings.
    pub async fn configured(adjust: impl FnOnce(&mut DatabaseConfig), timeout: Duration) -> Self {
        let test_db = TestDb::new().await;
        let mut config = DatabaseConfig::from_url(test_db.url()).expect("test database URL");
        adjust(&mut config);
        let db = Database::with_config(config).expect("pool");
        demo_app::migrations::run(&db).await.expect("migrations");
        let state = AppState::new(db.clone(), b"test secret", timeout);
        TestApp { test_db, db, state }
    }

    /// A fresh, migrated database on the primary of `pair`, present on
    /// its replica too, which the app's pool reads from.
    pub async fn on_replicas(pair: &ReplicaPair) -> Self {
        let test_db = pair.test_db().await;
        let mut config = DatabaseConfig::from_url(test_db.url()).expect("test database URL");
        let primary = Database::with_config(config.clone()).expect("pool");
        demo_app::migrations::run(&primary).await.expect("migrations");
        pair.wait_for_replay().await;
        config.replicas.push(ReplicaConfig::from_url(&pair.replica_url_of(&test_db)).expect("replica URL"));
        config.max_replica_lag = Duration::from_secs(60);
        let db = Database::with_config(config).expect("pool");
        let state = AppState::new(db.clone(), b"test secret", Duration::from_secs(30));
        TestApp { test_db, db, state }
    }

    pub async fn new() -> Self {
        Self::with(4, Duration::from_secs(30)).await
    }

    /// The API, plus `extra` routes under the same middleware.
    pub fn router(&self, extra: Router<AppState>) -> Router {
        app::with_middleware(routes::api().merge(extra), self.state.clone())
    }

    /// Sends one request to the API and reads the answer.
    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        send(self.router(Router::new()), request(method, uri, token, body)).await
    }

    /// Registers a user and returns its token.
    pub async fn register(&self, name: &str) -> String {
        let body = serde_json::json!({
            "user": { "username": name, "email": format!("{name}@example.com"), "password": "password123" }
        });
        let answer = self.call(Method::POST, "/api/users", None, Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        answer.json["user"]["token"].as_str().expect("a token").to_owned()
    }

    /// Rows in `table`, through a connection of its own.
    pub async fn count(&self, table: &str) -> i64 {
        let client = self.test_db.client().await;
        client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
    }

    /// Waits (at most 5 s) until no connection of the app's pool is checked
    /// out and no other backend of the database is in a transaction or
    /// running a statement; panics with what it saw otherwise.
    pub async fn assert_settles(&self) {
        let client = self.test_db.client().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.db.pool().status();
            let busy = orm_tests::busy_backends(&client).await;
            let pool_idle = status.available == status.size && status.waiting == 0;
            if pool_idle && busy.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "not settled: pool {status:?}, backends {busy:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A request with an optional token and JSON body.
pub fn request(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Token {token}"));
    }
    let body = match body {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).expect("a valid request")
}

/// Runs `request` through `router` and reads the answer.
pub async fn send(router: Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("the router is infallible");
    let outcome = response.extensions().get::<SessionOutcome>();
    let (db_stats, served_by) = (outcome.map(|outcome| outcome.stats), outcome.and_then(|outcome| outcome.served_by));
    let commit_token =
        response.headers().get(COMMIT_TOKEN_HEADER).map(|token| token.to_str().expect("an ASCII token").to_owned());
    let request_id =
        response.headers().get("x-request-id").map(|id| id.to_str().expect("an ASCII request id").to_owned());
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("the body");
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    Answer { status, json, stats: db_stats, request_id, served_by, commit_token }
}

/// Whether, within `within`, exactly `expected` backends of `test_db` come
/// to wait for a lock: how a test knows its requests are in flight, blocked
/// on a lock it holds.
pub async fn lock_waiters_reach(test_db: &TestDb, expected: i64, within: Duration) -> bool {
    let client = test_db.client().await;
    let deadline = Instant::now() + within;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting == expected {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

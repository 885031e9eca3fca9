//! `orm_core::axum`, the session per request, on a small axum router and
//! the real PostgreSQL: commit on success; rollback on an error response, a
//! panic, a timeout and a client that hangs up (a commit it interrupts
//! completes); a clear 503 when the pool is exhausted; the body parsed
//! before a connection is taken; and the connection back in the pool,
//! outside any transaction, every time.

mod support;

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orm_core::axum::{AfterCommit, DbSession, RequestSession, SessionLayer, SessionOutcome};
use orm_core::{Database, DatabaseConfig};
use orm_tests::TestDb;
use support::{checkout_state, count_rows, customer, Customer};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// How long any one test may run: a hang is a failure, not a stuck run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test finished in time")
}

/// The handlers: each writes a customer (flushed, so its INSERT has run
/// in the request's transaction), then ends as its name says.
async fn ok(mut db: DbSession) -> orm_core::Result<&'static str> {
    db.add(customer("ok"));
    db.flush().await?;
    Ok("done")
}

async fn fail(mut db: DbSession) -> orm_core::Result<StatusCode> {
    db.add(customer("fail"));
    db.flush().await?;
    Ok(StatusCode::FORBIDDEN)
}

async fn redirect(mut db: DbSession) -> orm_core::Result<StatusCode> {
    db.add(customer("redirect"));
    db.flush().await?;
    Ok(StatusCode::SEE_OTHER)
}

async fn panics(mut db: DbSession) -> orm_core::Result<&'static str> {
    db.add(customer("panic"));
    db.flush().await?;
    panic!("a bug in a handler");
}

async fn slow(mut db: DbSession) -> orm_core::Result<&'static str> {
    db.add(customer("slow"));
    db.flush().await?;
    db.execute("SELECT pg_sleep(30)", &[]).await?;
    Ok("done")
}

async fn conflict_at_commit(mut db: DbSession) -> &'static str {
    // Not flushed: the unique violation surfaces in the layer's commit.
    db.add(customer("twin"));
    db.add(customer("twin"));
    "done"
}

async fn missing(mut db: DbSession) -> orm_core::Result<String> {
    Ok(db.get_one::<Customer>(42).await?.read().name.clone())
}

async fn twice(_first: DbSession, _second: DbSession) -> &'static str {
    "unreachable"
}

#[derive(serde::Deserialize)]
struct NewCustomer {
    name: String,
}

async fn create(mut db: DbSession, Json(body): Json<NewCustomer>) -> orm_core::Result<StatusCode> {
    db.add(customer(&body.name));
    Ok(StatusCode::CREATED)
}

/// Answers with the new customer's generated key, written after the
/// commit, which sends the insert: no flush before it.
async fn create_after_commit(mut db: DbSession, name: String) -> impl IntoResponse {
    let added = db.add(customer(&name));
    AfterCommit::new(StatusCode::CREATED, HeaderValue::from_static("text/plain"), move || added.read().id.to_string())
}

fn routes() -> Router {
    Router::new()
        .route("/ok", post(ok))
        .route("/fail", post(fail))
        .route("/redirect", post(redirect))
        .route("/panic", post(panics))
        .route("/slow", post(slow))
        .route("/conflict-at-commit", post(conflict_at_commit))
        .route("/missing", get(missing))
        .route("/twice", get(twice))
        .route("/create", post(create))
        .route("/create-after-commit", post(create_after_commit))
}

/// `routes` under the layers as the module documentation says to stack
/// them: the timeout and panic layers inside the session layer.
fn app(db: &Database, timeout: Duration) -> Router {
    app_with(SessionLayer::new(db.clone()), timeout)
}

fn app_with(layer: SessionLayer, timeout: Duration) -> Router {
    routes()
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(CatchPanicLayer::new())
        .layer(layer)
}

/// A fresh database with the shared schema, and a pool of `connections`
/// that waits at most `wait` for a free one.
async fn setup(connections: usize, wait: Duration) -> (TestDb, Database) {
    support::setup_with(|config: &mut DatabaseConfig| {
        config.max_connections = connections;
        config.wait_timeout = wait;
    })
    .await
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: String,
    outcome: Option<SessionOutcome>,
}

async fn send(router: Router, request: Request) -> Answer {
    let response = router.oneshot(request).await.expect("the router is infallible");
    let outcome = response.extensions().get::<SessionOutcome>().copied();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("the body");
    Answer { status, body: String::from_utf8_lossy(&bytes).into_owned(), outcome }
}

fn request(method: Method, path: &str) -> Request {
    Request::builder().method(method).uri(path).body(Body::empty()).expect("a valid request")
}

async fn call(router: Router, method: Method, path: &str) -> Answer {
    send(router, request(method, path)).await
}

/// Waits (at most 5 s) until every connection of the pool is back and no
/// backend of the database is in a transaction or running a statement, and
/// checks that a connection from the pool is outside any transaction.
async fn assert_settles(test_db: &TestDb, db: &Database) {
    let client = test_db.client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = db.pool().status();
        let busy = orm_tests::busy_backends(&client).await;
        if status.available == status.size && status.waiting == 0 && busy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not settled: pool {status:?}, backends {busy:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(checkout_state(db).await.0, "a connection from the pool is inside a transaction");
}

/// Waits (at most 5 s) until the database runs `pg_sleep`: the handler is
/// inside its slow statement.
async fn wait_for_sleep(test_db: &TestDb) {
    let client = test_db.client().await;
    for _ in 0..250 {
        let sleeping: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if sleeping > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the handler never reached its slow statement");
}

#[tokio::test]
async fn a_successful_handler_is_committed() {
    within(async {
        let (test_db, db) = setup(2, Duration::from_secs(5)).await;
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/ok").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "done"));
        let outcome = answer.outcome.expect("the session's outcome");
        assert!(outcome.committed);
        assert_eq!(outcome.stats.statements, 1); // the INSERT; BEGIN and COMMIT travel with it
        assert_eq!(count_rows(&test_db, "customer").await, 1);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn an_error_response_rolls_back() {
    within(async {
        let (test_db, db) = setup(2, Duration::from_secs(5)).await;
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/fail").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.outcome.map(|outcome| (outcome.committed, outcome.stats.statements)), Some((false, 1)));
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn the_commit_policy_is_overridable() {
    within(async {
        let (test_db, db) = setup(2, Duration::from_secs(5)).await;
        // By default a redirect commits...
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/redirect").await;
        assert_eq!((answer.status, answer.outcome.map(|o| o.committed)), (StatusCode::SEE_OTHER, Some(true)));
        assert_eq!(count_rows(&test_db, "customer").await, 1);

        // ...and with a policy of 2xx only, it rolls back.
        let only_2xx = SessionLayer::new(db.clone()).commit_when(|response: &Response| response.status().is_success());
        let app = app_with(only_2xx, Duration::from_secs(30));
        test_db.client().await.batch_execute("DELETE FROM customer").await.expect("delete");
        let answer = call(app.clone(), Method::POST, "/redirect").await;
        assert_eq!((answer.status, answer.outcome.map(|o| o.committed)), (StatusCode::SEE_OTHER, Some(false)));
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_eq!(call(app, Method::POST, "/ok").await.outcome.map(|o| o.committed), Some(true));
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn a_panic_is_a_500_and_rolls_back() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/panic").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        // The 500 went through the session layer, which rolled back.
        assert_eq!(answer.outcome.map(|outcome| (outcome.committed, outcome.stats.statements)), Some((false, 1)));
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_settles(&test_db, &db).await;
        // The pool's only connection serves the next request.
        assert_eq!(call(app(&db, Duration::from_secs(30)), Method::POST, "/ok").await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_timeout_rolls_back_and_cancels_the_statement() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let app = app(&db, Duration::from_millis(500));
        let started = Instant::now();
        let answer = call(app.clone(), Method::POST, "/slow").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.outcome.map(|outcome| outcome.committed), Some(false));
        // The 30 s pg_sleep was cancelled, and nothing is left in a transaction.
        assert_settles(&test_db, &db).await;
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_eq!(call(app, Method::POST, "/ok").await.status, StatusCode::OK);
        assert_eq!(count_rows(&test_db, "customer").await, 1);
    })
    .await;
}

#[tokio::test]
async fn the_timeout_bounds_the_handler_not_the_commit() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        // A deferred trigger runs at COMMIT: this one makes every COMMIT
        // that inserted a customer take a second, past the request timeout.
        test_db
            .client()
            .await
            .batch_execute(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
                 CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON customer
                     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
            )
            .await
            .expect("the trigger");
        let answer = call(app(&db, Duration::from_millis(300)), Method::POST, "/ok").await;
        // The handler was done in time, so its COMMIT ran to the end: the
        // client is told the truth, that the row was written.
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(count_rows(&test_db, "customer").await, 1);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn a_request_dropped_mid_statement_rolls_back_and_frees_the_connection() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let app = app(&db, Duration::from_secs(60));
        let call = tokio::spawn(call(app.clone(), Method::POST, "/slow"));
        wait_for_sleep(&test_db).await;
        // What the server does when the client goes away: drop the request's future.
        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
        assert_settles(&test_db, &db).await;
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_eq!(send(app, request(Method::POST, "/ok")).await.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_over_tcp_rolls_back() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("the address");
        let server = tokio::spawn(axum::serve(listener, app(&db, Duration::from_secs(60))).into_future());

        let mut client = tokio::net::TcpStream::connect(address).await.expect("connect");
        client.write_all(b"POST /slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").await.expect("send");
        wait_for_sleep(&test_db).await;
        drop(client);

        assert_settles(&test_db, &db).await;
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn an_exhausted_pool_is_a_quick_503() {
    within(async {
        let wait = Duration::from_millis(200);
        let (test_db, db) = setup(1, wait).await;
        let held = db.pool().get().await.expect("the only connection");
        let started = Instant::now();
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/ok").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        // A generic message: nothing about the pool or the server.
        assert_eq!(answer.body, "the database is temporarily unavailable; try again");
        assert!(started.elapsed() < wait * 10, "took {:?}", started.elapsed());
        drop(held);
        assert_settles(&test_db, &db).await;
        assert_eq!(count_rows(&test_db, "customer").await, 0);
    })
    .await;
}

#[tokio::test]
async fn the_body_is_parsed_before_a_connection_is_taken() {
    within(async {
        let wait = Duration::from_secs(5);
        let (test_db, db) = setup(1, wait).await;
        let held = db.pool().get().await.expect("the only connection");
        let started = Instant::now();
        let bad = Request::post("/create").header("content-type", "application/json").body(Body::from("{not json"));
        let answer = send(app(&db, Duration::from_secs(30)), bad.expect("a request")).await;
        assert!(answer.status.is_client_error(), "{}", answer.status);
        // The session was opened by the extractor, but never took a connection.
        assert_eq!(answer.outcome.map(|outcome| outcome.stats.statements), Some(0));
        assert!(started.elapsed() < wait / 2, "waited {:?} for a connection", started.elapsed());
        drop(held);

        let good =
            Request::post("/create").header("content-type", "application/json").body(Body::from(r#"{"name":"x"}"#));
        let answer = send(app(&db, Duration::from_secs(30)), good.expect("a request")).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(count_rows(&test_db, "customer").await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_failed_commit_replaces_the_response() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let answer = call(app(&db, Duration::from_secs(30)), Method::POST, "/conflict-at-commit").await;
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert_eq!(answer.body, "conflicts with a concurrent change; try again");
        assert_eq!(answer.outcome, None);
        assert_eq!(count_rows(&test_db, "customer").await, 0);

        // The application's own response instead.
        let layer = SessionLayer::new(db.clone())
            .on_commit_error(|error| (StatusCode::IM_A_TEAPOT, format!("{:?}", error.kind())).into_response());
        let answer = call(app_with(layer, Duration::from_secs(30)), Method::POST, "/conflict-at-commit").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::IM_A_TEAPOT, "UniqueViolation"));
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn errors_answer_with_their_status_and_no_details() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let answer = call(app(&db, Duration::from_secs(30)), Method::GET, "/missing").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::NOT_FOUND, "not found"));

        // Two DbSessions in one handler: refused, not a deadlock.
        let answer = call(app(&db, Duration::from_secs(30)), Method::GET, "/twice").await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal error"));

        // A route outside any SessionLayer.
        let answer = call(routes(), Method::POST, "/ok").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

/// A middleware inside the layer that writes to the request's transaction
/// after the handler, if the handler opened a session.
async fn audit(request: Request, next: Next) -> Response {
    let session = RequestSession::from_extensions(request.extensions());
    let response = next.run(request).await;
    if let Some(mut db) = session.and_then(|session| session.opened()) {
        db.add(customer("audited"));
    }
    response
}

#[tokio::test]
async fn a_middleware_inside_the_layer_shares_the_transaction() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let app = routes()
            .route("/no-session", get(|| async { "none" }))
            .layer(axum::middleware::from_fn(audit))
            .layer(SessionLayer::new(db.clone()));
        assert_eq!(call(app.clone(), Method::GET, "/no-session").await.outcome, None);
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_eq!(call(app.clone(), Method::POST, "/fail").await.status, StatusCode::FORBIDDEN);
        assert_eq!(count_rows(&test_db, "customer").await, 0); // rolled back with the handler's work
        let answer = call(app, Method::POST, "/ok").await;
        assert_eq!(answer.outcome.map(|outcome| outcome.stats.statements), Some(2));
        let names: Vec<String> = db
            .session()
            .query_rows("SELECT name FROM customer ORDER BY id", &[])
            .await
            .expect("the rows")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(names, ["ok", "audited"]);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn an_after_commit_body_shows_the_key_the_commit_generated_in_one_round_trip() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let router = app(&db, Duration::from_secs(30));
        for name in ["first", "second"] {
            let request = Request::post("/create-after-commit").body(Body::from(name)).expect("a valid request");
            let answer = send(router.clone(), request).await;
            assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
            let stored: i32 = test_db
                .client()
                .await
                .query_one("SELECT id FROM customer WHERE name = $1", &[&name])
                .await
                .expect("the committed row")
                .get(0);
            assert_eq!(answer.body, stored.to_string());
            let outcome = answer.outcome.expect("the session's outcome");
            assert!(outcome.committed);
            if name == "second" {
                // Prepared by the first request: BEGIN, INSERT and COMMIT in one round trip.
                assert_eq!((outcome.stats.statements, outcome.stats.round_trips), (1, 1));
            }
        }
        assert_settles(&test_db, &db).await;
    })
    .await;
}

#[tokio::test]
async fn an_after_commit_body_is_never_made_when_the_commit_fails() {
    within(async {
        let (test_db, db) = setup(1, Duration::from_secs(5)).await;
        let rendered = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&rendered);
        let twins = move |mut db: DbSession| {
            let seen = Arc::clone(&seen);
            async move {
                // A unique violation, left to the commit.
                db.add(customer("twin"));
                db.add(customer("twin"));
                AfterCommit::new(StatusCode::CREATED, HeaderValue::from_static("text/plain"), move || {
                    seen.store(true, Ordering::SeqCst);
                    "created"
                })
            }
        };
        let router = Router::new().route("/twins", post(twins)).layer(SessionLayer::new(db.clone()));
        let answer = call(router, Method::POST, "/twins").await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{answer:?}");
        assert!(!rendered.load(Ordering::SeqCst), "the body was made for a failed commit");
        assert_eq!(count_rows(&test_db, "customer").await, 0);
        assert_settles(&test_db, &db).await;
    })
    .await;
}

/// Session hooks for the commit's own steps: `before_flush` takes
/// `flush_delay` (the commit's flush is under way then), `after_commit`
/// records that it ran and fails if told to.
struct CommitSteps {
    flush_delay: Duration,
    after_commit_fails: bool,
    after_commit_ran: Arc<AtomicBool>,
}

#[orm_core::async_trait]
impl orm_core::SessionEvents for CommitSteps {
    async fn before_flush(&self, _: &mut orm_core::Session) -> orm_core::HookResult {
        tokio::time::sleep(self.flush_delay).await;
        Ok(())
    }

    async fn after_commit(&self, _: &orm_core::SessionStats) -> orm_core::HookResult {
        self.after_commit_ran.store(true, Ordering::Release);
        if self.after_commit_fails {
            return Err("the message broker is down".into());
        }
        Ok(())
    }
}

/// A pool whose sessions run [`CommitSteps`] with these settings, and the
/// flag its `after_commit` sets.
async fn setup_with_steps(flush_delay: Duration, after_commit_fails: bool) -> (TestDb, Database, Arc<AtomicBool>) {
    let ran = Arc::new(AtomicBool::new(false));
    let after_commit_ran = ran.clone();
    let (test_db, db) = support::setup_with(move |config: &mut DatabaseConfig| {
        config.events.on_session(CommitSteps { flush_delay, after_commit_fails, after_commit_ran });
    })
    .await;
    (test_db, db, ran)
}

/// An `after_commit` hook that fails leaves the transaction committed:
/// the handler's answer stands, with its commit token, instead of an
/// error that would have the client write it again.
#[tokio::test]
async fn a_failed_after_commit_hook_keeps_the_answer_of_a_committed_request() {
    within(async {
        let (test_db, db, ran) = setup_with_steps(Duration::ZERO, true).await;
        let post = Request::builder().method(Method::POST).uri("/create-after-commit").body(Body::from("ann"));
        let router = app_with(SessionLayer::new(db.clone()).route_reads(), Duration::from_secs(30));
        let response = router.oneshot(post.expect("a request")).await.expect("the router is infallible");
        assert!(ran.load(Ordering::Acquire));
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().contains_key(orm_core::axum::COMMIT_TOKEN_HEADER), "{response:?}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("the body");
        assert_eq!(&body[..], b"1");
        assert_eq!(count_rows(&test_db, "customer").await, 1);
    })
    .await;
}

/// A client that hangs up while the layer commits does not cut the commit
/// off: it completes, `after_commit` hooks included, in a task of its own.
#[tokio::test]
async fn a_client_that_hangs_up_during_the_commit_does_not_cut_it_off() {
    within(async {
        let (test_db, db, ran) = setup_with_steps(Duration::from_millis(300), false).await;
        let post = Request::builder().method(Method::POST).uri("/create-after-commit").body(Body::from("ann"));
        let router = app(&db, Duration::from_secs(30));
        let cut = tokio::time::timeout(Duration::from_millis(100), router.oneshot(post.expect("a request"))).await;
        assert!(cut.is_err(), "the request's future was dropped during the commit's flush");
        assert_settles(&test_db, &db).await;
        for _ in 0..250 {
            if ran.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ran.load(Ordering::Acquire), "after_commit ran");
        assert_eq!(count_rows(&test_db, "customer").await, 1);
    })
    .await;
}

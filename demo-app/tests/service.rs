//! The demo app as a service: CORS for a front end on another origin, and
//! `/ready` following the database down and back up while `/health` stays
//! a liveness check.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use demo_app::app;
use demo_app::config::CorsOrigins;
use demo_app::routes;
use demo_app::state::AppState;
use orm_core::axum::SessionOutcome;
use orm_core::tokio_postgres::config::Host;
use orm_core::{Database, DatabaseConfig};
use orm_tests::TestDb;
use serde_json::Value;
use support::TestApp;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long any one test may run: a hang is a failure, not a stuck run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

const FRONT_END: &str = "http://localhost:4100";

/// The API under the app's middleware, with `origins` allowed.
fn api_with_cors(app: &TestApp, origins: CorsOrigins) -> Router {
    let mut state = app.state.clone();
    state.cors_origins = origins;
    app::with_middleware(routes::api(), state)
}

async fn answer(router: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.oneshot(request).await.expect("the router is infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("the body");
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    (status, headers, json)
}

/// A browser's preflight for a `POST` with a token and a JSON body.
fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/articles")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .body(Body::empty())
        .expect("a valid request")
}

fn get_from(origin: &str, uri: &str) -> Request<Body> {
    Request::get(uri).header(header::ORIGIN, origin).body(Body::empty()).expect("a valid request")
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_ascii_lowercase()
}

#[tokio::test]
async fn a_front_end_on_an_allowed_origin_passes_the_preflight() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let app = TestApp::new().await;
        let api = api_with_cors(&app, CorsOrigins::List(vec![HeaderValue::from_static(FRONT_END)]));

        let (status, headers, _) = answer(api.clone(), preflight(FRONT_END)).await;
        assert!(status.is_success(), "{status}");
        assert_eq!(header_text(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN), FRONT_END);
        assert!(header_text(&headers, header::ACCESS_CONTROL_ALLOW_METHODS).contains("post"), "{headers:?}");
        let allowed = header_text(&headers, header::ACCESS_CONTROL_ALLOW_HEADERS);
        assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{headers:?}");
        assert!(allowed.contains("x-commit-token"), "a page may send its commit token back: {headers:?}");
        assert!(headers.contains_key(header::ACCESS_CONTROL_MAX_AGE), "{headers:?}");
        // No credentials: the token travels in a header the page sets.
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "{headers:?}");

        // The request itself may be read by the page, request id included.
        let (status, headers, json) = answer(api.clone(), get_from(FRONT_END, "/api/tags")).await;
        assert_eq!((status, json), (StatusCode::OK, serde_json::json!({ "tags": [] })));
        assert_eq!(header_text(&headers, header::ACCESS_CONTROL_ALLOW_ORIGIN), FRONT_END);
        let exposed = header_text(&headers, header::ACCESS_CONTROL_EXPOSE_HEADERS);
        assert!(exposed.contains("x-request-id") && exposed.contains("x-commit-token"), "{headers:?}");

        // Another origin gets no permission, so its browser blocks the page.
        let (_, headers, _) = answer(api, preflight("http://evil.example")).await;
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{headers:?}");
    })
    .await
    .expect("the test finished in time");
}

#[tokio::test]
async fn cors_is_off_by_default_and_star_allows_any_origin() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let app = TestApp::new().await;
        let response = api_with_cors(&app, CorsOrigins::Any).oneshot(preflight(FRONT_END)).await.expect("infallible");
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(header_text(response.headers(), header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");
        // A preflight is answered by the CORS layer, outside the session layer.
        assert!(response.extensions().get::<SessionOutcome>().is_none());

        let (_, headers, _) = answer(api_with_cors(&app, CorsOrigins::None), get_from(FRONT_END, "/api/tags")).await;
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{headers:?}");
    })
    .await
    .expect("the test finished in time");
}

/// A TCP forwarder to the test server that the test switches off (new
/// connections are closed at once, open ones are cut) and on again: the
/// database going away and coming back, as the app sees it.
struct Outage {
    address: SocketAddr,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Outage {
    async fn start(target: SocketAddr) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the forwarder");
        let address = listener.local_addr().expect("the forwarder's address");
        let (up, _) = watch::channel(true);
        let switch = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut down = switch.subscribe();
                if !*down.borrow_and_update() {
                    continue; // dropped: the connection is closed
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Outage { address, up, task }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The test server's TCP address, from `DATABASE_URL`.
fn server_address(test_db: &TestDb) -> SocketAddr {
    let config = test_db.config();
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) if host == "localhost" => "127.0.0.1".to_owned(),
        Some(Host::Tcp(host)) => host.clone(),
        other => panic!("the readiness test needs a TCP DATABASE_URL, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().expect("DATABASE_URL's host is an IP address or localhost")
}

async fn probe(router: &Router, path: &str) -> (StatusCode, Value) {
    let (status, _, json) = answer(router.clone(), Request::get(path).body(Body::empty()).expect("a request")).await;
    (status, json)
}

/// Polls `/ready` until it answers `expected` (at most 10 s).
async fn ready_becomes(router: &Router, expected: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, json) = probe(router, "/ready").await;
        if status == expected {
            return json;
        }
        assert!(Instant::now() < deadline, "/ready still answers {status} {json}, not {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ready_follows_the_database_down_and_back_up_and_health_stays_up() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let app = TestApp::new().await;
        let outage = Outage::start(server_address(&app.test_db)).await;
        // The app's pool reaches the (migrated) test database through the forwarder.
        let user = app.test_db.config().get_user().unwrap_or("postgres").to_owned();
        let url = format!("host=127.0.0.1 port={} user={user} dbname={}", outage.address.port(), app.test_db.name());
        let mut config = DatabaseConfig::from_url(&url).expect("the forwarder's URL");
        config.max_connections = 2;
        let db = Database::with_config(config).expect("pool");
        let router = app::router(AppState::new(db, b"test secret", Duration::from_secs(30)));

        outage.set_up(false);
        assert_eq!(
            ready_becomes(&router, StatusCode::SERVICE_UNAVAILABLE).await,
            serde_json::json!({ "status": "unavailable" })
        );
        let (status, json) = probe(&router, "/health").await;
        assert_eq!((status, &json["status"]), (StatusCode::OK, &serde_json::json!("ok")), "liveness: {json}");

        outage.set_up(true);
        assert_eq!(ready_becomes(&router, StatusCode::OK).await, serde_json::json!({ "status": "ready" }));
        let (status, _) = probe(&router, "/api/tags").await;
        assert_eq!(status, StatusCode::OK);

        // Down again, with connections in the pool now: they are cut.
        outage.set_up(false);
        ready_becomes(&router, StatusCode::SERVICE_UNAVAILABLE).await;
        let (status, _) = probe(&router, "/api/tags").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        outage.set_up(true);
        ready_becomes(&router, StatusCode::OK).await;
        let (status, _) = probe(&router, "/api/tags").await;
        assert_eq!(status, StatusCode::OK);
    })
    .await
    .expect("the test finished in time");
}

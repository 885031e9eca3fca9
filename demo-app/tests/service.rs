//! The demo app as a service: `/ready` following the database down and
//! back up while `/health` stays a liveness check.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use demo_app::app;
use demo_app::state::AppState;
use orm_core::tokio_postgres::config::Host;
use orm_core::{Database, DatabaseConfig};
use orm_tests::TestDb;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long any one test may run: a hang is a failure, not a stuck run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn answer(router: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.oneshot(request).await.expect("the router is infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("the body");
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    (status, headers, json)
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
        let app = support::TestApp::new().await;
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

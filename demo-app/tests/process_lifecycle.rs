//! The real `demo-app` binary as an operator runs it: a free port from
//! `PORT=0` announced in the start-up log, a warning for a missing
//! `JWT_SECRET`, a graceful shutdown on SIGTERM and Ctrl-C (SIGINT) that
//! lets a request in flight finish, commit included, then exits 0; and a
//! refusal to start, naming the cause, when the database cannot be reached,
//! a setting is invalid, or the migrated schema does not match the entities.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orm_core::tokio_postgres;
use orm_tests::{TestDb, TlsServer};
use serde_json::{json, Value};
use support::lock_waiters_reach;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How long start-up (connecting and migrating a fresh database) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any other step may take before the test gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `demo-app` process, killed when dropped (a failing test leaves
/// no process behind).
struct Server {
    child: Child,
    /// Everything the process wrote to stdout and stderr so far.
    output: Arc<Mutex<String>>,
    /// `http://127.0.0.1:PORT`, as the start-up log announced it.
    url: String,
}

impl Server {
    /// Starts the binary on a free port against `db` with `JWT_SECRET` set
    /// to `jwt_secret` (unset if `None`), and waits until it announces its
    /// URL.
    async fn start(db: &TestDb, jwt_secret: Option<&str>) -> Server {
        Server::start_at(db.url(), jwt_secret).await
    }

    /// Like [`start`](Self::start), with `DATABASE_URL` set to `database_url`.
    async fn start_at(database_url: &str, jwt_secret: Option<&str>) -> Server {
        let mut server = Server::spawn(demo_app(database_url, jwt_secret));
        let deadline = Instant::now() + START_TIMEOUT;
        server.url = loop {
            let log = server.output();
            if let Some(url) = served_url(&log) {
                break url.strip_suffix("/api").expect("the URL ends in /api").to_owned();
            }
            if let Some(status) = server.child.try_wait().expect("the child's status") {
                panic!("demo-app exited during start-up ({status}):\n{}", server.output());
            }
            assert!(Instant::now() < deadline, "no URL in the start-up log:\n{}", server.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        server
    }

    /// Starts `command`, collecting what it writes.
    fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("the demo-app binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("piped stdout"), &output);
        collect(child.stderr.take().expect("piped stderr"), &output);
        Server { child, output, url: String::new() }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Sends `signal` (`TERM`, `INT`) with the `kill` command.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(Instant::now() < deadline, "demo-app did not exit:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a request; the answer's status and JSON body.
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        tokio::time::timeout(STEP_TIMEOUT, http(&self.url, method, path, token, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path} got no answer:\n{}", self.output()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Fails only if the process has exited already, which is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on a free port against `database_url`, with `JWT_SECRET` set
/// to `jwt_secret` (unset if `None`) and the other settings at their
/// defaults, its output piped.
fn demo_app(database_url: &str, jwt_secret: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-app"));
    command
        .env("DATABASE_URL", database_url)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .env_remove("JWT_SECRET")
        .env_remove("CORS_ORIGINS")
        .env_remove("DATABASE_MAX_CONNECTIONS")
        .env_remove("REQUEST_TIMEOUT_SECS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(secret) = jwt_secret {
        command.env("JWT_SECRET", secret);
    }
    command
}

/// Appends what `stream` produces to `output`, on a thread of its own.
fn collect(stream: impl Read + Send + 'static, output: &Arc<Mutex<String>>) {
    let output = Arc::clone(output);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut output = output.lock().expect("output lock");
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The URL in the log line `serving at http://HOST:PORT/api`.
fn served_url(log: &str) -> Option<&str> {
    let start = log.find("serving at ")? + "serving at ".len();
    log[start..].split_whitespace().next()
}

/// One HTTP/1.0 exchange (the server closes the connection after the
/// answer, so the body is whatever follows the headers).
async fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let address = url.strip_prefix("http://").expect("an http:// URL");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to demo-app");
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|token| format!("Authorization: Token {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status line: {head:?}"));
    let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") };
    (status, json)
}

fn new_user(name: &str) -> Value {
    json!({ "user": { "username": name, "email": format!("{name}@example.com"), "password": "password123" } })
}

async fn count_users(db: &TestDb) -> i64 {
    db.client().await.query_one("SELECT count(*) FROM users", &[]).await.expect("count users").get(0)
}

/// Starts a registration that blocks on a lock on `users`, sends `signal`
/// while it is in flight, and checks that the server stops listening, yet
/// finishes and commits the request once the lock is released, then exits 0.
async fn in_flight_request_survives(signal: &str) {
    let db = TestDb::new().await;
    let mut server = Server::start(&db, Some("lifecycle")).await;
    let locker = db.client().await;
    locker.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.expect("lock users");
    let url = server.url.clone();
    let register: JoinHandle<(u16, Value)> =
        tokio::spawn(async move { http(&url, "POST", "/api/users", None, Some(&new_user("patient"))).await });
    let in_flight = lock_waiters_reach(&db, 1, STEP_TIMEOUT).await;
    assert!(in_flight, "the request never reached the locked table:\n{}", server.output());

    server.signal(signal);
    // Shutting down: new connections are refused...
    let address = server.url.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after SIG{signal}:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but the process waits for the request in flight.
    assert!(server.child.try_wait().expect("the child's status").is_none(), "exited early:\n{}", server.output());
    assert!(!register.is_finished(), "the request ended before its lock was released");

    locker.batch_execute("COMMIT").await.expect("release the lock");
    let (status, body) = tokio::time::timeout(STEP_TIMEOUT, register)
        .await
        .expect("the request in flight got an answer")
        .expect("the request task");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["username"], "patient");
    assert_eq!(count_users(&db).await, 1, "the request's transaction was committed");

    let exit = server.exit_status().await;
    assert!(exit.success(), "exit status {exit} after SIG{signal}:\n{}", server.output());
    assert!(server.output().contains("shut down"), "{}", server.output());
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    in_flight_request_survives("TERM").await;
}

#[tokio::test]
async fn ctrl_c_lets_the_request_in_flight_finish_then_exits_0() {
    in_flight_request_survives("INT").await;
}

#[tokio::test]
async fn without_jwt_secret_a_warning_is_logged_and_tokens_work() {
    let db = TestDb::new().await;
    let server = Server::start(&db, None).await;
    let log = server.output();
    let warning = log.lines().find(|line| line.contains("JWT_SECRET is not set"));
    assert!(warning.is_some_and(|line| line.contains("WARN")), "no warning in the log:\n{log}");

    let (status, body) = server.call("POST", "/api/users", None, Some(&new_user("alice"))).await;
    assert_eq!(status, 201, "{body}");
    let token = body["user"]["token"].as_str().expect("a token");
    let (status, body) = server.call("GET", "/api/user", Some(token), None).await;
    assert_eq!((status, &body["user"]["username"]), (200, &json!("alice")), "{body}");
}

#[tokio::test]
async fn the_start_up_log_names_the_port_actually_bound() {
    let db = TestDb::new().await;
    let server = Server::start(&db, Some("lifecycle")).await;
    // PORT=0: the log must name the port the system picked, not 0.
    let port: u16 = server.url.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port in the URL");
    assert_ne!(port, 0, "{}", server.output());
    let (status, body) = server.call("GET", "/api/tags", None, None).await;
    assert_eq!((status, body), (200, json!({ "tags": [] })));
}

#[tokio::test]
async fn database_url_asks_for_tls_with_sslmode_and_sslrootcert() {
    let tls = TlsServer::from_env();
    let db = TestDb::on(&tls.url).await;
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), tls.ca);
    let server = Server::start_at(&url, Some("lifecycle")).await;
    let (status, body) = server.call("POST", "/api/users", None, Some(&new_user("alice"))).await;
    assert_eq!(status, 201, "{body}");

    // The server's own view of the app's connections (from its postgres
    // database, which takes connections without TLS).
    let (admin, connection) = tokio_postgres::connect(&tls.url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let sql = "SELECT count(*), bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = $1";
    let row = admin.query_one(sql, &[&db.name()]).await.expect("pg_stat_ssl");
    let (connections, all_tls): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(connections > 0 && all_tls == Some(true), "{connections} connection(s), all TLS: {all_tls:?}");
}

#[tokio::test]
async fn a_server_certificate_the_ca_file_does_not_trust_stops_start_up_naming_the_file() {
    let tls = TlsServer::from_env();
    let db = TestDb::on(&tls.url).await;
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), tls.wrong_ca);
    let mut server = Server::spawn(demo_app(&url, Some("lifecycle")));
    let exit = server.exit_status().await;
    let log = server.output();
    assert!(!exit.success(), "{log}");
    assert!(log.contains(&format!("certificate not trusted by sslrootcert {}", tls.wrong_ca)), "{log}");
}

/// A `key=value` connection string for the test server, as `user` into
/// database `dbname`.
fn server_url_as(user: &str, dbname: &str) -> String {
    let config: orm_core::tokio_postgres::Config = orm_tests::database_url().parse().expect("DATABASE_URL parses");
    let host = match config.get_hosts().first() {
        Some(orm_core::tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(orm_core::tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("host={host} port={port} user={user} dbname={dbname}")
}

/// Runs the binary against `database_url` with `vars`, and asserts that it
/// refuses to start: it exits with status `code`, and its error line holds
/// every one of `expected`.
async fn refuses_to_start(database_url: &str, vars: &[(&str, &str)], code: i32, expected: &[&str]) {
    let mut command = demo_app(database_url, Some("lifecycle"));
    command.envs(vars.iter().copied());
    let mut server = Server::spawn(command);
    let status = server.exit_status().await;
    assert_eq!(status.code(), Some(code), "{}", server.output());
    // The threads that read the pipes may not have the last line yet.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let error = loop {
        if let Some(line) = server.output().lines().find(|line| line.contains("ERROR")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no error line:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for part in expected {
        assert!(error.contains(part), "{part:?} is not in the error line:\n{}", server.output());
    }
    assert!(!server.output().contains("serving at"), "{}", server.output());
}

#[tokio::test]
async fn start_up_names_why_the_database_cannot_be_reached() {
    let db = TestDb::new().await;
    let user = db.config().get_user().unwrap_or("postgres").to_owned();
    // Nothing listens on port 1.
    refuses_to_start("postgres://app@127.0.0.1:1/conduit", &[], 1, &["DATABASE_URL", "127.0.0.1:1", "refused"]).await;
    let url = server_url_as(&user, "no_such_database");
    refuses_to_start(&url, &[], 1, &["DATABASE_URL", r#"database "no_such_database" does not exist"#]).await;
    let url = server_url_as("no_such_role", db.name());
    refuses_to_start(&url, &[], 1, &["DATABASE_URL", r#"role "no_such_role" does not exist"#]).await;
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_variable() {
    let db = TestDb::new().await;
    let expected = "DATABASE_MAX_CONNECTIONS: must be at least 1, not 0";
    refuses_to_start(db.url(), &[("DATABASE_MAX_CONNECTIONS", "0")], 2, &[expected]).await;
    refuses_to_start(db.url(), &[("REQUEST_TIMEOUT_SECS", "soon")], 2, &["REQUEST_TIMEOUT_SECS"]).await;
    refuses_to_start(db.url(), &[("CORS_ORIGINS", "localhost:4100")], 2, &["CORS_ORIGINS"]).await;
    refuses_to_start(db.url(), &[("RUST_LOG", "info,demo_app=loud")], 2, &["RUST_LOG"]).await;
}

#[tokio::test]
async fn a_schema_that_does_not_match_the_entities_stops_start_up_with_the_report() {
    let db = TestDb::new().await;
    // A first start migrates the database; then someone changes it by hand.
    let mut server = Server::start(&db, Some("lifecycle")).await;
    server.signal("TERM");
    assert!(server.exit_status().await.success(), "{}", server.output());
    db.client()
        .await
        .batch_execute("ALTER TABLE comments ALTER COLUMN body DROP NOT NULL; ALTER TABLE articles RENAME COLUMN description TO summary")
        .await
        .expect("the schema changes");

    let mut server = Server::spawn(demo_app(db.url(), Some("lifecycle")));
    let status = server.exit_status().await;
    assert_eq!(status.code(), Some(1), "{}", server.output());
    let report = [
        "cannot start after the migrations: the database does not match the entities:",
        "Comment.body (column comments.body): expected NOT NULL (the field is not an Option), found nullable",
        "Article.description (column articles.description): expected a column, found none",
    ];
    // The threads that read the pipes may not have the last lines yet.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !report.iter().all(|line| server.output().contains(line)) {
        assert!(Instant::now() < deadline, "the report is not in the log:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!server.output().contains("serving at"), "{}", server.output());
}

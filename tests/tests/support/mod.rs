//! Entities and schema shared by the integration tests.

#![allow(dead_code)]

pub mod blog;
pub mod moods;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use orm_core::tokio_postgres::SimpleQueryMessage;
use orm_core::{Database, DatabaseConfig, Entity};
use orm_tests::TestDb;
use tracing_subscriber::fmt::format::FmtSpan;

/// While only one subscriber is registered, tracing asks the current
/// thread's alone whether a callsite is wanted: a callsite first reached by
/// a test without a subscriber, while exactly one other test's is alive,
/// is cached as "never" for every thread, and that test loses its lines. A
/// second subscriber that lives as long as the process makes tracing ask
/// all registered ones.
static SECOND_SUBSCRIBER: OnceLock<tracing::Dispatch> = OnceLock::new();

/// The benchmark table of DESIGN.md, plus a nullable note and a version.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "customer")]
pub struct Customer {
    #[orm(primary_key, generated)]
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
}

/// A versioned entity for optimistic-concurrency tests.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "account")]
pub struct Account {
    #[orm(primary_key, generated)]
    pub id: i64,
    pub owner: String,
    pub balance: i64,
    #[orm(version)]
    pub version: i32,
}

pub const SCHEMA: &str = "
    CREATE TABLE customer (id serial PRIMARY KEY, name varchar(255) NOT NULL UNIQUE, description varchar(255));
    CREATE TABLE account (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text NOT NULL,
                          balance bigint NOT NULL CHECK (balance >= 0), version int NOT NULL);
";

pub fn customer(name: &str) -> Customer {
    Customer { id: 0, name: name.to_owned(), description: None }
}

/// A fresh database with the shared schema, and an ORM pool on it.
pub async fn setup() -> (TestDb, Database) {
    setup_with(|_| {}).await
}

/// Like [`setup`], adjusting the pool configuration first.
pub async fn setup_with(adjust: impl FnOnce(&mut DatabaseConfig)) -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("create the test schema");
    let mut config = DatabaseConfig::from_url(test_db.url()).expect("test database URL");
    adjust(&mut config);
    let db = Database::with_config(config).expect("pool");
    (test_db, db)
}

/// A fresh database (as [`setup`]) holding one committed customer per name.
pub async fn seeded(names: &[&str]) -> (TestDb, Database) {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all(names.iter().map(|name| customer(name)));
    session.commit().await.expect("seed the customers");
    (test_db, db)
}

/// The number of rows in `table`.
pub async fn count_rows(test_db: &TestDb, table: &str) -> i64 {
    let client = test_db.client().await;
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

/// Checks a connection out of the pool and returns whether it is outside any
/// transaction, and its backend's pid. Inside a transaction `now()` is the
/// transaction's start, not this statement's; one simple query is one
/// message, so outside one the two are equal.
pub async fn checkout_state(db: &Database) -> (bool, i32) {
    let client = db.pool().get().await.expect("a connection from the pool");
    let messages = client
        .simple_query("SELECT now() = statement_timestamp(), pg_backend_pid()")
        .await
        .expect("a statement on the returned connection");
    let row = messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .expect("one row");
    (row.get(0) == Some("t"), row.get(1).expect("a pid").parse().expect("a number"))
}

const SLEEPING: &str = "SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND state = 'active' AND query = 'SELECT pg_sleep(30)'";

/// The pid of the backend running `SELECT pg_sleep(30)`, once there is one.
pub async fn running_sleep(monitor: &orm_core::tokio_postgres::Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = monitor.query(SLEEPING, &[]).await.unwrap().first() {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "the statement never started on the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drops a session of `db`, a pool of one connection with the shared
/// schema, while the server runs its statement; checks that the next
/// borrower gets a clean connection quickly, that the statement was
/// cancelled (`monitor` watches the database), and that the pool then runs
/// a session that adds the customer "after" and commits.
pub async fn drop_mid_statement(
    db: &Database,
    monitor: &orm_core::tokio_postgres::Client,
    after_first_statement: bool,
) {
    let mut session = db.session();
    if after_first_statement {
        session.execute("SELECT 1", &[]).await.unwrap();
    }
    // Drop the statement's future once the server is running it, as a
    // request timeout would, but without guessing how long that takes.
    let pid = tokio::select! {
        result = session.execute("SELECT pg_sleep(30)", &[]) => panic!("the statement ended: {result:?}"),
        pid = running_sleep(monitor) => pid,
    };
    let dropped_at = Instant::now();
    drop(session);

    let (clean, reused) = checkout_state(db).await;
    assert!(dropped_at.elapsed() < Duration::from_secs(5), "the next borrower waited {:?}", dropped_at.elapsed());
    assert!(clean, "the next borrower is inside the abandoned transaction");
    // A cancel request may land late: the connection it was sent for is
    // never handed out again, and the statement stops. PgBouncer 1.18 does
    // neither: it gives the server connection to others, and drops the
    // cancel request of a client that has gone (the session's connection
    // is closed first; see the guide's chapter on deploying), so there the
    // statement runs to its end on a server connection PgBouncer has closed.
    if !orm_tests::via_pgbouncer() {
        assert_ne!(reused, pid, "the cancelled connection went back to the pool");
        let deadline = dropped_at + Duration::from_secs(5);
        while !monitor.query(SLEEPING, &[]).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the abandoned statement still runs");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The connection answers the next session's statements with their own
    // results, not with what was left of the abandoned one.
    let mut session = db.session();
    let rows = session.query_rows("SELECT $1::int", &[&42_i32]).await.expect("a statement after the cancel");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    session.add(customer("after"));
    session.commit().await.expect("commit after the cancel");
}

/// A `MakeWriter` collecting a test's log output.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Collects this thread's log events until the guard is dropped; the
    /// tests run on a current-thread runtime, so that is all of the test's.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        self.install_at(tracing::Level::WARN, FmtSpan::NONE)
    }

    /// Like [`install`](Self::install), at debug level and with a line for
    /// each span that closes, carrying the span's fields.
    pub fn install_spans(&self) -> tracing::subscriber::DefaultGuard {
        self.install_at(tracing::Level::DEBUG, FmtSpan::CLOSE)
    }

    fn install_at(&self, level: tracing::Level, spans: FmtSpan) -> tracing::subscriber::DefaultGuard {
        let buffer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || buffer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .with_span_events(spans)
            .finish();
        // See `SECOND_SUBSCRIBER`.
        SECOND_SUBSCRIBER.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first reached while no test's subscriber was alive has
        // cached "never"; asking every callsite again now includes this one.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

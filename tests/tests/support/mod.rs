//! Entities and schema shared by the integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use orm_core::{Database, DatabaseConfig, Entity};
use orm_tests::TestDb;
use tracing_subscriber::fmt::format::FmtSpan;

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
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

//! A fresh database for each of your own tests (cargo feature `testing`).
//!
//! [`TestDatabase`] creates a uniquely named database on a PostgreSQL
//! server (the one in `DATABASE_URL` by default), hands out a [`Database`]
//! for it, and drops it afterwards. Each test gets empty tables of its own,
//! so tests run in parallel and see nothing of each other, and every
//! transaction a test commits is real: constraints, triggers and commits
//! behave exactly as in production.
//!
//! ```
//! use orm_core::testing::TestDatabase;
//! use orm_core::Entity;
//!
//! #[derive(Entity, Clone, Debug)]
//! #[orm(table = "note")]
//! struct Note {
//!     #[orm(primary_key, generated)]
//!     id: i64,
//!     text: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> orm_core::Result<()> {
//! // In a #[tokio::test]: DATABASE_URL names a server the tests may create databases on.
//! let test_db = TestDatabase::new().await?;
//! test_db.execute("CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL)").await?;
//!
//! let db = test_db.database()?;
//! let mut session = db.session();
//! session.add(Note { id: 0, text: "hello".into() });
//! session.commit().await?;
//! assert_eq!(db.session().query::<Note>().all().await?.len(), 1);
//!
//! test_db.cleanup().await?; // or let it drop at the end of the test
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::database::Database;
use crate::error::{Error, Result};
use crate::sql::quote_ident;

/// The environment variable [`TestDatabase::new`] reads the server from.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// The name prefix of [`TestDatabase::new`] and [`TestDatabase::on`].
pub const DEFAULT_PREFIX: &str = "test_";

/// How often `CREATE DATABASE` is tried while another session holds the
/// template database (a concurrent `CREATE DATABASE`, typically).
const CREATE_ATTEMPTS: u32 = 8;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database created for one test, dropped by [`cleanup`](Self::cleanup)
/// or, failing that, when the value is dropped.
///
/// Its name is `<prefix><pid>_<counter>_<random>`: unique across the tests
/// of one process and across processes, and it tells which process made
/// it, so a tool can remove what a killed test run left behind.
///
/// Dropping it drops the database (`DROP DATABASE ... WITH (FORCE)`, which
/// ends connections still open to it, so a pool the test kept does not
/// prevent it). `Drop` cannot await, and may run inside the test's runtime,
/// where blocking on that runtime would panic: so it does the work on a new
/// thread with a runtime of its own and waits for it, also while a failed
/// test unwinds. A failure there is printed to stderr, not raised, since a
/// panic during unwinding would abort the test binary. Only a process that
/// is killed, or aborts, leaves its database behind. Call
/// [`cleanup`](Self::cleanup) at the end of a test to drop it on the test's
/// own runtime and see any error.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    /// The server's URL, whose database the admin connection uses.
    server_url: String,
    /// Set once `cleanup` dropped it: nothing is left for `Drop`.
    dropped: bool,
}

impl TestDatabase {
    /// Creates a database on the server of the `DATABASE_URL` environment
    /// variable, named with [`DEFAULT_PREFIX`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `DATABASE_URL` is unset or not a connection
    /// string, [`Error::Connect`] if the server cannot be reached, and the
    /// server's error if `CREATE DATABASE` fails (the role lacks the
    /// `CREATEDB` privilege, say).
    pub async fn new() -> Result<Self> {
        let server_url = std::env::var(DATABASE_URL).map_err(|_| {
            Error::Config(format!("{DATABASE_URL} is not set: it names the server test databases are created on"))
        })?;
        Self::on(&server_url).await
    }

    /// Creates a database on the server of `server_url`, a `postgres://`
    /// URL or `key=value` string as [`Database::connect`] takes it; the
    /// database it names is used to run `CREATE DATABASE` and `DROP
    /// DATABASE`. The new database's URL is `server_url` with the database
    /// replaced, so its other parameters (`sslmode`, `statement_mode`, ...)
    /// apply to it too.
    pub async fn on(server_url: &str) -> Result<Self> {
        Self::with_prefix(server_url, DEFAULT_PREFIX).await
    }

    /// Like [`on`](Self::on), naming the database `<prefix><pid>_...`, e.g.
    /// so that a cleanup script can tell one project's test databases from
    /// another's.
    pub async fn with_prefix(server_url: &str, prefix: &str) -> Result<Self> {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}_{counter}_{}", std::process::id(), &random[..12]);
        let url = with_dbname(server_url, &name);
        let admin = Database::connect(server_url)?;
        create_database(&admin, &name).await?;
        Ok(TestDatabase { name, url, server_url: server_url.to_owned(), dropped: false })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's connection string: the server's, with the database
    /// replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool for the database with the default configuration, as
    /// [`Database::connect`] gives it. For another configuration, build
    /// one from [`url`](Self::url) with [`DatabaseConfig::from_url`](crate::DatabaseConfig::from_url).
    pub fn database(&self) -> Result<Database> {
        Database::connect(&self.url)
    }

    /// Runs `sql`, one or more statements separated by semicolons, on the
    /// database outside any transaction: the schema a test needs. A
    /// migration tool takes a connection from [`database`](Self::database)'s
    /// [`checkout`](Database::checkout) instead.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        let db = self.database()?;
        db.checkout().await?.batch_execute(sql).await.map_err(Error::from)
    }

    /// Drops the database now, on the caller's runtime, and reports a
    /// failure. Connections still open to it are ended.
    pub async fn cleanup(mut self) -> Result<()> {
        self.dropped = true;
        drop_database(&self.server_url, &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let outcome = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| Error::Config(format!("cannot start a runtime: {error}")))?;
            runtime.block_on(drop_database(&server_url, &name))
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("orm_core::testing: could not drop test database {}: {error}", self.name),
            Err(_) => eprintln!("orm_core::testing: dropping test database {} panicked", self.name),
        }
    }
}

async fn create_database(admin: &Database, name: &str) -> Result<()> {
    let client = admin.checkout().await?;
    let sql = format!("CREATE DATABASE {}", quote_ident(name));
    let mut attempt = 1;
    loop {
        match client.batch_execute(&sql).await {
            // CREATE DATABASE copies template1 and fails while any other
            // session is connected to it, e.g. a concurrent CREATE DATABASE.
            Err(error) if attempt < CREATE_ATTEMPTS && error.code() == Some(&SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                attempt += 1;
            }
            result => return result.map_err(Error::from),
        }
    }
}

async fn drop_database(server_url: &str, name: &str) -> Result<()> {
    let admin = Database::connect(server_url)?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    admin.checkout().await?.batch_execute(&sql).await.map_err(Error::from)
}

/// Replaces the database in a connection string, in URL or `key=value`
/// form.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let scheme_len =
        ["postgres://", "postgresql://"].iter().find(|scheme| url.starts_with(*scheme)).map(|scheme| scheme.len());
    let Some(scheme_len) = scheme_len else {
        // In key=value form the last setting of a keyword wins.
        return format!("{url} dbname={dbname}");
    };
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let authority_end = main[scheme_len..].find('/').map_or(main.len(), |i| scheme_len + i);
    let mut out = format!("{}/{dbname}", &main[..authority_end]);
    if let Some(query) = query {
        // A dbname parameter would override the path.
        let kept: Vec<&str> = query.split('&').filter(|param| !param.starts_with("dbname=")).collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_a_url() {
        assert_eq!(with_dbname("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(with_dbname("postgresql://u:p@h", "x"), "postgresql://u:p@h/x");
        assert_eq!(
            with_dbname("postgres://h/db?dbname=other&connect_timeout=5", "x"),
            "postgres://h/x?connect_timeout=5"
        );
    }

    #[test]
    fn replaces_the_database_in_key_value_form() {
        let url = with_dbname("host=localhost user=postgres dbname=test", "x");
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(config.get_dbname(), Some("x"));
        assert_eq!(config.get_user(), Some("postgres"));
    }
}

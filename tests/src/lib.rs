//! Test support for the ORM's integration tests.
//!
//! [`TestDb`] gives each test a database of its own, created fresh on the
//! server named by `DATABASE_URL` and dropped when the test ends, so tests run
//! in parallel without seeing each other's tables. `scripts/test.sh` finds or
//! starts a server and sets `DATABASE_URL`. It is the ORM's own
//! [`TestDatabase`] fixture (feature `testing`), plus what this project's
//! runs need: raw connections, PgBouncer, and the removal of databases
//! that killed test runs left behind.
//!
//! With `ORM_TEST_VIA_PGBOUNCER=1` (which `scripts/test.sh` sets for a second
//! run of some test files), [`TestDb::url`] reaches the database through the
//! PgBouncer in transaction mode at `ORM_PGBOUNCER_URL` instead, in the
//! ORM's unnamed statement mode, so the same tests prove the ORM works
//! through a transaction pooler; the raw connections of [`TestDb::client`]
//! and [`TestDb::pool`] still go to the server directly.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let db = orm_tests::TestDb::new().await;
//! let client = db.client().await;
//! client.batch_execute("CREATE TABLE t (id int)").await.unwrap();
//! let row = client.query_one("SELECT current_database()", &[]).await.unwrap();
//! assert_eq!(row.get::<_, String>(0), db.name());
//! # }
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use orm_core::quote_ident;
use orm_core::testing::{with_dbname, TestDatabase};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

mod fragmenting_proxy;
mod replica_pair;
pub use fragmenting_proxy::FragmentingProxy;
pub use replica_pair::ReplicaPair;

/// Every test database's name starts with this, followed by
/// `<pid>_<counter>_<random>`; the pid lets a later run tell leftovers of a
/// crashed process from databases of a run still in progress.
const NAME_PREFIX: &str = "orm_test_";

/// Set to `1`, [`TestDb::url`] goes through PgBouncer: see the crate docs.
pub const VIA_PGBOUNCER: &str = "ORM_TEST_VIA_PGBOUNCER";

/// PgBouncer's URL, exported by `scripts/pgbouncer.sh`: `DATABASE_URL` with
/// the pooler's host and port.
pub const PGBOUNCER_URL: &str = "ORM_PGBOUNCER_URL";

/// The servers whose leftover test databases this process has dropped.
static LEFTOVERS_REMOVED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A fresh database for one test, dropped (with `FORCE`, so open connections
/// don't keep it alive) when the `TestDb` is dropped, also when the test
/// panics: see [`TestDatabase`].
///
/// Needs a Tokio runtime for [`TestDb::new`], [`TestDb::client`] and the
/// connections of [`TestDb::pool`]; dropping works anywhere.
#[derive(Debug)]
pub struct TestDb {
    database: TestDatabase,
    url: String,
    config: Config,
}

impl TestDb {
    /// Creates a uniquely named database on the server in `DATABASE_URL`.
    ///
    /// The first call in a process also drops databases left behind by test
    /// processes that no longer run.
    ///
    /// # Panics
    ///
    /// If `DATABASE_URL` is unset or invalid, or the server refuses the
    /// connection or the `CREATE DATABASE`.
    pub async fn new() -> Self {
        let mut test_db = Self::on(&database_url()).await;
        if via_pgbouncer() {
            test_db.url = test_db.pgbouncer_url();
        }
        test_db
    }

    /// Creates a uniquely named database on the server of `server_url` (a
    /// URL or `key=value` string, as in `DATABASE_URL`), such as the
    /// TLS-only server `scripts/tls_db.sh` starts. Its connections, and
    /// those of [`client`](Self::client) and [`pool`](Self::pool), do not
    /// use TLS: on a server that takes the test database over TLS only,
    /// connect to it through the ORM.
    ///
    /// The first call in a process for a server also drops databases left
    /// behind there by test processes that no longer run.
    ///
    /// # Panics
    ///
    /// If `server_url` is invalid, or the server refuses the connection or
    /// the `CREATE DATABASE`.
    pub async fn on(server_url: &str) -> Self {
        let admin = parse_config(server_url);
        let admin_client = connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server ({}): {e}", describe(&admin)));
        if LEFTOVERS_REMOVED.lock().unwrap_or_else(PoisonError::into_inner).insert(server_url.to_owned()) {
            remove_leftovers(&admin_client).await;
        }

        let database = TestDatabase::with_prefix(server_url, NAME_PREFIX)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database ({}): {e}", describe(&admin)));
        let url = database.url().to_owned();
        let config = parse_config(&url);
        TestDb { database, url, config }
    }

    /// Connects to the server in `DATABASE_URL` (not to a test database), e.g.
    /// to look at `pg_database`.
    ///
    /// # Panics
    ///
    /// If `DATABASE_URL` is unset or invalid, or the connection fails.
    pub async fn admin_client() -> Client {
        let admin = parse_config(&database_url());
        connect(&admin).await.unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL ({}): {e}", describe(&admin)))
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        self.database.name()
    }

    /// The connection URL of this database for the ORM: the server's URL
    /// with the database name replaced, or, for [`new`](Self::new) with
    /// `ORM_TEST_VIA_PGBOUNCER=1`, its [`pgbouncer_url`](Self::pgbouncer_url).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This database through PgBouncer in transaction mode:
    /// `ORM_PGBOUNCER_URL` with the database name replaced and the ORM's
    /// `statement_mode=unnamed` added.
    ///
    /// # Panics
    ///
    /// If `ORM_PGBOUNCER_URL` is not set (`scripts/test.sh` sets it).
    pub fn pgbouncer_url(&self) -> String {
        let base = std::env::var(PGBOUNCER_URL)
            .unwrap_or_else(|_| panic!("{PGBOUNCER_URL} is not set: run the tests through scripts/test.sh"));
        with_param(&with_dbname(&base, self.name()), "statement_mode=unnamed")
    }

    /// The connection settings of this database.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// A new raw connection to this database, for setting up tables and
    /// checking what the ORM wrote. Its connection task runs on the current
    /// Tokio runtime.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn client(&self) -> Client {
        connect(&self.config).await.unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name()))
    }

    /// A pool of at most `max_size` connections to this database.
    ///
    /// # Panics
    ///
    /// Never in practice: building fails only for timeouts without a runtime,
    /// and none are set.
    pub fn pool(&self, max_size: usize) -> Pool {
        let manager =
            Manager::from_config(self.config(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        Pool::builder(manager)
            .max_size(max_size)
            .build()
            .expect("a deadpool-postgres pool without timeouts always builds")
    }
}

/// The TLS-only test server that `scripts/tls_db.sh` starts, from the
/// variables it exports. It takes the test databases
/// ([`TestDb::on`]`(&server.url)`) over TLS only, with a certificate for
/// the host name `localhost` (not for the address 127.0.0.1).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = orm_tests::TlsServer::from_env();
/// let test_db = orm_tests::TestDb::on(&server.url).await;
/// let url = format!("{}?sslmode=verify-full&sslrootcert={}", test_db.url(), server.ca);
/// assert!(url.starts_with("postgres://postgres@localhost:"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TlsServer {
    /// `ORM_TLS_DATABASE_URL`: `postgres://postgres@localhost:PORT/postgres`.
    pub url: String,
    /// `ORM_TLS_CA`: the PEM file of the CA that signed the server's certificate.
    pub ca: String,
    /// `ORM_TLS_WRONG_CA`: the PEM file of a CA that did not.
    pub wrong_ca: String,
}

impl TlsServer {
    /// The server `scripts/tls_db.sh` started.
    ///
    /// # Panics
    ///
    /// If one of its variables is not set: the tests that need it fail,
    /// saying how to start it, rather than pass without it.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run the tests through scripts/test.sh, or start the TLS test server \
                     with `eval \"$(bash scripts/tls_db.sh)\"` first"
                )
            })
        };
        TlsServer { url: var("ORM_TLS_DATABASE_URL"), ca: var("ORM_TLS_CA"), wrong_ca: var("ORM_TLS_WRONG_CA") }
    }
}

/// Whether `ORM_TEST_VIA_PGBOUNCER=1`: this run goes through PgBouncer in
/// transaction mode, where a test of session-level state cannot pass.
pub fn via_pgbouncer() -> bool {
    std::env::var(VIA_PGBOUNCER).is_ok_and(|value| value == "1")
}

/// Whether to skip a test that cannot pass through PgBouncer in transaction
/// mode, because this run goes through it; says so, and why, on stderr.
pub fn skip_via_pgbouncer(reason: &str) -> bool {
    let skip = via_pgbouncer();
    if skip {
        eprintln!("skipped through PgBouncer: {reason}");
    }
    skip
}

/// Adds `key=value` to a connection string, in URL or key=value form.
fn with_param(url: &str, param: &str) -> String {
    if !["postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme)) {
        format!("{url} {param}")
    } else if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{url}?{param}")
    }
}

/// Every backend of `client`'s database but `client`'s own that is not idle
/// (inside a transaction, or running a statement), as `"state: query"`:
/// what a test looks at to prove that nothing was left running or inside a
/// transaction.
///
/// # Panics
///
/// If the query fails.
pub async fn busy_backends(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT state || ': ' || query FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state IS DISTINCT FROM 'idle'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs a test body under a 60-second timeout, so that a test of something
/// that could hang fails instead.
///
/// # Panics
///
/// If the body does not finish within 60 seconds.
pub async fn within<T>(body: impl std::future::Future<Output = T>) -> T {
    // Boxed: a test's whole body is one large future.
    tokio::time::timeout(std::time::Duration::from_secs(60), Box::pin(body))
        .await
        .expect("the test finished within 60 s")
}

/// The server URL the tests run against.
///
/// # Panics
///
/// If `DATABASE_URL` is not set.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run the tests through scripts/test.sh")
}

fn parse_config(url: &str) -> Config {
    url.parse().unwrap_or_else(|e| panic!("the test server's URL is not a valid connection string: {e}"))
}

/// Host, port and database, for messages that must not show a password.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host {}, port {}, database {}",
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // A test's connections are cut by DROP DATABASE ... WITH (FORCE)
            // when it ends; that is expected, not worth a message.
            if e.code() != Some(&SqlState::ADMIN_SHUTDOWN) {
                eprintln!("orm-tests: connection error: {e}");
            }
        }
    });
    Ok(client)
}

fn drop_sql(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))
}

/// The pid in a test database's name.
fn creator_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?.split('_').next()?.parse().ok()
}

/// Drops test databases whose creating process is gone, so that a crashed or
/// killed run doesn't leave databases behind for good. Failures only warn:
/// they don't affect the test that happens to run this.
async fn remove_leftovers(admin: &Client) {
    // Liveness comes from /proc; elsewhere, leave everything alone.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let rows = match admin.query("SELECT datname::text FROM pg_database WHERE datname LIKE 'orm\\_test\\_%'", &[]).await
    {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("orm-tests: cannot list leftover test databases: {e}");
            return;
        }
    };
    for row in rows {
        let name: String = row.get(0);
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Err(e) = admin.batch_execute(&drop_sql(&name)).await {
            eprintln!("orm-tests: cannot drop leftover test database {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_parameter() {
        assert_eq!(with_param("postgres://h/x", "a=b"), "postgres://h/x?a=b");
        assert_eq!(with_param("postgres://h/x?c=d", "a=b"), "postgres://h/x?c=d&a=b");
        assert_eq!(with_param("host=h dbname=x", "a=b"), "host=h dbname=x a=b");
    }

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(creator_pid("orm_test_123_1_ab"), Some(123));
        assert_eq!(creator_pid("orm_test_x_1_2"), None);
        assert_eq!(creator_pid("other"), None);
    }
}

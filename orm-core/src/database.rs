//! [`Database`]: the connection pool that sessions borrow from.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;

use crate::commit_token::CommitToken;
use crate::connection::SessionConnection;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::filters::{Filters, Tenant};
use crate::flush::CopyTargets;
use crate::isolation::IsolationLevel;
use crate::n_plus_one::NPlusOne;
use crate::plan_cache::PlanCacheMode;
use crate::replicas::{Endpoint, ReplicaConfig, Replicas};
use crate::session::Session;
use crate::statement_mode::{StatementMode, Statements};
use crate::telemetry::Telemetry;
use crate::tls::{self, Connector, TlsConfig};

/// How to reach PostgreSQL and size the pool. Every timeout is finite by
/// default, so an exhausted pool or a silent server becomes an error instead
/// of a hang.
///
/// Start from [`from_url`](Self::from_url), change what you need, and build
/// the pool with [`Database::with_config`]:
///
/// ```
/// use std::time::Duration;
/// use orm_core::{Database, DatabaseConfig, Error, NPlusOne};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// let mut config = DatabaseConfig::from_url(test_db.url())?;
/// assert_eq!(config.max_connections, 16); // the defaults
/// assert_eq!(config.wait_timeout, Duration::from_secs(5));
/// config.max_connections = 1;
/// config.wait_timeout = Duration::from_millis(100);
/// config.n_plus_one = NPlusOne::Error { threshold: 10 };
/// let db = Database::with_config(config)?;
///
/// let mut first = db.session();
/// first.execute("SELECT 1", &[]).await?; // holds the only connection
/// let mut second = db.session();
/// let waited = second.execute("SELECT 1", &[]).await;
/// assert!(matches!(waited, Err(Error::PoolTimeout { .. }))); // not a hang
///
/// assert!(matches!(DatabaseConfig::from_url("postgres://host:port"), Err(Error::Config(_))));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection parameters (host, user, database, ...). Its `ssl_mode`
    /// is not used: [`tls`](Self::tls) decides.
    pub postgres: tokio_postgres::Config,
    /// Whether and how connections use TLS, from the URL's `sslmode` and
    /// `sslrootcert`. Default: TLS if the server offers it, without
    /// checking its certificate (libpq's `prefer`).
    pub tls: TlsConfig,
    /// Most connections open at once. Default: 16.
    pub max_connections: usize,
    /// How long a session waits for a free connection. Default: 5 s.
    pub wait_timeout: Duration,
    /// How long opening a connection may take. Default: 5 s.
    pub create_timeout: Duration,
    /// How long checking a returned connection may take. Default: 5 s.
    pub recycle_timeout: Duration,
    /// Idle time before TCP keepalive probes start, so a half-open
    /// connection is noticed. Default: 60 s.
    pub keepalive_idle: Duration,
    /// What a session does when one load statement runs more often than a
    /// threshold, the sign of an N+1 pattern. Default: a warning after 25
    /// runs ([`NPlusOne::default`]).
    pub n_plus_one: NPlusOne,
    /// The isolation level of every session's transaction. Default: `None`,
    /// the server's default. The session takes that to be READ COMMITTED,
    /// PostgreSQL's own default: set this when the server's is stricter, so
    /// that loads run inside the transaction too (see [`IsolationLevel`]).
    pub isolation: Option<IsolationLevel>,
    /// How statements are sent: prepared and kept on each connection, or
    /// unnamed, for a pooler in transaction mode (see [`StatementMode`]).
    /// Default: [`StatementMode::Prepared`], or what the connection
    /// string's `statement_mode` parameter says.
    pub statements: StatementMode,
    /// Read replicas of the primary, where sessions from
    /// [`Database::read_session`] read. Each gets a pool sized and timed
    /// as the primary's. Default: none (read sessions use the primary).
    pub replicas: Vec<ReplicaConfig>,
    /// How far behind the primary a replica may be and still serve read
    /// sessions: a replica lagging more is skipped, with a warning, until
    /// it catches up. The lag is the age of the last transaction the
    /// replica replayed, while it has received log it has not replayed
    /// yet or does not stream from the primary (0 otherwise). Default: 5 s.
    pub max_replica_lag: Duration,
    /// How long what a replica's health check found (up, within the lag
    /// bound, how far it replayed) is trusted before a read session checks
    /// again, with one extra round trip. Default: 1 s.
    pub replica_check_interval: Duration,
    /// A statement that takes longer than this is logged as a `tracing`
    /// warning naming its SQL (which holds no values: they travel as bind
    /// parameters), operation, table and duration. The time runs from
    /// sending the statement until its answer is complete: for a query
    /// read as a stream, until its last row is read, which includes the
    /// time the reader spends between rows. `None` turns the warning off.
    /// Default: one second; see
    /// [`with_slow_statement_threshold`](Self::with_slow_statement_threshold).
    pub slow_statement_threshold: Option<Duration>,
    /// Hooks every session of the database runs (see [`Events`]), before
    /// those registered on one session. Default: none, which costs nothing.
    pub events: Events,
    /// The smallest batch of new entities of one type that a flush writes
    /// by binary `COPY` instead of `INSERT ... UNNEST ... RETURNING`: it
    /// takes their keys from the key's sequence first, in the flush's
    /// first round trip, and sends the rows with their keys in the next.
    /// Only for tables where that writes what the `INSERT` would: an
    /// integer key from a serial or identity `BY DEFAULT` sequence, no
    /// other generated field, no insert trigger, rule or row security.
    /// `None` never inserts by `COPY`. Default:
    /// [`DEFAULT_COPY_THRESHOLD`](crate::DEFAULT_COPY_THRESHOLD) rows,
    /// where `COPY` measured faster here (docs/performance.md).
    pub copy_threshold: Option<usize>,
    /// The smallest batch of updates of one set of changed columns that a
    /// flush copies into a temporary table and writes with one
    /// `UPDATE ... FROM` it, instead of `UPDATE ... FROM UNNEST(...)`.
    /// This needs the `TEMPORARY` privilege on the database, which
    /// PostgreSQL grants to everyone by default. `None` never updates by
    /// `COPY`. Default:
    /// [`DEFAULT_COPY_UPDATE_THRESHOLD`](crate::DEFAULT_COPY_UPDATE_THRESHOLD)
    /// rows: the temporary table's upkeep and the join's planning make
    /// `COPY` pay later for updates than for inserts (docs/performance.md).
    pub copy_update_threshold: Option<usize>,
    /// How the server plans the statements each connection keeps prepared
    /// (PostgreSQL's `plan_cache_mode`), set on every connection the pools
    /// open, the replicas' too. Default: `None`, the server's setting
    /// (`auto` unless the role or database says otherwise). See
    /// [`PlanCacheMode`] for when [`ForceGeneric`](PlanCacheMode::ForceGeneric)
    /// saves the server most of its planning; it cannot be combined with
    /// [`StatementMode::Unnamed`], on the primary or a replica.
    pub plan_cache_mode: Option<PlanCacheMode>,
}

impl DatabaseConfig {
    /// A configuration with the defaults above for a `postgres://` URL or a
    /// `key=value` connection string. Its `sslmode` and `sslrootcert`
    /// parameters go to [`tls`](Self::tls) (with libpq's meanings, see
    /// [`TlsConfig`]), a `statement_mode=unnamed` to
    /// [`statements`](Self::statements) (see [`StatementMode`]), the rest
    /// to [`postgres`](Self::postgres).
    pub fn from_url(url: &str) -> Result<Self> {
        let (postgres, tls, statements) = parse_url(url)?;
        Ok(DatabaseConfig {
            postgres,
            tls,
            max_connections: 16,
            wait_timeout: Duration::from_secs(5),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(60),
            n_plus_one: NPlusOne::default(),
            isolation: None,
            statements: statements.unwrap_or_default(),
            replicas: Vec::new(),
            max_replica_lag: Duration::from_secs(5),
            replica_check_interval: Duration::from_secs(1),
            slow_statement_threshold: Some(Duration::from_secs(1)),
            events: Events::new(),
            copy_threshold: Some(crate::DEFAULT_COPY_THRESHOLD),
            copy_update_threshold: Some(crate::DEFAULT_COPY_UPDATE_THRESHOLD),
            plan_cache_mode: None,
        })
    }

    /// Sets [`slow_statement_threshold`](Self::slow_statement_threshold):
    /// statements slower than `threshold` are logged as warnings, `None`
    /// logs none.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use orm_core::{Database, DatabaseConfig};
    /// # fn main() -> orm_core::Result<()> {
    /// let config = DatabaseConfig::from_url("postgres://app@db.internal/shop")?
    ///     .with_slow_statement_threshold(Some(Duration::from_millis(200)));
    /// assert_eq!(config.slow_statement_threshold, Some(Duration::from_millis(200)));
    /// let db = Database::with_config(config)?;
    /// # drop(db); Ok(()) }
    /// ```
    #[must_use]
    pub fn with_slow_statement_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }
}

/// A connection string's parts: the driver's parameters, TLS, and the
/// statement mode if it names one. Primary and replicas are read alike.
pub(crate) fn parse_url(url: &str) -> Result<(tokio_postgres::Config, TlsConfig, Option<StatementMode>)> {
    let (rest, tls) = tls::take_from_url(url)?;
    let (rest, statements) = StatementMode::take_from_url(&rest)?;
    let postgres = tokio_postgres::Config::from_str(&rest).map_err(|error| {
        // The driver's message is generic; its cause names the option.
        Error::Config(match std::error::Error::source(&error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        })
    })?;
    Ok((postgres, tls, statements))
}

/// A pool of PostgreSQL connections, and the factory of [`Session`]s.
///
/// Cheap to clone: clones share the pool. Create one at start-up and open a
/// session per unit of work:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// let db = orm_core::Database::connect(test_db.url())?; // connects to nothing yet
/// assert_eq!(db.pool().status().size, 0);
///
/// let mut session = db.session();
/// session.execute("CREATE TABLE visit (at timestamptz NOT NULL DEFAULT now())", &[]).await?;
/// session.execute("INSERT INTO visit DEFAULT VALUES", &[]).await?;
/// session.commit().await?;
///
/// let shared = db.clone(); // in a web app: the state every handler gets
/// let mut session = shared.session();
/// let visits: i64 = session.query_rows("SELECT count(*) FROM visit", &[]).await?[0].get(0);
/// assert_eq!(visits, 1);
/// assert_eq!(db.pool().status().size, 1); // both sessions used one pooled connection
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    target: Arc<ConnectTarget>,
    n_plus_one: NPlusOne,
    isolation: Option<IsolationLevel>,
    statements: Statements,
    /// Where read sessions go.
    reads: Arc<Replicas>,
    telemetry: Arc<Telemetry>,
    /// Every session's hooks.
    events: Events,
    copy_targets: Arc<CopyTargets>,
}

/// Where the pool connects, as whom, and with which TLS: what
/// [`Error::Connect`] names, and the connector its cancel requests need.
/// The password is deliberately not kept.
pub(crate) struct ConnectTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) database: String,
    pub(crate) user: String,
    pub(crate) tls: TlsConfig,
    connector: Connector,
}

impl ConnectTarget {
    /// What tokio-postgres will use: a missing user is the operating
    /// system's user, a missing database the user's name, a missing port 5432.
    fn of(config: &tokio_postgres::Config, tls: TlsConfig, connector: Connector) -> Self {
        let host = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let user = config.get_user();
        let database = config.get_dbname().or(user).map_or_else(|| "(named after the user)".to_owned(), str::to_owned);
        let user = user.map_or_else(|| "(the operating system user)".to_owned(), str::to_owned);
        let port = config.get_ports().first().copied().unwrap_or(5432);
        ConnectTarget { host, port, database, user, tls, connector }
    }

    /// The connector of the pool's connections, for one of them or for a
    /// cancel request. Without TLS support it is `NoTls`, which is `Copy`.
    #[cfg_attr(not(feature = "tls-rustls"), allow(clippy::clone_on_copy))]
    pub(crate) fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// The pool's error as the crate's: a connection the pool failed to
    /// open is an [`Error::Connect`] naming this target, whatever the
    /// server said (no such database, too many clients, starting up); a
    /// server error from a statement would mislead.
    pub(crate) fn error(&self, error: PoolError) -> Error {
        match error {
            PoolError::Backend(source) => Error::connect(source, self),
            other => Error::from(other),
        }
    }
}

impl Database {
    /// A pool for `url` with the default [`DatabaseConfig`]. No connection
    /// is opened until a session needs one.
    pub fn connect(url: &str) -> Result<Self> {
        Self::with_config(DatabaseConfig::from_url(url)?)
    }

    /// A pool built from `config`. Must be called inside a Tokio runtime's
    /// context only when the pool is used, not to build it. Reads the
    /// `sslrootcert` file of [`DatabaseConfig::tls`], if any.
    /// Builds a pool for each of [`DatabaseConfig::replicas`] too.
    pub fn with_config(config: DatabaseConfig) -> Result<Self> {
        let sizing = Sizing::of(&config);
        // The server's default database is the user's name.
        let namespace = config.postgres.get_dbname().or(config.postgres.get_user()).map(str::to_owned);
        let telemetry = Telemetry::new(namespace, config.slow_statement_threshold);
        let plans = config.plan_cache_mode;
        let primary = sizing.endpoint(config.postgres, config.tls, config.statements, plans)?;
        let replicas = config
            .replicas
            .into_iter()
            .map(|replica| sizing.endpoint(replica.postgres, replica.tls, replica.statements, plans))
            .collect::<Result<Vec<_>>>()?;
        let reads = Replicas::new(primary.clone(), replicas, config.max_replica_lag, config.replica_check_interval);
        Ok(Database {
            pool: primary.pool,
            target: primary.target,
            n_plus_one: config.n_plus_one,
            isolation: config.isolation,
            statements: primary.statements,
            reads: Arc::new(reads),
            telemetry,
            events: config.events,
            copy_targets: Arc::new(CopyTargets::new(config.copy_threshold, config.copy_update_threshold)),
        })
    }

    /// Opens a session. It takes no connection until its first statement;
    /// outside a transaction it gives the connection back after each read,
    /// and from the statement that opens the transaction (a write, a
    /// locking read, or any statement at an isolation level stricter than
    /// READ COMMITTED) it keeps it until it ends.
    pub fn session(&self) -> Session {
        self.session_at(self.isolation)
    }

    /// Opens a session scoped to one tenant: every load of an entity with a
    /// `#[orm(tenant)]` column keeps only the rows whose tenant column
    /// equals `tenant` (a bind parameter, so the statement text is the
    /// same for every tenant); new entities whose tenant field holds its
    /// type's default (0, "", the nil UUID) get `tenant`; and a flush that
    /// would insert, change or delete a row of another tenant fails with
    /// [`Error::WrongTenant`](crate::Error::WrongTenant) before it sends
    /// anything. `tenant` must be of the tenant fields' type (an `i64` for
    /// an `i64` field): another is [`Error::TenantType`](crate::Error::TenantType).
    ///
    /// A session from [`session`](Self::session) has no tenant and sees
    /// every tenant's rows: for migrations, admin tools and jobs that work
    /// across tenants. Raw SQL ([`Session::query_rows`],
    /// [`Session::execute`]) is never filtered. See the guide's chapter on
    /// filters for an example.
    pub fn session_for_tenant<T>(&self, tenant: T) -> Session
    where
        T: tokio_postgres::types::ToSql + Clone + Send + Sync + 'static,
    {
        let mut session = self.session();
        session.filters = Filters::for_tenant(Tenant::new(tenant));
        session
    }

    /// Opens a session whose transaction runs at `level`, whatever
    /// [`DatabaseConfig::isolation`] says: for a unit of work that needs
    /// SERIALIZABLE, say, in an application that mostly does not.
    pub fn session_with_isolation(&self, level: IsolationLevel) -> Session {
        self.session_at(Some(level))
    }

    fn session_at(&self, isolation: Option<IsolationLevel>) -> Session {
        let connection = SessionConnection::new(
            self.pool.clone(),
            self.target.clone(),
            isolation,
            self.statements.clone(),
            self.telemetry.clone(),
            self.copy_targets.clone(),
        );
        Session::new(connection, self.n_plus_one, self.events.clone())
    }

    /// Opens a session that only reads, on a read replica (see
    /// [`DatabaseConfig::replicas`]): one that is up and within
    /// [`DatabaseConfig::max_replica_lag`], else the primary. The choice is
    /// made when it first needs a connection;
    /// [`Session::served_by`] tells which server it took.
    ///
    /// A replica may not have replayed the latest commits yet: for a
    /// request that must see what the same user just wrote, use
    /// [`read_session_after`](Self::read_session_after).
    ///
    /// Writing through it is refused: a flush or commit with pending
    /// changes is [`Error::ReadOnlySession`] (nothing is sent, the changes
    /// stay pending), and raw SQL runs in a `READ ONLY` transaction, which
    /// the server refuses to write in, on a replica and on the primary
    /// alike. Without replicas it reads from the primary.
    ///
    /// ```
    /// use orm_core::{Database, DatabaseConfig, ReplicaConfig, ServedBy};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// let mut config = DatabaseConfig::from_url(test_db.url())?;
    /// // A replica that does not answer: read sessions skip it.
    /// config.replicas.push(ReplicaConfig::from_url("postgres://postgres@127.0.0.1:1/test")?);
    /// let db = Database::with_config(config)?;
    ///
    /// let mut reading = db.read_session();
    /// let rows = reading.query_rows("SELECT pg_is_in_recovery()", &[]).await?;
    /// assert!(!rows[0].get::<_, bool>(0)); // the primary served it
    /// assert_eq!(reading.served_by(), Some(ServedBy::Primary));
    ///
    /// let refused = reading.execute("CREATE TABLE t (id int)", &[]).await.unwrap_err();
    /// assert!(refused.to_string().contains("SQLSTATE 25006"), "{refused}"); // read_only_sql_transaction
    /// # Ok(()) }
    /// ```
    pub fn read_session(&self) -> Session {
        self.reading(None)
    }

    /// Opens a read session ([`read_session`](Self::read_session)) that
    /// sees the commit `token` came from: it reads from a replica only if
    /// the replica has replayed the primary's log past the token (checked
    /// exactly, with a round trip to the replica unless an earlier check
    /// showed it), and from the primary otherwise.
    ///
    /// The token comes from [`Session::commit_with_token`]; a web app
    /// hands it to the client that wrote (a cookie, a header) and back
    /// here on the client's next requests, so that a user sees their own
    /// writes while everyone else keeps reading from replicas.
    pub fn read_session_after(&self, token: CommitToken) -> Session {
        self.reading(Some(token))
    }

    fn reading(&self, token: Option<CommitToken>) -> Session {
        let connection = SessionConnection::new(
            self.pool.clone(),
            self.target.clone(),
            self.isolation,
            self.statements.clone(),
            self.telemetry.clone(),
            self.copy_targets.clone(),
        )
        .reading(self.reads.clone(), token);
        Session::new(connection, self.n_plus_one, self.events.clone())
    }

    /// Whether [`DatabaseConfig::replicas`] named any read replica.
    pub fn has_replicas(&self) -> bool {
        self.reads.count() > 0
    }

    /// The underlying deadpool-postgres pool, for hand-written SQL beside the ORM.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the pool for hand-written SQL beside the ORM (a
    /// migration tool, say), with the errors a session would give: one
    /// that cannot be opened is an [`Error::Connect`] naming host, port,
    /// database and user, where `pool().get()` only has the driver's error.
    /// The connection goes back to the pool when dropped, as it is: unlike
    /// a session's, it is not reset, so end a transaction you opened and
    /// undo session state you left (`SET`, `pg_advisory_lock`) first.
    ///
    /// ```
    /// # use orm_core::{Database, DatabaseConfig, ErrorKind};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// let db = Database::connect(test_db.url())?;
    /// let client = db.checkout().await?;
    /// client.batch_execute("CREATE TABLE t (id int)").await?;
    ///
    /// let mut config = DatabaseConfig::from_url(test_db.url())?;
    /// config.postgres.dbname("no_such_db");
    /// let error = Database::with_config(config)?.checkout().await.unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::Connect);
    /// assert!(error.to_string().contains(r#"database "no_such_db" does not exist"#), "{error}");
    /// # Ok(()) }
    /// ```
    pub async fn checkout(&self) -> Result<Object> {
        self.pool.get().await.map_err(|error| self.target.error(error))
    }
}

/// How big each pool is and how long its connections may take: the same
/// for the primary's and every replica's.
#[derive(Clone, Copy)]
struct Sizing {
    max_connections: usize,
    wait_timeout: Duration,
    create_timeout: Duration,
    recycle_timeout: Duration,
    keepalive_idle: Duration,
}

impl Sizing {
    fn of(config: &DatabaseConfig) -> Self {
        Sizing {
            max_connections: config.max_connections,
            wait_timeout: config.wait_timeout,
            create_timeout: config.create_timeout,
            recycle_timeout: config.recycle_timeout,
            keepalive_idle: config.keepalive_idle,
        }
    }

    /// A pool, with its target and statement mode, for one server (the
    /// primary, or a replica with its own parameters and TLS).
    fn endpoint(
        self,
        mut postgres: tokio_postgres::Config,
        tls: TlsConfig,
        statements: StatementMode,
        plans: Option<PlanCacheMode>,
    ) -> Result<Endpoint> {
        if let Some(plans) = plans {
            if statements == StatementMode::Unnamed {
                return Err(Error::Config(format!(
                    "plan_cache_mode {} cannot be combined with statement_mode=unnamed: unnamed statements are \
                     planned at every run whatever the mode, and a pooler in transaction mode refuses the startup \
                     option that carries it (set it on the role instead: ALTER ROLE ... SET plan_cache_mode)",
                    plans.as_str()
                )));
            }
            plans.add_to(&mut postgres);
        }
        let connector = tls.connector()?;
        postgres.ssl_mode(tls.negotiation());
        postgres.keepalives(true).keepalives_idle(self.keepalive_idle);
        let target = Arc::new(ConnectTarget::of(&postgres, tls, connector));
        let manager = Manager::from_config(
            postgres,
            target.connector(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(self.max_connections)
            // The connection given back last is taken first: a session that
            // gives its connection back between reads takes the same one
            // again when no other request wants it, with its prepared
            // statements, and the idle ones stay idle.
            .queue_mode(QueueMode::Lifo)
            .wait_timeout(Some(self.wait_timeout))
            .create_timeout(Some(self.create_timeout))
            .recycle_timeout(Some(self.recycle_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        Ok(Endpoint { pool, target, statements: Statements::new(statements) })
    }
}

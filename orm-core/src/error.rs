//! The one error type of the crate, with a case for everything a caller acts on.

use std::fmt::Write as _;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::database::ConnectTarget;

/// The result type of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a session and the database.
///
/// The cases are the ones a caller decides on: retry a [`Error::SerializationFailure`]
/// (see [`Error::is_retryable`]), show a conflict for [`Error::StaleData`] or a
/// [`Error::UniqueViolation`], answer 404 for [`Error::NotFound`], and so on.
///
/// `Display` never includes PostgreSQL's `DETAIL` text, which echoes key values,
/// so an error may be logged without leaking data; the full driver error stays
/// reachable through [`std::error::Error::source`].
///
/// ```
/// # use orm_core::{Database, Entity, Error};
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Account {
///     #[orm(primary_key, generated)]
///     id: i64,
///     email: String,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE account (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);
/// #     INSERT INTO account (email) VALUES ('ann@example.com')").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// let signup = session.add(Account { id: 0, email: "ann@example.com".into() });
/// match session.flush().await {
///     Err(Error::UniqueViolation { constraint, .. }) => {
///         assert_eq!(constraint.as_deref(), Some("account_email_key")); // "email taken"
///         signup.write().email = "ann+2@example.com".into(); // still pending: fix it
///     }
///     other => panic!("expected a unique violation, got {other:?}"),
/// }
/// session.commit().await?; // the session stayed usable
/// assert!(signup.read().id > 1);
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A row looked up by key does not exist, or
    /// [`Query::one`](crate::Query::one) matched no row.
    #[error("{entity} with key {key} not found")]
    NotFound {
        /// The entity type's name.
        entity: &'static str,
        /// The key that was looked up, formatted with `Debug`; for a query,
        /// its `WHERE` clause with `$n` in place of the values.
        key: String,
    },

    /// [`Query::one`](crate::Query::one) or
    /// [`Query::optional`](crate::Query::optional) matched more than one row.
    #[error("the query for one {entity} matched more than one row")]
    MultipleRows {
        /// The entity type's name.
        entity: &'static str,
    },

    /// The columns of a raw query do not match the entity it is mapped to
    /// (see [`Session::query_raw`](crate::Session::query_raw)): it must
    /// return the entity's columns, with their names, in field order.
    #[error("raw query columns do not match {entity}: expected ({}), found ({})", expected.join(", "), found.join(", "))]
    ColumnMismatch {
        /// The entity type's name.
        entity: &'static str,
        /// The entity's column names, in field order.
        expected: Vec<&'static str>,
        /// The column names the statement returns.
        found: Vec<String>,
    },

    /// A statement ran more often in one session than the configured
    /// [`NPlusOne`](crate::NPlusOne) threshold allows, in
    /// [`NPlusOne::Error`](crate::NPlusOne::Error) mode: the sign of an N+1
    /// pattern (loading rows one at a time in a loop). The statement was not
    /// sent, and the session stays usable.
    #[error("N+1 query refused: one statement would run {count} times in this session; load the rows with one statement instead (Session::get_many, Column::is_in, or relationship loading). Statement: {statement}")]
    NPlusOne {
        /// The statement's text, with `$n` in place of its values.
        statement: String,
        /// How many times the statement would have run, counting this one.
        count: usize,
    },

    /// An UPDATE or DELETE matched fewer rows than it should: another
    /// transaction changed (version mismatch) or deleted these rows since they
    /// were loaded. Nothing of the flush was applied.
    #[error("stale data in {entity} (table {table}): expected {expected} row(s), matched {matched}; stale keys: {}", keys.join(", "))]
    StaleData {
        /// The entity type's name.
        entity: &'static str,
        /// The table the statement ran on.
        table: &'static str,
        /// The keys whose rows were not matched, formatted with `Debug`.
        keys: Vec<String>,
        /// How many rows the statement had to change.
        expected: usize,
        /// How many it did change.
        matched: usize,
    },

    /// A unique or primary-key constraint rejected a row.
    #[error("unique constraint {} violated on table {}", opt(.constraint.as_deref()), opt(.table.as_deref()))]
    UniqueViolation {
        /// The constraint's name.
        constraint: Option<String>,
        /// The table's name.
        table: Option<String>,
        /// The driver's error, with PostgreSQL's full report.
        source: tokio_postgres::Error,
    },

    /// A foreign-key constraint rejected a row (a missing parent, or a parent
    /// deleted while children still point at it).
    #[error("foreign key constraint {} violated on table {}", opt(.constraint.as_deref()), opt(.table.as_deref()))]
    ForeignKeyViolation {
        /// The constraint's name.
        constraint: Option<String>,
        /// The table's name.
        table: Option<String>,
        /// The driver's error, with PostgreSQL's full report.
        source: tokio_postgres::Error,
    },

    /// A NULL was written to a NOT NULL column.
    #[error("column {} of table {} may not be null", opt(.column.as_deref()), opt(.table.as_deref()))]
    NotNullViolation {
        /// The column's name.
        column: Option<String>,
        /// The table's name.
        table: Option<String>,
        /// The driver's error, with PostgreSQL's full report.
        source: tokio_postgres::Error,
    },

    /// A CHECK constraint rejected a row.
    #[error("check constraint {} violated on table {}", opt(.constraint.as_deref()), opt(.table.as_deref()))]
    CheckViolation {
        /// The constraint's name.
        constraint: Option<String>,
        /// The table's name.
        table: Option<String>,
        /// The driver's error, with PostgreSQL's full report.
        source: tokio_postgres::Error,
    },

    /// The transaction could not be serialized with a concurrent one; running
    /// the whole unit of work again may succeed.
    #[error("serialization failure: the transaction conflicted with a concurrent one")]
    SerializationFailure(#[source] tokio_postgres::Error),

    /// PostgreSQL broke a deadlock by aborting this transaction; running the
    /// whole unit of work again may succeed.
    #[error("deadlock detected: the transaction was aborted")]
    Deadlock(#[source] tokio_postgres::Error),

    /// No pooled connection became available in time: the pool is exhausted
    /// or the server does not answer.
    #[error("timed out {stage} for a database connection")]
    PoolTimeout {
        /// Which step timed out: waiting for a free slot, connecting, or recycling.
        stage: &'static str,
    },

    /// An open connection to the server broke (the server restarted, the
    /// backend was terminated, the network failed). Outside a transaction
    /// nothing is lost and the session's next statement takes a fresh
    /// connection; inside one, the transaction is gone and the session can
    /// only roll back ([`Error::TransactionFailed`] from then on). From a
    /// commit, it means the break came before `COMMIT` was sent (after, it
    /// is [`Error::CommitUnknown`]).
    #[error("database connection lost")]
    ConnectionLost(#[source] tokio_postgres::Error),

    /// A new connection could not be made: the server refused it (no such
    /// database or role, failed authentication, too many clients) or could
    /// not be reached. Names where the pool tried to connect, and as whom,
    /// so the configuration can be fixed; never the password.
    #[error("cannot connect to database {database:?} as user {user:?} at {host}:{port}: {reason}")]
    Connect {
        /// The host (or Unix socket directory) connected to; several,
        /// comma-separated, when the configuration lists several.
        host: String,
        /// The port of the first host.
        port: u16,
        /// The database asked for.
        database: String,
        /// The role connected as.
        user: String,
        /// Why it failed: the server's message and SQLSTATE (`database
        /// "x" does not exist (SQLSTATE 3D000)`), the network error, or
        /// what TLS had to do with it (`certificate not trusted by
        /// sslrootcert ...`, `host name mismatch: ...`, `server requires
        /// TLS: ...`; see [`TlsConfig`](crate::TlsConfig)).
        reason: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },

    /// A value sent to the database was refused as data: SQLSTATE class 22
    /// (data exception: text too long for its column, a number out of
    /// range, invalid input syntax, a NUL byte in text) or 54000 (a
    /// program limit, such as a value too large for an index). The input is
    /// at fault, not the program or the server: a web service answers 422.
    ///
    /// `Display` shows SQLSTATE and the server's message, never its
    /// `DETAIL`; for some codes (invalid input syntax, 22P02) the message
    /// itself quotes the refused input.
    #[error("bad data{}: {message} (SQLSTATE {sql_state})", column_of(.column.as_deref(), .table.as_deref()))]
    BadData {
        /// The SQLSTATE code, such as `22001` (string data right truncation).
        sql_state: String,
        /// The server's message.
        message: String,
        /// The column concerned, when the server names it.
        column: Option<String>,
        /// The table concerned, when the server names it.
        table: Option<String>,
        /// The driver's error, with PostgreSQL's full report.
        source: tokio_postgres::Error,
    },

    /// A value read from the database could not be converted to the field's
    /// type: the column's type does not fit the field, or a NULL was read
    /// into a field that is not an `Option`.
    #[error("cannot decode column {column} of {entity}: {}", decode_reason(.source))]
    Decode {
        /// The entity type's name.
        entity: &'static str,
        /// The column's name.
        column: &'static str,
        /// Why the conversion failed.
        source: tokio_postgres::Error,
    },

    /// A column of a statement's result has a database type that the
    /// entity's field cannot hold (an `i32` field for a `bigint` column,
    /// say). Found when the statement is prepared: it was not run.
    #[error("column {column} of {entity} has database type {found}, which its field's type cannot hold")]
    ColumnType {
        /// The entity type's name.
        entity: &'static str,
        /// The column's name.
        column: &'static str,
        /// The column's type in the database.
        found: String,
    },

    /// An INSERT wrote fewer rows than it was given: a trigger or rule on the
    /// table skipped some, so generated keys cannot be matched to objects.
    #[error("the insert into {table} wrote {inserted} of {expected} {entity} rows; a trigger or rule skipped some")]
    RowsNotInserted {
        /// The entity type's name.
        entity: &'static str,
        /// The table's name.
        table: &'static str,
        /// Rows the flush sent.
        expected: usize,
        /// Rows the database reported inserted.
        inserted: usize,
    },

    /// A value of a batch written by binary `COPY` could not be encoded as
    /// its column's type (a `Json<T>` whose value serde cannot serialize,
    /// say). Nothing of the flush was written; the objects stay pending.
    #[error("cannot encode column {column} of {entity} for COPY: {reason}")]
    Encode {
        /// The entity type's name.
        entity: &'static str,
        /// The column's name.
        column: &'static str,
        /// What the encoder said.
        reason: String,
    },

    /// The transaction was committed, but what the database returned could
    /// not be applied to the session's objects (the inner error says why).
    /// The data is in the database: running the unit of work again would
    /// write it twice.
    #[error("the transaction was committed, but its results could not be applied to the objects: {0}")]
    AfterCommit(Box<Error>),

    /// The connection broke after `COMMIT` was sent: the transaction may
    /// or may not have committed, and only the database can tell (look for
    /// what the unit of work wrote). Never run the unit of work again
    /// blindly: it could write twice. [`Database::transaction`] does not
    /// retry it.
    ///
    /// [`Database::transaction`]: crate::Database::transaction
    #[error("the connection broke after COMMIT was sent, so the transaction may or may not have committed (not retried): {0}")]
    CommitUnknown(Box<Error>),

    /// The entities do not match the database: what a
    /// [`SchemaCheck`](crate::SchemaCheck) found, every mismatch at once.
    #[error("the database does not match the entities:{}", list_mismatches(.0))]
    SchemaMismatch(Vec<crate::schema_check::SchemaMismatch>),

    /// An earlier statement of this session failed and its transaction is
    /// aborted; only [`Session::rollback`](crate::Session::rollback) (or
    /// dropping the session) is possible now.
    #[error("the session's transaction failed earlier and was rolled back; start a new session")]
    TransactionFailed,

    /// The primary key of a loaded entity was changed; keys identify rows and
    /// cannot be updated through the session.
    #[error("the primary key of {entity} {key} was changed; delete and add instead")]
    PrimaryKeyChanged {
        /// The entity type's name.
        entity: &'static str,
        /// The original key, formatted with `Debug`.
        key: String,
    },

    /// Pending inserts wait for each other's generated keys, or for a parent
    /// that is no longer pending: no order of inserts can satisfy them.
    #[error("cannot order the inserts into {}: they reference each other, or wait for a parent no longer in the session", .tables.join(", "))]
    DependencyCycle {
        /// The tables involved.
        tables: Vec<&'static str>,
    },

    /// A relation was read that the session has not loaded; load it first
    /// (with `load_children` or `load_parents`): reading it never runs SQL.
    #[error("relation {relation} of {entity} is not loaded")]
    RelationNotLoaded {
        /// The entity whose relation was read.
        entity: &'static str,
        /// The relation's name.
        relation: &'static str,
    },

    /// A handle was passed to a session that does not track it.
    #[error("this {entity} is not tracked by the session")]
    NotInSession {
        /// The entity type's name.
        entity: &'static str,
    },

    /// A session opened for a tenant
    /// ([`Database::session_for_tenant`](crate::Database::session_for_tenant))
    /// was asked to insert, change or delete a row of another tenant
    /// (or to move one to another tenant). The flush sent nothing; the
    /// work is still pending: fix or expunge the entity. An entity added
    /// with an `OnConflict` rule that updates
    /// ([`Session::add_on_conflict`](crate::Session::add_on_conflict)),
    /// whose key met a row of another tenant, fails the same way in any
    /// session: that row is left alone, and the flush's statements are
    /// rolled back with the rest of its work. (A trigger that skips such
    /// an upsert's row is reported the same way: the count the statement
    /// returns cannot tell the two apart.)
    #[error("this {entity} belongs to, or clashes with a row of, another tenant; nothing was written")]
    WrongTenant {
        /// The entity type's name.
        entity: &'static str,
    },

    /// The tenant a session was opened for is not of the type of an
    /// entity's tenant field (an `i32` for an `i64` field, say).
    #[error("the session's tenant is not of the type of {entity}'s tenant column `{column}`")]
    TenantType {
        /// The entity type's name.
        entity: &'static str,
        /// The tenant column.
        column: &'static str,
    },

    /// An entity added with an on-conflict rule
    /// ([`Session::add_on_conflict`](crate::Session::add_on_conflict)) met
    /// a row that the session already tracks through another handle (or
    /// that another entity of the same flush wrote), or an entity added
    /// with the key of one the session tracks was inserted because another
    /// writer had deleted that row: one row would have two instances. The
    /// flush failed and nothing of it was written; write through the
    /// tracked handle instead, or expunge it first.
    #[error("the upsert of {entity} {key} met a row the session already tracks through another handle; change that one instead")]
    AlreadyTracked {
        /// The entity type's name.
        entity: &'static str,
        /// The row's key, formatted with `Debug`.
        key: String,
    },

    /// A tracked entity was borrowed by a guard from [`Tracked::read`] or
    /// [`Tracked::write`](crate::Tracked::write) when the session or another
    /// borrow needed it: a guard held across an `.await` on the session (a
    /// flush fails this way before it sends anything), or a conflicting
    /// borrow on the same thread. Nothing waited for the guard; drop it,
    /// or write with [`Tracked::modify`](crate::Tracked::modify), and retry.
    ///
    /// [`Tracked::read`]: crate::Tracked::read
    #[error("{entity} {key} is borrowed {holder}: drop read()/write() guards before the next .await on the session (or use modify())")]
    Borrowed {
        /// The entity type's name.
        entity: &'static str,
        /// The entity's key in the identity map, formatted with `Debug`.
        key: String,
        /// Which thread holds the guard.
        holder: &'static str,
    },

    /// A [`Savepoint`](crate::Savepoint) was closed in a session where it
    /// is not open: it belongs to another session, or an enclosing
    /// savepoint was rolled back or released before it. Nothing was sent
    /// and the session is unchanged.
    #[error("this savepoint is not open in this session: it belongs to another session, or an enclosing savepoint was closed first")]
    SavepointNotOpen,

    /// A raw statement ([`Session::query_raw`](crate::Session::query_raw))
    /// returned a row for an instance with unflushed changes (or a pending
    /// deletion, or a pending change of parent), which refreshing it with
    /// the row would silently discard. No instance was changed; flush first
    /// (autoflush does), or read the rows untracked.
    #[error("a raw statement returned {entity} {key}, which has unflushed changes the row would overwrite: flush first, or use query_raw_untracked")]
    UnflushedChanges {
        /// The entity type's name.
        entity: &'static str,
        /// The instance's key, formatted with `Debug`.
        key: String,
    },

    /// A session opened with [`Database::read_session`](crate::Database::read_session)
    /// was asked to write entities (a flush or commit with pending
    /// changes). Nothing was sent, and the changes are still pending: write
    /// in a session from [`Database::session`](crate::Database::session).
    /// Raw SQL that writes in a read session is refused by the server
    /// instead, as a [`Error::Database`] with SQLSTATE 25006
    /// (`read_only_sql_transaction`).
    #[error("this session only reads (Database::read_session): write in a session from Database::session")]
    ReadOnlySession,

    /// A [`CommitToken`](crate::CommitToken)'s text was malformed; the
    /// message says what was given.
    #[error("{0}")]
    BadCommitToken(String),

    /// A hook ([`SessionEvents`](crate::SessionEvents) or
    /// [`EntityEvents`](crate::EntityEvents)) returned an error: `hook`
    /// names the method, `entity` the entity type of an entity hook, and
    /// `source` is the hook's own error (downcast it to the application's
    /// type). A `before_*` hook's error aborts the flush before anything is
    /// sent and leaves the work pending, as any failed flush does.
    #[error("the {hook} hook{} refused: {source}", of_entity(*.entity))]
    Hook {
        /// The hook method: `"before_flush"`, `"before_update"`, ...
        hook: &'static str,
        /// The entity type, for an entity hook.
        entity: Option<&'static str>,
        /// What the hook returned.
        source: crate::events::HookError,
    },

    /// A hook tried to flush the session that is running it (also through
    /// [`Session::begin_nested`](crate::Session::begin_nested)): the flush
    /// that runs the hook writes what the hook changes. Queries inside a
    /// hook do not autoflush.
    #[error("a hook tried to flush its own session; the flush running the hook writes what it changes")]
    FlushInHook,

    /// The pool could not be built or a connection could not be made; or a
    /// connection from it was inside a transaction block that hand-written
    /// SQL left open (through [`Database::pool`](crate::Database::pool) or
    /// [`Database::checkout`](crate::Database::checkout)), found when a
    /// commit's one statement ran there: that transaction is rolled back
    /// with the statement, and nothing of the unit of work is committed.
    #[error("connection pool: {0}")]
    Pool(String),

    /// The configuration is invalid (a malformed URL, say).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Raw SQL with `COPY ... FROM STDIN` or `COPY ... TO STDOUT`, refused
    /// before it is sent: the server would wait for (or send) a stream of
    /// rows that a statement's answer cannot carry, and the connection
    /// would hang. A flush sends large batches by `COPY` itself; for a copy
    /// of your own, use the driver's `copy_in` / `copy_out` on a connection
    /// from [`Database::checkout`](crate::Database::checkout).
    #[error("COPY ... FROM STDIN and COPY ... TO STDOUT cannot run as raw SQL: use copy_in / copy_out on a connection from Database::checkout")]
    CopyInRawSql,

    /// Any other error reported by the server or the driver. `Display`
    /// shows the server's message and SQLSTATE (never its `DETAIL`), or
    /// the driver's own message for an error that did not come from the
    /// server (a parameter that could not be encoded, say).
    #[error("database error: {}", database_reason(.0))]
    Database(#[source] tokio_postgres::Error),
}

fn opt(value: Option<&str>) -> &str {
    value.unwrap_or("?")
}

/// ` of entity E`, for an entity hook.
fn of_entity(entity: Option<&str>) -> String {
    entity.map(|entity| format!(" of {entity}")).unwrap_or_default()
}

/// ` in column c of table t`, for what the server named.
fn column_of(column: Option<&str>, table: Option<&str>) -> String {
    match (column, table) {
        (Some(column), Some(table)) => format!(" in column {column} of table {table}"),
        (Some(column), None) => format!(" in column {column}"),
        (None, Some(table)) => format!(" in table {table}"),
        (None, None) => String::new(),
    }
}

/// The server's message and SQLSTATE, or the driver's message. Not the
/// driver error's own `Display`, which appends the server's `DETAIL`.
fn database_reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        // The driver's own message only says which step failed
        // ("error serializing parameter 0"); its cause says why.
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

/// Why a value could not be decoded. A `FromSql` implementation's own
/// message may quote the value (`serde_json`'s does), so only the two
/// causes the driver reports as types are spelled out.
fn decode_reason(error: &tokio_postgres::Error) -> String {
    let cause = std::error::Error::source(error);
    if cause.is_some_and(<dyn std::error::Error>::is::<postgres_types::WasNull>) {
        "the value is NULL but the field is not an Option".to_owned()
    } else if let Some(wrong) = cause.and_then(|cause| cause.downcast_ref::<postgres_types::WrongType>()) {
        wrong.to_string()
    } else {
        "the field's type rejected the value".to_owned()
    }
}

/// One mismatch per line, for [`Error::SchemaMismatch`]'s message.
fn list_mismatches(mismatches: &[crate::schema_check::SchemaMismatch]) -> String {
    mismatches.iter().fold(String::new(), |mut list, mismatch| {
        let _ = write!(list, "\n  {mismatch}");
        list
    })
}

impl Error {
    /// The error of a commit whose `COMMIT` was sent: a broken connection
    /// leaves the outcome unknown ([`Error::CommitUnknown`]); any other
    /// error is the server's answer, so the transaction did not commit.
    pub(crate) fn after_commit_sent(self) -> Error {
        match self {
            Error::ConnectionLost(_) => Error::CommitUnknown(Box::new(self)),
            other => other,
        }
    }

    /// Whether running the same unit of work again in a new session may
    /// succeed: true for serialization failures, deadlocks and a connection
    /// lost (before `COMMIT` was sent: after, it is
    /// [`Error::CommitUnknown`], which is not). [`Database::transaction`]
    /// retries exactly these.
    ///
    /// [`Database::transaction`]: crate::Database::transaction
    ///
    /// ```
    /// # use orm_core::{Database, Error};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # let db = Database::connect(test_db.url())?;
    /// // What PostgreSQL reports when a SERIALIZABLE transaction conflicts.
    /// let conflict = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$";
    /// let error = db.session().execute(conflict, &[]).await.unwrap_err();
    /// assert!(matches!(error, Error::SerializationFailure(_)));
    /// assert!(error.is_retryable()); // run the unit of work again, in a new session
    ///
    /// let error = db.session().execute("SELECT 1/0", &[]).await.unwrap_err();
    /// assert!(!error.is_retryable()); // division by zero fails every time
    /// # Ok(()) }
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::SerializationFailure(_) | Error::Deadlock(_) | Error::ConnectionLost(_))
    }

    /// Which case this is, as a stable value for matching and metrics: a
    /// `match` on [`ErrorKind`] needs no fields, and
    /// [`ErrorKind::as_str`] gives a label that does not change between
    /// releases.
    ///
    /// ```
    /// # use orm_core::{Database, ErrorKind};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let error = session.execute("SELECT 'ten'::int", &[]).await.unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::BadData); // the input's fault: answer 422
    /// assert_eq!(error.kind().as_str(), "bad_data"); // a metrics label
    /// # Ok(()) }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::MultipleRows { .. } => ErrorKind::MultipleRows,
            Error::ColumnMismatch { .. } => ErrorKind::ColumnMismatch,
            Error::NPlusOne { .. } => ErrorKind::NPlusOne,
            Error::StaleData { .. } => ErrorKind::StaleData,
            Error::UniqueViolation { .. } => ErrorKind::UniqueViolation,
            Error::ForeignKeyViolation { .. } => ErrorKind::ForeignKeyViolation,
            Error::NotNullViolation { .. } => ErrorKind::NotNullViolation,
            Error::CheckViolation { .. } => ErrorKind::CheckViolation,
            Error::SerializationFailure(_) => ErrorKind::SerializationFailure,
            Error::Deadlock(_) => ErrorKind::Deadlock,
            Error::PoolTimeout { .. } => ErrorKind::PoolTimeout,
            Error::ConnectionLost(_) => ErrorKind::ConnectionLost,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::BadData { .. } => ErrorKind::BadData,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::ColumnType { .. } => ErrorKind::ColumnType,
            Error::RowsNotInserted { .. } => ErrorKind::RowsNotInserted,
            Error::Encode { .. } => ErrorKind::Encode,
            Error::AfterCommit(_) => ErrorKind::AfterCommit,
            Error::CommitUnknown(_) => ErrorKind::CommitUnknown,
            Error::SchemaMismatch(_) => ErrorKind::SchemaMismatch,
            Error::TransactionFailed => ErrorKind::TransactionFailed,
            Error::PrimaryKeyChanged { .. } => ErrorKind::PrimaryKeyChanged,
            Error::DependencyCycle { .. } => ErrorKind::DependencyCycle,
            Error::RelationNotLoaded { .. } => ErrorKind::RelationNotLoaded,
            Error::NotInSession { .. } => ErrorKind::NotInSession,
            Error::WrongTenant { .. } => ErrorKind::WrongTenant,
            Error::TenantType { .. } => ErrorKind::TenantType,
            Error::AlreadyTracked { .. } => ErrorKind::AlreadyTracked,
            Error::Borrowed { .. } => ErrorKind::Borrowed,
            Error::SavepointNotOpen => ErrorKind::SavepointNotOpen,
            Error::UnflushedChanges { .. } => ErrorKind::UnflushedChanges,
            Error::ReadOnlySession => ErrorKind::ReadOnlySession,
            Error::Hook { .. } => ErrorKind::Hook,
            Error::FlushInHook => ErrorKind::FlushInHook,
            Error::BadCommitToken(_) => ErrorKind::BadCommitToken,
            Error::Pool(_) => ErrorKind::Pool,
            Error::Config(_) => ErrorKind::Config,
            Error::CopyInRawSql => ErrorKind::CopyInRawSql,
            Error::Database(_) => ErrorKind::Database,
        }
    }

    /// The failure of a new connection to `target`, from the driver's error.
    pub(crate) fn connect(source: tokio_postgres::Error, target: &ConnectTarget) -> Self {
        // What TLS had to do with it, if anything; else the server's
        // message, or the network's (not the driver's own "error connecting
        // to server", which says nothing new).
        let reason = target.tls.explain(&source).unwrap_or_else(|| match std::error::Error::source(&source) {
            Some(cause) if source.as_db_error().is_none() && cause.is::<std::io::Error>() => cause.to_string(),
            _ => database_reason(&source),
        });
        Error::Connect {
            host: target.host.clone(),
            port: target.port,
            database: target.database.clone(),
            user: target.user.clone(),
            reason,
            source,
        }
    }

    /// Whether the server refused to run a statement it prepared before
    /// the type of a column it returns changed ("cached plan must not
    /// change result type"), which it refuses from then on. Told by the
    /// server's routine, which, unlike the message, is not translated.
    pub(crate) fn is_stale_plan(&self) -> bool {
        let db_error = self.driver_error().and_then(tokio_postgres::Error::as_db_error);
        db_error.is_some_and(|db_error| {
            *db_error.code() == SqlState::FEATURE_NOT_SUPPORTED && db_error.routine() == Some("RevalidateCachedQuery")
        })
    }

    /// The SQLSTATE code reported by PostgreSQL, if this error came from the server.
    pub fn sql_state(&self) -> Option<&SqlState> {
        self.driver_error().and_then(tokio_postgres::Error::as_db_error).map(tokio_postgres::error::DbError::code)
    }

    fn driver_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::UniqueViolation { source, .. }
            | Error::ForeignKeyViolation { source, .. }
            | Error::NotNullViolation { source, .. }
            | Error::CheckViolation { source, .. }
            | Error::Decode { source, .. }
            | Error::SerializationFailure(source)
            | Error::Deadlock(source)
            | Error::ConnectionLost(source)
            | Error::Connect { source, .. }
            | Error::BadData { source, .. }
            | Error::Database(source) => Some(source),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            return if error.is_closed()
                || std::error::Error::source(&error)
                    .is_some_and(<dyn std::error::Error + 'static>::is::<std::io::Error>)
            {
                Error::ConnectionLost(error)
            } else {
                Error::Database(error)
            };
        };
        let constraint = db.constraint().map(str::to_owned);
        let table = db.table().map(str::to_owned);
        let code = db.code().clone();
        if code == SqlState::UNIQUE_VIOLATION {
            Error::UniqueViolation { constraint, table, source: error }
        } else if code == SqlState::FOREIGN_KEY_VIOLATION {
            Error::ForeignKeyViolation { constraint, table, source: error }
        } else if code == SqlState::NOT_NULL_VIOLATION {
            let column = db.column().map(str::to_owned);
            Error::NotNullViolation { column, table, source: error }
        } else if code == SqlState::CHECK_VIOLATION {
            Error::CheckViolation { constraint, table, source: error }
        } else if code == SqlState::T_R_SERIALIZATION_FAILURE {
            Error::SerializationFailure(error)
        } else if code == SqlState::T_R_DEADLOCK_DETECTED {
            Error::Deadlock(error)
        } else if code == SqlState::ADMIN_SHUTDOWN || code == SqlState::CRASH_SHUTDOWN {
            Error::ConnectionLost(error)
        } else if code.code().starts_with("22") || code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            Error::BadData {
                sql_state: code.code().to_owned(),
                message: db.message().to_owned(),
                column: db.column().map(str::to_owned),
                table,
                source: error,
            }
        } else {
            Error::Database(error)
        }
    }
}

/// For `?` on `pool().get()` in hand-written code. The pool's error does not
/// say where it tried to connect, so a connection it could not open is
/// [`Error::ConnectionLost`] here; [`Database::checkout`](crate::Database::checkout)
/// and sessions report it as an [`Error::Connect`] naming host, port,
/// database and user.
impl From<PoolError> for Error {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Timeout(stage) => Error::PoolTimeout {
                stage: match stage {
                    TimeoutType::Wait => "waiting for a free connection",
                    TimeoutType::Create => "connecting",
                    TimeoutType::Recycle => "recycling a connection",
                },
            },
            // The pool failed to open a connection: whatever the server
            // said, the caller got no connection, and a server error from a
            // statement would mislead.
            PoolError::Backend(error) => Error::ConnectionLost(error),
            other => Error::Pool(other.to_string()),
        }
    }
}

/// Which case of [`Error`] an error is, without its fields: from
/// [`Error::kind`], for `match`es and metrics labels that must not change
/// when a case gains a field. New kinds may be added (it is
/// `#[non_exhaustive]`); existing ones keep their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::MultipleRows`].
    MultipleRows,
    /// [`Error::ColumnMismatch`].
    ColumnMismatch,
    /// [`Error::NPlusOne`].
    NPlusOne,
    /// [`Error::StaleData`].
    StaleData,
    /// [`Error::UniqueViolation`].
    UniqueViolation,
    /// [`Error::ForeignKeyViolation`].
    ForeignKeyViolation,
    /// [`Error::NotNullViolation`].
    NotNullViolation,
    /// [`Error::CheckViolation`].
    CheckViolation,
    /// [`Error::SerializationFailure`].
    SerializationFailure,
    /// [`Error::Deadlock`].
    Deadlock,
    /// [`Error::PoolTimeout`].
    PoolTimeout,
    /// [`Error::ConnectionLost`].
    ConnectionLost,
    /// [`Error::Connect`].
    Connect,
    /// [`Error::BadData`].
    BadData,
    /// [`Error::Decode`].
    Decode,
    /// [`Error::ColumnType`].
    ColumnType,
    /// [`Error::RowsNotInserted`].
    RowsNotInserted,
    /// [`Error::Encode`].
    Encode,
    /// [`Error::AfterCommit`].
    AfterCommit,
    /// [`Error::CommitUnknown`].
    CommitUnknown,
    /// [`Error::SchemaMismatch`].
    SchemaMismatch,
    /// [`Error::TransactionFailed`].
    TransactionFailed,
    /// [`Error::PrimaryKeyChanged`].
    PrimaryKeyChanged,
    /// [`Error::DependencyCycle`].
    DependencyCycle,
    /// [`Error::RelationNotLoaded`].
    RelationNotLoaded,
    /// [`Error::NotInSession`].
    NotInSession,
    /// [`Error::WrongTenant`].
    WrongTenant,
    /// [`Error::TenantType`].
    TenantType,
    /// [`Error::AlreadyTracked`].
    AlreadyTracked,
    /// [`Error::Borrowed`].
    Borrowed,
    /// [`Error::SavepointNotOpen`].
    SavepointNotOpen,
    /// [`Error::UnflushedChanges`].
    UnflushedChanges,
    /// [`Error::ReadOnlySession`].
    ReadOnlySession,
    /// [`Error::Hook`].
    Hook,
    /// [`Error::FlushInHook`].
    FlushInHook,
    /// [`Error::BadCommitToken`].
    BadCommitToken,
    /// [`Error::Pool`].
    Pool,
    /// [`Error::Config`].
    Config,
    /// [`Error::CopyInRawSql`].
    CopyInRawSql,
    /// [`Error::Database`].
    Database,
}

impl ErrorKind {
    /// The kind's stable snake-case name (`"not_found"`, `"bad_data"`,
    /// ...), for metrics labels and structured logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::MultipleRows => "multiple_rows",
            ErrorKind::ColumnMismatch => "column_mismatch",
            ErrorKind::NPlusOne => "n_plus_one",
            ErrorKind::StaleData => "stale_data",
            ErrorKind::UniqueViolation => "unique_violation",
            ErrorKind::ForeignKeyViolation => "foreign_key_violation",
            ErrorKind::NotNullViolation => "not_null_violation",
            ErrorKind::CheckViolation => "check_violation",
            ErrorKind::SerializationFailure => "serialization_failure",
            ErrorKind::Deadlock => "deadlock",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Connect => "connect",
            ErrorKind::BadData => "bad_data",
            ErrorKind::Decode => "decode",
            ErrorKind::ColumnType => "column_type",
            ErrorKind::RowsNotInserted => "rows_not_inserted",
            ErrorKind::Encode => "encode",
            ErrorKind::AfterCommit => "after_commit",
            ErrorKind::CommitUnknown => "commit_unknown",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::TransactionFailed => "transaction_failed",
            ErrorKind::PrimaryKeyChanged => "primary_key_changed",
            ErrorKind::DependencyCycle => "dependency_cycle",
            ErrorKind::RelationNotLoaded => "relation_not_loaded",
            ErrorKind::NotInSession => "not_in_session",
            ErrorKind::WrongTenant => "wrong_tenant",
            ErrorKind::TenantType => "tenant_type",
            ErrorKind::AlreadyTracked => "already_tracked",
            ErrorKind::Borrowed => "borrowed",
            ErrorKind::SavepointNotOpen => "savepoint_not_open",
            ErrorKind::UnflushedChanges => "unflushed_changes",
            ErrorKind::ReadOnlySession => "read_only_session",
            ErrorKind::Hook => "hook",
            ErrorKind::FlushInHook => "flush_in_hook",
            ErrorKind::BadCommitToken => "bad_commit_token",
            ErrorKind::Pool => "pool",
            ErrorKind::Config => "config",
            ErrorKind::CopyInRawSql => "copy_in_raw_sql",
            ErrorKind::Database => "database",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct_snake_case() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::MultipleRows,
            ErrorKind::ColumnMismatch,
            ErrorKind::NPlusOne,
            ErrorKind::StaleData,
            ErrorKind::UniqueViolation,
            ErrorKind::ForeignKeyViolation,
            ErrorKind::NotNullViolation,
            ErrorKind::CheckViolation,
            ErrorKind::SerializationFailure,
            ErrorKind::Deadlock,
            ErrorKind::PoolTimeout,
            ErrorKind::ConnectionLost,
            ErrorKind::Connect,
            ErrorKind::BadData,
            ErrorKind::Decode,
            ErrorKind::ColumnType,
            ErrorKind::RowsNotInserted,
            ErrorKind::Encode,
            ErrorKind::AfterCommit,
            ErrorKind::CommitUnknown,
            ErrorKind::SchemaMismatch,
            ErrorKind::TransactionFailed,
            ErrorKind::PrimaryKeyChanged,
            ErrorKind::DependencyCycle,
            ErrorKind::RelationNotLoaded,
            ErrorKind::NotInSession,
            ErrorKind::WrongTenant,
            ErrorKind::TenantType,
            ErrorKind::AlreadyTracked,
            ErrorKind::Borrowed,
            ErrorKind::SavepointNotOpen,
            ErrorKind::UnflushedChanges,
            ErrorKind::ReadOnlySession,
            ErrorKind::Hook,
            ErrorKind::FlushInHook,
            ErrorKind::BadCommitToken,
            ErrorKind::Pool,
            ErrorKind::Config,
            ErrorKind::CopyInRawSql,
            ErrorKind::Database,
        ];
        let names: std::collections::HashSet<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(names.len(), kinds.len(), "two kinds share a name");
        for name in names {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "not snake_case: {name}");
        }
        assert_eq!(ErrorKind::StaleData.to_string(), "stale_data");
    }

    #[test]
    fn kinds_of_fieldless_cases() {
        assert_eq!(Error::TransactionFailed.kind(), ErrorKind::TransactionFailed);
        assert_eq!(Error::Config("x".into()).kind().as_str(), "config");
        let after = Error::AfterCommit(Box::new(Error::NotInSession { entity: "E" }));
        assert_eq!(after.kind(), ErrorKind::AfterCommit);
    }
}

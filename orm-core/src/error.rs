//! The one error type of the crate, with a case for everything a caller acts on.

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

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

    /// The connection to the server was lost or could not be made.
    #[error("database connection lost")]
    ConnectionLost(#[source] tokio_postgres::Error),

    /// A value read from the database could not be converted to the field's type.
    #[error("cannot decode column {column} of {entity}")]
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

    /// The transaction was committed, but what the database returned could
    /// not be applied to the session's objects (the inner error says why).
    /// The data is in the database: running the unit of work again would
    /// write it twice.
    #[error("the transaction was committed, but its results could not be applied to the objects: {0}")]
    AfterCommit(Box<Error>),

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

    /// The pool could not be built or a connection could not be made.
    #[error("connection pool: {0}")]
    Pool(String),

    /// The configuration is invalid (a malformed URL, say).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Any other error reported by the server or the driver.
    #[error("database error{}", .0.as_db_error().map(|e| format!(" {}: {}", e.code().code(), e.message())).unwrap_or_default())]
    Database(#[source] tokio_postgres::Error),
}

fn opt(value: Option<&str>) -> &str {
    value.unwrap_or("?")
}

impl Error {
    /// Whether running the same unit of work again in a new session may
    /// succeed: true for serialization failures and deadlocks.
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
        matches!(self, Error::SerializationFailure(_) | Error::Deadlock(_))
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
        } else {
            Error::Database(error)
        }
    }
}

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
            // said (no such database, too many clients, starting up), the
            // caller got no connection, and a server error from a statement
            // would mislead.
            PoolError::Backend(error) => Error::ConnectionLost(error),
            other => Error::Pool(other.to_string()),
        }
    }
}

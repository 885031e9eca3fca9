//! The session's connection: checked out lazily, inside one transaction, with
//! transaction control pipelined together with the statements it guards, and
//! handed back clean on every path, including a cancelled future.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use deadpool_postgres::{Object, Pool};
use futures_util::future::{join, maybe_done, try_join_all, MaybeDone};
use futures_util::{FutureExt, SinkExt, TryStreamExt};
use smallvec::SmallVec;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, SimpleQueryMessage};
use tracing::Instrument;

use crate::commit_token::CommitToken;
use crate::database::ConnectTarget;
use crate::error::{Error, Result};
use crate::flush::CopyTargets;
use crate::isolation::IsolationLevel;
use crate::poll_budget::ROWS_PER_YIELD;
use crate::raw_sql::RawSql;
use crate::replicas::{Replicas, ServedBy};
use crate::statement_mode::{Description, ResultColumns, Statements};
use crate::stats::SessionStats;
use crate::telemetry::{Pipeline, StatementSpan, Telemetry};
use crate::tls::Connector;
use crate::transaction_mark;
use crate::types::{EncodeBuffer, Encoded, Param, YIELD_AFTER_BYTES};

/// One statement of a pipelined batch.
pub(crate) struct Statement {
    /// Borrowed when the text is built once per entity type (a one-row
    /// insert's), so a short request's flush does not copy it.
    pub(crate) sql: Cow<'static, str>,
    pub(crate) params: Vec<Param>,
    /// Whether the statement returns rows (a SELECT, or DML with RETURNING).
    pub(crate) returns_rows: bool,
    /// Checks the statement's result columns before anything of the batch
    /// runs: a result the objects could not take must not be committed
    /// first and refused afterwards.
    pub(crate) check: Option<Check>,
    /// For a `COPY ... FROM STDIN (FORMAT binary)`: its rows, in that format.
    pub(crate) copy: Option<Bytes>,
    /// For a batched write that returns the keys of the input rows it did
    /// not match, instead of those it wrote: how many rows it was given.
    /// Its outcome is [`Outcome::Unmatched`], and the rows it wrote count
    /// in [`SessionStats::rows`].
    pub(crate) unmatched_of: Option<u64>,
}

impl Statement {
    /// A statement with no result check and no `COPY` rows.
    pub(crate) fn new(sql: impl Into<Cow<'static, str>>, params: Vec<Param>, returns_rows: bool) -> Self {
        Statement { sql: sql.into(), params, returns_rows, check: None, copy: None, unmatched_of: None }
    }

    /// A batched write of `rows` input rows that returns the keys of those
    /// it did not match (see [`unmatched_of`](Self::unmatched_of)).
    pub(crate) fn reporting_unmatched(sql: impl Into<Cow<'static, str>>, params: Vec<Param>, rows: usize) -> Self {
        Statement { unmatched_of: Some(rows as u64), ..Statement::new(sql, params, true) }
    }
}

/// Checks a statement's result columns, as the server described them,
/// before the statement runs.
pub(crate) type Check = fn(ResultColumns<'_>) -> Result<()>;

/// A statement ready to run: prepared by name (and cached on the
/// connection), or described, to run as the unnamed statement (see
/// [`StatementMode`](crate::StatementMode)).
enum Ready {
    Named(tokio_postgres::Statement),
    Unnamed(Arc<Description>),
}

impl Ready {
    /// The types its parameters are sent as.
    fn params(&self) -> &[Type] {
        match self {
            Ready::Named(statement) => statement.params(),
            Ready::Unnamed(description) => &description.params,
        }
    }

    fn check(&self, check: Check) -> Result<()> {
        match self {
            Ready::Named(statement) => check(ResultColumns::Prepared(statement.columns())),
            Ready::Unnamed(description) => check(ResultColumns::Described(&description.columns)),
        }
    }
}

/// What one statement of a batch produced.
pub(crate) enum Outcome {
    Rows(Vec<Row>),
    Count(u64),
    /// What a statement that reports the input rows it did not match
    /// returned (see [`Statement::unmatched_of`]): the keys of those rows.
    Unmatched {
        expected: u64,
        keys: Vec<Row>,
    },
}

impl Outcome {
    /// The rows a statement returned, or else affected.
    pub(crate) fn rows(&self) -> u64 {
        match self {
            Outcome::Rows(rows) => rows.len() as u64,
            Outcome::Count(count) => *count,
            Outcome::Unmatched { expected, keys } => expected.saturating_sub(keys.len() as u64),
        }
    }
}

/// The pooled connection of one session and the state of its transaction.
pub(crate) struct SessionConnection {
    pool: Pool,
    /// Where the pool connects, to name in a connection failure.
    target: Arc<ConnectTarget>,
    client: Option<Object>,
    in_transaction: bool,
    /// A statement failed and the transaction was not recovered: only rollback remains.
    failed: bool,
    /// A request is on the wire and its future has not completed yet. If the
    /// session is dropped now, the server is still running that statement.
    in_flight: bool,
    /// The savepoint of the last successful flush is still open. It is
    /// released by the next statement that needs it gone (the next flush, a
    /// nested savepoint) instead of costing a round trip of its own.
    flush_savepoint_open: bool,
    /// The isolation level the transaction begins with; `None` for the
    /// server's default.
    isolation: Option<IsolationLevel>,
    /// The transaction holds nothing of the session's yet: its `BEGIN` was
    /// confirmed alone and the one statement sent after it is unanswered.
    fresh_transaction: bool,
    /// A statement of the transaction had rows left unread (a row failed
    /// to decode, a stream was dropped): an error after them, which aborted
    /// the transaction, went unseen, and a `COMMIT` of an aborted
    /// transaction rolls back without an error. The commit checks first.
    rows_unread: bool,
    /// The application's own SQL ran on the connection (see
    /// [`raw_statement`](Self::raw_statement)): it may have left state there
    /// that outlives the transaction, which is reset before the connection
    /// goes back to the pool.
    raw_ran: bool,
    /// How many times the session sent what may change rows (a flush, the
    /// application's SQL not marked read-only, a locking read, transaction
    /// control): what its loads found missing holds only while this stays
    /// (see [`writes`](Self::writes)).
    writes: u64,
    /// Whether the last batch sent all its statements (see `batch_sent`).
    batch_sent: bool,
    /// What [`AFTER_ALONE`] found: the statement that ran alone ran
    /// inside a transaction block it did not know of.
    ran_inside_transaction: bool,
    /// A flush is applying its results to the session's objects across
    /// yields to the runtime (see `set_applying`).
    applying: bool,
    /// A flush with work to do began and has not ended: its future may
    /// have been dropped, leaving state of it in the session's registries
    /// (see `begin_flush_with_work`).
    flush_unended: bool,
    /// Whether statements are prepared by name or run unnamed.
    statements: Statements,
    /// For a read session: the replicas it may read from, and the commit
    /// it must see. `pool`, `target` and `statements` are then those of
    /// the server its connection came from.
    read: Option<(Arc<Replicas>, Option<CommitToken>)>,
    /// The server of the last connection taken.
    served_by: Option<ServedBy>,
    /// Whether a `COMMIT` reads the primary's log position after it.
    want_commit_token: bool,
    /// What the last `COMMIT` read, with `want_commit_token`.
    commit_token: Option<CommitToken>,
    /// The spans and slow-statement warnings of its statements.
    telemetry: Arc<Telemetry>,
    /// Which tables take large insert batches by `COPY`, shared by the pool's sessions.
    copy_targets: Arc<CopyTargets>,
}

/// A `COMMIT` followed, in the same message, by the log position it left
/// the primary at: the insert position, which is at or after the end of
/// the commit record even when `synchronous_commit` is off (the write
/// position may not be yet). It may be past the end of the log a replica
/// can replay (a commit that ends a log page, and concurrent writers): a
/// session holding the token then reads from the primary, never from a
/// replica that lacks the commit.
const COMMIT_WITH_TOKEN: &str = "COMMIT; SELECT pg_current_wal_insert_lsn()";

/// Read right behind a statement that ran alone (see
/// [`SessionConnection::run_alone`]), in its round trip: whether the
/// connection was inside a transaction block after all (one a
/// hand-written client gave back open), where the statement's write would
/// wait, uncommitted. A statement alone leaves no transaction id behind,
/// and a transaction of its own (this `SELECT`'s) starts with it; a
/// transaction block started before. Only core functions, which any
/// PostgreSQL runs.
const AFTER_ALONE: &str =
    "SELECT pg_current_xact_id_if_assigned() IS NOT NULL OR transaction_timestamp() <> statement_timestamp()";

/// Sent before a `COMMIT` when rows were left unread in the transaction
/// (see `rows_unread`): in an aborted transaction it fails, and the
/// `COMMIT` after it in the same query string is not run. No rows, so that
/// the commit's answer reads as without it.
const ABORTED_CHECK: &str = "SELECT WHERE false; ";

/// [`AFTER_ALONE`] with the log position, as [`COMMIT_WITH_TOKEN`] reads
/// it (the statement committed before this ran), for a commit token.
const AFTER_ALONE_WITH_TOKEN: &str = "SELECT pg_current_xact_id_if_assigned() IS NOT NULL \
     OR transaction_timestamp() <> statement_timestamp(), pg_current_wal_insert_lsn()";

/// Resets what the application's own SQL may have left on a connection
/// beyond its transaction, before the pool hands it to another session:
/// settings (`SET`, `set_config(.., false)`, a role), cursors held open,
/// `LISTEN`s, session advisory locks and temporary tables. `DISCARD ALL`
/// without `DEALLOCATE ALL`, which would drop the statements the driver
/// keeps prepared on the connection. Settings go back to the connection's
/// own (those of its connection string). Every statement of it runs on a
/// replica too: one refused would undo the settings' reset with it.
const RESET_SESSION: &str = "RESET ALL; SET SESSION AUTHORIZATION DEFAULT; CLOSE ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// Whether `after` is the check behind a statement alone.
fn checks_alone(after: Option<&str>) -> bool {
    matches!(after, Some(AFTER_ALONE | AFTER_ALONE_WITH_TOKEN))
}

/// The error of `after`, the statement that followed a batch's own. After
/// [`AFTER_ALONE`], the statement alone before it was answered, but
/// whether it committed is what the check would have told: inside a
/// transaction block someone left open, a lost connection took its write
/// with it. So its outcome is unknown.
fn after_failed(after: Option<&str>, error: Error) -> Error {
    if checks_alone(after) {
        Error::CommitUnknown(Box::new(error))
    } else {
        error
    }
}

/// Whether a statement may change data, which decides whether it needs the
/// session's transaction.
///
/// Under READ COMMITTED every statement reads its own snapshot, inside a
/// transaction or not, so an ORM read (which takes no locks) before the
/// session's first write sees the same data outside one. A read-only unit
/// of work then costs what a bare prepared statement costs, with no BEGIN
/// and COMMIT for the server to run; the transaction begins with the first
/// write, and BEGIN travels with it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// An ORM load: runs inside the transaction if one is open, else alone.
    Read,
    /// A read that must run inside the transaction (a locking read, a
    /// cursor) but writes nothing: opens the transaction if needed, `BEGIN`
    /// travelling with it.
    Lock,
    /// A write the ORM built with the transaction guard (see
    /// [`transaction_mark`](crate::transaction_mark)): opens the
    /// transaction if needed, `BEGIN` travelling with it.
    Write,
    /// A statement that may write and carries no guard (raw SQL, a bulk
    /// update or delete by filter): a `BEGIN` it needs is confirmed in a
    /// round trip of its own before the statement is sent.
    RawWrite,
}

const FLUSH_SAVEPOINT: &str = "orm_flush";

impl SessionConnection {
    pub(crate) fn new(
        pool: Pool,
        target: Arc<ConnectTarget>,
        isolation: Option<IsolationLevel>,
        statements: Statements,
        telemetry: Arc<Telemetry>,
        copy_targets: Arc<CopyTargets>,
    ) -> Self {
        SessionConnection {
            pool,
            target,
            client: None,
            in_transaction: false,
            fresh_transaction: false,
            rows_unread: false,
            raw_ran: false,
            writes: 0,
            failed: false,
            in_flight: false,
            flush_savepoint_open: false,
            isolation,
            batch_sent: false,
            ran_inside_transaction: false,
            applying: false,
            flush_unended: false,
            statements,
            read: None,
            served_by: None,
            want_commit_token: false,
            commit_token: None,
            telemetry,
            copy_targets,
        }
    }

    /// Makes this a read session's connection: taken from `replicas` (or
    /// the primary when none fits, see [`Replicas::checkout`]), with a
    /// read-only transaction.
    pub(crate) fn reading(mut self, replicas: Arc<Replicas>, token: Option<CommitToken>) -> Self {
        self.read = Some((replicas, token));
        self
    }

    /// Which tables of the pool's database take large insert batches by `COPY`.
    pub(crate) fn copy_targets(&self) -> Arc<CopyTargets> {
        self.copy_targets.clone()
    }

    /// Whether statements run unnamed, as for a pooler in transaction mode.
    pub(crate) fn unnamed_statements(&self) -> bool {
        matches!(self.statements, Statements::Unnamed(_))
    }

    /// Whether this is a read session's connection.
    pub(crate) fn read_only(&self) -> bool {
        self.read.is_some()
    }

    /// The server of the last connection taken, if any was.
    pub(crate) fn served_by(&self) -> Option<ServedBy> {
        self.served_by
    }

    /// Asks the next `COMMIT` for the primary's log position after it (see
    /// [`commit_sql`](Self::commit_sql)); not a read session's, which
    /// writes nothing to wait for, and whose replica could not tell.
    pub(crate) fn want_commit_token(&mut self) {
        self.want_commit_token = self.read.is_none();
    }

    /// The log position the last `COMMIT` left the primary at, if it was
    /// asked for and a transaction was committed.
    pub(crate) fn commit_token(&self) -> Option<CommitToken> {
        self.commit_token
    }

    /// The statement that commits the transaction.
    pub(crate) fn commit_sql(&self) -> &'static str {
        if self.want_commit_token {
            COMMIT_WITH_TOKEN
        } else {
            "COMMIT"
        }
    }

    /// Records the commit token in `answer`, the answer to `sql`: a
    /// `COMMIT` (with the token's `SELECT`), or the check behind a
    /// statement alone, which also says whether that statement ran inside
    /// a transaction block.
    fn commit_answered(&mut self, sql: &str, answer: &[SimpleQueryMessage]) {
        let row = answer.iter().find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        // `get` panics on a column the row lacks.
        let column = |n| row.and_then(|row| row.try_get(n).ok().flatten());
        let position = if checks_alone(Some(sql)) {
            self.ran_inside_transaction = column(0) == Some("t");
            column(1)
        } else {
            column(0)
        };
        match position.map(|lsn| CommitToken::parse_lsn(lsn, "log position")) {
            Some(Ok(token)) => self.commit_token = Some(token),
            Some(Err(error)) => tracing::warn!(%error, "the commit's log position could not be read"),
            None => {}
        }
    }

    /// The statement that opens the session's transaction: read-only in a
    /// read session, which the server then refuses to write in, on the
    /// primary as on a replica.
    fn begin_sql(&self) -> &'static str {
        if self.read.is_some() {
            IsolationLevel::begin_read_only(self.isolation)
        } else {
            self.isolation.map_or(transaction_mark::BEGIN, IsolationLevel::begin)
        }
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Whether a commit whose flush is one statement may send it alone, as
    /// its own transaction (see [`run_alone`](Self::run_alone)): no
    /// transaction is open (nothing the session sent is waiting for a
    /// `COMMIT`), and the session asked for no isolation level (an
    /// autocommitted statement runs at the server's default, as a plain
    /// `BEGIN` does).
    pub(crate) fn may_run_alone(&self) -> bool {
        !self.in_transaction && self.isolation.is_none() && self.read.is_none()
    }

    /// Whether only a rollback remains: a statement failed, or one was
    /// abandoned mid-flight (its future dropped, by a timeout say), so what
    /// the transaction holds is unknown.
    pub(crate) fn failed(&self) -> bool {
        self.failed || self.applying || (self.in_flight && self.in_transaction && !self.fresh_transaction)
    }

    /// Marks (and, with `false`, unmarks) the stretch of a flush between
    /// its statements' answers and their results being on the objects,
    /// which it spends binding and applying a chunk of rows at a time,
    /// yielding to the runtime in between. A flush cut off there (its future
    /// dropped) leaves objects that disagree with what the transaction
    /// holds (rows inserted but still pending, some neither pending nor in
    /// the identity map), so the session can then only roll back, as after
    /// a statement cut off mid-flight. The flush unmarks it before each
    /// statement of its own.
    pub(crate) fn set_applying(&mut self, applying: bool) {
        self.applying = applying;
    }

    /// Called as a flush begins: if the last one was cut off while it
    /// applied its results (still marked by `set_applying`), the session's
    /// objects and its transaction disagree for good, so only a rollback
    /// remains, whatever this flush does (it unmarks `applying` as it goes).
    pub(crate) fn poison_if_applying(&mut self) {
        if self.applying {
            self.poison();
        }
    }

    /// Notes that a flush with work to do begins: from now on, until
    /// [`take_unended_flush`](Self::take_unended_flush) at its end, the
    /// registries may hold its state (what it keeps between round trips),
    /// which the next flush must clear even if that one has nothing to do.
    pub(crate) fn begin_flush_with_work(&mut self) {
        self.flush_unended = true;
    }

    /// Whether a flush with work began since the last call (see
    /// [`begin_flush_with_work`](Self::begin_flush_with_work)), ended or
    /// cut off: only then do the registries hold state of a flush.
    pub(crate) fn take_unended_flush(&mut self) -> bool {
        std::mem::take(&mut self.flush_unended)
    }

    /// Whether a flush with work began and has not ended since: its
    /// future was dropped before it did.
    pub(crate) fn flush_unended(&self) -> bool {
        self.flush_unended
    }

    /// Leaves the transaction only a rollback: what it holds and what the
    /// session's objects say disagree.
    pub(crate) fn poison(&mut self) {
        self.failed |= self.in_transaction;
    }

    /// Checks a connection out of the pool on first use.
    async fn checkout(&mut self) -> Result<()> {
        if self.in_flight {
            self.abandon();
        }
        if self.failed || self.applying {
            return Err(Error::TransactionFailed);
        }
        // A connection that broke since the last statement (the server
        // restarted, say) held no transaction: nothing is lost by taking
        // another. Inside a transaction the next statement reports the loss.
        if !self.in_transaction && self.client.as_ref().is_some_and(|client| client.is_closed()) {
            self.discard_connection();
        }
        if self.client.is_none() {
            let client = if let Some((replicas, token)) = &self.read {
                let (client, endpoint, served_by) = replicas.checkout(*token).await?;
                self.pool = endpoint.pool;
                self.target = endpoint.target;
                self.statements = endpoint.statements;
                self.served_by = Some(served_by);
                client
            } else {
                let client = self.pool.get().await.map_err(|error| self.target.error(error))?;
                self.served_by = Some(ServedBy::Primary);
                client
            };
            self.client = Some(client);
        }
        Ok(())
    }

    /// Records a statement that failed on the server or on its way there.
    /// PostgreSQL aborts the whole transaction on any error, so inside one
    /// only a rollback (to a savepoint, see `recover`) remains. Outside one
    /// nothing was lost, and a connection that broke is let go, so that the
    /// session's next statement takes a fresh one from the pool.
    ///
    /// A statement prepared before a migration changed the type of a column
    /// it returns fails from then on ("cached plan must not change result
    /// type"), and so would every statement the connection prepared over
    /// that table: the connection forgets all it prepared, so that one
    /// statement fails instead of every later one until it closes.
    fn statement_failed(&mut self, error: &Error) {
        if let (Some((replicas, _)), Some(ServedBy::Replica(index)), Error::ConnectionLost(_)) =
            (&self.read, self.served_by, error)
        {
            replicas.lost(index, &error.to_string());
        }
        if let (Some(client), true) = (&self.client, error.is_stale_plan()) {
            client.statement_cache.clear();
        }
        if self.in_transaction {
            self.failed = true;
        } else if matches!(error, Error::ConnectionLost(_)) {
            self.discard_connection();
        }
    }

    /// Gives up the session's connection for good: detached from the pool,
    /// which frees its slot at once and never hands it out again.
    fn discard_connection(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }

    /// Runs `statements` in one round trip (plus one to prepare statements not
    /// yet cached on this connection). `BEGIN` goes first when no transaction
    /// is open, then `before`, the statements, and `after` (for instance
    /// `COMMIT`), which is sent only if every statement was: see
    /// [`after_sent`](Self::after_sent). Returns the first error in wire
    /// order; recovery is the caller's.
    pub(crate) async fn run_batch(
        &mut self,
        before: Option<&str>,
        statements: &[Statement],
        after: Option<&str>,
        stats: &mut SessionStats,
    ) -> Result<Vec<Outcome>> {
        self.writes += 1;
        // Pipelined behind a `BEGIN` that may fail, each must write only
        // inside the transaction (see `transaction_mark`). A `COPY` cannot
        // carry the guard: the flush sends one into a table only after a
        // round trip that opened the transaction (the one that took its
        // keys); one into a temporary table of its own writes nothing that
        // outlives the connection's session.
        debug_assert!(
            statements.iter().all(|statement| if statement.copy.is_some() {
                self.in_transaction || statement.sql.starts_with("COPY pg_temp.")
            } else {
                statement.sql.contains(transaction_mark::IN_UNIT_OF_WORK)
            }),
            "a flush statement that could write outside the transaction"
        );
        self.send_batch(!self.in_transaction, before, statements, after, stats).await
    }

    /// Runs a unit of work's only write as its own transaction: no
    /// `BEGIN`, mark or `COMMIT` for the server to run, which is all a
    /// statement that writes all its rows or fails as a whole needs. Its
    /// text carries no guard ([`Guard::Alone`](crate::transaction_mark::Guard::Alone)).
    /// Once [`batch_sent`](Self::batch_sent), it may have committed. The
    /// commit token is read after it, in the same round trip, with a check
    /// that it did commit: a connection given back to the pool inside a
    /// transaction block (by hand-written SQL on a connection from
    /// [`Database::pool`](crate::Database::pool)) would have held the
    /// write uncommitted. That is an error, and the transaction is rolled
    /// back, write and all, before the connection is used again.
    pub(crate) async fn run_alone(
        &mut self,
        statement: &[Statement],
        stats: &mut SessionStats,
    ) -> Result<Vec<Outcome>> {
        self.writes += 1;
        debug_assert!(
            !self.in_transaction && statement.len() == 1 && statement[0].copy.is_none(),
            "only one statement, and no transaction, may run alone"
        );
        let after = if self.want_commit_token { AFTER_ALONE_WITH_TOKEN } else { AFTER_ALONE };
        let outcomes = self.send_batch(false, None, statement, Some(after), stats).await;
        if std::mem::take(&mut self.ran_inside_transaction) {
            self.commit_token = None;
            return Err(Error::Pool(
                "the connection was inside a transaction someone gave it back with (hand-written SQL through \
                 `Database::pool` or `Database::checkout`?): the unit of work's statement ran inside it, \
                 uncommitted, and is rolled back with it"
                    .to_owned(),
            ));
        }
        outcomes
    }

    /// Runs independent loads (statements that return rows) in one round
    /// trip, pipelined, as [`run_batch`](Self::run_batch) does, opening
    /// the transaction only as a single load of that `access` would (see
    /// [`Access`]): a group of plain reads before the session's first write
    /// sends no `BEGIN`.
    pub(crate) async fn run_loads(
        &mut self,
        statements: &[Statement],
        access: Access,
        stats: &mut SessionStats,
    ) -> Result<Vec<Outcome>> {
        self.count_access(access);
        let begin = self.opens_transaction(access);
        let outcomes = self.send_batch(begin, None, statements, None, stats).await;
        self.release_between_statements();
        outcomes
    }

    /// Gives the connection back to the pool after a statement outside a
    /// transaction, as soon as its answer (rows or error) is in: nothing
    /// on the server ties the session to that connection any more, and a
    /// request that renders its page after its load no longer keeps a
    /// connection from the requests waiting for one. The next statement
    /// takes one again. A read session keeps its connection, so that a
    /// second read cannot land on a replica further behind than the first
    /// one's. Rows dropped unread (see [`rows_dropped`](Self::rows_dropped))
    /// keep it too: the connection still reads them.
    fn release_between_statements(&mut self) {
        if !self.in_transaction && !self.in_flight && self.read.is_none() {
            self.give_back();
        }
    }

    /// A count that moves whenever the session sends what may change rows:
    /// a row a load did not find is still missing while it has not moved
    /// (rows other transactions commit meanwhile aside, as for any load).
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Counts a statement of `access` in [`writes`](Self::writes).
    fn count_access(&mut self, access: Access) {
        if access != Access::Read {
            self.writes += 1;
        }
    }

    /// Records that the application's own SQL is about to run on the
    /// session's connection, so that what it may leave there beyond the
    /// transaction is reset before the connection goes back to the pool.
    pub(crate) fn raw_statement(&mut self) {
        self.raw_ran = true;
    }

    /// Returns the connection, outside any transaction, to the pool; reset
    /// first (queued ahead of its next borrower's statements) if the
    /// application's own SQL ran on it. Not through a transaction pooler (the
    /// unnamed mode): the reset would land on whichever server connection
    /// the pooler picks, another client's.
    fn give_back(&mut self) {
        let Some(client) = self.client.take() else { return };
        if std::mem::take(&mut self.raw_ran) && !self.unnamed_statements() && !queue(&client, RESET_SESSION) {
            drop(Object::take(client));
        }
    }

    /// Whether a statement of `access` must open the transaction first: a
    /// write does, and a read does when the isolation level makes reads
    /// share the transaction's snapshot.
    fn opens_transaction(&self, access: Access) -> bool {
        let reads_in_transaction = self.isolation.is_some_and(IsolationLevel::reads_in_transaction);
        !self.in_transaction && (access != Access::Read || reads_in_transaction)
    }

    /// [`run_batch`](Self::run_batch), with `BEGIN` first if `begin`.
    async fn send_batch(
        &mut self,
        begin: bool,
        before: Option<&str>,
        statements: &[Statement],
        after: Option<&str>,
        stats: &mut SessionStats,
    ) -> Result<Vec<Outcome>> {
        self.batch_sent = false;
        self.fresh_transaction = false;
        // Formatted only to join two parts: a lone `BEGIN` or `before` is borrowed.
        let prefix: Option<Cow<'_, str>> = match (begin, before) {
            (true, Some(before)) => Some(format!("{}; {before}", self.begin_sql()).into()),
            (true, None) => Some(self.begin_sql().into()),
            (false, before) => before.map(Cow::Borrowed),
        };
        // If the batch fails before it is sent, `before` never reaches the
        // server: a flush savepoint it would have opened is not open (see
        // `recover_flush_savepoint`). Without `before`, one that an earlier
        // round trip of the same flush opened still is.
        let unsent = |connection: &mut Self| {
            connection.in_flight = false;
            if before.is_some() {
                connection.flush_savepoint_open = false;
            }
        };
        if let Err(error) = self.checkout().await {
            unsent(self);
            return Err(error);
        }
        let client = self.client.as_ref().ok_or(Error::TransactionFailed)?;
        self.in_flight = true;
        let has_prefix = prefix.is_some();
        // The prefix is queued ahead of the statements this batch must
        // prepare: a prepare that fails inside the transaction (a column the
        // table lacks, say) aborts it, and only the savepoint the prefix
        // opens lets recovery make it usable again without losing earlier
        // work. Cached statements need no prepare, so the prefix still
        // travels with them in one round trip.
        let pipeline = self.telemetry.pipeline();
        let pipeline = &pipeline;
        let mut prefix: Sent<_> = Box::pin(maybe_done(async move {
            match prefix.as_deref() {
                Some(sql) => pipeline.traced(sql, client.batch_execute(sql)).await,
                None => Ok(()),
            }
        }));
        let (prepared, prepared_now) = polling_earlier(
            prefix.as_mut(),
            ready_all(client, &self.statements, statements, begin || self.in_transaction),
        )
        .await;
        let prepare_failed = prepared.is_err();
        let prepared = prepared.map_err(Error::from).and_then(|prepared| {
            let refused = statements
                .iter()
                .zip(&prepared)
                .find_map(|(statement, prepared)| statement.check.and_then(|check| prepared.check(check).err()));
            refused.map_or(Ok(prepared), Err)
        });
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                prefix.as_mut().await;
                let prefix_result = prefix.as_mut().take_output().unwrap_or(Ok(()));
                drop(prefix);
                self.in_flight = false;
                stats.round_trips += u64::from(has_prefix || prepared_now || prepare_failed);
                let prefix_result = prefix_result.map_err(Error::from);
                self.prefix_answered(begin, before.is_some(), prefix_result.as_ref().err());
                // A failed prefix or prepare aborts the transaction; a refused
                // result check follows successful ones, which leave it as it was.
                let failed = prepare_failed || prefix_result.is_err();
                let error = prefix_result.err().unwrap_or(error);
                if failed {
                    self.statement_failed(&error);
                }
                return Err(error);
            }
        };
        stats.round_trips += u64::from(prepared_now);
        let encoded = encode(statements, &prepared).await;
        let params: SmallVec<[PerParam<&(dyn ToSql + Sync)>; 2]> =
            statements.iter().zip(&encoded).map(|(statement, ready)| ready_params(statement, ready)).collect();
        let copy_lost = AtomicBool::new(false);
        // Only a commit token (and the check behind a statement alone) is
        // read from the answer to `after`.
        let answered = after.map(|sql| (sql, self.want_commit_token || checks_alone(Some(sql))));
        let (prefix_result, outcomes, after_result, batch_sent) =
            send_pipelined(client, pipeline, prefix, statements, &prepared, &params, answered, &copy_lost)
                .instrument(tracing::debug_span!("orm.round_trip", statements = statements.len(), before, after))
                .await;
        self.batch_sent = batch_sent;
        self.in_flight = false;
        if let Ok(answer) = &after_result {
            self.commit_answered(after.unwrap_or_default(), answer);
        }
        stats.round_trips += 1;
        stats.statements += statements.len() as u64;
        let prefix_result = prefix_result.map_err(Error::from);
        self.prefix_answered(begin, before.is_some(), prefix_result.as_ref().err());
        let collected = prefix_result.and_then(|()| {
            // Collected into the outcomes' own allocation.
            let results = outcomes
                .into_iter()
                .map(|outcome| {
                    let outcome = outcome?;
                    stats.rows += outcome.rows();
                    Ok(outcome)
                })
                .collect::<Result<Vec<_>>>()?;
            after_result.map(|_| results).map_err(|error| after_failed(after, error.into()))
        });
        collected.inspect_err(|error| {
            self.statement_failed(error);
            if copy_lost.load(Ordering::Relaxed) {
                // The connection's answers no longer match its requests.
                self.abandon();
            }
        })
    }

    /// Records what the answer to a batch's prefix means: a savepoint in
    /// `before` is open only if the prefix succeeded, and a `BEGIN` in it
    /// opened the transaction (see [`began`](Self::began)).
    fn prefix_answered(&mut self, begin: bool, before: bool, error: Option<&Error>) {
        if begin {
            self.began(error);
        }
        if before && error.is_some() {
            self.flush_savepoint_open = false;
        }
    }

    /// Records the answer to a `BEGIN` the session sent. One that failed
    /// may still have opened the transaction: the error may have come after
    /// the `BEGIN` itself ran (a cancel request landing on the mark or the
    /// flush savepoint behind it leaves the transaction open and aborted).
    /// So unless the connection broke, the transaction counts as open, and
    /// the failure (see [`statement_failed`](Self::statement_failed)) leaves
    /// it only a rollback, which is harmless if none was open: no connection
    /// goes back to the pool inside a transaction nobody knows of.
    fn began(&mut self, error: Option<&Error>) {
        if !matches!(error, Some(Error::ConnectionLost(_))) {
            self.in_transaction = true;
        }
    }

    /// Whether the last [`run_batch`](Self::run_batch) (or
    /// [`run_alone`](Self::run_alone)) sent every statement, and so its
    /// `after` statement if it had one. A statement whose parameters cannot
    /// be encoded is never sent, and then neither is `after`: a `COMMIT`
    /// would commit the statements around it.
    pub(crate) fn batch_sent(&self) -> bool {
        self.batch_sent
    }

    /// The statement that opens a fresh flush savepoint, releasing the
    /// previous one in the same message.
    pub(crate) fn reopen_flush_savepoint(&mut self) -> String {
        let release = self.release_flush_savepoint();
        self.flush_savepoint_open = true;
        format!("{release}SAVEPOINT {FLUSH_SAVEPOINT}")
    }

    /// A prefix that releases the open flush savepoint, if any: savepoint
    /// statements of the session must not nest inside it.
    pub(crate) fn release_flush_savepoint(&mut self) -> &'static str {
        if std::mem::take(&mut self.flush_savepoint_open) {
            "RELEASE SAVEPOINT orm_flush; "
        } else {
            ""
        }
    }

    /// Rolls back to the flush savepoint after a failed flush, making the
    /// transaction usable again.
    pub(crate) async fn recover_flush_savepoint(&mut self, stats: &mut SessionStats) -> Result<()> {
        // A flush whose first batch failed before it reached the server
        // opened no savepoint (see `run_batch`). One still open then belongs
        // to an earlier flush, whose work the session counts as written:
        // rolling back to it would undo that work silently. A transaction
        // the failure aborted stays failed.
        if !self.flush_savepoint_open {
            return Ok(());
        }
        self.recover(&format!("ROLLBACK TO SAVEPOINT {FLUSH_SAVEPOINT}"), stats).await
    }

    /// Rolls back to a savepoint of the session's own and closes it; this
    /// also recovers a transaction in which a statement failed.
    pub(crate) async fn rollback_to_savepoint(&mut self, name: &str, stats: &mut SessionStats) -> Result<()> {
        // Any flush savepoint is newer than this one and goes with it.
        self.flush_savepoint_open = false;
        self.recover(&format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"), stats).await
    }

    async fn recover(&mut self, sql: &str, stats: &mut SessionStats) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        self.failed = false;
        let result = self.run_batch(Some(sql), &[], None, stats).await;
        if result.is_err() {
            self.failed = true;
        }
        result.map(drop)
    }

    /// Runs one statement and hands each row to `on_row` as it arrives,
    /// without collecting the result first. Returns the rows affected (or
    /// returned). `sql` says whether the statement stays prepared on the
    /// connection (see [`RawSql`]); the ORM's own statements do.
    pub(crate) async fn for_each_row(
        &mut self,
        sql: RawSql<'_>,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
        stats: &mut SessionStats,
        on_row: impl FnMut(Row) -> Result<()>,
    ) -> Result<u64> {
        self.for_each_row_checked(sql, params, access, stats, None, on_row).await
    }

    /// [`for_each_row`](Self::for_each_row), first handing the prepared
    /// statement (its result columns) to `check`: if that fails, the
    /// statement is not run and the error is returned.
    pub(crate) async fn for_each_row_checked(
        &mut self,
        sql: RawSql<'_>,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
        stats: &mut SessionStats,
        check: Option<Check>,
        mut on_row: impl FnMut(Row) -> Result<()>,
    ) -> Result<u64> {
        let mut open = self.open_rows(sql, params, access, stats, check).await?;
        let streamed = async {
            let mut rows = 0;
            loop {
                // The driver hands over the rows it holds without returning
                // `Pending`: a large result would be read and handled in one
                // poll, holding the thread from its other tasks. The rows of
                // a chunk are handled in a loop without an `.await`, which
                // costs no more a row than the plain loop did.
                let mut handled = 0;
                let chunk = poll_fn(|context| loop {
                    if handled == ROWS_PER_YIELD {
                        return Poll::Ready(Ok(Chunk::Full));
                    }
                    let Some(row) = std::task::ready!(open.rows.try_poll_next_unpin(context)?) else {
                        return Poll::Ready(Ok(Chunk::Ended));
                    };
                    rows += 1;
                    handled += 1;
                    if let Err(error) = on_row(row) {
                        return Poll::Ready(Ok(Chunk::Failed(error)));
                    }
                })
                .await?;
                match chunk {
                    Chunk::Full => tokio::task::yield_now().await,
                    Chunk::Ended => break,
                    Chunk::Failed(error) => return Ok(Err(error)),
                }
            }
            Ok::<_, tokio_postgres::Error>(Ok(open.rows.rows_affected().unwrap_or(rows)))
        }
        .instrument(open.statement.span.clone())
        .await;
        match streamed {
            Ok(Ok(rows)) => self.rows_ended(Ok(rows), &open.statement, sql.text(), stats),
            Ok(Err(decode_error)) => {
                self.rows_dropped();
                Err(decode_error)
            }
            Err(error) => self.rows_ended(Err(error), &open.statement, sql.text(), stats),
        }
    }

    /// Has the driver look up the types of `sql`'s result on the
    /// session's connection, by preparing it (kept, as `sql` says) or, in
    /// the unnamed mode, describing it, unless it knows them already. A
    /// statement that returns those rows but cannot be prepared itself
    /// (a `FETCH` from a cursor) then runs safely as the unnamed statement:
    /// one whose driver meets an unknown type in the answer can wait
    /// forever (see `type_lookups`).
    pub(crate) async fn look_up_result_types(
        &mut self,
        sql: RawSql<'_>,
        params: &[&(dyn ToSql + Sync)],
        stats: &mut SessionStats,
    ) -> Result<()> {
        self.checkout().await?;
        let client = self.client.as_ref().ok_or(Error::TransactionFailed)?;
        self.in_flight = true;
        let readied = ready_one(client, &self.statements, sql, params, false, self.in_transaction).await;
        self.in_flight = false;
        match readied {
            Ok((_, round_trips)) => {
                stats.round_trips += round_trips;
                Ok(())
            }
            Err(error) => {
                let error = Error::from(error);
                self.statement_failed(&error);
                self.release_between_statements();
                Err(error)
            }
        }
    }

    /// Sends one statement and returns its rows as they arrive, for
    /// [`for_each_row_checked`](Self::for_each_row_checked) and for streams
    /// handed to the caller. The statement stays in flight until
    /// [`rows_ended`](Self::rows_ended) is told how it ended: a stream
    /// dropped before that is abandoned as a dropped statement future is.
    pub(crate) async fn open_rows(
        &mut self,
        sql: RawSql<'_>,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
        stats: &mut SessionStats,
        check: Option<Check>,
    ) -> Result<OpenRows> {
        if sql.copies_with_client() {
            return Err(Error::CopyInRawSql);
        }
        self.count_access(access);
        // Checked out first: giving up a cut-off statement's connection
        // ends its transaction, and this statement must then open one.
        self.checkout().await?;
        let begin = self.opens_transaction(access);
        // A statement that may write and carries no guard (see
        // `transaction_mark`) waits for its `BEGIN`: sent behind one that
        // failed, it would run and commit on its own.
        let confirm_begin = begin && access == Access::RawWrite;
        let begin_sql = self.begin_sql();
        self.fresh_transaction = false;
        let client = self.client.as_ref().ok_or(Error::TransactionFailed)?;
        let text = sql.text();
        // BEGIN's span is opened here, beside the statement's, not in it.
        let begin_statement = begin.then(|| self.telemetry.statement(begin_sql));
        let statement = self.telemetry.statement(text);
        let (statements, in_transaction) = (&self.statements, self.in_transaction);
        self.in_flight = true;
        // Pinned where it is built, so that the span's wrapper does not copy
        // it: it holds the driver's prepare and query futures.
        let result = std::pin::pin!(async {
            let (prepared, prepare_trips) =
                ready_one(client, statements, sql, params, check.is_none(), in_transaction).await?;
            if let (Some(prepared), Some(check)) = (&prepared, check) {
                if let Err(refused) = prepared.check(check) {
                    return Ok((prepare_trips, Err(refused)));
                }
            }
            // Both pinned where they are built: awaited or joined, they would
            // be copied first.
            let mut begin_future = std::pin::pin!(async {
                if let Some(begin_statement) = begin_statement {
                    begin_statement.run(begin_sql, client.batch_execute(begin_sql)).await
                } else {
                    Ok(())
                }
            });
            let mut run = std::pin::pin!(async {
                match &prepared {
                    Some(Ready::Named(prepared)) => client.query_raw(prepared, params.iter().copied()).await,
                    Some(Ready::Unnamed(description)) => {
                        let typed = params.iter().copied().zip(description.params.iter().cloned());
                        client.query_typed_raw(text, typed).await
                    }
                    // The unnamed statement is parsed, bound and run in one
                    // message and replaced by the next one, so it stays on
                    // neither side. Only without parameters: tokio-postgres
                    // must be told their types, which `ToSql` cannot say.
                    None => client.query_typed_raw(text, std::iter::empty::<(&(dyn ToSql + Sync), Type)>()).await,
                }
            });
            // `None`: the statement was not sent, its `BEGIN` having failed.
            let (begin_result, stream) = if confirm_begin {
                let opened = begin_future.as_mut().await;
                let stream = if opened.is_ok() { Some(run.as_mut().await) } else { None };
                (opened, stream)
            } else {
                let (opened, stream) = join(begin_future, run).await;
                (opened, Some(stream))
            };
            Ok::<_, tokio_postgres::Error>((prepare_trips, Ok((begin_result, stream))))
        })
        .instrument(statement.span.clone())
        .await;
        let (prepare_trips, sent) = match result {
            Ok(parts) => parts,
            Err(error) => {
                self.in_flight = false;
                let error = Error::from(error);
                self.statement_failed(&error);
                self.release_between_statements();
                return Err(error);
            }
        };
        let (begin_result, stream) = match sent {
            Ok(sent) => sent,
            Err(refused) => {
                // Only the prepare reached the server, which leaves the
                // transaction as it was.
                self.in_flight = false;
                stats.round_trips += prepare_trips;
                self.release_between_statements();
                return Err(refused);
            }
        };
        stats.round_trips += 1 + prepare_trips + u64::from(confirm_begin && stream.is_some());
        stats.statements += u64::from(stream.is_some());
        let begin_result = begin_result.map_err(Error::from);
        if begin {
            self.began(begin_result.as_ref().err());
            // Cut off now, the statement takes nothing of the session's
            // with its transaction (see `abandon`).
            self.fresh_transaction = confirm_begin && begin_result.is_ok();
        }
        let sent = begin_result.and_then(|()| stream.map_or(Err(Error::TransactionFailed), |s| s.map_err(Error::from)));
        match sent {
            Ok(rows) => Ok(OpenRows { rows: Box::pin(rows), statement }),
            Err(error) => {
                self.in_flight = false;
                self.statement_failed(&error);
                self.release_between_statements();
                Err(error)
            }
        }
    }

    /// Records how the statement of [`open_rows`](Self::open_rows) ended:
    /// all its rows read (their number, or the rows it affected), or an
    /// error from the server or the connection.
    pub(crate) fn rows_ended(
        &mut self,
        ended: std::result::Result<u64, tokio_postgres::Error>,
        statement: &StatementSpan,
        sql: &str,
        stats: &mut SessionStats,
    ) -> Result<u64> {
        self.in_flight = false;
        self.fresh_transaction = false;
        statement.ended(sql);
        let ended = match ended {
            Ok(rows) => {
                stats.rows += rows;
                statement.span.record("rows", rows);
                Ok(rows)
            }
            Err(error) => {
                let error = Error::from(error);
                self.statement_failed(&error);
                Err(error)
            }
        };
        self.release_between_statements();
        ended
    }

    /// Stops reading a statement's rows before their end without a
    /// failure of the statement (a row could not be decoded): the
    /// connection reads and drops the rest ahead of the next statement.
    pub(crate) fn rows_dropped(&mut self) {
        self.in_flight = false;
        self.fresh_transaction = false;
        self.rows_unread |= self.in_transaction;
    }

    /// Sends transaction control (`SAVEPOINT`, `RELEASE ...`) inside the
    /// transaction, opening it first if needed.
    pub(crate) async fn control(&mut self, sql: &str, stats: &mut SessionStats) -> Result<()> {
        let sql = format!("{}{sql}", self.release_flush_savepoint());
        self.run_batch(Some(&sql), &[], None, stats).await.map(drop)
    }

    /// Ends the transaction with `COMMIT` or `ROLLBACK` and returns the
    /// connection to the pool. A commit of a transaction a statement failed
    /// in since the caller looked (a hook's, whose error the hook dropped)
    /// rolls back and fails: PostgreSQL would answer its `COMMIT` by
    /// rolling back without an error.
    pub(crate) async fn finish(&mut self, sql: &str, stats: &mut SessionStats) -> Result<()> {
        if self.failed && sql != "ROLLBACK" {
            if let Err(error) = self.end_transaction("ROLLBACK", stats).await {
                tracing::warn!(%error, "the rollback of a failed transaction failed");
            }
            return Err(Error::TransactionFailed);
        }
        self.end_transaction(sql, stats).await
    }

    /// [`finish`](Self::finish), sending `sql` as it is.
    async fn end_transaction(&mut self, sql: &str, stats: &mut SessionStats) -> Result<()> {
        if self.in_flight {
            // Its transaction dies with the connection, whatever `sql` says.
            let was_in_transaction = self.in_transaction;
            self.abandon();
            return if was_in_transaction && sql != "ROLLBACK" { Err(Error::TransactionFailed) } else { Ok(()) };
        }
        let Some(client) = self.client.as_ref().filter(|_| self.in_transaction) else {
            self.give_back();
            return Ok(());
        };
        // After rows left unread, a statement before the `COMMIT` fails if
        // the transaction was aborted, and the `COMMIT` is then not run.
        let checked =
            (std::mem::take(&mut self.rows_unread) && sql != "ROLLBACK").then(|| format!("{ABORTED_CHECK}{sql}"));
        self.in_flight = true;
        let result = self.telemetry.traced(sql, client.simple_query(checked.as_deref().unwrap_or(sql))).await;
        self.in_flight = false;
        stats.round_trips += 1;
        self.flush_savepoint_open = false;
        match result {
            Ok(answer) => {
                self.in_transaction = false;
                self.commit_answered(sql, &answer);
                self.give_back();
                Ok(())
            }
            Err(error) => {
                // A `COMMIT` cancelled before it ended leaves the transaction
                // open and aborted: still counted as open, the drop rolls it
                // back before the connection goes back to the pool.
                self.failed = true;
                if checked.is_some() && error.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) {
                    // The check failed: the `COMMIT` did not run.
                    return Err(Error::TransactionFailed);
                }
                let error = Error::from(error);
                Err(if sql == "ROLLBACK" { error } else { error.after_commit_sent() })
            }
        }
    }

    /// Gives up the connection of a statement whose future was dropped
    /// before it completed: the statement is cancelled and the connection
    /// closed (see [`close_and_cancel`]). A transaction it was part of is
    /// gone with it, so the session can only roll back, unless the
    /// statement was all it held (see `fresh_transaction`); outside one, the
    /// next statement simply takes a fresh connection.
    fn abandon(&mut self) {
        // The transaction it ends rolls back what the session wrote.
        self.writes += 1;
        self.in_flight = false;
        self.failed |= self.in_transaction && !std::mem::take(&mut self.fresh_transaction);
        self.in_transaction = false;
        self.rows_unread = false;
        self.flush_savepoint_open = false;
        if let Some(client) = self.client.take() {
            discard_mid_statement(client, self.target.connector());
        }
    }

    /// Records that the transaction ended on the server (a pipelined `COMMIT`
    /// was answered, or a failed `COMMIT` ended it or left it aborted) and returns the
    /// connection to the pool, unless the connection itself broke.
    pub(crate) fn ended(&mut self, error: Option<&Error>) {
        self.in_transaction = false;
        self.rows_unread = false;
        self.applying = false;
        self.flush_savepoint_open = false;
        match error {
            Some(Error::ConnectionLost(_)) => self.failed = true,
            // A failed `COMMIT` may have been cancelled rather than have
            // rolled back, leaving the transaction open and aborted: a
            // `ROLLBACK` (a no-op otherwise) goes ahead of the next borrower.
            // So it does after a statement that ran alone and failed: the
            // connection may have been inside a transaction nobody knew of
            // (one a hand-written client left there).
            Some(_) => {
                if self.client.as_ref().is_some_and(|client| !queue(client, "ROLLBACK")) {
                    self.discard_connection();
                }
                self.give_back();
            }
            None => self.give_back(),
        }
    }
}

/// Encodes the statements' parameters for the types their prepared
/// statements take, rather than leaving it to the driver, which encodes
/// every statement's parameters in the one poll that sends them all; and
/// yields to the runtime after each large parameter, so that no poll
/// encodes a whole batch. (The caller's prefix is on the wire already: a
/// session dropped meanwhile is handled as one dropped mid-statement.)
/// A parameter that cannot be encoded is `None`, left to the driver.
async fn encode(statements: &[Statement], prepared: &[Ready]) -> PerStatement<PerParam<Option<Encoded>>> {
    let mut encoded = PerStatement::with_capacity(statements.len());
    let mut buffer = EncodeBuffer::new();
    for (statement, prepared) in statements.iter().zip(prepared) {
        let mut ready = PerParam::with_capacity(statement.params.len());
        for (param, ty) in statement.params.iter().zip(prepared.params()) {
            let param = Encoded::new(param, ty, &mut buffer);
            let large = param.as_ref().is_some_and(|p| p.len() > YIELD_AFTER_BYTES);
            ready.push(param);
            if large {
                tokio::task::yield_now().await;
            }
        }
        encoded.push(ready);
    }
    encoded
}

/// A statement's parameters as the driver takes them: each encoded one,
/// else the original, whose encoding the driver then reports as failed.
fn ready_params<'a>(statement: &'a Statement, ready: &'a [Option<Encoded>]) -> PerParam<&'a (dyn ToSql + Sync)> {
    statement
        .params
        .iter()
        .enumerate()
        .map(|(i, original)| match ready.get(i) {
            Some(Some(encoded)) => encoded as &(dyn ToSql + Sync),
            _ => original.as_ref() as &(dyn ToSql + Sync),
        })
        .collect()
}

type Sent<T> = Pin<Box<MaybeDone<T>>>;

/// One value per parameter of a statement, inline for the few a
/// request's statements bind: their lists were two allocations a statement.
type PerParam<T> = SmallVec<[T; 4]>;

/// One value per statement of a batch, inline for a request's one.
type PerStatement<T> = SmallVec<[T; 1]>;

/// A statement whose rows are arriving, from
/// [`SessionConnection::open_rows`]. Boxed: tokio-postgres's row stream
/// must stay pinned, and this one moves into the caller's stream.
pub(crate) struct OpenRows {
    pub(crate) rows: Pin<Box<tokio_postgres::RowStream>>,
    /// The statement's span, which records its row count at the end.
    pub(crate) statement: StatementSpan,
}

/// How a chunk of a statement's rows, handled between two yields to the
/// runtime, ended.
enum Chunk {
    /// [`ROWS_PER_YIELD`] rows were handled; more may follow.
    Full,
    /// The rows ended.
    Ended,
    /// The caller's handling of a row failed: the rest are not read.
    Failed(Error),
}

/// Sends the statements and `after` on `client` after `prefix` (a request
/// already queued), in that order, without waiting for an answer in
/// between, and then collects the answers. Returns their results, and
/// whether every statement (and so `after`, if any) was sent. `after`'s
/// answer holds its rows only if its flag asks for them: only a commit
/// token is read from it.
///
/// tokio-postgres encodes a statement's parameters and queues it when its
/// future is first polled, and a parameter that cannot be encoded fails
/// that future at once, unsent. So every request is polled once in wire
/// order first, and `after` follows only if no statement failed to go out.
#[allow(clippy::too_many_arguments)]
async fn send_pipelined(
    client: &Object,
    pipeline: &Pipeline<'_>,
    mut prefix: Sent<impl Future<Output = PgResult<()>>>,
    statements: &[Statement],
    prepared: &[Ready],
    params: &[PerParam<&(dyn ToSql + Sync)>],
    after: Option<(&str, bool)>,
    copy_lost: &AtomicBool,
) -> (PgResult<()>, Vec<PgResult<Outcome>>, PgResult<Vec<SimpleQueryMessage>>, bool) {
    let mut requests = statements.iter().zip(prepared).zip(params).map(|((statement, prepared), params)| {
        maybe_done(pipeline.traced(&statement.sql, run_statement(client, statement, prepared, params, copy_lost)))
    });
    // The first request, all that a short request's flush sends, is pinned
    // in this future; only the others are boxed, each a KiB or more.
    let mut first = std::pin::pin!(requests.next());
    let mut rest: Vec<Pin<Box<_>>> = requests.map(Box::pin).collect();
    poll_fn(|cx| {
        let _ = prefix.as_mut().poll(cx);
        for statement in in_order(first.as_mut(), &mut rest) {
            let _ = statement.poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    let unsent = in_order(first.as_mut(), &mut rest)
        .any(|mut statement| matches!(statement.as_mut().output_mut(), Some(Err(_))));
    let after = after.filter(|_| !unsent);
    // Pinned in this future rather than boxed: it ends with it.
    let mut suffix = std::pin::pin!(maybe_done(async move {
        match after {
            Some((sql, true)) => pipeline.traced(sql, client.simple_query(sql)).await,
            // The same message, its answer not collected into a list.
            Some((sql, false)) => pipeline.traced(sql, client.batch_execute(sql)).await.map(|()| Vec::new()),
            None => Ok(Vec::new()),
        }
    }));
    poll_fn(|cx| {
        let mut done = prefix.as_mut().poll(cx).is_ready();
        for statement in in_order(first.as_mut(), &mut rest) {
            done &= statement.poll(cx).is_ready();
        }
        done &= suffix.as_mut().poll(cx).is_ready();
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let finished = "every request was polled to completion";
    let prefix = prefix.as_mut().take_output().unwrap_or_else(|| unreachable!("{finished}"));
    let outcomes = in_order(first.as_mut(), &mut rest)
        .map(|s| s.take_output().unwrap_or_else(|| unreachable!("{finished}")))
        .collect();
    let suffix = suffix.as_mut().take_output().unwrap_or_else(|| unreachable!("{finished}"));
    (prefix, outcomes, suffix, !unsent)
}

/// Awaits `later`, a request sent on the connection after `earlier`,
/// polling `earlier` meanwhile (first, so that it is sent first).
///
/// tokio-postgres reads a connection's answers in order and hands each
/// request the pieces of its answer as they are read, keeping at most two
/// that its request has not taken; at a third it stops reading the
/// connection until they are taken. An earlier request left unpolled
/// while a later one is awaited then waits forever, and the later one
/// with it, whenever the earlier answer comes in three or more reads: the
/// answer to `BEGIN; SET LOCAL ...` is three messages, which a pooler
/// or a busy network may pass on one by one.
async fn polling_earlier<E: Future, L: Future>(mut earlier: Pin<&mut MaybeDone<E>>, later: L) -> L::Output {
    let mut later = std::pin::pin!(later);
    poll_fn(|cx| {
        let _ = earlier.as_mut().poll(cx);
        later.as_mut().poll(cx)
    })
    .await
}

/// The requests of [`send_pipelined`] in wire order: the one pinned in
/// place, then the boxed ones.
fn in_order<'s, F: Future>(
    first: Pin<&'s mut Option<MaybeDone<F>>>,
    rest: &'s mut [Pin<Box<MaybeDone<F>>>],
) -> impl Iterator<Item = Pin<&'s mut MaybeDone<F>>> {
    first.as_pin_mut().into_iter().chain(rest.iter_mut().map(Pin::as_mut))
}

/// Sends one statement of a batch and collects its outcome.
async fn run_statement(
    client: &Object,
    statement: &Statement,
    prepared: &Ready,
    params: &[&(dyn ToSql + Sync)],
    copy_lost: &AtomicBool,
) -> PgResult<Outcome> {
    let outcome = match prepared {
        // Boxed: a `COPY`'s future is the largest, and a batch's rare one.
        _ if statement.copy.is_some() => Box::pin(copy_rows(client, statement, prepared, copy_lost)).await,
        Ready::Named(prepared) if statement.returns_rows => client.query(prepared, params).await.map(Outcome::Rows),
        Ready::Named(prepared) => client.execute(prepared, params).await.map(Outcome::Count),
        Ready::Unnamed(description) => {
            let typed: Vec<_> = params.iter().copied().zip(description.params.iter().cloned()).collect();
            if statement.returns_rows {
                client.query_typed(&statement.sql, &typed).await.map(Outcome::Rows)
            } else {
                client.execute_typed(&statement.sql, &typed).await.map(Outcome::Count)
            }
        }
    };
    let outcome = match (outcome, statement.unmatched_of) {
        (Ok(Outcome::Rows(keys)), Some(expected)) => Ok(Outcome::Unmatched { expected, keys }),
        (outcome, _) => outcome,
    };
    if let Ok(outcome) = &outcome {
        tracing::Span::current().record("rows", outcome.rows());
    }
    outcome
}

type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// Readies the statement of [`SessionConnection::open_rows`] on `client`:
/// prepared by name (and cached, if `sql` says so), described for the
/// unnamed mode, or nothing to ready for a statement without parameters
/// whose result nobody checks (`unchecked`). Also returns the round trips
/// that cost.
async fn ready_one(
    client: &Object,
    statements: &Statements,
    sql: RawSql<'_>,
    params: &[&(dyn ToSql + Sync)],
    unchecked: bool,
    in_transaction: bool,
) -> PgResult<(Option<Ready>, u64)> {
    let text = sql.text();
    Ok(match statements {
        Statements::Prepared if sql.is_cached() => {
            let cache_size = client.statement_cache.size();
            let prepared = client.prepare_cached(text).await?;
            (Some(Ready::Named(prepared)), u64::from(client.statement_cache.size() > cache_size))
        }
        // Run as the unnamed statement below: nothing to prepare. Only a
        // statement run once whose result nobody checks: a rowless
        // `execute`, or a `FETCH` whose rows' types were looked up first
        // (see `type_lookups`). A kept one is described in the unnamed
        // mode, as the prepared mode prepares it.
        _ if params.is_empty() && unchecked && !sql.is_cached() => (None, 0),
        // Named and uncached: dropping the last handle (the row
        // stream's) queues a Close, so the server forgets it too.
        Statements::Prepared => (Some(Ready::Named(client.prepare(text).await?)), 1),
        Statements::Unnamed(descriptions) => {
            let cached = sql.is_cached().then(|| descriptions.get(text, &client.statement_cache)).flatten();
            if let Some(cached) = cached.filter(|cached| cached.params.len() == params.len()) {
                (Some(Ready::Unnamed(cached)), 0)
            } else {
                let description = Arc::new(describe(client, text, in_transaction, Some(params)).await?);
                descriptions.described(sql.is_cached().then_some(text), &description, &client.statement_cache);
                (Some(Ready::Unnamed(description)), 1)
            }
        }
    })
}

/// Runs a `COPY ... FROM STDIN` with the statement's rows.
///
/// The driver starts a `COPY` by sending its `Bind`, `Execute` and `Sync`
/// before the data, so a `COPY` that fails before the server reads data
/// (in an aborted transaction, or refused by the server) gets a second
/// `ReadyForQuery`, for the `Sync` that follows the aborted data, which the
/// driver hands to the next request: from then on every answer would go
/// to the wrong request. The flush sends a `COPY` only first in its round
/// trip, to tables that accept it (see `flush::copy`); if one still fails
/// to start, `copy_lost` tells the caller to give the connection up.
async fn copy_rows(
    client: &Object,
    statement: &Statement,
    prepared: &Ready,
    copy_lost: &AtomicBool,
) -> PgResult<Outcome> {
    let started = match prepared {
        Ready::Named(prepared) => client.copy_in::<_, Bytes>(prepared).await,
        Ready::Unnamed(_) => client.copy_in::<_, Bytes>(&*statement.sql).await,
    };
    let sink = started.inspect_err(|_| copy_lost.store(true, Ordering::Relaxed))?;
    futures_util::pin_mut!(sink);
    let mut rows = statement.copy.clone().unwrap_or_default();
    while !rows.is_empty() {
        // A message each, far below the protocol's limit of 1 GiB.
        sink.send(rows.split_to(rows.len().min(COPY_MESSAGE_BYTES))).await?;
    }
    sink.finish().await.map(Outcome::Count)
}

/// The size of the `COPY` data messages a flush sends.
const COPY_MESSAGE_BYTES: usize = 1 << 20;

/// Readies `statements` to run on `client`, inside the transaction that is
/// open or queued there if `in_transaction`, else alone: prepared and
/// cached on the connection, or described for the unnamed mode (once per database, see
/// [`Descriptions`](crate::statement_mode::Descriptions)). Also returns
/// whether any was prepared or described now, which cost a round trip.
async fn ready_all(
    client: &Object,
    mode: &Statements,
    statements: &[Statement],
    in_transaction: bool,
) -> (PgResult<PerStatement<Ready>>, bool) {
    match mode {
        Statements::Prepared => {
            let cache_size = client.statement_cache.size();
            let prepared = match statements {
                // A short request's flush: awaited alone, without the
                // lists of futures and of results `try_join_all` builds.
                [statement] => client
                    .prepare_cached(&statement.sql)
                    .await
                    .map(|prepared| smallvec::smallvec![Ready::Named(prepared)]),
                _ => try_join_all(statements.iter().map(|s| client.prepare_cached(&s.sql)))
                    .await
                    .map(|prepared| prepared.into_iter().map(Ready::Named).collect()),
            };
            let prepared_now = client.statement_cache.size() > cache_size;
            (prepared, prepared_now)
        }
        Statements::Unnamed(descriptions) => {
            let cached: Vec<_> =
                statements.iter().map(|statement| descriptions.get(&statement.sql, &client.statement_cache)).collect();
            let described_now = cached.iter().any(Option::is_none);
            let ready = try_join_all(statements.iter().zip(cached).map(|(statement, cached)| async move {
                if let Some(cached) = cached {
                    return Ok(Ready::Unnamed(cached));
                }
                let description = Arc::new(describe(client, &statement.sql, in_transaction, None).await?);
                descriptions.described(Some(&statement.sql), &description, &client.statement_cache);
                Ok(Ready::Unnamed(description))
            }))
            .await;
            (ready.map(PerStatement::from_vec), described_now)
        }
    }
}

/// Has the server describe `sql` (its parameters' types and result
/// columns) for the unnamed mode. The driver can only do that by preparing
/// a named statement, and a transaction pooler keeps a client on one server
/// connection only within a transaction: so the statement is prepared and
/// closed inside one, the session's if it is `in_transaction`, else one
/// of its own around the two, queued with them. The round trip is spent
/// waiting for the description; the close and the end of the transaction
/// go out ahead of the next statement. (A future dropped meanwhile leaves
/// the connection to be discarded, as any statement cut off does.)
///
/// With `params`, fails as the prepared mode does, with the driver's error
/// and nothing run, if they are not as many as the statement takes: the
/// unnamed statement would drop extra ones unseen.
async fn describe(
    client: &Object,
    sql: &str,
    in_transaction: bool,
    params: Option<&[&(dyn ToSql + Sync)]>,
) -> PgResult<Description> {
    let own_transaction = !in_transaction && queue(client, "BEGIN");
    let described = match client.prepare(sql).await {
        Ok(statement) => {
            let counted = match params {
                Some(params) if params.len() != statement.params().len() => {
                    client.query_raw(&statement, params.iter().copied()).await.map(drop)
                }
                _ => Ok(()),
            };
            counted.map(|()| Description::of(&statement))
        }
        Err(error) => Err(error),
    };
    // After the Close the statement's drop queued. Ending a transaction
    // that a failed prepare aborted rolls it back, without an error.
    if own_transaction {
        queue(client, "COMMIT");
    }
    described
}

/// Sends `sql` without waiting for its answer: tokio-postgres puts a request
/// on the connection's queue when its future is first polled, and answers
/// nobody waits for are discarded. Whoever uses the connection next is
/// served after it, as with the rollback `tokio_postgres::Transaction`
/// queues when dropped. Returns false if the connection is closed.
fn queue(client: &Object, sql: &str) -> bool {
    !matches!(client.batch_execute(sql).now_or_never(), Some(Err(_)))
}

impl Drop for SessionConnection {
    fn drop(&mut self) {
        let Some(client) = &self.client else { return };
        if self.in_flight {
            self.abandon();
        } else if self.in_transaction && !queue(client, "ROLLBACK") {
            self.discard_connection();
        } else {
            self.give_back();
        }
    }
}

/// The server may still be running a statement nobody waits for: stop it,
/// and let nobody else have the connection. The cancel request goes with the
/// pool's TLS: a server that only accepts TLS refuses it otherwise.
fn discard_mid_statement(client: Object, tls: Connector) {
    let cancel = client.cancel_token();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(close_and_cancel(client, cancel, tls))),
        Err(_) => drop(Object::take(client)),
    }
}

/// Closes the connection of a session dropped mid-statement and cancels the
/// statement, so the next borrower neither waits behind it nor starts inside
/// its transaction; the pool opens a fresh connection in its place.
///
/// The connection is not rolled back and reused: the server acts on a cancel
/// request on its own schedule, after `cancel_query` has returned, and if the
/// statement ended meanwhile (or had not started) the request cancels
/// whatever the connection runs next, another borrower's statement.
async fn close_and_cancel(client: Object, cancel: tokio_postgres::CancelToken, tls: Connector) {
    // Detached from the pool first, which frees its slot at once.
    drop(Object::take(client));
    if let Err(error) = cancel.cancel_query(tls).await {
        tracing::warn!(%error, "could not cancel the statement of a dropped session");
    }
}

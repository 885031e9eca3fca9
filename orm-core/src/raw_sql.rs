//! [`RawSql`]: the text of a hand-written statement, whether the
//! connection keeps it prepared, and whether it only reads.

use crate::connection::Access;

/// The text of a raw SQL statement for [`Session::execute`],
/// [`Session::query_rows`], [`Session::query_raw`] and
/// [`Session::query_raw_untracked`], whether the connection keeps it
/// prepared for next time, and whether it needs the session's transaction.
///
/// A plain `&str` (or `&String`) converts to a statement prepared for this
/// one run only, so SQL text built at run time (a report whose columns the
/// user picks, say) leaves nothing behind on the pooled connection: its
/// prepared-statement cache, on the client and on the server, stays as
/// large as the ORM's own statements make it. The price is a round trip to
/// prepare it each time it runs, in which the driver learns the types of
/// its parameters and of its rows (a row of an enum or an extension's type,
/// met only in the answer, would make it look the type up while the rows
/// wait unread, and wait forever). Only [`Session::execute`] of a statement
/// without parameters that returns no rows (an `UPDATE` without
/// `RETURNING`, DDL, `SET`) is parsed, run and forgotten in one round trip.
///
/// [`RawSql::cached`] opts a statement whose text is fixed in the program
/// into the connection's cache: after its first run on a connection it
/// costs one round trip, like the ORM's own statements. Never cache text
/// that varies with data: every distinct text stays prepared on every
/// pooled connection until the connection closes.
///
/// In the [unnamed statement mode](crate::StatementMode::Unnamed) nothing
/// stays prepared on a connection; what a cached statement keeps is its
/// description (the types of its parameters and rows), once for the whole
/// [`Database`](crate::Database) (and once more on each connection whose
/// driver must look up one of those types, an enum's, say), and an uncached
/// one is described at each run instead of prepared.
///
/// ```
/// # use orm_core::{Database, RawSql};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// session.execute("CREATE TABLE hit (page text NOT NULL)", &[]).await?;
/// // Fixed text, run on every request: keep it prepared.
/// let count_hits = RawSql::cached("INSERT INTO hit (page) VALUES ($1)");
/// session.execute(count_hits, &[&"/home"]).await?;
/// session.execute(count_hits, &[&"/about"]).await?;
///
/// // Text built at run time: prepared for one run, then closed.
/// for table in ["hit", "pg_class"] {
///     session.query_rows(&format!("SELECT count(*) FROM {table}"), &[]).await?;
/// }
/// let cached = session.query_rows(
///     "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO hit%'", &[],
/// ).await?;
/// assert_eq!(cached.len(), 1); // only the statement asked to be cached
/// # Ok(()) }
/// ```
///
/// A raw statement may write, so by default it opens the session's
/// transaction (`BEGIN` travels with it), and the session then ends with a
/// `COMMIT`. The ORM cannot tell a read from its text: a `SELECT` may call
/// a function that writes, or lock rows. [`RawSql::read_only`] is the
/// program's promise that the statement only reads: like the ORM's own
/// loads it then runs alone before the session's first write (under READ
/// COMMITTED every statement reads its own snapshot anyway), inside the
/// transaction after it, and inside one from the start when the session's
/// isolation level needs its reads in a transaction. A read-only request
/// then costs its statements and nothing else:
///
/// ```
/// # use orm_core::{Database, RawSql};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE hit (page text NOT NULL); INSERT INTO hit VALUES ('/home')").await?;
/// # let db = Database::connect(test_db.url())?;
/// let pages = RawSql::cached("SELECT page, count(*) FROM hit GROUP BY page").read_only();
/// let mut session = db.session();
/// let rows = session.query_rows(pages, &[]).await?;
/// assert_eq!(rows.len(), 1);
/// let stats = session.commit().await?; // nothing to commit: no transaction was opened
/// assert_eq!((stats.statements, stats.round_trips), (1, 2)); // prepare, then run
/// # Ok(()) }
/// ```
///
/// [`Session::execute`]: crate::Session::execute
/// [`Session::query_rows`]: crate::Session::query_rows
/// [`Session::query_raw`]: crate::Session::query_raw
/// [`Session::query_raw_untracked`]: crate::Session::query_raw_untracked
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSql<'a> {
    text: &'a str,
    cached: bool,
    read_only: bool,
}

impl<'a> RawSql<'a> {
    /// A statement the connection keeps prepared after its first run: for
    /// text that is fixed in the program, never for text built from data.
    pub fn cached(text: &'a str) -> Self {
        RawSql { text, cached: true, read_only: false }
    }

    /// A statement prepared for this run only, which leaves nothing on the
    /// connection: what a plain `&str` converts to.
    pub fn once(text: &'a str) -> Self {
        RawSql { text, cached: false, read_only: false }
    }

    /// Promises that the statement only reads (no writes, no row locks, no
    /// function that writes), so that it needs no transaction of its own:
    /// it runs without `BEGIN` before the session's first write. A
    /// statement marked so that does write commits on its own, outside
    /// the session's unit of work. Nor may it leave state on the
    /// connection for a later statement (`SET` or `set_config(.., false)`,
    /// `pg_advisory_lock`, `LISTEN`, temporary tables, `PREPARE`,
    /// `DECLARE ... WITH HOLD`): outside a transaction the session gives
    /// its connection back to the pool after each read, resetting such
    /// state, and its next statement (an unlock, say) may run on another
    /// connection.
    #[must_use]
    pub fn read_only(self) -> Self {
        RawSql { read_only: true, ..self }
    }

    /// The statement's text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Whether the connection keeps the statement prepared.
    pub fn is_cached(&self) -> bool {
        self.cached
    }

    /// Whether the statement was promised to only read.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the statement may return rows, read from its text: false
    /// only for one that starts with a command that never returns any
    /// (`UPDATE`, `CREATE`, `SET` and the like) and has no `RETURNING`
    /// anywhere. [`Session::execute`] prepares a statement that may, even
    /// without parameters, so that the driver learns its rows' types before
    /// they arrive: run unnamed at once, rows of a type it does not know
    /// built in could make it wait forever (see `type_lookups`). Wrong only
    /// towards preparing: a `RETURNING` in a string or comment costs a
    /// round trip, nothing else.
    pub(crate) fn may_return_rows(&self) -> bool {
        const ROWLESS: [&str; 26] = [
            "ALTER",
            "ANALYZE",
            "BEGIN",
            "CHECKPOINT",
            "CLUSTER",
            "COMMENT",
            "COMMIT",
            "CREATE",
            "DELETE",
            "DISCARD",
            "DO",
            "DROP",
            "GRANT",
            "INSERT",
            "LISTEN",
            "LOCK",
            "NOTIFY",
            "REFRESH",
            "REINDEX",
            "RELEASE",
            "RESET",
            "REVOKE",
            "ROLLBACK",
            "SET",
            "TRUNCATE",
            "UPDATE",
        ];
        let rowless = ROWLESS.iter().any(|command| command.eq_ignore_ascii_case(self.command()));
        !rowless || self.mentions(b"RETURNING")
    }

    /// Whether the statement is a `COPY` from or to the client, whose rows
    /// travel in a protocol of their own that a statement's answer cannot
    /// carry (see [`Error::CopyInRawSql`](crate::Error::CopyInRawSql)).
    /// Wrong only towards refusing: a `COPY` to a file that mentions
    /// `STDIN` in a string is refused too.
    pub(crate) fn copies_with_client(&self) -> bool {
        self.command().eq_ignore_ascii_case("COPY") && (self.mentions(b"STDIN") || self.mentions(b"STDOUT"))
    }

    /// The statement's first word, after any leading comments.
    fn command(&self) -> &str {
        let mut text = self.text.trim_start();
        loop {
            if let Some(rest) = text.strip_prefix("--") {
                text = rest.split_once('\n').map_or("", |(_, after)| after).trim_start();
            } else if let Some(rest) = text.strip_prefix("/*") {
                text = rest.split_once("*/").map_or("", |(_, after)| after).trim_start();
            } else {
                return text.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or_default();
            }
        }
    }

    /// Whether `word` appears anywhere in the text, in any case.
    fn mentions(&self, word: &[u8]) -> bool {
        self.text.as_bytes().windows(word.len()).any(|window| window.eq_ignore_ascii_case(word))
    }

    /// Whether the statement needs the session's transaction: unless
    /// marked read-only it may write, and carries no transaction guard.
    pub(crate) fn access(&self) -> Access {
        if self.read_only {
            Access::Read
        } else {
            Access::RawWrite
        }
    }
}

impl<'a> From<&'a str> for RawSql<'a> {
    fn from(text: &'a str) -> Self {
        RawSql::once(text)
    }
}

impl<'a> From<&'a String> for RawSql<'a> {
    fn from(text: &'a String) -> Self {
        RawSql::once(text)
    }
}

#[cfg(test)]
mod tests {
    use super::RawSql;

    #[test]
    fn only_commands_that_never_return_rows_are_rowless() {
        for rowless in [
            "UPDATE customer SET name = 'x'",
            "  insert into t values (1)",
            "CREATE TABLE t (id int)",
            "SET search_path = app",
            "DELETE FROM t WHERE id = 1",
            "lock table t",
            "/* a comment first */ UPDATE t SET a = 1",
            "-- a line comment\n  delete from t",
        ] {
            assert!(!RawSql::once(rowless).may_return_rows(), "{rowless}");
        }
        for rows in [
            "SELECT 1",
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone",
            "DELETE FROM t RETURNING mood",
            "update t set a = 1 returning a",
            "VALUES (1)",
            "FETCH 10 FROM c",
            "SHOW search_path",
            "/* an unended comment UPDATE t SET a = 1",
            "",
        ] {
            assert!(RawSql::once(rows).may_return_rows(), "{rows}");
        }
    }

    #[test]
    fn copies_from_and_to_the_client_are_told_apart_from_copies_to_files() {
        for client in [
            "COPY customer FROM STDIN",
            "copy customer (name) from stdin with (format csv)",
            "/* bulk */ COPY (SELECT 1) TO STDOUT",
            "-- export\nCOPY t TO stdout",
        ] {
            assert!(RawSql::once(client).copies_with_client(), "{client}");
        }
        for other in ["COPY t FROM '/tmp/t.csv'", "SELECT 'STDIN'", "INSERT INTO log VALUES ('copy to stdout')"] {
            assert!(!RawSql::once(other).copies_with_client(), "{other}");
        }
    }
}

//! [`RawSql`]: the text of a hand-written statement, and whether the
//! connection keeps it prepared.

/// The text of a raw SQL statement for [`Session::execute`],
/// [`Session::query_rows`], [`Session::query_raw`] and
/// [`Session::query_raw_untracked`], and whether the connection keeps it
/// prepared for next time.
///
/// A plain `&str` (or `&String`) converts to a statement prepared for this
/// one run only, so SQL text built at run time (a report whose columns the
/// user picks, say) leaves nothing behind on the pooled connection: its
/// prepared-statement cache, on the client and on the server, stays as
/// large as the ORM's own statements make it. The price is a round trip to
/// prepare it each time it runs with parameters; without parameters it is
/// parsed, run and forgotten in one round trip.
///
/// [`RawSql::cached`] opts a statement whose text is fixed in the program
/// into the connection's cache: after its first run on a connection it
/// costs one round trip, like the ORM's own statements. Never cache text
/// that varies with data: every distinct text stays prepared on every
/// pooled connection until the connection closes.
///
/// In the [unnamed statement mode](crate::StatementMode::Unnamed) nothing
/// stays prepared on a connection; what a cached statement keeps is its
/// description (the types of its parameters), once for the whole
/// [`Database`](crate::Database), and an uncached one with parameters is
/// described at each run instead of prepared.
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
/// [`Session::execute`]: crate::Session::execute
/// [`Session::query_rows`]: crate::Session::query_rows
/// [`Session::query_raw`]: crate::Session::query_raw
/// [`Session::query_raw_untracked`]: crate::Session::query_raw_untracked
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSql<'a> {
    text: &'a str,
    cached: bool,
}

impl<'a> RawSql<'a> {
    /// A statement the connection keeps prepared after its first run: for
    /// text that is fixed in the program, never for text built from data.
    pub fn cached(text: &'a str) -> Self {
        RawSql { text, cached: true }
    }

    /// A statement prepared for this run only, which leaves nothing on the
    /// connection: what a plain `&str` converts to.
    pub fn once(text: &'a str) -> Self {
        RawSql { text, cached: false }
    }

    /// The statement's text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Whether the connection keeps the statement prepared.
    pub fn is_cached(&self) -> bool {
        self.cached
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

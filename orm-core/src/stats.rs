//! [`SessionStats`]: what a session sent to the database.

/// Counters of what a session sent to the database, for tests and diagnostics:
/// a flush of 1,000 inserts shows up here as one statement.
///
/// Read them with [`Session::stats`](crate::Session::stats) at any time;
/// [`Session::commit`](crate::Session::commit) returns the final counts.
///
/// ```
/// # use orm_core::{Database, Entity, SessionStats};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL)").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// session.add_all((0..1_000).map(|n| Customer { id: 0, name: format!("customer {n}") }));
/// session.flush().await?;
/// let SessionStats { statements, rows, .. } = session.stats();
/// assert_eq!((statements, rows), (1, 1_000)); // one INSERT for all the rows
///
/// let found = session.query::<Customer>().count().await?;
/// let stats = session.commit().await?;
/// assert_eq!((found, stats.statements, stats.rows), (1_000, 2, 1_001)); // + the count's row
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Data statements sent (SELECT, INSERT, UPDATE, DELETE, raw SQL);
    /// transaction control (`BEGIN`, `COMMIT`, savepoints) is not counted.
    pub statements: u64,
    /// Times the session waited for the server, including prepares and
    /// transaction control that did not travel with other statements.
    pub round_trips: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Rows of large insert batches written by binary `COPY`, with keys
    /// taken from their sequence first, and of large update batches
    /// copied into a temporary table (see
    /// [`DatabaseConfig::copy_threshold`](crate::DatabaseConfig::copy_threshold));
    /// they count in `rows` too, once for the keys (or the rows copied)
    /// and once written.
    pub copied_rows: u64,
}

//! [`PoolState`]: how many connections the pool holds and who uses them,
//! for metrics and readiness checks.

use crate::database::Database;

/// A snapshot of a [`Database`]'s connection pool, from
/// [`Database::pool_state`]: export it as gauges, or alert on `waiting`,
/// the sign of a pool too small for its load (or of sessions held too long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Most connections the pool opens ([`DatabaseConfig::max_connections`](crate::DatabaseConfig::max_connections)).
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Open connections no session holds.
    pub idle: usize,
    /// Connections sessions hold.
    pub in_use: usize,
    /// Sessions waiting for a connection.
    pub waiting: usize,
}

impl Database {
    /// How many connections the pool holds, and how many are in use or
    /// waited for, now.
    ///
    /// ```
    /// # use orm_core::{Database, PoolState};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// session.execute("SELECT 1", &[]).await?; // opens a transaction: holds a connection
    /// assert_eq!(db.pool_state(), PoolState { max: 16, open: 1, idle: 0, in_use: 1, waiting: 0 });
    /// session.commit().await?;
    /// assert_eq!(db.pool_state().idle, 1);
    /// # Ok(()) }
    /// ```
    pub fn pool_state(&self) -> PoolState {
        let status = self.pool().status();
        PoolState {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }
}

//! [`SessionStats`]: what a session sent to the database.

/// Counters of what a session sent to the database, for tests and diagnostics:
/// a flush of 10,000 inserts shows up here as one statement.
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
}

//! Inserts that must be idempotent under concurrency: following answers
//! 200 whether or not a concurrent request did the same first. (Favoriting
//! leaves its insert to the commit instead, as `INSERT ... ON CONFLICT DO
//! NOTHING`, which spares the round trip of a flush: see `articles`.)
//!
//! A handler looks for the row and adds it if it is missing. Two requests
//! can both look before either commits: then the second one's `INSERT`
//! violates the primary key. Left to the commit, that would be an error
//! (409) for a request whose outcome is exactly what the client asked for.
//! So the handler flushes the insert here: a flush runs in a savepoint, and
//! a failed flush leaves the session usable with the work still pending, so
//! on that violation the insert is expunged (forgotten) and the request
//! carries on. A later read of the row goes to the database and sees the
//! concurrent request's committed row.
//!
//! Undoing needs nothing of the kind: the ORM takes deleting a row that is
//! already gone (without a version column) as done.

use orm_core::{Entity, Session, Tracked};

/// Flushes the pending insert of `row`; if a row with its key exists
/// already, forgets the insert instead. `row` must be the session's only
/// pending insert into its table, so that a unique violation on that table
/// is its key's.
pub async fn ensure_inserted<E: Entity>(session: &mut Session, row: &Tracked<E>) -> orm_core::Result<()> {
    match session.flush().await {
        Err(orm_core::Error::UniqueViolation { table: Some(table), .. }) if table == E::META.table => {
            session.expunge(row);
            Ok(())
        }
        flushed => flushed,
    }
}

//! The mark every transaction the ORM opens carries, and the guard its
//! pipelined writes test, so that no write of a unit of work can take effect
//! outside the unit's transaction.
//!
//! A flush sends `BEGIN` and its statements in one round trip. tokio-postgres
//! ends every statement with its own protocol `Sync`, so the server runs each
//! one whatever became of those before it: if `BEGIN` fails (a cancel request
//! that lands on it, say), each statement after it runs and commits on its
//! own while the flush reports an error. So `BEGIN` also sets a
//! transaction-local setting, and every statement a flush pipelines behind
//! it writes only where that setting is on. Outside the transaction the
//! guard is false, the statement writes nothing, and the flush's error
//! stands for the whole unit of work. The guard has no column in it, so the
//! planner tests it once per statement (a one-time filter), not per row.
//!
//! Raw SQL cannot carry the guard: its `BEGIN` is confirmed before the
//! statement is sent (see `Access::RawWrite`).

/// Appends the mark to a `BEGIN` statement, as one simple-protocol message.
macro_rules! marked {
    ($begin:literal) => {
        concat!($begin, "; SET LOCAL orm_core.in_unit_of_work = on")
    };
}

/// The condition a guarded write adds to its `WHERE`: true only inside a
/// transaction the ORM opened.
pub(crate) const IN_UNIT_OF_WORK: &str = "current_setting('orm_core.in_unit_of_work', true) = 'on'";

/// The `BEGIN` of a read-write transaction at the server's default level,
/// with the mark.
pub(crate) const BEGIN: &str = marked!("BEGIN");
/// [`BEGIN`] at `READ COMMITTED`.
pub(crate) const BEGIN_READ_COMMITTED: &str = marked!("BEGIN ISOLATION LEVEL READ COMMITTED");
/// [`BEGIN`] at `REPEATABLE READ`.
pub(crate) const BEGIN_REPEATABLE_READ: &str = marked!("BEGIN ISOLATION LEVEL REPEATABLE READ");
/// [`BEGIN`] at `SERIALIZABLE`.
pub(crate) const BEGIN_SERIALIZABLE: &str = marked!("BEGIN ISOLATION LEVEL SERIALIZABLE");

/// Whether a write the flush builds tests the mark.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Guard {
    /// Pipelined behind the unit of work's `BEGIN`: writes only inside the
    /// transaction it opens.
    InUnitOfWork,
    /// The whole unit of work, sent without `BEGIN` or `COMMIT`: the
    /// statement is its own transaction, with no `BEGIN` before it that
    /// could fail, so it needs no guard (and would write nothing with one).
    Alone,
}

impl Guard {
    /// The condition the write adds to its `WHERE`, if any.
    pub(crate) fn condition(self) -> Option<&'static str> {
        match self {
            Guard::InUnitOfWork => Some(IN_UNIT_OF_WORK),
            Guard::Alone => None,
        }
    }
}

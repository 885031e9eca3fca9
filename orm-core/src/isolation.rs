//! [`IsolationLevel`]: how strictly a session's transaction is isolated from
//! concurrent ones.

use crate::transaction_mark;

/// The isolation level of a session's transaction, set for every session
/// with [`DatabaseConfig::isolation`](crate::DatabaseConfig::isolation) or
/// for one with [`Database::session_with_isolation`](crate::Database::session_with_isolation).
///
/// Under [`ReadCommitted`](Self::ReadCommitted) every statement reads its own
/// snapshot, so the session's loads before its first write run outside a
/// transaction and see the same data they would inside one: a read-only
/// request costs one statement. Under the stricter levels every statement of
/// the session, its first load included, reads the one snapshot of the
/// transaction, which therefore begins with the session's first statement
/// (`BEGIN ISOLATION LEVEL ...` travels with it, costing no round trip).
/// Conflicts with concurrent transactions then come back as
/// [`Error::SerializationFailure`](crate::Error::SerializationFailure), which
/// [`is_retryable`](crate::Error::is_retryable): run the unit of work again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Each statement sees the data committed before it began.
    ReadCommitted,
    /// Every statement sees the data committed before the transaction's first one.
    RepeatableRead,
    /// As if the transactions that commit had run one after the other.
    Serializable,
}

impl IsolationLevel {
    /// The statement that opens a transaction at this level, marked as the
    /// ORM's (see [`transaction_mark`](crate::transaction_mark)).
    pub(crate) fn begin(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => transaction_mark::BEGIN_READ_COMMITTED,
            IsolationLevel::RepeatableRead => transaction_mark::BEGIN_REPEATABLE_READ,
            IsolationLevel::Serializable => transaction_mark::BEGIN_SERIALIZABLE,
        }
    }

    /// The `BEGIN` of a read-only transaction at `level` (`None`: the
    /// server's default), which the server refuses to write in.
    pub(crate) fn begin_read_only(level: Option<Self>) -> &'static str {
        match level {
            None => "BEGIN READ ONLY",
            Some(IsolationLevel::ReadCommitted) => "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY",
            Some(IsolationLevel::RepeatableRead) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Some(IsolationLevel::Serializable) => "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        }
    }

    /// Whether loads must run inside the transaction to read its snapshot.
    pub(crate) fn reads_in_transaction(self) -> bool {
        self != IsolationLevel::ReadCommitted
    }
}

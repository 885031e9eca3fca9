//! Which types each connection's driver has looked up: what decides whether
//! a statement described on one connection may run unnamed on another.
//!
//! tokio-postgres knows PostgreSQL's built-in types by heart and looks any
//! other one (an enum, an extension's type such as `citext`, a composite)
//! up with a query of its own the first time a connection meets it, and
//! keeps the answer for that connection. Running a statement unnamed
//! (`query_typed`), it meets the result's types only in the answer, and
//! looks them up while the statement's rows wait unread. It stops reading
//! a connection once a request has more than two unread pieces of its
//! answer, so with a result of a few kilobytes, or any answer a pooler
//! passes on in pieces, the lookup's answer queued behind the rows is
//! never read and the statement waits forever (rust-postgres pull request
//! 1348). A connection therefore runs a statement unnamed without
//! describing it first only once its driver knows the statement's types;
//! describing it (a prepare) looks them up before any row is sent.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use deadpool_postgres::StatementCache;
use parking_lot::Mutex;

/// Per connection of a pool, the types outside the driver's built-in list
/// that its driver has looked up. A connection is named by its
/// [`StatementCache`] (`C`), which the tests replace.
#[derive(Debug)]
pub(crate) struct TypeLookups<C = StatementCache> {
    connections: Mutex<Vec<Known<C>>>,
}

impl<C> Default for TypeLookups<C> {
    fn default() -> Self {
        TypeLookups { connections: Mutex::new(Vec::new()) }
    }
}

/// What one connection's driver knows. The connection is named by its
/// statement cache, one per connection for its lifetime: held weakly, its
/// allocation outlives the connection, so no later connection's cache can
/// take its address and inherit what this one knew.
#[derive(Debug)]
struct Known<C> {
    connection: Weak<C>,
    types: HashSet<u32>,
}

impl<C> TypeLookups<C> {
    /// Whether the driver of `connection` has looked up every type of `types`.
    pub(crate) fn knows(&self, connection: &Arc<C>, types: &[u32]) -> bool {
        if types.is_empty() {
            return true;
        }
        let connections = self.connections.lock();
        let known = connections.iter().find(|known| known.connection.as_ptr() == Arc::as_ptr(connection));
        known.is_some_and(|known| types.iter().all(|oid| known.types.contains(oid)))
    }

    /// Records that the driver of `connection` has looked up `types`, and
    /// forgets connections that are gone.
    pub(crate) fn record(&self, connection: &Arc<C>, types: &[u32]) {
        if types.is_empty() {
            return;
        }
        let mut connections = self.connections.lock();
        connections.retain(|known| known.connection.strong_count() > 0);
        match connections.iter_mut().find(|known| known.connection.as_ptr() == Arc::as_ptr(connection)) {
            Some(known) => known.types.extend(types),
            None => connections
                .push(Known { connection: Arc::downgrade(connection), types: types.iter().copied().collect() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_knows_only_what_it_looked_up() {
        let lookups = TypeLookups::<u8>::default();
        let (first, second) = (Arc::new(1), Arc::new(2));
        assert!(!lookups.knows(&first, &[16_400]));
        lookups.record(&first, &[16_400, 16_401]);
        assert!(lookups.knows(&first, &[16_400]) && lookups.knows(&first, &[16_401, 16_400]));
        assert!(!lookups.knows(&first, &[16_400, 16_402]));
        assert!(!lookups.knows(&second, &[16_400]), "another connection looked nothing up");
        assert!(lookups.knows(&second, &[]), "nothing to look up");
    }

    #[test]
    fn a_connection_gone_is_forgotten_and_a_new_one_starts_knowing_nothing() {
        let lookups = TypeLookups::<u8>::default();
        let gone = Arc::new(1);
        lookups.record(&gone, &[16_400]);
        drop(gone);
        let fresh = Arc::new(2);
        assert!(!lookups.knows(&fresh, &[16_400]));
        lookups.record(&fresh, &[16_401]);
        assert_eq!(lookups.connections.lock().len(), 1, "the connection that is gone was forgotten");
    }
}

//! [`Tracked<T>`]: the handle through which an application reads and changes
//! an entity that a session tracks.

use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::{MappedRwLockReadGuard, MappedRwLockWriteGuard, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::entity::{ColumnSet, Entity};

/// A shared handle to the one instance of an entity that a session tracks.
///
/// Cloning a handle is cheap and every clone sees the same instance, so the
/// identity map can hand out the same object for the same key. [`read`](Self::read)
/// borrows the entity; [`write`](Self::write) borrows it mutably and makes it a
/// candidate for the next flush, which compares it with its state as last
/// loaded or flushed and updates only the columns that changed.
///
/// A handle outlives its session as plain data: after commit it still reads
/// the committed values, generated keys included.
///
/// Guards are short-lived borrows: drop them before the next `.await` on the
/// session (they are not `Send`, so the compiler insists in spawned tasks).
///
/// ```
/// # use orm_core::{Database, Entity, Tracked};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     INSERT INTO customer (name) VALUES ('Alice')").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// let alice: Tracked<Customer> = session.get_one(1).await?;
/// assert_eq!((alice.key(), alice.read().name.as_str()), (1, "Alice"));
///
/// alice.write().name = "Alice".into(); // written, but to the same value:
/// assert!(!alice.is_modified()); // nothing for the flush to do
/// alice.write().name.push_str(" Smith");
/// assert!(alice.is_modified());
///
/// let again = session.get_one::<Customer>(1).await?; // from the identity map
/// assert!(Tracked::ptr_eq(&alice, &again));
/// assert_eq!(again.read().name, "Alice Smith");
/// assert_eq!(session.stats().statements, 1);
///
/// session.commit().await?; // UPDATE ... SET name
/// let plain: Customer = alice.get(); // a copy, and the handle outlives the session
/// assert_eq!(plain, Customer { id: 1, name: "Alice Smith".into() });
/// # Ok(()) }
/// ```
pub struct Tracked<T: Entity> {
    inner: Arc<Inner<T>>,
}

struct Inner<T: Entity> {
    state: RwLock<EntityState<T>>,
    /// Where the first write since the last flush announces itself, so a
    /// flush visits only written entities instead of every tracked one.
    /// Weak, so a handle that outlives its session keeps nothing alive.
    write_log: Weak<WriteLog<T>>,
}

/// The entities of one type written since they were last loaded or flushed.
pub(crate) type WriteLog<T> = Mutex<Vec<Tracked<T>>>;

/// The instance and, once it was written to, its state as the database has it.
pub(crate) struct EntityState<T> {
    pub(crate) current: T,
    /// The last loaded or flushed values, taken at the first `write()` after
    /// that: a tracked entity that is only read costs no copy, and boxed so
    /// that it costs one pointer of room instead of a second entity.
    pub(crate) snapshot: Option<Box<T>>,
}

impl<T: Entity> Tracked<T> {
    pub(crate) fn new(entity: T, write_log: &Arc<WriteLog<T>>) -> Self {
        let state = RwLock::new(EntityState { current: entity, snapshot: None });
        Tracked { inner: Arc::new(Inner { state, write_log: Arc::downgrade(write_log) }) }
    }

    /// Borrows the entity.
    pub fn read(&self) -> MappedRwLockReadGuard<'_, T> {
        RwLockReadGuard::map(self.inner.state.read(), |state| &state.current)
    }

    /// Borrows the entity mutably and marks it for change detection at the next flush.
    pub fn write(&self) -> MappedRwLockWriteGuard<'_, T> {
        let mut state = self.inner.state.write();
        if state.snapshot.is_none() {
            state.snapshot = Some(Box::new(state.current.clone()));
            // The log is locked only briefly and never while the flush holds
            // an entity's lock, so the two locks cannot deadlock.
            if let Some(log) = self.inner.write_log.upgrade() {
                log.lock().push(self.clone());
            }
        }
        RwLockWriteGuard::map(state, |state| &mut state.current)
    }

    /// A copy of the entity's current values.
    pub fn get(&self) -> T {
        self.read().clone()
    }

    /// The entity's primary key.
    pub fn key(&self) -> T::Key {
        self.read().key()
    }

    /// Whether the entity has changes that the next flush will write.
    pub fn is_modified(&self) -> bool {
        self.changed_columns() != 0
    }

    /// Whether two handles refer to the same tracked instance.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }

    /// The address of the shared instance, to tell instances apart.
    pub(crate) fn address(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    pub(crate) fn changed_columns(&self) -> ColumnSet {
        let state = self.inner.state.read();
        state.snapshot.as_ref().map_or(0, |snapshot| state.current.changed_columns(snapshot))
    }

    pub(crate) fn state(&self) -> &RwLock<EntityState<T>> {
        &self.inner.state
    }

    /// Marks the current values as what the database holds.
    pub(crate) fn mark_synced(&self) {
        self.inner.state.write().snapshot = None;
    }
}

impl<T: Entity> Clone for Tracked<T> {
    fn clone(&self) -> Self {
        Tracked { inner: Arc::clone(&self.inner) }
    }
}

impl<T: Entity + fmt::Debug> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.state.try_read() {
            Some(state) => f.debug_tuple("Tracked").field(&state.current).finish(),
            None => f.write_str("Tracked(<borrowed for writing>)"),
        }
    }
}

//! Hooks on the unit of work: code the session runs around its flushes,
//! commits and rollbacks ([`SessionEvents`]) and before it writes an entity
//! of one type ([`EntityEvents`]), registered in an [`Events`] list on
//! [`DatabaseConfig::events`](crate::DatabaseConfig::events) for every
//! session, or on one session with [`Session::events_mut`].
//!
//! The hooks are typed for the user (an [`EntityEvents<Order>`] receives a
//! `&Tracked<Order>`) and stored as trait objects, so a session keeps
//! hooks for any number of entity types in one list, in registration
//! order. Each entity type's hooks are wrapped in a private adapter that
//! knows the type and finds the session's pending work of that type; the
//! flush itself never sees them. A session with no hook pays one branch
//! per flush.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::column::Column;
use crate::entity::{ColumnSet, Entity};
use crate::error::{Error, Result};
use crate::poll_budget::ROWS_PER_YIELD;
use crate::session::Session;
use crate::stats::SessionStats;
use crate::tracked::Tracked;
use crate::types::ColumnType;

/// What a hook returns when it refuses: any error type of the
/// application, boxed. The session returns it inside [`Error::Hook`],
/// where [`std::error::Error::source`] or a match on the field gives it back
/// for a downcast.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What every hook returns: `Ok(())` to go on, an error to stop.
pub type HookResult = std::result::Result<(), HookError>;

/// Hooks on a whole session: before and after each flush, after a commit,
/// after a rollback. Every method has a default that does nothing:
/// implement those you need, with `#[orm_core::async_trait]` on the impl.
///
/// A flush runs, in order: every [`before_flush`](Self::before_flush), the
/// [`EntityEvents`] hooks of the entities it is about to write, the
/// statements, every [`after_flush`](Self::after_flush). A commit flushes
/// first (as many times as `after_flush` hooks leave new work, at most
/// 100), then sends `COMMIT` on its own, so that what an `after_flush` hook
/// writes commits or rolls back with the rest. With session hooks
/// registered, a commit therefore costs one more round trip than without.
///
/// Inside a hook the session does not autoflush (a query sees what the
/// database holds), and [`Session::flush`] is [`Error::FlushInHook`].
#[async_trait]
pub trait SessionEvents: Send + Sync + 'static {
    /// Runs before a flush that has work, with the session: it may still
    /// change entities, add and delete some, and the same flush writes
    /// them. An error aborts the flush before anything is sent (see
    /// [`Error::Hook`]); the work stays pending.
    async fn before_flush(&self, _session: &mut Session) -> HookResult {
        Ok(())
    }

    /// Runs after a flush wrote its statements, inside the transaction: a
    /// statement it runs (an audit row, say) commits or rolls back with the
    /// flushed rows. Entities it adds are written by the next flush, which
    /// a commit runs before `COMMIT`. An error is returned by the flush;
    /// what it wrote stays in the transaction, and a commit rolls back.
    async fn after_flush(&self, _session: &mut Session) -> HookResult {
        Ok(())
    }

    /// Runs once `COMMIT` succeeded, never when it failed or when its
    /// outcome is unknown (the connection broke,
    /// [`Error::CommitUnknown`]): the place to publish what the
    /// transaction did. An error comes back from the commit as
    /// [`Error::AfterCommit`], after every `after_commit` hook ran.
    async fn after_commit(&self, _stats: &SessionStats) -> HookResult {
        Ok(())
    }

    /// Runs after [`Session::rollback`], and after a commit that failed
    /// and rolled back. Not after dropping a session without commit: `Drop`
    /// cannot wait for a hook. An error is returned by `rollback`; after a
    /// failed commit the commit's error is returned and the hook's logged.
    async fn after_rollback(&self) -> HookResult {
        Ok(())
    }
}

/// Hooks on the entities of type `E` that a flush is about to write, each
/// called once per entity and flush with the entity's handle and the
/// session. Every method has a default that does nothing: implement those
/// you need, with `#[orm_core::async_trait]` on the impl.
///
/// A hook may change the entity through the handle (`entity.modify(...)`:
/// the same flush writes the change) and use the session: add an audit
/// entity, which the same flush inserts (and whose own `before_insert`
/// hooks run), or query (without autoflush). The flush batches as
/// without hooks: a `before_update` that stamps `updated_at` on every
/// updated row makes one column set more, not one statement per row.
///
/// An error aborts the flush before anything is sent, with
/// [`Error::Hook`] naming the hook and the entity type; the work stays
/// pending, with the changes hooks made so far. Hooks run at every flush
/// that writes the entity: a failed flush tried again runs them again, so
/// state a hook collects (for an outbox, say) should take each entity once.
#[async_trait]
pub trait EntityEvents<E: Entity>: Send + Sync + 'static {
    /// Runs before `entity` is inserted.
    async fn before_insert(&self, _entity: &Tracked<E>, _session: &mut Session) -> HookResult {
        Ok(())
    }

    /// Runs before `entity` is updated; `changed` are the columns the
    /// update would write now (changes made by earlier hooks included, the
    /// version column excluded).
    async fn before_update(
        &self,
        _entity: &Tracked<E>,
        _changed: ChangedColumns<E>,
        _session: &mut Session,
    ) -> HookResult {
        Ok(())
    }

    /// Runs before `entity` is deleted.
    async fn before_delete(&self, _entity: &Tracked<E>, _session: &mut Session) -> HookResult {
        Ok(())
    }
}

/// The columns of an entity an update would write, given to
/// [`EntityEvents::before_update`].
pub struct ChangedColumns<E> {
    set: ColumnSet,
    _entity: PhantomData<fn() -> E>,
}

impl<E> Clone for ChangedColumns<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ChangedColumns<E> {}

impl<E: Entity> ChangedColumns<E> {
    fn new(set: ColumnSet) -> Self {
        ChangedColumns { set, _entity: PhantomData }
    }

    /// Whether `column` changed: `changed.contains(Order::STATUS)`.
    pub fn contains<V: ColumnType>(&self, column: Column<E, V>) -> bool {
        E::META.columns.iter().position(|meta| meta.name == column.name()).is_some_and(|at| self.set & (1 << at) != 0)
    }

    /// The names of the changed columns, in field order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        E::META.columns.iter().enumerate().filter(|(at, _)| self.set & (1 << at) != 0).map(|(_, meta)| meta.name)
    }

    /// The changed columns as a [`ColumnSet`] (a bit per column index).
    pub fn set(&self) -> ColumnSet {
        self.set
    }
}

impl<E: Entity> fmt::Debug for ChangedColumns<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A list of hooks, run in the order they were registered: on
/// [`DatabaseConfig::events`](crate::DatabaseConfig::events) for every
/// session of the database, or on one session with
/// [`Session::events_mut`] (after the database's).
///
/// An empty list costs nothing: sessions without hooks flush and commit
/// exactly as before. Cloning is cheap (the list is shared).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use orm_core::{async_trait, Database, DatabaseConfig, Entity, HookResult, Session, SessionEvents};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
///
/// /// Counts the flushes that had work.
/// struct CountFlushes(Arc<AtomicUsize>);
///
/// #[async_trait]
/// impl SessionEvents for CountFlushes {
///     async fn before_flush(&self, _: &mut Session) -> HookResult {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL)").await?;
/// let (every_session, this_session) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
/// let mut config = DatabaseConfig::from_url(test_db.url())?;
/// config.events.on_session(CountFlushes(every_session.clone()));
/// let db = Database::with_config(config)?;
///
/// let mut session = db.session();
/// session.events_mut().on_session(CountFlushes(this_session.clone()));
/// session.add(Customer { id: 0, name: "Dave".into() });
/// session.commit().await?;
///
/// let mut other = db.session();
/// other.add(Customer { id: 0, name: "Erin".into() });
/// other.commit().await?;
/// assert_eq!(every_session.load(Ordering::Relaxed), 2);
/// assert_eq!(this_session.load(Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Events {
    hooks: Option<Arc<Vec<Hook>>>,
}

/// One registered hook.
#[derive(Clone)]
pub(crate) enum Hook {
    Session(Arc<dyn SessionEvents>),
    Entity(Arc<dyn EntityHook>),
}

impl Events {
    /// An empty list.
    pub fn new() -> Self {
        Events::default()
    }

    /// Registers session hooks, after those registered before.
    pub fn on_session(&mut self, hooks: impl SessionEvents) -> &mut Self {
        self.push(Hook::Session(Arc::new(hooks)))
    }

    /// Registers hooks on the entities of type `E`, after those
    /// registered before. `E` is inferred when `hooks` implements
    /// [`EntityEvents`] for one entity type; name it
    /// (`on_entity::<Order>(...)`) for a hook generic over several.
    pub fn on_entity<E: Entity>(&mut self, hooks: impl EntityEvents<E>) -> &mut Self {
        self.push(Hook::Entity(Arc::new(Typed::<E> { hooks: Box::new(hooks) })))
    }

    /// Whether no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_none()
    }

    fn push(&mut self, hook: Hook) -> &mut Self {
        Arc::make_mut(self.hooks.get_or_insert_with(Arc::default)).push(hook);
        self
    }

    /// The hooks, in registration order.
    pub(crate) fn hooks(&self) -> &[Hook] {
        self.hooks.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The session hooks, in registration order.
    pub(crate) fn session_hooks(&self) -> impl Iterator<Item = &Arc<dyn SessionEvents>> {
        self.hooks().iter().filter_map(|hook| match hook {
            Hook::Session(hooks) => Some(hooks),
            Hook::Entity(_) => None,
        })
    }

    /// The entity hooks, in registration order.
    pub(crate) fn entity_hooks(&self) -> impl Iterator<Item = &Arc<dyn EntityHook>> {
        self.hooks().iter().filter_map(|hook| match hook {
            Hook::Entity(hooks) => Some(hooks),
            Hook::Session(_) => None,
        })
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sessions = self.session_hooks().count();
        f.debug_struct("Events")
            .field("session_hooks", &sessions)
            .field("entity_hooks", &(self.hooks().len() - sessions))
            .finish()
    }
}

/// The entities one entity hook already ran on in this flush, by handle
/// address: each runs once per entity, however often new work makes the
/// session look again.
#[derive(Default)]
pub(crate) struct Seen {
    inserts: HashSet<usize>,
    updates: HashSet<usize>,
    deletes: HashSet<usize>,
}

/// An [`EntityEvents`] of some entity type, seen without the type.
#[async_trait]
pub(crate) trait EntityHook: Send + Sync {
    /// Runs the hooks on the session's pending work of the hook's entity
    /// type that they have not `seen`: deletes, updates, then inserts (so
    /// that what the first two add is seen by the last). Returns whether
    /// any ran.
    async fn run(&self, session: &mut Session, seen: &mut Seen) -> Result<bool>;
}

/// The [`EntityEvents`] of entity type `E`.
struct Typed<E: Entity> {
    hooks: Box<dyn EntityEvents<E>>,
}

#[async_trait]
impl<E: Entity> EntityHook for Typed<E> {
    async fn run(&self, session: &mut Session, seen: &mut Seen) -> Result<bool> {
        let Some(registry) = session.registries.get::<E>() else { return Ok(false) };
        let deletes: Vec<Tracked<E>> =
            registry.pending_deletes.values().filter(|t| seen.deletes.insert(t.address())).cloned().collect();
        // Whether each is updated is decided just before its hook, after
        // the hooks before it, as the flush will see it.
        let updates: Vec<Tracked<E>> =
            registry.written().into_iter().filter(|t| !seen.updates.contains(&t.address())).collect();
        let inserts: Vec<Tracked<E>> =
            registry.pending_inserts.values().filter(|t| seen.inserts.insert(t.address())).cloned().collect();
        let mut ran = !(deletes.is_empty() && inserts.is_empty());
        let failed = |hook| move |source| Error::Hook { hook, entity: Some(E::META.name), source };
        let version_bit = E::META.version_column().map_or(0, |v| 1 << v);
        // Hooks that do not wait complete in the poll that calls them: a
        // yield every chunk of entities keeps one poll from running a whole
        // large flush's hooks, as the flush itself does.
        for (at, tracked) in deletes.iter().enumerate() {
            yield_between_chunks(at).await;
            self.hooks.before_delete(tracked, session).await.map_err(failed("before_delete"))?;
        }
        for (at, tracked) in updates.iter().enumerate() {
            yield_between_chunks(at).await;
            let registry = session.registries.of::<E>();
            let changed = registry.update_candidate(tracked)?.map_or(0, |(_, set)| set) & !version_bit;
            if changed == 0 {
                continue;
            }
            seen.updates.insert(tracked.address());
            ran = true;
            let changed = ChangedColumns::new(changed);
            self.hooks.before_update(tracked, changed, session).await.map_err(failed("before_update"))?;
        }
        for (at, tracked) in inserts.iter().enumerate() {
            yield_between_chunks(at).await;
            self.hooks.before_insert(tracked, session).await.map_err(failed("before_insert"))?;
        }
        Ok(ran)
    }
}

/// Yields to the runtime before entity `at` of a list when a chunk of
/// entities has gone by.
async fn yield_between_chunks(at: usize) {
    if at > 0 && at % ROWS_PER_YIELD == 0 {
        tokio::task::yield_now().await;
    }
}

//! [`Session`]: one unit of work against the database.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::commit_token::CommitToken;
use crate::connection::{Access, Check, SessionConnection};
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::event_dispatch::{after_rollback_hooks, after_rollback_logged};
use crate::events::Events;
use crate::filters::{Filters, Lift};
use crate::flush::{self, FlushEnd, PlanScope};
use crate::identity::{Doomed, Registries};
use crate::n_plus_one::{LoadCounter, NPlusOne};
use crate::query::{self, Query};
use crate::raw_sql::RawSql;
use crate::replicas::ServedBy;
use crate::row_chunks::LoadedRows;
use crate::sql;
use crate::stats::SessionStats;
use crate::tracked::Tracked;
use crate::types::param_refs;

/// The check of a raw statement whose columns anything may be: it refuses
/// none, and only has the statement prepared (or described) before it
/// runs, even without parameters, so that the driver learns its rows'
/// types before they arrive (see `type_lookups`).
const ANY_COLUMNS: Check = |_| Ok(());

/// One unit of work: the rows it loaded (the identity map), what changed,
/// and one database transaction. Open one per request with
/// [`Database::session`](crate::Database::session).
///
/// The session takes a pooled connection only when it first talks to the
/// database, and begins its transaction with its first write, sending
/// `BEGIN` together with it; loads before that run alone, which under READ
/// COMMITTED reads the same data and makes a read-only request cost one
/// statement.
/// Loading the same key twice gives the same [`Tracked`] instance and costs
/// one query; [`commit`](Self::commit) writes every pending insert, update
/// and delete as a few batched statements and commits; dropping the session
/// instead rolls back and returns the connection clean, also when the
/// request's future was cancelled mid-statement.
///
/// Everything that may talk to the database takes `&mut self`, and the
/// session is `Send` but not `Sync`: it can move between threads with its
/// task, but it cannot be shared by two tasks.
///
/// ```compile_fail,E0277
/// fn shared<T: Sync>(_: &T) {}
/// fn check(session: &orm_core::Session) { shared(session) }
/// ```
///
/// The examples on the methods map `Customer { id: i64, name: String }`
/// (`id` generated) to a table holding Alice, Bob and Carol, ids 1 to 3.
pub struct Session {
    pub(crate) connection: SessionConnection,
    pub(crate) registries: Registries,
    pub(crate) stats: SessionStats,
    autoflush: bool,
    /// How often each load statement ran, for the N+1 guard.
    loads: LoadCounter,
    /// Set once committed or rolled back, so `Drop` knows nothing is lost.
    finished: bool,
    /// The serial numbers of the open savepoints, outermost first.
    open_savepoints: Vec<u64>,
    /// The database's hooks, then the session's own.
    pub(crate) events: Events,
    /// Set while the hooks run (created by the first run): the session
    /// then neither autoflushes nor flushes.
    pub(crate) hooks_running: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The global filters its loads add, and the tenant it is scoped to.
    pub(crate) filters: Filters,
    _not_sync: PhantomData<Cell<()>>,
}

/// What the next flush would write, from [`Session::pending`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingChanges {
    /// Entities to insert.
    pub inserts: usize,
    /// Entities with changed columns to update.
    pub updates: usize,
    /// Entities to delete.
    pub deletes: usize,
    /// Statements the flush would send.
    pub statements: usize,
}

/// An open savepoint, returned by [`Session::begin_nested`] and closed by
/// [`Session::rollback_nested`] or [`Session::release_nested`].
#[must_use = "a savepoint is closed with rollback_nested or release_nested"]
///
/// A savepoint belongs to the session and the nesting level that opened it:
/// closing it in another session, or after an enclosing savepoint was
/// closed, is [`Error::SavepointNotOpen`] and changes nothing.
#[derive(Debug)]
pub struct Savepoint {
    depth: usize,
    /// Unique among all savepoints of the process, so one can be told
    /// apart from another session's at the same depth.
    serial: u64,
}

/// The serial number of the last savepoint opened, in any session.
static SAVEPOINTS: AtomicU64 = AtomicU64::new(0);

impl Session {
    pub(crate) fn new(connection: SessionConnection, n_plus_one: NPlusOne, events: Events) -> Self {
        Session {
            filters: Filters::default(),
            connection,
            registries: Registries::default(),
            stats: SessionStats::default(),
            autoflush: true,
            loads: LoadCounter::new(n_plus_one),
            finished: false,
            open_savepoints: Vec::new(),
            events,
            hooks_running: None,
            _not_sync: PhantomData,
        }
    }

    /// What this session has sent to the database so far.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The server this session's connection came from: the primary, or
    /// for a [read session](crate::Database::read_session) possibly a
    /// replica. `None` before its first statement.
    pub fn served_by(&self) -> Option<ServedBy> {
        self.connection.served_by()
    }

    /// Whether this is a [read session](crate::Database::read_session),
    /// which refuses to write.
    pub fn is_read_only(&self) -> bool {
        self.connection.read_only()
    }

    /// Turns autoflush on or off. With autoflush (the default) every query
    /// first flushes pending changes, so it sees them; turn it off to batch
    /// changes across queries, and flush yourself.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// session.set_autoflush(false);
    /// session.add(Customer { id: 0, name: "Dave".into() });
    /// assert_eq!(session.query::<Customer>().count().await?, 3); // Dave is not sent yet
    /// session.flush().await?;
    /// assert_eq!(session.query::<Customer>().count().await?, 4);
    /// # Ok(()) }
    /// ```
    pub fn set_autoflush(&mut self, enabled: bool) {
        self.autoflush = enabled;
    }

    /// Changes what this session does when one load statement runs too
    /// often (see [`NPlusOne`]); sessions start with
    /// [`DatabaseConfig::n_plus_one`](crate::DatabaseConfig::n_plus_one).
    /// The runs counted so far are kept. For a batch job that loads row by
    /// row on purpose, say, `set_n_plus_one(NPlusOne::Off)`.
    pub fn set_n_plus_one(&mut self, setting: NPlusOne) {
        self.loads.set(setting);
    }

    /// The hooks of this session, to register more that run for it alone,
    /// after those of [`DatabaseConfig::events`](crate::DatabaseConfig::events):
    /// a request's outbox, say, that collects what the request did and
    /// publishes it after commit. See [`Events`].
    pub fn events_mut(&mut self) -> &mut Events {
        &mut self.events
    }

    async fn autoflush(&mut self) -> Result<()> {
        if self.autoflush && !self.in_hooks() {
            self.flush().await?;
        }
        Ok(())
    }

    /// The entity with this primary key, or `None`.
    ///
    /// A key already in the identity map returns its instance, with any
    /// changes not yet flushed, and costs no SQL. A key pending deletion
    /// gives `None`.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let name = match session.get::<Customer>(1).await? {
    ///     Some(customer) => customer.read().name.clone(),
    ///     None => "no such customer".to_owned(), // in a web handler: 404
    /// };
    /// assert_eq!(name, "Alice");
    /// assert!(session.get::<Customer>(42).await?.is_none());
    ///
    /// session.get::<Customer>(1).await?; // again: from the identity map
    /// assert_eq!(session.stats().statements, 2); // the two loads above, no more
    /// # Ok(()) }
    /// ```
    pub async fn get<E: Entity>(&mut self, key: E::Key) -> Result<Option<Tracked<E>>> {
        let registry = self.registries.of::<E>();
        if registry.pending_deletes.contains_key(&key) {
            return Ok(None);
        }
        if let Some(tracked) = registry.identity.get(&key) {
            // Tracked already: hidden if its values, pending changes
            // included, are ones the global filters hide.
            let tracked = tracked.clone();
            return Ok((!self.filters.hides_tracked(&tracked)?).then_some(tracked));
        }
        self.autoflush().await?;
        let mut params = E::key_params(&key);
        let sql = self.filtered::<E>(sql::select_by_key_of::<E>(), &mut params);
        self.loads.record(&sql)?;
        // At most one row, tracked alone: a load's block machinery (its
        // scratch, its vectors of rows and handles) cost a one-row request
        // more than the row itself. The key's references stay inline too.
        let refs: SmallVec<[&(dyn ToSql + Sync); 2]> = params.iter().map(|param| param.as_ref() as _).collect();
        let mut found = None;
        self.connection
            .for_each_row(RawSql::cached(&sql), &refs, Access::Read, &mut self.stats, |row| {
                found = Some(E::from_row(&row, 0)?);
                Ok(())
            })
            .await?;
        Ok(found.map(|entity| self.registries.of::<E>().track_loaded(entity)))
    }

    /// `sql`, a load of `E` that has a `WHERE` clause and calls `E`'s
    /// table `t`, with the session's global filters of `E` added, their
    /// values after `params`; as it is when none apply.
    pub(crate) fn filtered<E: Entity>(
        &self,
        sql: &'static str,
        params: &mut Vec<crate::types::Param>,
    ) -> Cow<'static, str> {
        if self.filters.condition::<E>(Lift::default()).is_none() {
            return Cow::Borrowed(sql);
        }
        let mut filtered = sql.to_owned();
        self.filters.and_where::<E>(&mut filtered, params);
        Cow::Owned(filtered)
    }

    /// The entity with this primary key, or [`Error::NotFound`].
    pub async fn get_one<E: Entity>(&mut self, key: E::Key) -> Result<Tracked<E>> {
        let missing = format!("{key:?}");
        self.get::<E>(key).await?.ok_or(Error::NotFound { entity: E::META.name, key: missing })
    }

    /// The entities with these keys, in the order of `keys`, skipping keys
    /// that have no row. Keys already in the identity map cost no SQL; the
    /// rest are loaded with one statement (`= ANY($1)`), whatever their number.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let found = session.get_many::<Customer>(&[3, 42, 1]).await?;
    /// let names: Vec<String> = found.iter().map(|c| c.read().name.clone()).collect();
    /// assert_eq!(names, ["Carol", "Alice"]); // in the order asked for; 42 has no row
    ///
    /// session.get_many::<Customer>(&[1, 3]).await?; // both in the identity map
    /// assert_eq!(session.stats().statements, 1);
    /// # Ok(()) }
    /// ```
    pub async fn get_many<E: Entity>(&mut self, keys: &[E::Key]) -> Result<Vec<Tracked<E>>> {
        let missing = self.untracked_keys::<E>(keys);
        if !missing.is_empty() {
            self.autoflush().await?;
            let mut params = E::key_arrays(&missing);
            let sql = self.filtered::<E>(sql::select_by_keys_of::<E>(), &mut params);
            self.load::<E>(&sql, &param_refs(&params)).await?;
        }
        self.visible_tracked_of::<E>(keys)
    }

    /// [`tracked_of`](Self::tracked_of), without the instances the session's
    /// filters hide, as `get` sees them.
    pub(crate) fn visible_tracked_of<E: Entity>(&mut self, keys: &[E::Key]) -> Result<Vec<Tracked<E>>> {
        let found = self.tracked_of::<E>(keys);
        let mut visible = Vec::with_capacity(found.len());
        for tracked in found {
            if !self.filters.hides_tracked(&tracked)? {
                visible.push(tracked);
            }
        }
        Ok(visible)
    }

    /// The keys among `keys` that a load must read: neither tracked nor
    /// pending deletion.
    pub(crate) fn untracked_keys<E: Entity>(&mut self, keys: &[E::Key]) -> Vec<E::Key> {
        let registry = self.registries.of::<E>();
        keys.iter()
            .filter(|&key| !registry.identity.contains_key(key) && !registry.pending_deletes.contains_key(key))
            .cloned()
            .collect()
    }

    /// The tracked instances of `keys`, in their order, skipping keys the
    /// session has no instance of or is deleting.
    pub(crate) fn tracked_of<E: Entity>(&mut self, keys: &[E::Key]) -> Vec<Tracked<E>> {
        let registry = self.registries.of::<E>();
        keys.iter()
            .filter(|&key| !registry.pending_deletes.contains_key(key))
            .filter_map(|key| registry.identity.get(key).cloned())
            .collect()
    }

    /// Starts a query over entity `E`: filter, order, limit, then load.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let dave = session.add(Customer { id: 0, name: "Dave".into() });
    /// // Autoflush: the INSERT runs first, so the query finds Dave...
    /// let found = session.query::<Customer>().filter(Customer::NAME.like("%a%")).all().await?;
    /// assert_eq!(found.len(), 2);
    /// // ...and returns the instance the session already tracks.
    /// assert!(found.iter().any(|c| Tracked::ptr_eq(c, &dave)));
    /// # Ok(()) }
    /// ```
    pub fn query<E: Entity>(&mut self) -> Query<'_, E> {
        Query::new(self)
    }

    /// Runs a SELECT of `E`'s columns (in `META` order) and returns the rows
    /// as tracked entities, identity-mapped.
    pub(crate) async fn load<E: Entity>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Tracked<E>>> {
        self.load_with(sql, params, Access::Read).await
    }

    /// [`load`](Self::load) with the access the statement needs: a locking
    /// read (`FOR UPDATE`) must run inside the transaction.
    pub(crate) async fn load_with<E: Entity>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
    ) -> Result<Vec<Tracked<E>>> {
        self.loads.record(sql)?;
        // Each row is tracked as it arrives: the load never holds its rows
        // as plain values and as instances at once.
        let mut tracking = self.registries.of::<E>().tracking();
        self.connection
            .for_each_row(RawSql::cached(sql), params, access, &mut self.stats, |row| {
                tracking.push(E::from_row(&row, 0)?);
                Ok(())
            })
            .await?;
        Ok(tracking.finish().await)
    }

    /// Counts a load statement about to be sent, for the N+1 guard; an
    /// error means it must not be sent.
    pub(crate) fn record_load(&mut self, sql: &str) -> Result<()> {
        self.loads.record(sql)
    }

    /// Runs a SELECT of `E`'s columns and returns plain values, bypassing the
    /// identity map (for large read-only loads), with the access the
    /// statement needs: a locking read must run inside the transaction.
    pub(crate) async fn load_untracked_with<E: Entity, R: LoadedRows<E>>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
    ) -> Result<R> {
        self.loads.record(sql)?;
        self.fetch_untracked(sql, params, access).await
    }

    /// [`load_untracked_with`](Self::load_untracked_with), not counted by the N+1
    /// guard: `refresh` has no batched form to point to.
    async fn fetch_untracked<E: Entity, R: LoadedRows<E>>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        access: Access,
    ) -> Result<R> {
        let mut loaded = R::default();
        self.connection
            .for_each_row(RawSql::cached(sql), params, access, &mut self.stats, |row| {
                loaded.push(E::from_row(&row, 0)?);
                Ok(())
            })
            .await?;
        Ok(loaded)
    }

    /// The connection with the statistics its statements add to, for a
    /// stream that reads rows outside the session's own methods.
    pub(crate) fn connection_and_stats(&mut self) -> (&mut SessionConnection, &mut SessionStats) {
        (&mut self.connection, &mut self.stats)
    }

    pub(crate) async fn autoflush_for_query(&mut self) -> Result<()> {
        self.autoflush().await
    }

    /// Adds a new entity; the next flush inserts it. The returned handle
    /// receives the database-generated columns (an identity key, say) when
    /// the insert has run.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let dave = session.add(Customer { id: 0, name: "Dave".into() });
    /// assert_eq!(dave.read().id, 0); // a placeholder: nothing is sent yet
    /// session.commit().await?; // INSERT ... RETURNING id, and COMMIT
    /// assert_eq!(dave.read().id, 4);
    /// # Ok(()) }
    /// ```
    pub fn add<E: Entity>(&mut self, mut entity: E) -> Tracked<E> {
        self.filters.fill_tenant(&mut entity);
        let registry = self.registries.of::<E>();
        let tracked = registry.new_tracked(entity);
        registry.add_pending(tracked.clone());
        tracked
    }

    /// Tracks an entity known to be in the database without loading it (one
    /// read from a cache, say): changes to it are flushed as updates. If the
    /// session already tracks its key, that instance is returned and `entity`
    /// is discarded, as a load would do.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let cached = Customer { id: 2, name: "Bob".into() }; // from a cache, say
    /// let bob = session.attach(cached);
    /// bob.write().name = "Robert".into();
    /// let stats = session.commit().await?;
    /// assert_eq!(stats.statements, 1); // the UPDATE, and no SELECT before it
    /// # Ok(()) }
    /// ```
    pub fn attach<E: Entity>(&mut self, entity: E) -> Tracked<E> {
        self.registries.of::<E>().track_loaded(entity)
    }

    /// What the next flush would write: entities to insert, update and
    /// delete, and the number of statements that takes. Runs the flush's own
    /// change detection and planning, without sending anything.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let bob_and_carol = session.get_many::<Customer>(&[2, 3]).await?;
    /// bob_and_carol[0].write().name = "Robert".into();
    /// session.delete(&bob_and_carol[1])?;
    /// session.add_all([Customer { id: 0, name: "Dave".into() }, Customer { id: 0, name: "Erin".into() }]);
    ///
    /// let pending = session.pending()?;
    /// assert_eq!((pending.inserts, pending.updates, pending.deletes), (2, 1, 1));
    /// assert_eq!(pending.statements, 3); // one per table and operation
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> Result<PendingChanges> {
        let mut pending = PendingChanges::default();
        let nothing_skipped = crate::tracked::AddressSet::default();
        for registry in &self.registries.all {
            if let Some(plan) = registry.plan(&PlanScope::preview(&nothing_skipped))? {
                let counts = plan.counts();
                pending.inserts += counts.inserts;
                pending.updates += counts.updates;
                pending.deletes += counts.deletes;
                pending.statements += counts.statements;
            }
        }
        Ok(pending)
    }

    /// Adds many new entities; they are inserted with one statement.
    /// Their instances are allocated together, 64 at a time, so a large
    /// batch costs an allocation per block rather than one per entity.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let added = session.add_all((1..=1000).map(|n| Customer { id: 0, name: format!("customer {n}") }));
    /// let stats = session.commit().await?;
    /// assert_eq!(stats.statements, 1); // one INSERT for the thousand rows
    /// assert_eq!(added[999].read().id, 1003); // each got its generated key
    /// # Ok(()) }
    /// ```
    pub fn add_all<E: Entity>(&mut self, entities: impl IntoIterator<Item = E>) -> Vec<Tracked<E>> {
        let filters = &self.filters;
        let registry = self.registries.of::<E>();
        let added = registry.new_tracked_all(entities.into_iter().map(|mut entity| {
            filters.fill_tenant(&mut entity);
            entity
        }));
        registry.pending_inserts.reserve(added.len());
        for tracked in &added {
            registry.add_pending(tracked.clone());
        }
        added
    }

    /// Marks an entity for deletion at the next flush. Deleting an entity
    /// that was added and not yet inserted simply forgets it. Children the
    /// session knows through a foreign key declared `on_delete = "cascade"`
    /// go with it, transitively: loaded ones are deleted before their
    /// parent, pending ones forgotten. Children it has not loaded are left
    /// to the database, whose foreign-key error comes back as
    /// [`Error::ForeignKeyViolation`].
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let bob = session.get_one::<Customer>(2).await?;
    /// session.delete(&bob)?;
    /// assert!(session.get::<Customer>(2).await?.is_none()); // pending deletion: gone already
    ///
    /// let dave = session.add(Customer { id: 0, name: "Dave".into() });
    /// session.delete(&dave)?; // never inserted: simply forgotten
    /// session.commit().await?; // DELETE ... WHERE id = ANY($1)
    /// assert_eq!(db.session().query::<Customer>().count().await?, 2);
    /// # Ok(()) }
    /// ```
    pub fn delete<E: Entity>(&mut self, entity: &Tracked<E>) -> Result<()> {
        let registry = self.registries.of::<E>();
        let (key, key_hash) = if registry.forget_pending(entity) {
            (None, None)
        } else if let Some(key) = entity.identity_key().filter(|_| registry.owns(entity)) {
            // By the key it was loaded under: its key field may have been
            // changed in memory, and that row is the one to delete.
            registry.forget_links(entity);
            registry.pending_deletes.insert(key.clone(), entity.clone());
            let hash = crate::children_index::key_hash(&key);
            (Some(Box::new(key) as Box<dyn std::any::Any>), Some(hash))
        } else {
            return Err(Error::NotInSession { entity: E::META.name });
        };
        self.registries.cascade_delete(E::META, Doomed { key, key_hash, address: entity.address() })
    }

    /// Stops tracking an entity: its pending insert, changes or deletion are
    /// forgotten and the next load of its key reads a fresh instance.
    /// Returns whether the session was tracking it.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let alice = session.get_one::<Customer>(1).await?;
    /// alice.write().name = "changed, then forgotten".into();
    /// assert!(session.expunge(&alice));
    /// assert_eq!(session.pending()?.updates, 0);
    ///
    /// let fresh = session.get_one::<Customer>(1).await?; // loaded again
    /// assert!(!Tracked::ptr_eq(&alice, &fresh));
    /// assert_eq!(fresh.read().name, "Alice");
    /// # Ok(()) }
    /// ```
    pub fn expunge<E: Entity>(&mut self, entity: &Tracked<E>) -> bool {
        let Some(registry) = self.registries.get::<E>() else { return false };
        if registry.forget_pending(entity) {
            return true;
        }
        if !registry.owns(entity) {
            return false;
        }
        registry.forget_links(entity);
        registry.leave(entity);
        true
    }

    /// Reloads an entity's columns from the database, discarding its
    /// unflushed changes. Fails with [`Error::NotFound`] if its row is gone.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let alice = session.get_one::<Customer>(1).await?;
    /// session.execute("UPDATE customer SET name = upper(name)", &[]).await?;
    /// assert_eq!(alice.read().name, "Alice"); // the session keeps what it loaded
    /// session.refresh(&alice).await?;
    /// assert_eq!(alice.read().name, "ALICE");
    /// # Ok(()) }
    /// ```
    pub async fn refresh<E: Entity>(&mut self, entity: &Tracked<E>) -> Result<()> {
        let registry = self.registries.of::<E>();
        let Some(key) = entity.identity_key().filter(|_| registry.owns(entity)) else {
            return Err(Error::NotInSession { entity: E::META.name });
        };
        // Fails now rather than after the load if a guard is held.
        drop(entity.lock_write()?);
        let mut params = E::key_params(&key);
        let sql = self.filtered::<E>(sql::select_by_key_of::<E>(), &mut params);
        let rows: Vec<E> = self.fetch_untracked(&sql, &param_refs(&params), Access::Read).await?;
        let fresh = rows.into_iter().next().ok_or(Error::NotFound { entity: E::META.name, key: format!("{key:?}") })?;
        let mut state = entity.lock_write()?;
        let registry = self.registries.of::<E>();
        // A pending change of parent is an unflushed change too.
        registry.forget_links(entity);
        let before = std::mem::replace(&mut state.current, fresh);
        // The values as last loaded or flushed, which a rollback of the
        // enclosing savepoint restores (the row it read may change with it).
        let before = entity.take_snapshot(&mut state).unwrap_or(before);
        drop(state);
        if let Some(undo) = registry.savepoints.last_mut() {
            undo.updated.push((entity.clone(), before));
        }
        registry.changed(entity);
        Ok(())
    }

    /// Writes pending inserts, updates and deletes to the database, inside
    /// the transaction, as batched statements pipelined in one round trip
    /// (more only where inserts wait for keys the database generates).
    ///
    /// The flush runs inside a savepoint and changes the objects (generated
    /// keys, versions, identity map) only after all its statements
    /// succeeded. If it fails, the database is as before the flush, the
    /// work is still pending and the session stays usable: fix the data and
    /// flush again.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let dave = session.add(Customer { id: 0, name: "Dave".into() });
    /// session.flush().await?; // INSERT ... RETURNING id, inside the transaction
    /// assert_eq!(dave.read().id, 4); // the key, before commit: use it as a foreign key
    /// assert_eq!(session.pending()?.inserts, 0);
    ///
    /// session.rollback().await?; // a flush is not a commit
    /// assert_eq!(db.session().query::<Customer>().count().await?, 3);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&mut self) -> Result<()> {
        if !self.events.is_empty() {
            // Boxed, so that the future of every flush (and of every query,
            // which may autoflush) stays as small as without hooks.
            return Box::pin(self.flush_with_events()).await;
        }
        self.check_tenant_writes()?;
        if flush::flush_nothing(&self.registries, &self.connection) {
            return Ok(());
        }
        flush::flush(&mut self.registries, &mut self.connection, &mut self.stats, FlushEnd::KeepOpen).await
    }

    /// Flushes, commits and ends the session; returns what it sent to the
    /// database. A failed commit rolls back and returns the error, also
    /// when an earlier statement of the session had already failed.
    ///
    /// An insert-only unit of work travels as one round trip with its
    /// `BEGIN` and `COMMIT`, and one that is a single statement (one new
    /// row, a batch into one table, an unversioned delete) as that
    /// statement alone, its own transaction, when nothing else of the
    /// session needs one (the guide's "How a flush is batched" lists
    /// when); updates and deletes are first checked for stale rows and
    /// then committed.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// session.add(Customer { id: 0, name: "Dave".into() });
    /// session.flush().await?;
    /// let mut other = db.session();
    /// assert_eq!(other.query::<Customer>().count().await?, 3); // not visible yet
    ///
    /// let stats = session.commit().await?; // the session is consumed
    /// assert_eq!(stats.statements, 1);
    /// assert_eq!(other.query::<Customer>().count().await?, 4);
    /// # Ok(()) }
    /// ```
    pub async fn commit(mut self) -> Result<SessionStats> {
        self.commit_now().await
    }

    /// [`commit`](Self::commit), also returning where the commit left the
    /// primary's write-ahead log, for
    /// [`Database::read_session_after`](crate::Database::read_session_after):
    /// a later session given the token reads from a replica only once the
    /// replica holds this commit. `None` when there was no transaction to
    /// commit (the session only read without one, or wrote nothing), and
    /// for a [read session](crate::Database::read_session), which writes
    /// nothing.
    ///
    /// The position is read by a `SELECT` that travels in the same message
    /// as the `COMMIT` (or right behind a unit of work's only statement,
    /// which [`commit`](Self::commit) sends alone), so it costs no extra
    /// round trip.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, ServedBy, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// session.add(Customer { id: 0, name: "Dave".into() });
    /// let (stats, token) = session.commit_with_token().await?;
    /// assert_eq!(stats.statements, 1); // the INSERT, alone; the position went with it
    /// let token = token.expect("a transaction was committed");
    ///
    /// let header = token.to_string(); // for a cookie or a header
    /// let mut next_request = db.read_session_after(header.parse()?);
    /// assert_eq!(next_request.query::<Customer>().count().await?, 4); // sees Dave
    /// assert_eq!(next_request.served_by(), Some(ServedBy::Primary)); // no replicas here
    ///
    /// let (_, token) = db.session().commit_with_token().await?;
    /// assert_eq!(token, None); // nothing committed
    /// # Ok(()) }
    /// ```
    pub async fn commit_with_token(self) -> Result<(SessionStats, Option<CommitToken>)> {
        let (committed, token) = self.commit_keeping_token().await;
        committed.map(|stats| (stats, token))
    }

    /// [`commit_with_token`](Self::commit_with_token), whose token comes
    /// back whatever the outcome: after [`Error::AfterCommit`] the commit
    /// is there for a later session to wait for.
    pub(crate) async fn commit_keeping_token(mut self) -> (Result<SessionStats>, Option<CommitToken>) {
        self.connection.want_commit_token();
        let committed = self.commit_now().await;
        (committed, self.connection.commit_token())
    }

    async fn commit_now(&mut self) -> Result<SessionStats> {
        self.finished = true;
        if self.connection.failed() {
            let _ = self.connection.finish("ROLLBACK", &mut self.stats).await;
            if !self.events.is_empty() {
                after_rollback_logged(&self.events).await;
            }
            return Err(Error::TransactionFailed);
        }
        if !self.events.is_empty() {
            Box::pin(self.commit_with_events()).await?;
            return Ok(self.stats);
        }
        if let Err(error) = self.check_tenant_writes() {
            let _ = self.connection.finish("ROLLBACK", &mut self.stats).await;
            return Err(error);
        }
        flush::flush(&mut self.registries, &mut self.connection, &mut self.stats, FlushEnd::Commit).await?;
        Ok(self.stats)
    }

    /// Refuses, before anything is sent, a flush that would write a row of
    /// another tenant than the session's.
    pub(crate) fn check_tenant_writes(&self) -> Result<()> {
        if self.filters.tenant().is_some() {
            for registry in &self.registries.all {
                registry.check_tenant(&self.filters)?;
            }
        }
        Ok(())
    }

    /// Rolls back the transaction and ends the session; pending changes are
    /// discarded.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let alice = session.get_one::<Customer>(1).await?;
    /// alice.write().name = "Alicia".into();
    /// session.flush().await?; // the UPDATE ran, inside the transaction
    /// session.rollback().await?;
    /// assert_eq!(db.session().get_one::<Customer>(1).await?.read().name, "Alice");
    /// # Ok(()) }
    /// ```
    pub async fn rollback(mut self) -> Result<()> {
        self.finished = true;
        let rolled_back = self.connection.finish("ROLLBACK", &mut self.stats).await;
        if self.events.is_empty() {
            return rolled_back;
        }
        // Whether or not ROLLBACK was answered, nothing was committed.
        let hooks = after_rollback_hooks(&self.events).await;
        rolled_back.and(hooks)
    }

    /// Flushes, then opens a savepoint: a part of the unit of work that can
    /// be undone alone with [`rollback_nested`](Self::rollback_nested).
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let dave = session.add(Customer { id: 0, name: "Dave".into() });
    /// let savepoint = session.begin_nested().await?; // Dave is flushed before it
    ///
    /// let bob = session.get_one::<Customer>(2).await?;
    /// bob.write().name = "Robert".into();
    /// session.delete(&dave)?;
    /// session.flush().await?;
    /// session.rollback_nested(savepoint).await?; // undoes the UPDATE and the DELETE
    /// assert_eq!(bob.read().name, "Bob");
    ///
    /// session.commit().await?; // keeps what came before the savepoint: Dave
    /// assert_eq!(db.session().query::<Customer>().count().await?, 4);
    /// # Ok(()) }
    /// ```
    pub async fn begin_nested(&mut self) -> Result<Savepoint> {
        self.flush().await?;
        let depth = self.registries.savepoint_depth();
        self.connection.control(&format!("SAVEPOINT orm_nested_{depth}"), &mut self.stats).await?;
        self.registries.begin_savepoint();
        let serial = SAVEPOINTS.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_savepoints.push(serial);
        Ok(Savepoint { depth, serial })
    }

    /// Fails unless `savepoint` is open in this session.
    fn check_open(&self, savepoint: &Savepoint) -> Result<()> {
        if self.open_savepoints.get(savepoint.depth) == Some(&savepoint.serial) {
            Ok(())
        } else {
            Err(Error::SavepointNotOpen)
        }
    }

    /// Rolls the database and the session back to the savepoint, as
    /// SQLAlchemy does: entities inserted since leave the session (they
    /// keep the values they were inserted with, but no row holds them and
    /// no commit inserts them), deleted ones come back, updated ones get
    /// their old values, and changes not yet flushed are discarded, links
    /// to parents among them. Handles the session no longer tracked before
    /// the savepoint (expunged, or deleted by an earlier flush) are plain
    /// data and keep what was written to them. Inner savepoints close with
    /// it. This is also how a session recovers from a failed raw statement.
    ///
    /// Fails with [`Error::SavepointNotOpen`] for a savepoint of another
    /// session or one an enclosing savepoint closed already, and with
    /// [`Error::Borrowed`] if a guard is held on an entity it would restore;
    /// either way before anything changes.
    pub async fn rollback_nested(&mut self, savepoint: Savepoint) -> Result<()> {
        self.check_open(&savepoint)?;
        self.registries.check_rollback(savepoint.depth)?;
        self.connection.rollback_to_savepoint(&format!("orm_nested_{}", savepoint.depth), &mut self.stats).await?;
        self.open_savepoints.truncate(savepoint.depth);
        let restored = self.registries.rollback_to(savepoint.depth);
        if restored.is_err() {
            // Only another thread's guard, taken in the instant since the
            // check above, fails this: the database rolled back and some
            // objects did not, so only a rollback of the whole is left.
            self.connection.poison();
        }
        restored
    }

    /// Flushes and closes the savepoint, keeping its work as part of the
    /// enclosing transaction. Fails with [`Error::SavepointNotOpen`], before
    /// anything is sent, as [`rollback_nested`](Self::rollback_nested) does.
    pub async fn release_nested(&mut self, savepoint: Savepoint) -> Result<()> {
        self.check_open(&savepoint)?;
        self.flush().await?;
        self.connection.control(&format!("RELEASE SAVEPOINT orm_nested_{}", savepoint.depth), &mut self.stats).await?;
        self.open_savepoints.truncate(savepoint.depth);
        self.registries.release_to(savepoint.depth);
        Ok(())
    }

    /// Runs a raw SQL statement in the session's transaction (after an
    /// autoflush) and returns the number of rows it affected. Values go in
    /// `params` as `$1, $2, ...`, never into the text. The statement opens
    /// the transaction if none is open yet, unless it is marked
    /// [`RawSql::read_only`]. State it leaves on the connection beyond the
    /// transaction (a `SET`, a session advisory lock, a temporary table) is
    /// reset when the session gives the connection back to the pool.
    ///
    /// A plain `&str` is prepared for this run only, so SQL text built at
    /// run time does not pile up in the connection's statement cache; that
    /// costs a round trip to prepare it when it has parameters. Pass
    /// [`RawSql::cached`] for fixed text that runs often (see [`RawSql`]).
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let renamed = session.execute("UPDATE customer SET name = upper(name) WHERE id > $1", &[&1_i64]).await?;
    /// assert_eq!(renamed, 2);
    /// session.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute(&mut self, sql: impl Into<RawSql<'_>>, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let sql = sql.into();
        self.autoflush().await?;
        // Readied first if it may return rows, which are not read but still
        // arrive (see `RawSql::may_return_rows`).
        let check = sql.may_return_rows().then_some(ANY_COLUMNS);
        self.connection.raw_statement();
        self.connection.for_each_row_checked(sql, params, sql.access(), &mut self.stats, check, |_| Ok(())).await
    }

    /// Runs a raw SQL query in the session's transaction (after an
    /// autoflush) and returns its rows, for what entities cannot express.
    /// Like [`execute`](Self::execute), it leaves nothing prepared on the
    /// connection unless `sql` is [`RawSql::cached`]. A query marked
    /// [`RawSql::read_only`] opens no transaction: before the session's
    /// first write it runs alone, as the ORM's loads do.
    pub async fn query_rows(&mut self, sql: impl Into<RawSql<'_>>, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let sql = sql.into();
        self.autoflush().await?;
        self.connection.raw_statement();
        self.raw_rows(sql, params, sql.access()).await
    }

    /// Runs a raw SQL query returning the columns of entity `E` and returns
    /// its rows as tracked entities, through the identity map: a row whose
    /// key the session already tracks gives that instance, refreshed with
    /// the row's values (SQLAlchemy's `populate_existing`). A raw statement
    /// may be an `UPDATE ... RETURNING` or an upsert, whose rows hold what
    /// the database holds now; keeping the old values in memory would hand
    /// back data the database no longer has.
    ///
    /// An instance the row would refresh that has unflushed changes (only
    /// possible with autoflush off) is [`Error::UnflushedChanges`], and no
    /// instance is changed: flush first, or read with
    /// [`query_raw_untracked`](Self::query_raw_untracked).
    ///
    /// The query must return `E`'s columns, and only those, with their
    /// names, in field order (the order of `E::META.columns`), as
    /// `SELECT t.* FROM ...` does when the table's columns are declared in
    /// that order. Columns are decoded by position; before any row is read
    /// their names are checked against `E`'s, and a difference is an
    /// [`Error::ColumnMismatch`] naming both lists, with the statement not
    /// run. Like [`execute`](Self::execute) it runs in the session's
    /// transaction after an autoflush (it may be an `UPDATE ... RETURNING`;
    /// mark a plain read [`RawSql::read_only`] and it opens none), and it
    /// counts towards the [N+1 guard](crate::NPlusOne).
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let alice = session.get_one::<Customer>(1).await?;
    /// let found = session
    ///     .query_raw::<Customer>("SELECT c.* FROM customer AS c WHERE c.name ~ $1 ORDER BY c.id", &[&"^[AB]"])
    ///     .await?;
    /// assert_eq!(found.len(), 2);
    /// assert!(Tracked::ptr_eq(&found[0], &alice)); // through the identity map
    ///
    /// let renamed = session
    ///     .query_raw::<Customer>("UPDATE customer SET name = 'Alicia' WHERE id = $1 RETURNING *", &[&1_i64])
    ///     .await?;
    /// assert!(Tracked::ptr_eq(&renamed[0], &alice));
    /// assert_eq!(alice.read().name, "Alicia"); // what the database holds now
    /// # Ok(()) }
    /// ```
    pub async fn query_raw<E: Entity>(
        &mut self,
        sql: impl Into<RawSql<'_>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Tracked<E>>> {
        let rows = self.query_raw_untracked::<E>(sql, params).await?;
        self.populate_existing(rows, true).await
    }

    /// The tracked instances for rows a raw statement returned, those
    /// already tracked refreshed with the rows' values. Every instance is
    /// checked before any is changed.
    ///
    /// With `track_new` false, rows the session did not track are dropped,
    /// and only the refreshed instances are returned.
    pub(crate) async fn populate_existing<E: Entity>(
        &mut self,
        rows: Vec<E>,
        track_new: bool,
    ) -> Result<Vec<Tracked<E>>> {
        let registry = self.registries.of::<E>();
        // By address, the instances to refresh and where their guard is.
        let mut refreshed: HashMap<usize, usize> = HashMap::new();
        let mut states = Vec::new();
        for row in &rows {
            let key = row.key();
            let Some(tracked) = registry.identity.get(&key) else { continue };
            if refreshed.contains_key(&tracked.address()) {
                continue;
            }
            let state = tracked.lock_write()?;
            let changed = tracked.snapshot(&state, |before| state.current.changed_columns(before) != 0) == Some(true);
            let linked =
                (0..E::META.columns.len()).any(|column| registry.links.contains_key(&(column, tracked.address())));
            if changed || linked || registry.pending_deletes.contains_key(&key) {
                return Err(Error::UnflushedChanges { entity: E::META.name, key: format!("{key:?}") });
            }
            refreshed.insert(tracked.address(), states.len());
            states.push(state);
        }
        let mut tracked = Vec::with_capacity(rows.len());
        let mut untracked = Vec::new();
        // Inside a savepoint, the values replaced, so that rolling it back
        // (and with it the statement that returned the rows) restores them.
        let in_savepoint = !registry.savepoints.is_empty();
        let mut replaced = Vec::new();
        for row in rows {
            if let Some(existing) = registry.identity.get(&row.key()) {
                if let Some(state) = refreshed.get(&existing.address()).map(|&at| &mut states[at]) {
                    let before = std::mem::replace(&mut state.current, row);
                    if in_savepoint {
                        replaced.push((existing.clone(), before));
                    }
                    drop(existing.take_snapshot(state));
                    registry.changed(existing);
                }
                tracked.push(Some(existing.clone()));
            } else if track_new {
                tracked.push(None);
                untracked.push(row);
            }
        }
        drop(states);
        if let Some(undo) = registry.savepoints.last_mut() {
            undo.updated.extend(replaced);
        }
        // The guards are dropped: the new rows may take several polls.
        let mut loaded = self.registries.of::<E>().track_all(untracked).await.into_iter();
        // Each row not tracked before got one of `loaded`, in order.
        Ok(tracked.into_iter().filter_map(|existing| existing.or_else(|| loaded.next())).collect())
    }

    /// [`query_raw`](Self::query_raw) returning plain values that the
    /// session does not track.
    pub async fn query_raw_untracked<E: Entity>(
        &mut self,
        sql: impl Into<RawSql<'_>>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<E>> {
        let sql = sql.into();
        self.autoflush().await?;
        self.loads.record(sql.text())?;
        let mut loaded = Vec::new();
        let check = Some(query::check_columns::<E> as Check);
        self.connection.raw_statement();
        self.connection
            .for_each_row_checked(sql, params, sql.access(), &mut self.stats, check, |row| {
                loaded.push(E::from_row(&row, 0)?);
                Ok(())
            })
            .await?;
        Ok(loaded)
    }

    /// Runs a statement the ORM built, which stays prepared on the
    /// connection (its text does not vary with data), and returns its rows.
    pub(crate) async fn rows(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)], access: Access) -> Result<Vec<Row>> {
        self.raw_rows(RawSql::cached(sql), params, access).await
    }

    /// Runs a statement the ORM built and returns the rows it affected.
    pub(crate) async fn affected(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)], access: Access) -> Result<u64> {
        self.connection.for_each_row(RawSql::cached(sql), params, access, &mut self.stats, |_| Ok(())).await
    }

    /// Runs a statement and returns its rows. Without parameters too, it
    /// is prepared (or described) first: run as the unnamed statement at
    /// once, a result with a type the connection's driver has not met (an
    /// enum, an extension's type) could make it wait forever.
    async fn raw_rows(&mut self, sql: RawSql<'_>, params: &[&(dyn ToSql + Sync)], access: Access) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.connection
            .for_each_row_checked(sql, params, access, &mut self.stats, Some(ANY_COLUMNS), |row| {
                rows.push(row);
                Ok(())
            })
            .await?;
        Ok(rows)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let pending = self.registries.pending_count();
        if pending > 0 {
            tracing::warn!(
                pending,
                "session dropped with unflushed changes, which are discarded: call commit() to keep them"
            );
        } else if self.connection.in_transaction() {
            tracing::debug!("session dropped without commit: its transaction is rolled back");
        }
    }
}

//! The identity map and pending work of one session: one [`Registry`] per
//! entity type, reachable through type erasure so the session can flush all
//! of them without knowing their types.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;
use smallvec::SmallVec;

use crate::children_index::{key_hash, ChildrenIndex};
use crate::entity::{ColumnSet, Entity, EntityMeta};
use crate::error::Result;
use crate::filters::Filters;
use crate::flush::{PlanScope, TablePlan};
use crate::key_table::KeyTable;
use crate::pending_inserts::PendingInserts;
use crate::tracked::{AddressSet, Identities, Inner, Tracked, WriteLog, BLOCK};
use crate::upsert::ConflictRule;
use crate::watched::Watched;

/// A map from keys that remembers insertion order.
///
/// The flush sends rows in this order, so rows changed after a load reach
/// the server in the order it read them (usually their physical order): the
/// UPDATE's index lookups then walk the table instead of jumping around it,
/// which measured 15-45% faster on 100,000 rows. The hasher is foldhash's
/// randomly seeded one: fast, and not predictable from outside.
pub(crate) type KeyMap<K, V> = IndexMap<K, V, foldhash::fast::RandomState>;

/// Children whose foreign key a flush filled in from a link, by column and
/// child handle address, in the order filled, each with its values from
/// before the first fill and the columns the fills changed (every column
/// of a composite key): looked up once per link, so that filling in n
/// links costs O(n).
type FilledLinks<T> = KeyMap<(usize, usize), (Tracked<T>, T, ColumnSet)>;

/// The tracked instances and pending work of one entity type.
pub(crate) struct Registry<T: Entity> {
    /// One live instance per primary key: persistent entities, including
    /// those pending deletion. A [`KeyTable`] rather than a [`KeyMap`]: it
    /// holds every row a tracked load returns, where a `KeyMap`'s stored
    /// hashes and wide positions cost 17 more bytes a row.
    pub(crate) identity: Watched<KeyTable<T::Key, Tracked<T>>>,
    /// Added and not yet inserted, in the order they were added, by handle
    /// address.
    pub(crate) pending_inserts: Watched<PendingInserts<T>>,
    /// Marked for deletion and not yet deleted.
    pub(crate) pending_deletes: Watched<KeyMap<T::Key, Tracked<T>>>,
    /// Entities written since they were last loaded or flushed, in the order
    /// of their first write: the only ones a flush compares.
    pub(crate) write_log: Arc<WriteLog<T>>,
    /// Work flushed inside each open savepoint, innermost last, so rolling
    /// back to a savepoint can undo it in memory too.
    pub(crate) savepoints: Vec<Undo<T>>,
    /// Children linked to a parent that was not inserted yet, by foreign-key
    /// column and child handle address: the flush fills their foreign key
    /// once the parent's generated key is known.
    pub(crate) links: Watched<KeyMap<(usize, usize), ParentLink<T>>>,
    /// The parents whose children through each foreign-key column were
    /// loaded: a `HashSet<ParentKey>` behind `Any`, since the parent type is
    /// known only to the caller. The children themselves are found in the
    /// identity map, so a collection always reflects the session's changes.
    /// Hashed with foldhash: every `children` call looks its column up here.
    pub(crate) loaded_children: HashMap<usize, Box<dyn Any + Send + Sync>, foldhash::fast::RandomState>,
    /// Where to find the tracked entities that point at a parent, for
    /// `children` and cascades.
    pub(crate) children_index: ChildrenIndex<T>,
    /// During a flush, entities inserted by an earlier round trip of the
    /// same flush as the database has them (generated columns filled in), by
    /// handle address; the tracked entities get those values only when the
    /// whole flush succeeded.
    pub(crate) provisional: HashMap<usize, T>,
    /// Keys a load of parents looked for and found neither in the database
    /// nor in the identity map (deleted, hidden by a filter, or a dangling
    /// reference): a child pointing at one has no parent, rather than one
    /// not loaded. They hold while the session's count of writes stays at
    /// `absent_at`: a write (a flush, the application's SQL, a rolled-back
    /// savepoint) may bring such a row back, and then they are forgotten.
    pub(crate) absent: HashSet<T::Key>,
    /// The session's count of writes when `absent` was noted (see
    /// [`SessionConnection::writes`](crate::connection::SessionConnection::writes)).
    pub(crate) absent_at: u64,
    /// During a flush, the children whose foreign key it filled in from a
    /// link: a flush that fails puts them back, since it changes no object.
    filled_links: parking_lot::Mutex<FilledLinks<T>>,
}

/// An entity deleted (or, if it was pending, forgotten) whose children a
/// cascade deletes too.
pub(crate) struct Doomed {
    /// Its key (a boxed `Key` of its type), `None` if it was pending.
    pub(crate) key: Option<Box<dyn Any>>,
    /// The hash of `key`, under which the children index files the
    /// entity's children.
    pub(crate) key_hash: Option<u64>,
    /// Its handle's address, which its pending children's links point to.
    pub(crate) address: usize,
}

/// What the links of one entity type wait for at the start of a round trip
/// of a flush.
#[derive(Default)]
pub(crate) struct LinkState {
    /// Pending inserts that must wait for a parent's key, by address.
    pub(crate) waiting: AddressSet,
    /// Whether any link still waits, including links through columns set by
    /// a post-update, which do not hold back the insert.
    pub(crate) unresolved: bool,
}

/// A child whose parent is still pending.
pub(crate) struct ParentLink<T: Entity> {
    pub(crate) child: Tracked<T>,
    /// The parent's handle (a `Tracked<Parent>`).
    pub(crate) parent: Box<dyn Any + Send + Sync>,
    /// The parent handle's address, to compare it without knowing its type.
    pub(crate) parent_address: usize,
    /// Sets the child's foreign key from the parent's key, once that is
    /// known (the parent is persistent, or was inserted earlier in this
    /// flush); returns whether it could.
    pub(crate) resolve: ResolveLink<T>,
}

/// Fills a child's foreign key if its parent's key is known yet; fails
/// with [`Error::Borrowed`](crate::Error::Borrowed) if the parent is.
/// Its arguments: the registries, the child's handle address and entity.
pub(crate) type ResolveLink<T> = Box<dyn Fn(&Registries, usize, &mut T) -> Result<bool> + Send + Sync>;

/// What a flush inside a savepoint changed in memory.
pub(crate) struct Undo<T: Entity> {
    /// Entities inserted since the savepoint: they leave the session.
    pub(crate) inserted: Vec<Tracked<T>>,
    /// Entities updated since the savepoint, with their values before.
    pub(crate) updated: Vec<(Tracked<T>, T)>,
    /// Entities deleted since the savepoint: they are persistent again.
    pub(crate) deleted: Vec<Tracked<T>>,
}

impl<T: Entity> Undo<T> {
    fn new() -> Self {
        Undo { inserted: Vec::new(), updated: Vec::new(), deleted: Vec::new() }
    }

    /// The entities a rollback makes persistent again: those deleted
    /// inside the savepoint, but not those also inserted inside it, whose
    /// rows the rollback takes away too (they leave the session, keeping
    /// their values as every entity inserted inside does).
    fn returning(&self) -> impl Iterator<Item = &Tracked<T>> {
        let inserted: HashSet<usize> = self.inserted.iter().map(Tracked::address).collect();
        self.deleted.iter().filter(move |tracked| !inserted.contains(&tracked.address()))
    }
}

impl<T: Entity> Registry<T> {
    fn new() -> Self {
        Registry {
            identity: Watched::default(),
            pending_inserts: Watched::default(),
            pending_deletes: Watched::default(),
            write_log: Arc::default(),
            savepoints: Vec::new(),
            links: Watched::default(),
            loaded_children: HashMap::default(),
            children_index: ChildrenIndex::new(),
            provisional: HashMap::new(),
            absent: HashSet::new(),
            absent_at: 0,
            filled_links: parking_lot::Mutex::default(),
        }
    }

    /// [`new_tracked`](Self::new_tracked) for each of `entities`, allocated
    /// [`BLOCK`] at a time as a load's rows are: adding a large batch costs
    /// an allocation per block instead of one per entity.
    pub(crate) fn new_tracked_all(&self, entities: impl IntoIterator<Item = T>) -> Vec<Tracked<T>> {
        let mut entities = entities.into_iter();
        let mut tracked = Vec::with_capacity(entities.size_hint().0);
        while let Some(first) = entities.next() {
            let (keys, rest): (Vec<_>, Vec<_>) =
                entities.by_ref().take(BLOCK - 1).map(|entity| (entity.key(), Inner::new(entity))).unzip();
            let identities = Identities::not_held(keys);
            tracked.extend(Tracked::new_block(&self.write_log, Inner::new(first), rest, identities));
        }
        tracked
    }

    /// A new handle whose writes this registry's flushes will see.
    pub(crate) fn new_tracked(&self, entity: T) -> Tracked<T> {
        Tracked::new(entity, &self.write_log, None, None)
    }

    /// [`new_tracked`](Self::new_tracked) for an entity whose insert
    /// follows `rule` when its row clashes with an existing one.
    pub(crate) fn new_tracked_on_conflict(&self, entity: T, rule: ConflictRule) -> Tracked<T> {
        Tracked::new(entity, &self.write_log, None, Some(rule))
    }

    /// The write log of this entity type.
    pub(crate) fn write_log(&self) -> &WriteLog<T> {
        &self.write_log
    }

    /// A number that changes whenever an entity leaves the identity map or
    /// moves in it, or pending work or links change: while it stays the
    /// same, a bucket of the children index found clean holds tracked
    /// entities only, in collection order. Appending new rows to the map
    /// leaves it alone.
    pub(crate) fn generation(&self) -> u64 {
        self.identity.changes() + self.pending_inserts.changes() + self.pending_deletes.changes() + self.links.changes()
    }

    /// The tracked instance for a freshly read row: the one already in the
    /// map (its pending changes win over the row), or the row, now tracked.
    pub(crate) fn track_loaded(&mut self, entity: T) -> Tracked<T> {
        let generation = self.generation();
        let Registry { identity, write_log, children_index, .. } = self;
        let key = entity.key();
        // A new key goes after every tracked entity: the buckets of the
        // children index stay in collection order.
        let held = identity.appending().get_or_insert_with(key, |key| {
            let tracked = Tracked::new(entity, write_log, Some(key.clone()), None);
            if !children_index.file_new(&tracked, generation) {
                write_log.note_moved(&tracked);
            }
            tracked
        });
        held.clone()
    }

    /// Adds a pending insert, which may be a parent a load found missing:
    /// those notes are forgotten.
    pub(crate) fn add_pending(&mut self, tracked: Tracked<T>) {
        self.write_log.note_moved(&tracked);
        self.pending_inserts.push(tracked);
        self.absent.clear();
    }

    /// Puts `tracked` in the identity map under `key`.
    pub(crate) fn enter(&mut self, key: T::Key, tracked: Tracked<T>) {
        tracked.set_identity_key(Some(key.clone()));
        self.write_log.note_moved(&tracked);
        self.identity.insert(key, tracked);
    }

    /// Notes that the session changed `tracked`'s values itself (no handle
    /// write tells the children index about those).
    pub(crate) fn changed(&self, tracked: &Tracked<T>) {
        self.write_log.note_moved(tracked);
    }

    /// Takes an entity that is no longer tracked out of the children index.
    pub(crate) fn forget_in_index(&mut self, tracked: &Tracked<T>) {
        self.children_index.remove(tracked);
    }

    /// Takes `tracked` out of the identity map, if it is there.
    pub(crate) fn leave(&mut self, tracked: &Tracked<T>) {
        if let Some(key) = tracked.identity_key() {
            if self.identity.get(&key).is_some_and(|held| Tracked::ptr_eq(held, tracked)) {
                self.identity.swap_remove(&key);
                self.pending_deletes.swap_remove(&key);
            }
        }
        tracked.set_identity_key(None);
        self.children_index.remove(tracked);
    }

    /// The entities written since they were last loaded or flushed, each
    /// once, in the order of their first write. Compacts the log: entries
    /// whose changes were flushed or discarded since are dropped. The log is
    /// not held while entity states are read (see [`Tracked::write`]).
    pub(crate) fn written(&self) -> Vec<Tracked<T>> {
        let logged = std::mem::take(&mut *self.write_log.entries.lock());
        // Addresses are not chosen by users: foldhash, not SipHash, which
        // took most of this function's time on 100,000 entries.
        let mut seen = HashSet::with_capacity_and_hasher(logged.len(), foldhash::fast::RandomState::default());
        let written: Vec<_> = logged.into_iter().filter(|t| seen.insert(t.address()) && t.is_written()).collect();
        self.put_back(written.clone());
        written
    }

    /// Drops the entities that are no longer written (flushed, or found
    /// unchanged) from the write log, keeping the others in order. Unlike
    /// [`written`](Self::written) it leaves an entity logged twice twice,
    /// for the next `written` to tell: nothing reads the list here.
    fn drop_synced(&self) {
        let mut logged = std::mem::take(&mut *self.write_log.entries.lock());
        logged.retain(Tracked::is_written);
        self.put_back(logged);
    }

    /// Makes `survivors` the write log, ahead of the writes logged since it
    /// was taken out (the log is not held while entity states are read:
    /// see [`Tracked::write`]).
    fn put_back(&self, survivors: Vec<Tracked<T>>) {
        let mut log = self.write_log.entries.lock();
        let arrived = std::mem::replace(&mut *log, survivors);
        log.extend(arrived);
    }

    /// For a written entity the flush may update: the key it is tracked
    /// under and the columns changed since its snapshot. `None` for one
    /// that is not written, is a pending insert or deletion, or is no
    /// longer tracked: those are not updated.
    pub(crate) fn update_candidate(&self, tracked: &Tracked<T>) -> Result<Option<(T::Key, ColumnSet)>> {
        let (original_key, changed) = {
            let state = tracked.lock_read()?;
            let read = |snapshot: &T| (snapshot.key(), state.current.changed_columns(snapshot));
            let Some(candidate) = tracked.snapshot(&state, read) else { return Ok(None) };
            candidate
        };
        let persistent = self.identity.get(&original_key).is_some_and(|t| Tracked::ptr_eq(t, tracked));
        if !persistent || self.pending_deletes.contains_key(&original_key) {
            return Ok(None);
        }
        Ok(Some((original_key, changed)))
    }

    /// Forgets a pending insert and its links to pending parents; returns
    /// whether `handle` was one.
    pub(crate) fn forget_pending(&mut self, handle: &Tracked<T>) -> bool {
        if self.pending_inserts.remove(handle.address()).is_none() {
            return false;
        }
        self.forget_links(handle);
        self.children_index.remove(handle);
        true
    }

    /// Whether `tracked` is the instance the session will delete.
    fn is_pending_delete(&self, tracked: &Tracked<T>) -> bool {
        tracked
            .identity_key()
            .is_some_and(|key| self.pending_deletes.get(&key).is_some_and(|held| Tracked::ptr_eq(held, tracked)))
    }

    /// Forgets the links of `child` to pending parents: its change of parent
    /// is discarded (or it is deleted or no longer tracked), so no flush
    /// may wait for, or fill in, those parents' keys.
    pub(crate) fn forget_links(&mut self, child: &Tracked<T>) {
        if self.links.is_empty() {
            return;
        }
        // `swap_remove`: the order of the links decides nothing a user sees
        // (a collection is ordered by where each child stands, and the keys
        // the links fill in go out in one batch), and keeping it made
        // forgetting n linked children O(n²).
        for column in 0..T::META.columns.len() {
            self.links.swap_remove(&(column, child.address()));
        }
    }

    /// Takes the instances of rows a set-based DELETE removed out of the
    /// session, as a flushed delete does (a rolled-back savepoint brings
    /// them back).
    pub(crate) fn forget_deleted(&mut self, keys: &[T::Key]) {
        for key in keys {
            let Some(tracked) = self.identity.swap_remove(key) else { continue };
            self.pending_deletes.swap_remove(key);
            self.forget_links(&tracked);
            if let Some(undo) = self.savepoints.last_mut() {
                undo.deleted.push(tracked);
            }
        }
    }

    /// Where `child` stands among the entities the session tracks and does
    /// not delete: `(false, index)` in the identity map, `(true, index)`
    /// among pending inserts, `None` if neither. Collections list children
    /// in this order, as a scan of the identity map, then of the pending
    /// inserts, would find them.
    pub(crate) fn live_position(&self, child: &Tracked<T>) -> Option<(bool, usize)> {
        if let Some(at) = self.pending_inserts.place_of(child.address()) {
            return Some((true, at));
        }
        let key = child.identity_key()?;
        let (at, _, held) = self.identity.get_full(&key)?;
        (Tracked::ptr_eq(held, child) && !self.pending_deletes.contains_key(&key)).then_some((false, at))
    }

    /// Brings the children index up to date (building it on first use).
    pub(crate) fn refresh_children_index(&mut self) -> Result<()> {
        let Registry { identity, pending_inserts, write_log, links, children_index, .. } = self;
        let tracked = identity.values().chain(pending_inserts.values());
        let links = links.iter().map(|(&(column, _), link)| (column, link.parent_address, &link.child));
        let is_tracked = |entity: &Tracked<T>| {
            pending_inserts.contains(entity.address())
                || entity
                    .identity_key()
                    .is_some_and(|key| identity.get(&key).is_some_and(|held| Tracked::ptr_eq(held, entity)))
        };
        children_index.refresh(write_log, tracked, links, is_tracked)
    }

    /// The children of the parent whose key hashes to `key_hash` and whose
    /// handle is at `parent_address`, through `column`, that `belongs`
    /// (given the link to a pending parent, if the child has one, and the
    /// child's values) confirms, in collection order; the candidates the
    /// session no longer tracks are dropped from the index on the way.
    pub(crate) fn children_of(
        &mut self,
        column: usize,
        key_hash: Option<u64>,
        parent_address: usize,
        belongs: impl Fn(Option<&ParentLink<T>>, &T) -> bool,
    ) -> Result<Vec<Tracked<T>>> {
        self.refresh_children_index()?;
        if self.links.is_empty() {
            if let Some(clean) = self.children_index.clean_bucket(column, key_hash, self.generation()) {
                // Every candidate is tracked, in collection order: only
                // its foreign key is left to compare.
                let mut found = Vec::with_capacity(clean.len());
                for child in clean {
                    if belongs(None, &child.lock_read()?.current) {
                        found.push(child.clone());
                    }
                }
                return Ok(found);
            }
        }
        let mut found = Vec::with_capacity(self.children_index.filed_count(column, key_hash));
        let mut gone = Vec::new();
        let mut failed = Ok(());
        let this = &*self;
        this.children_index.for_each_candidate(column, key_hash, parent_address, |child| {
            let Some(position) = this.live_position(child) else {
                if !this.owns(child) {
                    gone.push(child.clone());
                }
                return;
            };
            let link = this.links.get(&(column, child.address()));
            match child.lock_read() {
                Ok(state) if belongs(link, &state.current) => found.push((position, child.clone())),
                Ok(_) => {}
                Err(error) => failed = Err(error),
            }
        });
        for child in &gone {
            self.children_index.remove(child);
        }
        failed?;
        found.sort_unstable_by_key(|(position, _)| *position);
        Ok(found.into_iter().map(|(_, child)| child).collect())
    }

    /// Whether `handle` is this registry's instance for its key, found by
    /// the key it was tracked under (its key field may have been changed).
    pub(crate) fn owns(&self, handle: &Tracked<T>) -> bool {
        handle
            .identity_key()
            .is_some_and(|key| self.identity.get(&key).is_some_and(|tracked| Tracked::ptr_eq(tracked, handle)))
    }

    /// Forgets pending work made since the last flush: values go back to
    /// their last flushed state, pending inserts and deletes are dropped.
    fn discard_pending(&mut self) -> Result<()> {
        // Only entities the session tracks, or that the rollback brings
        // back (deleted inside the savepoint): one expunged, or deleted
        // before it, is plain data, whose later writes are the caller's and
        // not the session's to undo.
        let returning: HashSet<usize> =
            self.savepoints.last().map(|undo| undo.returning().map(Tracked::address).collect()).unwrap_or_default();
        let written: Vec<_> = self
            .written()
            .into_iter()
            .filter(|t| self.owns(t) || self.pending_inserts.contains(t.address()) || returning.contains(&t.address()))
            .collect();
        // Every entity first, so that a borrowed one leaves all unchanged.
        let mut states = written.iter().map(Tracked::lock_write).collect::<Result<Vec<_>>>()?;
        for (tracked, state) in written.iter().zip(&mut states) {
            if let Some(snapshot) = tracked.take_snapshot(state) {
                state.current = snapshot;
            }
        }
        drop(states);
        for tracked in &written {
            self.changed(tracked);
        }
        for tracked in self.pending_inserts.values() {
            tracked.set_identity_key(None);
            self.children_index.remove(tracked);
        }
        self.pending_inserts.clear();
        self.pending_deletes.clear();
        // A link is made by `set_parent` to a pending parent, and every
        // pending parent is gone with the discarded work.
        self.links.clear();
        self.children_index.clear_links();
        Ok(())
    }
}

/// A registry seen without its entity type.
pub(crate) trait ErasedRegistry: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn meta(&self) -> &'static EntityMeta;
    /// Fills the foreign keys of linked children whose parents' keys are
    /// known, and tells which pending inserts must wait (links through the
    /// `deferred` columns of a post-update do not hold an insert back).
    fn resolve_links(&self, registries: &Registries, deferred: ColumnSet) -> Result<LinkState>;
    /// Whether a flush may have anything to do: pending inserts, deletes or
    /// links, or entities written since the last flush.
    fn has_pending_work(&self) -> bool;
    /// Whether some pending inserts are not among `sent` (by address).
    fn has_inserts_besides(&self, sent: &AddressSet) -> bool;
    /// How many pending inserts without an on-conflict rule are in neither
    /// `waiting` nor `sent`: the plain inserts the next round trip carries.
    fn plain_inserts_besides(&self, waiting: &AddressSet, sent: &AddressSet) -> usize;
    /// Starts a flush: writes from now on to the entities it binds are
    /// kept apart from the values it sends.
    fn begin_flush(&mut self);
    /// Forgets what a flush kept between its round trips.
    fn end_flush(&mut self, succeeded: bool);
    /// Deletes the children of a deleted parent along foreign keys declared
    /// `on_delete = "cascade"`: the entities whose foreign key holds the
    /// parent's `key` (none for a parent that was pending) or that are linked
    /// to the parent's handle, pending inserts among them forgotten, loaded
    /// ones marked for deletion. Returns them, to cascade further.
    fn cascade_delete(&mut self, parent: &'static EntityMeta, doomed: &Doomed) -> Result<Vec<Doomed>>;
    /// Pending inserts and deletes, and entities written since the last flush.
    fn pending_count(&self) -> usize;
    /// Builds this table's statements; the plan applies their results later.
    fn plan(&self, scope: &PlanScope) -> crate::error::Result<Option<Box<dyn TablePlan>>>;
    /// Opens an undo log for a new savepoint.
    fn begin_savepoint(&mut self);
    /// Whether every entity a rollback to the innermost `depth` savepoints
    /// would change can be borrowed now: checked before the database
    /// rolls back, so memory can follow it.
    fn check_rollback(&self, depth: usize) -> Result<()>;
    /// Rolls memory back to the innermost savepoint's start: entities
    /// inserted since leave the session, deleted ones come back, updated
    /// ones get their values back, and unflushed work is discarded.
    fn rollback_savepoint(&mut self) -> Result<()>;
    /// Merges the innermost savepoint's undo log into its parent.
    fn release_savepoint(&mut self);
    /// Refuses pending writes of rows of another tenant than the one
    /// `filters` scope the session to (see [`Filters::check_writes`]).
    fn check_tenant(&self, filters: &Filters) -> Result<()>;
}

impl<T: Entity> ErasedRegistry for Registry<T> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn check_tenant(&self, filters: &Filters) -> Result<()> {
        filters.check_writes(self)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn meta(&self) -> &'static EntityMeta {
        T::META
    }

    fn resolve_links(&self, registries: &Registries, deferred: ColumnSet) -> Result<LinkState> {
        let mut links = LinkState::default();
        for (&(column, _), link) in self.links.iter() {
            // A row the flush deletes is not written: a link set on it after
            // its delete fills in nothing, and its instance keeps its key.
            if self.is_pending_delete(&link.child) {
                continue;
            }
            let mut state = link.child.lock_write()?;
            let before = state.current.clone();
            if (link.resolve)(registries, link.child.address(), &mut state.current)? {
                // The foreign key was filled in without a handle write.
                self.changed(&link.child);
                let filled = state.current.changed_columns(&before);
                self.filled_links
                    .lock()
                    .entry((column, link.child.address()))
                    .and_modify(|(_, _, columns)| *columns |= filled)
                    .or_insert_with(|| (link.child.clone(), before, filled));
            } else {
                links.unresolved = true;
                if deferred & (1 << column) == 0 {
                    links.waiting.insert(link.child.address());
                }
            }
        }
        Ok(links)
    }

    fn has_pending_work(&self) -> bool {
        !self.pending_inserts.is_empty()
            || !self.pending_deletes.is_empty()
            || !self.links.is_empty()
            || !self.write_log.entries.lock().is_empty()
    }

    fn has_inserts_besides(&self, sent: &AddressSet) -> bool {
        self.pending_inserts.keys().any(|address| !sent.contains(&address))
    }

    fn plain_inserts_besides(&self, waiting: &AddressSet, sent: &AddressSet) -> usize {
        self.pending_inserts
            .iter()
            .filter(|(address, tracked)| {
                !waiting.contains(address) && !sent.contains(address) && tracked.conflict_rule().is_none()
            })
            .count()
    }

    fn begin_flush(&mut self) {
        self.write_log.begin_flush();
    }

    fn end_flush(&mut self, succeeded: bool) {
        self.write_log.end_flush();
        self.provisional.clear();
        let filled = std::mem::take(&mut *self.filled_links.lock());
        if !succeeded {
            // The keys filled in may be those of parents whose inserts were
            // rolled back with the flush: the children read their earlier
            // values again, and their links fill them in at the next flush.
            // Only where nothing else changed meanwhile: a write that landed
            // during the flush is kept (the link still wins over it).
            for (child, before, columns) in filled.into_values().rev() {
                if let Ok(mut state) = child.lock_write() {
                    if state.current.changed_columns(&before) & !columns == 0 {
                        state.current = before;
                    }
                }
            }
        }
        if succeeded {
            // Every pending parent was inserted, so every link is resolved.
            // Only cleared if there are any: clearing counts as a change of
            // the registry (its generation), which would make every clean
            // bucket of the children index unclean after each autoflush.
            if !self.links.is_empty() {
                self.links.clear();
            }
            self.children_index.clear_links();
            // Drops the written entities the flush synced from the write
            // log, so that the next flush can tell at once that nothing is
            // pending.
            self.drop_synced();
        }
    }

    fn cascade_delete(&mut self, parent: &'static EntityMeta, doomed: &Doomed) -> Result<Vec<Doomed>> {
        let columns: Vec<usize> = (0..T::META.columns.len())
            .filter(|&i| T::META.columns[i].cascade_delete && T::META.columns[i].references(parent))
            .collect();
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        // A link to a pending parent wins over the foreign key, which keeps
        // its old value until the flush fills it in.
        let mut found: Vec<Tracked<T>> = Vec::new();
        for &column in &columns {
            found.extend(self.children_of(column, doomed.key_hash, doomed.address, |link, child| match link {
                Some(link) => link.parent_address == doomed.address,
                None => doomed.key.as_deref().is_some_and(|key| child.references_key(column, key)),
            })?);
        }
        if columns.len() > 1 {
            // A child may point at the parent through several columns.
            let mut seen = HashSet::new();
            found.retain(|child| seen.insert(child.address()));
        }
        let mut persistent: Vec<(T::Key, Tracked<T>)> = Vec::new();
        let mut pending: Vec<Tracked<T>> = Vec::new();
        for child in found {
            match child.identity_key().filter(|_| !self.pending_inserts.contains(child.address())) {
                Some(key) => persistent.push((key, child)),
                None => pending.push(child),
            }
        }
        let mut children = Vec::with_capacity(persistent.len() + pending.len());
        for (key, child) in persistent {
            let hash = key_hash(&key);
            children.push(Doomed { key: Some(Box::new(key.clone())), key_hash: Some(hash), address: child.address() });
            self.forget_links(&child);
            self.pending_deletes.insert(key, child);
        }
        for child in pending {
            self.forget_pending(&child);
            children.push(Doomed { key: None, key_hash: None, address: child.address() });
        }
        Ok(children)
    }

    fn pending_count(&self) -> usize {
        // Written entities the session no longer tracks (expunged) hold no pending work.
        // One borrowed for writing counts as changed: nothing can be said
        // without waiting for its guard.
        let changed =
            self.written().iter().filter(|t| t.try_changed_columns().is_none_or(|c| c != 0) && self.owns(t)).count();
        self.pending_inserts.len() + self.pending_deletes.len() + changed
    }

    fn plan(&self, scope: &PlanScope) -> crate::error::Result<Option<Box<dyn TablePlan>>> {
        crate::flush::plan_table(self, scope)
    }

    fn begin_savepoint(&mut self) {
        self.savepoints.push(Undo::new());
    }

    fn check_rollback(&self, depth: usize) -> Result<()> {
        let undone = self.savepoints.iter().skip(depth);
        let updated = undone.flat_map(|undo| undo.updated.iter().map(|(tracked, _)| tracked));
        let written = self.write_log.entries.lock().clone();
        for tracked in updated.chain(&written) {
            drop(tracked.lock_write()?);
        }
        Ok(())
    }

    fn rollback_savepoint(&mut self) -> Result<()> {
        self.discard_pending()?;
        let Some(undo) = self.savepoints.pop() else { return Ok(()) };
        // As in SQLAlchemy: rows inserted inside the savepoint are gone, so
        // their objects leave the session (they keep their values, keys the
        // database generated included; add a copy to insert it again). Out
        // first, since a row deleted inside may have been replaced by one
        // inserted with its key.
        for tracked in &undo.inserted {
            self.leave(tracked);
        }
        for tracked in undo.returning() {
            if let Some(key) = tracked.identity_key() {
                self.enter(key, tracked.clone());
            }
        }
        for (tracked, before) in undo.updated.into_iter().rev() {
            let mut state = tracked.lock_write()?;
            state.current = before;
            drop(tracked.take_snapshot(&mut state));
            drop(state);
            self.changed(&tracked);
        }
        Ok(())
    }

    fn release_savepoint(&mut self) {
        let Some(undo) = self.savepoints.pop() else { return };
        if let Some(parent) = self.savepoints.last_mut() {
            parent.inserted.extend(undo.inserted);
            parent.updated.extend(undo.updated);
            parent.deleted.extend(undo.deleted);
        }
    }
}

/// All registries of a session, in the order their types were first used.
#[derive(Default)]
pub(crate) struct Registries {
    /// Found by type with a scan of `types`: a session uses few types,
    /// and a scan of a short list beats hashing on every `get` of a short
    /// request. Inline for the first few types, as `types` is: the list's
    /// own allocation was a third of a one-type session's registry.
    pub(crate) all: SmallVec<[Box<dyn ErasedRegistry>; 4]>,
    /// The type of each registry of `all`, at the same position: compared
    /// where they lie, where asking each registry its type took two
    /// dynamic calls per registry passed (120 instructions a lookup among
    /// three types). Inline for the first few types, so a session's first
    /// type costs no second allocation.
    types: SmallVec<[TypeId; 4]>,
    /// Open savepoints; a registry created inside them gets an undo log for each.
    savepoint_depth: usize,
}

impl Registries {
    /// Whether a flush may have anything to do in any registry.
    pub(crate) fn has_pending_work(&self) -> bool {
        self.all.iter().any(|registry| registry.has_pending_work())
    }

    /// The registry of `T`, created on first use.
    pub(crate) fn of<T: Entity>(&mut self) -> &mut Registry<T> {
        let index = self.index_of::<T>().unwrap_or_else(|| {
            // Boxed as it is made: a registry is a few hundred bytes, which
            // boxing a finished one would copy.
            let mut registry = Box::new(Registry::<T>::new());
            registry.savepoints.extend((0..self.savepoint_depth).map(|_| Undo::new()));
            self.all.push(registry);
            self.types.push(TypeId::of::<Registry<T>>());
            self.all.len() - 1
        });
        self.all[index]
            .as_any_mut()
            .downcast_mut::<Registry<T>>()
            .unwrap_or_else(|| unreachable!("registries are found by their type"))
    }

    /// The registry of `T` if the session has used `T`.
    pub(crate) fn get<T: Entity>(&mut self) -> Option<&mut Registry<T>> {
        let index = self.index_of::<T>()?;
        self.all[index].as_any_mut().downcast_mut::<Registry<T>>()
    }

    /// The registry of `T`, read-only, if the session has used `T`.
    pub(crate) fn get_ref<T: Entity>(&self) -> Option<&Registry<T>> {
        let index = self.index_of::<T>()?;
        self.all[index].as_any().downcast_ref::<Registry<T>>()
    }

    fn index_of<T: Entity>(&self) -> Option<usize> {
        let wanted = TypeId::of::<Registry<T>>();
        self.types.iter().position(|&held| held == wanted)
    }

    /// Deletes, transitively, the children the session knows of a deleted
    /// parent along foreign keys declared `on_delete = "cascade"`.
    pub(crate) fn cascade_delete(&mut self, parent: &'static EntityMeta, doomed: Doomed) -> Result<()> {
        let mut work = vec![(parent, doomed)];
        while let Some((meta, doomed)) = work.pop() {
            // A soft-deleted parent's row stays, and so do the rows that
            // reference it, unless they are soft-deletable too: deleting
            // them for good would lose what a restore brings back.
            let soft = meta.soft_delete_column().is_some() && doomed.key.is_some();
            for registry in &mut self.all {
                let child_meta = registry.meta();
                if soft && child_meta.soft_delete_column().is_none() {
                    continue;
                }
                work.extend(registry.cascade_delete(meta, &doomed)?.into_iter().map(|child| (child_meta, child)));
            }
        }
        Ok(())
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.all.iter().map(|r| r.pending_count()).sum()
    }

    pub(crate) fn savepoint_depth(&self) -> usize {
        self.savepoint_depth
    }

    pub(crate) fn begin_savepoint(&mut self) {
        self.savepoint_depth += 1;
        self.all.iter_mut().for_each(|r| r.begin_savepoint());
    }

    /// Whether memory can be rolled back to savepoint number `depth`
    /// without waiting on a guard.
    pub(crate) fn check_rollback(&self, depth: usize) -> Result<()> {
        self.all.iter().try_for_each(|r| r.check_rollback(depth))
    }

    /// Undoes in memory what happened since savepoint number `depth` began.
    pub(crate) fn rollback_to(&mut self, depth: usize) -> Result<()> {
        while self.savepoint_depth > depth {
            self.savepoint_depth -= 1;
            for registry in &mut self.all {
                registry.rollback_savepoint()?;
            }
        }
        Ok(())
    }

    /// Keeps what happened since savepoint number `depth` began, as part of
    /// the enclosing savepoint or transaction.
    pub(crate) fn release_to(&mut self, depth: usize) {
        while self.savepoint_depth > depth {
            self.savepoint_depth -= 1;
            self.all.iter_mut().for_each(|r| r.release_savepoint());
        }
    }
}

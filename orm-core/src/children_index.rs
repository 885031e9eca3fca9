//! The parent-to-children index of one entity type: which tracked entities
//! may point at a given parent through a given foreign key, so that
//! [`Session::children`](crate::Session::children) and cascading deletes
//! look at a parent's children only, instead of scanning every tracked
//! entity of the child type for each parent (which made walking or
//! deleting N parents cost N times the whole identity map).
//!
//! The index lists *candidates*: every caller verifies each one against the
//! session's state (still tracked, not pending deletion, a link to a pending
//! parent winning over the foreign key, the foreign key itself compared by
//! value). So an entry that went stale can only make a lookup look at one
//! entity too many, never return a wrong child; the one thing the index
//! must never do is *miss* a child. That is why it is kept by few, simple
//! hooks, each of which only ever adds work:
//!
//! - every entity that enters the session (load, `add`, flush, savepoint
//!   rollback) and every entity whose values change, through a handle
//!   ([`Tracked::try_write`] notes it in the write log's `moved` list) or
//!   inside the session (refresh, raw-query refresh, savepoint rollback,
//!   foreign keys the flush fills in), is queued, and
//! - the queue is drained, re-reading each queued entity's foreign keys,
//!   before every lookup.
//!
//! A freshly loaded row is filed at once instead of queued, if the index is
//! built: no handle to it exists yet, so nothing can have changed it. An
//! eager load ([`Session::load_children`](crate::Session::load_children))
//! builds the index before it loads, so its rows are filed as they are
//! tracked, which costs a push per child instead of a queue entry and a
//! second pass.
//!
//! A lookup verifies its candidates cheaply when their bucket is *clean*:
//! filled only by fresh rows appended to the identity map, with nothing
//! taken out of or moved in the map, and no pending work or link changed
//! since (the registry's generation, which every mutable use of those
//! collections advances, is the same). Then every candidate is tracked and
//! the bucket is in collection order, so the lookup compares foreign keys
//! only, without finding each candidate in the identity map and sorting.
//! Any other filing or removal makes its bucket unclean for good.
//!
//! Entities that leave the session are taken out at once where the session
//! knows it (expunge, delete, savepoint rollback), and otherwise when a
//! lookup finds them no longer tracked, so the index does not keep
//! forgotten entities alive.
//!
//! The index is built on first use (a lookup, a cascade, or loading
//! children): a session that does none of these pays one atomic load per
//! write and per tracked entity.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

use indexmap::IndexMap;

use crate::entity::Entity;
use crate::error::Result;
use crate::tracked::{Tracked, WriteLog};

/// One hasher for the whole process, randomly seeded: a child's foreign key
/// (hashed where its type is known, by the derive) and a parent's key
/// (hashed where the parent's type is known, by a lookup or a cascade) must
/// hash alike, in every registry of every session.
static KEY_HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The hash under which the index files a parent key; `#[derive(Entity)]`
/// hashes foreign-key fields with it.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    KEY_HASHER.hash_one(key)
}

/// Candidates of one parent through one column, in the order they were
/// filed (taking one out moves the last into its slot). A plain vector: a
/// child is filed once per column, so `placed` knows its slot, and filing
/// costs a push instead of hashing its address into a map per parent.
struct Bucket<T: Entity> {
    children: Vec<Tracked<T>>,
    /// The registry's generation (see `Registry::generation`) at which
    /// every child of the bucket was known to be in the identity map, not
    /// pending deletion, and the bucket in the map's order: while the
    /// generation is the same, a lookup needs to compare foreign keys only.
    /// `None` once anything but a fresh row was filed or taken out.
    clean_at: Option<u64>,
    /// Whether fresh rows were filed in it since `placed` was last brought
    /// up to date: it has its run in `unplaced` then, one whatever the
    /// number of runs of its rows (a load's rows may alternate between
    /// parents row by row).
    unsettled: bool,
}

impl<T: Entity> Default for Bucket<T> {
    fn default() -> Self {
        Bucket::with_capacity(0)
    }
}

impl<T: Entity> Bucket<T> {
    fn with_capacity(capacity: usize) -> Self {
        Bucket { children: Vec::with_capacity(capacity), clean_at: None, unsettled: false }
    }
}

/// Children linked to one pending parent, by handle address.
type LinkBucket<T> = IndexMap<usize, Tracked<T>, foldhash::fast::RandomState>;

/// The buckets by foreign-key column and parent-key hash: an `IndexMap`,
/// so that a load filing a run of children of the same parent (rows
/// usually arrive grouped by parent) finds their bucket by its position,
/// without hashing and probing again for each child.
type BucketMap<T> = IndexMap<(usize, u64), Bucket<T>, foldhash::fast::RandomState>;

/// A map with foldhash's hasher: the index holds an entry per tracked
/// child, and with `SipHash` deleting 8,000 parents with their 80,000
/// children took 80 ms instead of 45. Its keys are addresses and randomly
/// seeded hashes, nothing an outsider chooses.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where an entity is filed through one column.
#[derive(Clone, Copy)]
struct Slot {
    /// The hash of the parent key the column held when it was filed.
    hash: u64,
    /// Its position in that bucket.
    at: usize,
}

/// Candidate children of one entity type by the parent they point at.
pub(crate) struct ChildrenIndex<T: Entity> {
    /// Whether the index was built; until then it holds nothing and no
    /// hook does any work.
    built: bool,
    /// By foreign-key column and hash of the parent key the column held
    /// when the entity was last indexed.
    by_key: BucketMap<T>,
    /// The bucket the last fresh row was filed in and its position in
    /// `by_key`; forgotten when a bucket is taken out (which moves another
    /// into its position), and when `placed` is brought up to date (the
    /// next fresh row then starts a run of `unplaced`).
    last_filed: Option<((usize, u64), usize)>,
    /// Where each entity is filed, by (address, column): to move it when
    /// its foreign key changes, and to take it out when it leaves, in
    /// constant time whatever the size of its bucket.
    placed: FastMap<(usize, usize), Slot>,
    /// Where fresh rows were filed, not entered in `placed` yet: a load
    /// files thousands of children that a session seldom moves or drops
    /// before it ends, so their entries are made (in one go) only when
    /// something reads `placed`. One run per bucket a load filed into:
    /// the bucket's position in `by_key` and the slot of its first fresh
    /// child, the fresh children taking every slot after it (nothing else
    /// is filed, and no bucket taken out, before `placed` is read).
    unplaced: Vec<(usize, usize)>,
    /// The room a new bucket is made with while `expected_buckets` lasts:
    /// the average number of children per parent of the load of children
    /// under way.
    bucket_capacity: usize,
    /// How many more buckets are made with `bucket_capacity`: the parents
    /// of that load. Later loads' buckets (a page of children of many
    /// other parents) must not each get the room of one parent's
    /// thousands of children, nor must those of a load cut off early.
    expected_buckets: usize,
    /// Children linked to a pending parent (`set_parent`), by foreign-key
    /// column and the parent handle's address: the link wins over the
    /// foreign key until the flush fills it in.
    by_link: FastMap<(usize, usize), LinkBucket<T>>,
}

impl<T: Entity> ChildrenIndex<T> {
    pub(crate) fn new() -> Self {
        ChildrenIndex {
            built: false,
            by_key: BucketMap::default(),
            last_filed: None,
            placed: FastMap::default(),
            unplaced: Vec::new(),
            bucket_capacity: 0,
            expected_buckets: 0,
            by_link: FastMap::default(),
        }
    }

    /// The columns of `T` that reference another entity.
    fn reference_columns() -> impl Iterator<Item = usize> {
        T::META.columns.iter().enumerate().filter(|(_, c)| c.references.is_some()).map(|(i, _)| i)
    }

    /// Brings the index up to date before a lookup: builds it from every
    /// tracked entity and link on first use, then re-reads the foreign keys
    /// of the entities queued in `log` since. `is_tracked` tells whether the
    /// session still tracks an entity (pending insert or identity map).
    pub(crate) fn refresh<'a>(
        &mut self,
        log: &WriteLog<T>,
        tracked: impl Iterator<Item = &'a Tracked<T>>,
        links: impl Iterator<Item = (usize, usize, &'a Tracked<T>)>,
        is_tracked: impl Fn(&Tracked<T>) -> bool,
    ) -> Result<()> {
        if !self.built {
            // Watched first: a write that lands during the build is queued
            // and read again below.
            log.watch();
            let (count, _) = tracked.size_hint();
            self.placed.reserve(count * Self::reference_columns().count());
            for entity in tracked {
                let placed = entity.lock_read().map(|state| self.place_first(entity, &state.current));
                if let Err(error) = placed {
                    *self = Self::new();
                    return Err(error);
                }
            }
            self.built = true;
            for (column, parent, child) in links {
                self.link(column, parent, child);
            }
        }
        let moved = log.take_moved();
        for (at, entity) in moved.iter().enumerate() {
            if !is_tracked(entity) {
                self.remove(entity);
                continue;
            }
            let placed = entity.lock_read().map(|state| self.place(entity, &state.current));
            if let Err(error) = placed {
                // Those not read yet stay queued for the next lookup.
                moved[at..].iter().for_each(|entity| log.note_moved(entity));
                return Err(error);
            }
        }
        Ok(())
    }

    /// Files a handle that just entered the session (a freshly loaded
    /// row) at once, instead of queueing it for the next lookup to read
    /// again: an eager load fills the index as it tracks the rows. Returns
    /// false if the index is not built, or the entity could not be read
    /// (then queue it).
    ///
    /// The row was just appended to the identity map at `generation`: a
    /// bucket clean at that generation stays clean, and a new one is.
    pub(crate) fn file_new(&mut self, tracked: &Tracked<T>, generation: u64) -> bool {
        if !self.built {
            return false;
        }
        let Ok(state) = tracked.lock_read() else { return false };
        for column in Self::reference_columns() {
            if let Some(hash) = state.current.reference_hash(column) {
                self.file_fresh(tracked, column, hash, generation);
            }
        }
        true
    }

    /// Whether the index was built (before, filing does nothing).
    pub(crate) fn is_built(&self) -> bool {
        self.built
    }

    /// The foreign-key column of `T` if it has exactly one, as most
    /// entities do: a load reads the parent-key hash of such a row before
    /// the row becomes an instance, and files it with
    /// [`file_new_under`](Self::file_new_under), without a lock.
    pub(crate) fn sole_reference_column() -> Option<usize> {
        let mut columns = Self::reference_columns();
        let first = columns.next()?;
        columns.next().is_none().then_some(first)
    }

    /// [`file_new`](Self::file_new) for an entity whose only foreign-key
    /// column is `column`, its parent key hashing to `hash` (`None` for a
    /// NULL), read from its row.
    #[inline]
    pub(crate) fn file_new_under(
        &mut self,
        tracked: &Tracked<T>,
        column: usize,
        hash: Option<u64>,
        generation: u64,
    ) -> bool {
        if !self.built {
            return false;
        }
        if let Some(hash) = hash {
            self.file_fresh(tracked, column, hash, generation);
        }
        true
    }

    /// Files a fresh row's handle last in its bucket through `column`.
    /// Always inlined into the load's loop, which files every child it
    /// tracks: left to itself the compiler called it per row, 57
    /// instructions of its own each in W7.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn file_fresh(&mut self, tracked: &Tracked<T>, column: usize, hash: u64, generation: u64) {
        let bucket = self.new_row_bucket((column, hash));
        bucket.children.push(tracked.clone());
        if bucket.children.len() > 1 && bucket.clean_at != Some(generation) {
            bucket.clean_at = None;
        } else {
            bucket.clean_at = Some(generation);
        }
    }

    /// The bucket a fresh row is filed in under `key`, made with the
    /// expected room if new: the one the previous row went to without a
    /// lookup if it is the same. Inlined, as a load calls it per row and
    /// rows mostly come in runs of one parent's children; the lookup of
    /// another bucket is not.
    #[inline]
    fn new_row_bucket(&mut self, key: (usize, u64)) -> &mut Bucket<T> {
        let at = match self.last_filed {
            Some((last, at)) if last == key => at,
            _ => self.start_run(key),
        };
        match self.by_key.get_index_mut(at) {
            Some((_, bucket)) => bucket,
            None => unreachable!("a bucket's position stays while no bucket is taken out"),
        }
    }

    /// Finds or makes the bucket under `key` for a run of fresh rows,
    /// which starts at its current end; returns its position.
    #[inline(never)]
    fn start_run(&mut self, key: (usize, u64)) -> usize {
        let capacity = if self.expected_buckets > 0 { self.bucket_capacity } else { 0 };
        let buckets = self.by_key.len();
        let entry = self.by_key.entry(key);
        let at = entry.index();
        let bucket = entry.or_insert_with(|| Bucket::with_capacity(capacity));
        if !bucket.unsettled {
            bucket.unsettled = true;
            self.unplaced.push((at, bucket.children.len()));
        }
        if self.by_key.len() > buckets {
            self.expected_buckets = self.expected_buckets.saturating_sub(1);
        }
        self.last_filed = Some((key, at));
        at
    }

    /// Makes room for `parents` more buckets, and the next `parents`
    /// buckets created with room for `children` each: a load of children
    /// knows how many parents it asked for and how many children it found
    /// per parent.
    pub(crate) fn expect_per_parent(&mut self, parents: usize, children: usize) {
        if self.built {
            self.by_key.reserve(parents);
            self.unplaced.reserve(parents);
        }
        self.bucket_capacity = children;
        self.expected_buckets = parents;
    }

    /// Enters the fresh rows' filings in `placed`, before anything reads it.
    fn settle(&mut self) {
        if self.unplaced.is_empty() {
            return;
        }
        self.last_filed = None;
        let fresh = |&(at, first): &(usize, usize)| {
            self.by_key.get_index(at).map_or(0, |(_, bucket)| bucket.children.len().saturating_sub(first))
        };
        self.placed.reserve(self.unplaced.iter().map(fresh).sum());
        for (at, first) in self.unplaced.drain(..) {
            let Some((&(column, hash), bucket)) = self.by_key.get_index_mut(at) else { continue };
            bucket.unsettled = false;
            let children = bucket.children.iter().enumerate().skip(first);
            self.placed.extend(children.map(|(at, child)| ((child.address(), column), Slot { hash, at })));
        }
    }

    /// The candidates through `column` of the parent whose key hashes to
    /// `key_hash`, if their bucket is clean at `generation` (see
    /// [`Bucket::clean_at`]) and no child is linked to a pending parent.
    pub(crate) fn clean_bucket(&self, column: usize, key_hash: Option<u64>, generation: u64) -> Option<&[Tracked<T>]> {
        let bucket = self.by_key.get(&(column, key_hash?))?;
        (bucket.clean_at == Some(generation) && self.by_link.is_empty()).then_some(bucket.children.as_slice())
    }

    /// Files `tracked` under the parent keys `entity` (its values) holds.
    fn place(&mut self, tracked: &Tracked<T>, entity: &T) {
        self.settle();
        let address = tracked.address();
        for column in Self::reference_columns() {
            let now = entity.reference_hash(column);
            let before = self.placed.get(&(address, column)).copied();
            if now == before.map(|slot| slot.hash) {
                continue;
            }
            if let Some(before) = before {
                self.placed.remove(&(address, column));
                self.unfile(column, before, address);
            }
            if let Some(hash) = now {
                self.file(column, hash, tracked);
            }
        }
    }

    /// [`place`](Self::place) for an entity not filed yet, as when the
    /// index is built: nothing to look up or take out first.
    fn place_first(&mut self, tracked: &Tracked<T>, entity: &T) {
        for column in Self::reference_columns() {
            if let Some(hash) = entity.reference_hash(column) {
                self.file(column, hash, tracked);
            }
        }
    }

    /// Files `tracked` last in its bucket, which is no longer known clean.
    fn file(&mut self, column: usize, hash: u64, tracked: &Tracked<T>) {
        let bucket = self.by_key.entry((column, hash)).or_default();
        self.placed.insert((tracked.address(), column), Slot { hash, at: bucket.children.len() });
        bucket.children.push(tracked.clone());
        bucket.clean_at = None;
    }

    /// Takes the entity at `address` out of the bucket `slot` names (its
    /// entry in `placed` is gone already), moving the bucket's last entity
    /// into its slot.
    fn unfile(&mut self, column: usize, slot: Slot, address: usize) {
        let Some(bucket) = self.by_key.get_mut(&(column, slot.hash)) else { return };
        bucket.clean_at = None;
        let bucket = &mut bucket.children;
        let at = if bucket.get(slot.at).is_some_and(|filed| filed.address() == address) {
            slot.at
        } else {
            // Not where `placed` says: never expected, but looked for
            // rather than trusted, so a wrong slot cannot drop another child.
            let Some(at) = bucket.iter().position(|filed| filed.address() == address) else { return };
            at
        };
        bucket.swap_remove(at);
        if let Some(moved) = bucket.get(at) {
            if let Some(moved_slot) = self.placed.get_mut(&(moved.address(), column)) {
                moved_slot.at = at;
            }
        }
        if bucket.is_empty() {
            self.by_key.swap_remove(&(column, slot.hash));
            self.last_filed = None;
        }
    }

    /// Takes an entity that left the session out of the index.
    pub(crate) fn remove(&mut self, tracked: &Tracked<T>) {
        if !self.built {
            return;
        }
        self.settle();
        let address = tracked.address();
        for column in Self::reference_columns() {
            if let Some(slot) = self.placed.remove(&(address, column)) {
                self.unfile(column, slot, address);
            }
        }
        // Links are left be: they are verified on use, and all go at the
        // next flush.
    }

    /// Records that `child` was linked through `column` to the pending
    /// parent at `parent_address`.
    pub(crate) fn link(&mut self, column: usize, parent_address: usize, child: &Tracked<T>) {
        if self.built {
            // `for_each_candidate` reads `placed` for linked children.
            self.settle();
            self.by_link.entry((column, parent_address)).or_default().insert(child.address(), child.clone());
        }
    }

    /// Forgets every link: the session's links were all resolved or discarded.
    pub(crate) fn clear_links(&mut self) {
        self.by_link.clear();
    }

    /// How many candidates [`for_each_candidate`](Self::for_each_candidate)
    /// will visit at least, to size what collects them.
    pub(crate) fn filed_count(&self, column: usize, key_hash: Option<u64>) -> usize {
        key_hash.and_then(|hash| self.by_key.get(&(column, hash))).map_or(0, |bucket| bucket.children.len())
    }

    /// Visits the candidate children through `column` of the parent whose
    /// key hashes to `key_hash` (`None` for a parent without a key yet) and
    /// whose handle is at `parent_address`, each once, without copying
    /// them. Call [`refresh`](Self::refresh) first, and verify each.
    pub(crate) fn for_each_candidate(
        &self,
        column: usize,
        key_hash: Option<u64>,
        parent_address: usize,
        mut visit: impl FnMut(&Tracked<T>),
    ) {
        if let Some(filed) = key_hash.and_then(|hash| self.by_key.get(&(column, hash))) {
            filed.children.iter().for_each(&mut visit);
        }
        if let Some(linked) = self.by_link.get(&(column, parent_address)) {
            let filed_here =
                |address: usize| self.placed.get(&(address, column)).is_some_and(|slot| Some(slot.hash) == key_hash);
            let unfiled = linked.iter().filter(|(address, _)| !filed_here(**address));
            unfiled.for_each(|(_, child)| visit(child));
        }
    }
}

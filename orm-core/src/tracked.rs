//! [`Tracked<T>`]: the handle through which an application reads and changes
//! an entity that a session tracks.
//!
//! Borrows of a handle never block forever. A conflicting borrow from the
//! thread that already holds a guard (which would deadlock on a lock) fails at
//! once; one from another thread waits at most [`BORROW_WAIT`] for that
//! thread's guard, which is normally held for a few instructions. The flush
//! borrows the same way and fails with [`Error::Borrowed`] instead of
//! waiting on a user's guard, and a write that lands while a flush is on the
//! wire stays pending for the next flush (see [`EntityState::sent`]).

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::entity::{ColumnSet, Entity};
use crate::error::{Error, Result};
use crate::held_guards::{held_here, hold, release};
use crate::upsert::ConflictRule;

/// How long a borrow waits for a guard that another thread holds before it
/// gives up: long enough for any guard used as a guard should be (a few
/// field accesses), short enough that a guard held across an `.await`
/// surfaces as an error instead of a hang.
pub(crate) const BORROW_WAIT: Duration = Duration::from_secs(1);

/// A shared handle to the one instance of an entity that a session tracks.
///
/// Cloning a handle is cheap and every clone sees the same instance, so the
/// identity map can hand out the same object for the same key.
/// [`modify`](Self::modify) changes it in one call, the normal way to write;
/// [`read`](Self::read) borrows it and [`write`](Self::write) borrows it
/// mutably. Every write makes the entity a candidate for the next flush,
/// which compares it with its state as last loaded or flushed and updates
/// only the columns that changed.
///
/// A handle outlives its session as plain data: after commit it still reads
/// the committed values, generated keys included.
///
/// Borrows follow `RefCell`'s rules and never wait on themselves: a
/// conflicting borrow on the same thread (`h.write().n = h.read().n + 1`)
/// panics at once with a message naming the entity and its key, and
/// [`try_read`](Self::try_read) / [`try_write`](Self::try_write) return
/// [`Error::Borrowed`] instead. A guard held across `session.commit().await`
/// makes the flush fail with [`Error::Borrowed`] before it sends anything,
/// rather than hang. Keep guards to one statement, or use `modify`.
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
/// alice.modify(|c| c.name = "Alice".into()); // written, but to the same value:
/// assert!(!alice.is_modified()); // nothing for the flush to do
/// alice.modify(|c| c.name.push_str(" Smith"));
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
    /// The block of instances this one was allocated in.
    block: Arc<Block<T>>,
    /// Its place in the block (see [`Block::instance`]).
    slot: u32,
}

/// A set of handles by [`Tracked::address`], as a flush keeps which
/// pending inserts wait or were sent. Addresses are not chosen by users,
/// so foldhash rather than the standard library's slower hasher: a flush
/// of 100,000 inserts files each of them.
pub(crate) type AddressSet = std::collections::HashSet<usize, foldhash::fast::RandomState>;

/// How many instances a tracked load allocates together at most: one
/// allocation (and one free) per block instead of one per row, while a
/// handle kept after its siblings are gone keeps at most this many
/// entities' memory alive.
pub(crate) const BLOCK: usize = 64;

/// Instances allocated together, by a load that tracks many rows at once
/// or an `add_all` (or alone, by any other path): they share one
/// reference count and one link to their write log, so tracking a row
/// costs no allocation of its own. The first instance lives in the block itself, so a block of one
/// (a `get`, an `add`) is one allocation, as a lone instance was.
struct Block<T: Entity> {
    /// Where the first write since the last flush announces itself, so a
    /// flush visits only written entities instead of every tracked one.
    /// Weak, so a handle that outlives its session keeps nothing alive.
    write_log: Weak<WriteLog<T>>,
    /// How the insert of the first instance treats a clashing row, if it
    /// was added with one
    /// ([`Session::add_on_conflict`](crate::Session::add_on_conflict)),
    /// which makes a block of one. Kept here rather than in every
    /// instance, as loaded rows never have one: fixed at creation, so a
    /// flush reads it without a lock; boxed, as few blocks have one.
    conflict: Option<Box<ConflictRule>>,
    first: Inner<T>,
    /// The others, in slot order from slot 1; empty (no allocation) for a
    /// block of one.
    rest: Box<[Inner<T>]>,
    /// Bit `slot` tells whether that instance has a snapshot: its last
    /// loaded or flushed values, taken at the first `write()` after that,
    /// so a tracked entity that is only read costs no copy. Changed only
    /// together with the snapshot, under the instance's lock, which orders
    /// every access to the instance's bit. Kept by the block rather than
    /// by each instance, as are the flag and keys below: an instance is
    /// then its lock, its values, its flush number and the pointer to its
    /// `sent` copy, and a large load touches that much less memory.
    written: AtomicU64,
    /// Bit `slot` tells whether that instance waits in its write log's
    /// `moved` list, so that repeated writes queue it once.
    moved: AtomicU64,
    /// The keys under which the session's identity map holds the block's
    /// instances (see [`Tracked::identity_key`]), kept apart from the
    /// entities: the session finds an instance by its key even while a
    /// guard is held on it or after its key field was changed. One lock
    /// for the block, taken alone.
    identities: Mutex<Identities<T::Key>>,
    /// The snapshots of the block's written instances (see
    /// [`written`](Self::written)).
    snapshots: Mutex<Snapshots<T>>,
}

const _: () = assert!(BLOCK <= u64::BITS as usize, "a block's flags are one bit per slot of a u64");

/// The bit of `slot` in a block's flags.
#[inline]
fn slot_bit(slot: u32) -> u64 {
    1 << slot
}

/// The identity keys of a block's instances, by slot: none for an
/// instance the identity map does not hold (a pending insert, a deleted
/// or expunged entity).
pub(crate) struct Identities<K> {
    first: Option<K>,
    /// Slots 1 and on; empty (no allocation) for a block of one. A slot's
    /// key counts only while its bit of `held` is set; the others keep a
    /// key as a placeholder (the entity's key when it was added, or the
    /// one it was last tracked under), so that each key takes its own
    /// size rather than an `Option`'s: 4 bytes instead of 8 for an `i32`,
    /// on every row of a tracked load.
    rest: Box<[K]>,
    /// Bit `slot` is set for each slot of `rest` whose key the identity
    /// map holds the instance under.
    held: u64,
}

impl<K: Clone> Identities<K> {
    /// The keys of a block, `first`'s and then `rest`'s, all held by the
    /// identity map; `rest` should have been allocated with room for
    /// exactly its keys: it becomes the block's storage as it is.
    pub(crate) fn new(first: Option<K>, rest: Vec<K>) -> Self {
        // Bits 1 to `rest.len()` (at most 63: a block's slots fit a u64).
        let held =
            u32::try_from(rest.len()).ok().and_then(|len| 1_u64.checked_shl(len)).map_or(u64::MAX, |bit| bit - 1) << 1;
        Identities { first, rest: rest.into_boxed_slice(), held }
    }

    /// The keys of a block that the identity map does not hold yet: each
    /// entity's key as it was added, in `rest`, as placeholders.
    pub(crate) fn not_held(rest: Vec<K>) -> Self {
        Identities { first: None, rest: rest.into_boxed_slice(), held: 0 }
    }

    /// The key the identity map holds `slot`'s instance under, if it does.
    fn get(&self, slot: u32) -> Option<K> {
        match slot {
            0 => self.first.clone(),
            _ if self.held & slot_bit(slot) == 0 => None,
            _ => self.rest.get(usize::try_from(slot - 1).ok()?).cloned(),
        }
    }

    /// Records that the identity map holds `slot`'s instance under `key`,
    /// or, if `None`, does not hold it.
    fn set(&mut self, slot: u32, key: Option<K>) {
        if slot == 0 {
            self.first = key;
            return;
        }
        let Some(placed) = usize::try_from(slot - 1).ok().and_then(|at| self.rest.get_mut(at)) else { return };
        match key {
            Some(key) => {
                *placed = key;
                self.held |= slot_bit(slot);
            }
            None => self.held &= !slot_bit(slot),
        }
    }
}

/// The snapshots of one block's instances: the values each had when last
/// loaded or flushed, taken at its first write since. Kept by the block
/// rather than boxed per instance, so that a load whose rows are all
/// written allocates (and frees) one list per block instead of a box per
/// row, and an instance that is only read costs no room for one.
///
/// Entries are `(slot, snapshot)` in slot order; a snapshot taken out
/// leaves its entry empty for the slot's next one, and the list is freed
/// when its last snapshot is taken, so that a flushed block keeps nothing.
/// Each entry is only read or changed under its instance's lock, and the
/// list's own lock is taken last and held for no other lock.
struct Snapshots<T> {
    entries: Vec<(u32, Option<T>)>,
    /// How many entries hold a snapshot.
    live: u32,
}

impl<T> Default for Snapshots<T> {
    fn default() -> Self {
        Snapshots { entries: Vec::new(), live: 0 }
    }
}

/// How many snapshots a block has room for at first (see [`Snapshots::put`]).
const SNAPSHOTS_FIRST: usize = 4;

impl<T> Snapshots<T> {
    /// Where `slot`'s entry is, or would go. Blocks are mostly written in
    /// slot order, which puts slot `n` at index `n`, or a new slot last:
    /// both checked before a search.
    fn position(&self, slot: u32) -> std::result::Result<usize, usize> {
        let guess = usize::try_from(slot).unwrap_or(usize::MAX);
        match (self.entries.get(guess), self.entries.last()) {
            (Some(&(found, _)), _) if found == slot => Ok(guess),
            (_, None) => Err(0),
            (_, Some(&(last, _))) if last < slot => Err(self.entries.len()),
            _ => self.entries.binary_search_by_key(&slot, |&(found, _)| found),
        }
    }

    /// The snapshot of `slot`, if it has one.
    fn get(&self, slot: u32) -> Option<&T> {
        let at = self.position(slot).ok()?;
        self.entries[at].1.as_ref()
    }

    /// Makes `snapshot` the snapshot of `slot`, in a block of `len`
    /// instances; returns the one it replaces.
    fn put(&mut self, slot: u32, snapshot: T, len: usize) -> Option<T> {
        let previous = match self.position(slot) {
            Ok(at) => self.entries[at].1.replace(snapshot),
            Err(at) => {
                if self.entries.len() == self.entries.capacity() {
                    // Room for a few first, then for the whole block: two
                    // allocations for a block whose every instance is
                    // written, instead of a doubling each (realloc copying
                    // the entries each time), and little for a block with
                    // a write or two.
                    let room = if self.entries.is_empty() { len.min(SNAPSHOTS_FIRST) } else { len };
                    self.entries.reserve_exact(room.saturating_sub(self.entries.len()).max(1));
                }
                self.entries.insert(at, (slot, Some(snapshot)));
                None
            }
        };
        if previous.is_none() {
            self.live += 1;
        }
        previous
    }

    /// Takes the snapshot of `slot` out, if it has one; frees the list
    /// with the last.
    fn take(&mut self, slot: u32) -> Option<T> {
        let at = self.position(slot).ok()?;
        let taken = self.entries[at].1.take()?;
        self.live -= 1;
        if self.live == 0 {
            self.entries = Vec::new();
        }
        Some(taken)
    }
}

impl<T: Entity> Block<T> {
    /// The instance in `slot`; `None` only for a slot the block does not
    /// have, which no handle holds.
    #[inline]
    fn instance(&self, slot: u32) -> Option<&Inner<T>> {
        match slot {
            0 => Some(&self.first),
            _ => self.rest.get(usize::try_from(slot - 1).ok()?),
        }
    }
}

/// One tracked instance: its values and the session's bookkeeping for it.
pub(crate) struct Inner<T: Entity> {
    state: RwLock<EntityState<T>>,
}

impl<T: Entity> Inner<T> {
    /// An instance of `entity`; its block keeps its identity key.
    pub(crate) fn new(entity: T) -> Self {
        Inner { state: RwLock::new(EntityState { current: entity, bound_by: 0, sent: None }) }
    }
}

/// The entities of one type written since they were last loaded or
/// flushed, and the flush in progress for that type.
pub(crate) struct WriteLog<T: Entity> {
    pub(crate) entries: Mutex<Vec<Tracked<T>>>,
    /// The number of the flush whose statements are being sent, 0 when
    /// none: a write to an entity that flush bound must not be lost.
    flushing: AtomicU64,
    /// The number of the last flush begun.
    flushes: AtomicU64,
    /// Writes through handles so far: a flush that finds the count moved
    /// between its plan and its binding looks for the changes its plan did
    /// not see (see [`Tracked::keep_unsent_changes`]).
    writes: AtomicU64,
    /// Whether the children index of this type was built, so changed
    /// entities must be queued in `moved` for it.
    watched: AtomicBool,
    /// Entities whose foreign keys may have changed since the children
    /// index last read them (see `children_index`), each once.
    moved: Mutex<Vec<Tracked<T>>>,
}

impl<T: Entity> Default for WriteLog<T> {
    fn default() -> Self {
        WriteLog {
            entries: Mutex::new(Vec::new()),
            flushing: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            watched: AtomicBool::new(false),
            moved: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Entity> WriteLog<T> {
    /// Starts a flush of this entity type; returns its number.
    pub(crate) fn begin_flush(&self) -> u64 {
        let number = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        self.flushing.store(number, Ordering::Release);
        number
    }

    /// Ends the flush in progress, applied or not.
    pub(crate) fn end_flush(&self) {
        self.flushing.store(0, Ordering::Release);
    }

    /// The flush in progress, if any.
    pub(crate) fn flushing(&self) -> Option<u64> {
        Some(self.flushing.load(Ordering::Acquire)).filter(|&number| number != 0)
    }

    /// The number of writes through handles so far. A write counts while
    /// it holds its entity's lock, so whoever locks the entity after the
    /// write sees it counted.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// From now on, queues every entity that may have changed for the
    /// children index.
    pub(crate) fn watch(&self) {
        self.watched.store(true, Ordering::Release);
    }

    /// Queues `tracked` for the children index, whose entry for it may be
    /// stale now; nothing until that index is built. The `moved` list is
    /// locked only briefly and never while an entity is locked by the
    /// index, so it cannot deadlock with a writer's entity lock.
    /// Inlined, since every tracked row and every write calls it and,
    /// until the index is built, it only reads a flag.
    #[inline]
    pub(crate) fn note_moved(&self, tracked: &Tracked<T>) {
        if self.watched.load(Ordering::Acquire) {
            self.queue_moved(tracked);
        }
    }

    /// [`note_moved`](Self::note_moved) once the index is built.
    fn queue_moved(&self, tracked: &Tracked<T>) {
        let bit = slot_bit(tracked.slot);
        if tracked.block.moved.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            self.moved.lock().push(tracked.clone());
        }
    }

    /// Takes the queued entities out of the queue. Each can be queued
    /// again at once: a write after this call queues it for the next
    /// lookup, even while the caller still reads its values.
    pub(crate) fn take_moved(&self) -> Vec<Tracked<T>> {
        let moved = std::mem::take(&mut *self.moved.lock());
        for tracked in &moved {
            tracked.block.moved.fetch_and(!slot_bit(tracked.slot), Ordering::Release);
        }
        moved
    }
}

/// The instance and, once it was written to, its state as the database has it.
pub(crate) struct EntityState<T> {
    pub(crate) current: T,
    /// The flush whose statements carry this entity's values, 0 if none.
    pub(crate) bound_by: u64,
    /// The values that flush sent, copied by the first write that lands
    /// while its statements are on the wire: once the flush succeeds they
    /// are what the database holds, so they become the snapshot and the
    /// later write stays pending instead of being taken as flushed.
    pub(crate) sent: Option<Box<T>>,
}

impl<T: Entity> EntityState<T> {
    /// Marks the values as sent by flush number `flush`.
    pub(crate) fn bind(&mut self, flush: u64) {
        if self.bound_by != flush {
            self.bound_by = flush;
            self.sent = None;
        }
    }

    /// Applies a change the database made (a generated key, a version
    /// increment) to the values in memory and to the values sent, if a
    /// write since made them differ.
    pub(crate) fn apply_from_database(&mut self, change: impl Fn(&mut T) -> Result<()>) -> Result<()> {
        change(&mut self.current)?;
        if let Some(sent) = &mut self.sent {
            change(sent)?;
        }
        Ok(())
    }

    /// Applies the version increment of a flushed UPDATE.
    pub(crate) fn advance_version(&mut self) {
        self.current.increment_version();
        if let Some(sent) = &mut self.sent {
            sent.increment_version();
        }
    }

    /// Takes the row an upsert returned (the new row, or the existing one
    /// as updated): the values in memory become the database's, unless a
    /// write landed while the statement was on the wire. That write stays,
    /// and the returned row becomes what it is compared with, so the next
    /// flush sends every column it makes differ.
    pub(crate) fn take_returned(&mut self, row: T) {
        match &mut self.sent {
            Some(sent) => **sent = row,
            None => self.current = row,
        }
    }

    /// Records that the flush that bound the entity is over without
    /// writing it (an upsert's `DO NOTHING` skipped its row): a write that
    /// landed meanwhile is on `current` already.
    pub(crate) fn mark_skipped(&mut self) {
        self.bound_by = 0;
        self.sent = None;
    }
}

/// Which thread holds the guard that a borrow conflicts with.
#[derive(Clone, Copy)]
enum Holder {
    ThisThread,
    OtherThread,
}

impl Holder {
    fn describe(self) -> &'static str {
        match self {
            Holder::ThisThread => "by a guard on this thread",
            Holder::OtherThread => "by a guard on another thread, for longer than a second",
        }
    }
}

/// A shared borrow of a tracked entity, from [`Tracked::read`].
pub struct Ref<'a, T: Entity> {
    guard: RwLockReadGuard<'a, EntityState<T>>,
    address: usize,
    _same_thread: SameThread,
}

/// Keeps a guard on the thread that took it, which is where its borrow is
/// recorded (whatever features of the lock crate are enabled).
type SameThread = PhantomData<*const ()>;

impl<T: Entity> Deref for Ref<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.guard.current
    }
}

impl<T: Entity> Drop for Ref<'_, T> {
    #[inline]
    fn drop(&mut self) {
        release(self.address);
    }
}

impl<T: Entity + fmt::Debug> fmt::Debug for Ref<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A mutable borrow of a tracked entity, from [`Tracked::write`].
pub struct RefMut<'a, T: Entity> {
    guard: RwLockWriteGuard<'a, EntityState<T>>,
    address: usize,
    _same_thread: SameThread,
}

impl<T: Entity> Deref for RefMut<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard.current
    }
}

impl<T: Entity> DerefMut for RefMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard.current
    }
}

impl<T: Entity> Drop for RefMut<'_, T> {
    fn drop(&mut self) {
        release(self.address);
    }
}

impl<T: Entity + fmt::Debug> fmt::Debug for RefMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Entity> Tracked<T> {
    pub(crate) fn new(
        entity: T,
        write_log: &Arc<WriteLog<T>>,
        identity: Option<T::Key>,
        conflict: Option<ConflictRule>,
    ) -> Self {
        let first = Inner::new(entity);
        let conflict = conflict.map(Box::new);
        let block = Block {
            write_log: Arc::downgrade(write_log),
            conflict,
            first,
            rest: Box::default(),
            written: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            identities: Mutex::new(Identities::new(identity, Vec::new())),
            snapshots: Mutex::default(),
        };
        Tracked { block: Arc::new(block), slot: 0 }
    }

    /// Handles to `first` and then `rest` (at most [`BLOCK`] in all),
    /// allocated as one block, in order, with `identities` as their
    /// identity keys. `rest` becomes the block's storage as it is, without
    /// moving its instances again.
    pub(crate) fn new_block(
        write_log: &Arc<WriteLog<T>>,
        first: Inner<T>,
        rest: Vec<Inner<T>>,
        identities: Identities<T::Key>,
    ) -> impl Iterator<Item = Self> {
        debug_assert_eq!(identities.rest.len(), rest.len());
        let count = u32::try_from(rest.len() + 1).unwrap_or(u32::MAX);
        let write_log = Arc::downgrade(write_log);
        let rest = rest.into_boxed_slice();
        let block = Arc::new(Block {
            write_log,
            conflict: None,
            first,
            rest,
            written: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            identities: Mutex::new(identities),
            snapshots: Mutex::default(),
        });
        (0..count).map(move |slot| Tracked { block: Arc::clone(&block), slot })
    }

    /// The instance this handle refers to.
    #[inline]
    fn inner(&self) -> &Inner<T> {
        self.block.instance(self.slot).unwrap_or_else(|| unreachable!("a handle's slot is in its block"))
    }

    /// The rule its insert follows for a clashing row, if any.
    pub(crate) fn conflict_rule(&self) -> Option<ConflictRule> {
        self.block.conflict.as_deref().copied().filter(|_| self.slot == 0)
    }

    /// Borrows the entity.
    ///
    /// # Panics
    ///
    /// If this thread holds a [`write`](Self::write) guard on the same
    /// instance, or another thread holds one for longer than a second: the
    /// message names the entity and its key. [`try_read`](Self::try_read)
    /// returns the error instead.
    #[inline]
    pub fn read(&self) -> Ref<'_, T> {
        self.try_read().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Borrows the entity, or fails with [`Error::Borrowed`] if a write
    /// guard on it is held (on this thread, or for longer than a second on
    /// another).
    #[inline]
    pub fn try_read(&self) -> Result<Ref<'_, T>> {
        let inner = self.inner();
        let guard = self.lock_read_of(inner)?;
        let address = address_of(inner);
        hold(address);
        Ok(Ref { guard, address, _same_thread: PhantomData })
    }

    /// Borrows the entity mutably and marks it for change detection at the
    /// next flush. Prefer [`modify`](Self::modify), which cannot be held too
    /// long.
    ///
    /// # Panics
    ///
    /// If this thread holds another guard on the same instance (as
    /// `h.write().n = h.read().n + 1` does), or another thread holds one for
    /// longer than a second: the message names the entity and its key.
    /// [`try_write`](Self::try_write) returns the error instead.
    pub fn write(&self) -> RefMut<'_, T> {
        self.try_write().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Borrows the entity mutably, or fails with [`Error::Borrowed`] if a
    /// guard on it is held (on this thread, or for longer than a second on
    /// another).
    pub fn try_write(&self) -> Result<RefMut<'_, T>> {
        let mut state = self.lock_write()?;
        let log = self.block.write_log.upgrade();
        if !self.written(&state) {
            let snapshot = state.current.clone();
            self.set_snapshot(&mut state, snapshot);
            // The log is locked only briefly and never while the flush
            // holds an entity's lock, so the two locks cannot deadlock.
            if let Some(log) = &log {
                log.entries.lock().push(self.clone());
            }
        }
        if let Some(log) = &log {
            // A write may change a foreign key, and the session is not told
            // when: the children index reads it again before its next use.
            log.note_moved(self);
            log.writes.fetch_add(1, Ordering::Relaxed);
        }
        let in_flight = state.bound_by != 0 && log.and_then(|log| log.flushing()) == Some(state.bound_by);
        if in_flight && state.sent.is_none() {
            state.sent = Some(Box::new(state.current.clone()));
        }
        hold(self.address());
        Ok(RefMut { guard: state, address: self.address(), _same_thread: PhantomData })
    }

    /// Changes the entity in one call and returns what `change` returns:
    /// the normal way to write, since no guard outlives the call.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Counter { #[orm(primary_key)] id: i64, n: i64 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE counter (id int8 PRIMARY KEY, n int8 NOT NULL);
    /// #     INSERT INTO counter VALUES (1, 41)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let counter = session.get_one::<Counter>(1).await?;
    /// let n = counter.modify(|c| {
    ///     c.n += 1;
    ///     c.n
    /// });
    /// assert_eq!(n, 42);
    /// session.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`write`](Self::write), if a guard on the instance is held.
    pub fn modify<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        change(&mut self.write())
    }

    /// A copy of the entity's current values.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn get(&self) -> T {
        self.read().clone()
    }

    /// The entity's primary key, as its fields hold it now.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn key(&self) -> T::Key {
        self.read().key()
    }

    /// Whether the entity has changes that the next flush will write.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn is_modified(&self) -> bool {
        let state = self.lock_read().unwrap_or_else(|error| panic!("{error}"));
        self.snapshot(&state, |snapshot| state.current.changed_columns(snapshot) != 0).unwrap_or(false)
    }

    /// Whether two handles refer to the same tracked instance.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.block, &b.block) && a.slot == b.slot
    }

    /// The address of the shared instance, to tell instances apart.
    pub(crate) fn address(&self) -> usize {
        address_of(self.inner())
    }

    /// The key the identity map holds this instance under, if it does.
    pub(crate) fn identity_key(&self) -> Option<T::Key> {
        self.block.identities.lock().get(self.slot)
    }

    pub(crate) fn set_identity_key(&self, key: Option<T::Key>) {
        self.block.identities.lock().set(self.slot, key);
    }

    /// The columns changed since the last load or flush, or `None` if the
    /// entity is borrowed for writing (so nothing can be said without waiting).
    pub(crate) fn try_changed_columns(&self) -> Option<ColumnSet> {
        let state = self.inner().state.try_read_recursive()?;
        Some(self.snapshot(&state, |snapshot| state.current.changed_columns(snapshot)).unwrap_or(0))
    }

    /// Whether the entity's snapshot says it was written since its last
    /// load or flush; written entities that cannot be looked at now count.
    pub(crate) fn is_written(&self) -> bool {
        self.inner().state.try_read_recursive().is_none_or(|state| self.written(&state))
    }

    /// Forgets a write that changed nothing, unless a guard is held on the
    /// entity (then the next flush looks again) or a write changed it
    /// since the flush looked, under no guard (then it stays pending).
    pub(crate) fn mark_synced_if_free(&self) {
        if let Some(mut state) = self.inner().state.try_write() {
            if self.snapshot(&state, |snapshot| state.current.changed_columns(snapshot)) == Some(0) {
                drop(self.take_snapshot(&mut state));
            }
        }
    }

    /// Whether writes through handles of this entity type were made since
    /// the log counted `writes` (see [`WriteLog::writes`]).
    pub(crate) fn writes_since(&self, writes: u64) -> bool {
        self.block.write_log.upgrade().is_none_or(|log| log.writes() != writes)
    }

    /// Keeps pending the changes a statement that sends only the columns
    /// `sent` leaves out, as it binds the entity: a write that landed
    /// after the flush planned the statement (between its yields) may have
    /// changed other columns. The database then holds the snapshot with
    /// `sent` taken from the current values, which become the values sent,
    /// so that [`mark_flushed`](Self::mark_flushed) keeps the rest pending.
    /// A key changed so is refused, as the plan refuses it: the statement
    /// would find its row by the new key. `state` is the instance's,
    /// borrowed mutably by the caller, just bound.
    pub(crate) fn keep_unsent_changes(&self, state: &mut EntityState<T>, sent: ColumnSet) -> Result<()> {
        if state.sent.is_some() {
            return Ok(());
        }
        let Some(changed) = self.snapshot(state, |snapshot| state.current.changed_columns(snapshot)) else {
            return Ok(());
        };
        if changed & T::META.key_set() != 0 {
            let key = self.stored(state, |stored| format!("{:?}", stored.key()));
            return Err(Error::PrimaryKeyChanged { entity: T::META.name, key });
        }
        if changed & !sent != 0 {
            let stored = self.snapshot(state, |snapshot| {
                let mut stored = snapshot.clone();
                stored.copy_columns(&state.current, sent);
                stored
            });
            state.sent = stored.map(Box::new);
        }
        Ok(())
    }

    /// Reads this instance's snapshot, if it has one, with `read`; `state`
    /// is the instance's, borrowed by the caller, which keeps the snapshot
    /// from changing meanwhile. `read` must not borrow another snapshot of
    /// the block.
    pub(crate) fn snapshot<R>(&self, state: &EntityState<T>, read: impl FnOnce(&T) -> R) -> Option<R> {
        if !self.written(state) {
            return None;
        }
        self.block.snapshots.lock().get(self.slot).map(read)
    }

    /// Reads the values the database holds, as far as the session knows:
    /// the snapshot if the instance has one, else its current values.
    pub(crate) fn stored<R>(&self, state: &EntityState<T>, read: impl FnOnce(&T) -> R) -> R {
        let snapshots = self.written(state).then(|| self.block.snapshots.lock());
        read(snapshots.as_ref().and_then(|snapshots| snapshots.get(self.slot)).unwrap_or(&state.current))
    }

    /// Makes `snapshot` the instance's snapshot; `state` is the instance's,
    /// borrowed mutably by the caller.
    pub(crate) fn set_snapshot(&self, state: &mut EntityState<T>, snapshot: T) {
        self.check_state(state);
        let len = self.block.rest.len() + 1;
        let replaced = self.block.snapshots.lock().put(self.slot, snapshot, len);
        self.block.written.fetch_or(slot_bit(self.slot), Ordering::Relaxed);
        // Freed outside the block's lock.
        drop(replaced);
    }

    /// Takes the instance's snapshot out, if it has one: it is no longer
    /// written. `state` is the instance's, borrowed mutably by the caller.
    pub(crate) fn take_snapshot(&self, state: &mut EntityState<T>) -> Option<T> {
        if !self.written(state) {
            return None;
        }
        self.block.written.fetch_and(!slot_bit(self.slot), Ordering::Relaxed);
        self.block.snapshots.lock().take(self.slot)
    }

    /// Records that the flush that bound the entity succeeded: its values
    /// are what the database holds now (rounded as it stores them), unless
    /// a write landed meanwhile, which stays pending. Returns whether one
    /// did. `state` is the instance's, borrowed mutably by the caller.
    pub(crate) fn mark_flushed(&self, state: &mut EntityState<T>) -> bool {
        state.bound_by = 0;
        if let Some(mut sent) = state.sent.take() {
            sent.round_to_stored();
            self.set_snapshot(state, *sent);
            true
        } else {
            state.current.round_to_stored();
            drop(self.take_snapshot(state));
            false
        }
    }

    /// Whether the instance has a snapshot; `state` is the instance's,
    /// borrowed by the caller, whose lock orders the bit's reads and
    /// writes (the other bits of the word are other instances', changed
    /// under their own locks).
    #[inline]
    fn written(&self, state: &EntityState<T>) -> bool {
        self.check_state(state);
        self.block.written.load(Ordering::Relaxed) & slot_bit(self.slot) != 0
    }

    /// Checks, in debug builds, that `state` is this instance's: a
    /// snapshot is found by the handle, and kept consistent by the lock of
    /// the state the caller holds.
    #[inline]
    fn check_state(&self, state: &EntityState<T>) {
        debug_assert!(std::ptr::eq(self.inner().state.data_ptr().cast_const(), state));
    }

    /// Puts the entity back in its type's write log, so the next flush
    /// looks at it again.
    pub(crate) fn log_write(&self) {
        if let Some(log) = self.block.write_log.upgrade() {
            log.entries.lock().push(self.clone());
        }
    }

    /// The session's own shared borrow, under the same rules as a user's.
    #[inline]
    pub(crate) fn lock_read(&self) -> Result<RwLockReadGuard<'_, EntityState<T>>> {
        self.lock_read_of(self.inner())
    }

    /// [`lock_read`](Self::lock_read) of this handle's instance, `inner`,
    /// found once by the caller.
    #[inline]
    fn lock_read_of<'a>(&self, inner: &'a Inner<T>) -> Result<RwLockReadGuard<'a, EntityState<T>>> {
        match inner.state.try_read_recursive() {
            Some(guard) => Ok(guard),
            None => self.lock_read_contended(inner),
        }
    }

    /// [`lock_read_of`](Self::lock_read_of) when a writer holds the
    /// instance: kept out of line so the uncontended read, inlined into
    /// every caller, stays a few instructions.
    #[cold]
    fn lock_read_contended<'a>(&self, inner: &'a Inner<T>) -> Result<RwLockReadGuard<'a, EntityState<T>>> {
        if held_here(address_of(inner)) {
            return Err(self.borrowed(Holder::ThisThread));
        }
        inner.state.try_read_recursive_for(BORROW_WAIT).ok_or_else(|| self.borrowed(Holder::OtherThread))
    }

    /// The session's own exclusive borrow, under the same rules as a user's.
    pub(crate) fn lock_write(&self) -> Result<RwLockWriteGuard<'_, EntityState<T>>> {
        let state = &self.inner().state;
        if let Some(guard) = state.try_write() {
            return Ok(guard);
        }
        if held_here(self.address()) {
            return Err(self.borrowed(Holder::ThisThread));
        }
        state.try_write_for(BORROW_WAIT).ok_or_else(|| self.borrowed(Holder::OtherThread))
    }

    fn borrowed(&self, holder: Holder) -> Error {
        let key = self.identity_key().map_or_else(|| "(not inserted yet)".to_owned(), |key| format!("{key:?}"));
        Error::Borrowed { entity: T::META.name, key, holder: holder.describe() }
    }
}

/// The address of an instance, which tells instances apart.
#[inline]
fn address_of<T: Entity>(inner: &Inner<T>) -> usize {
    std::ptr::from_ref(inner) as usize
}

impl<T: Entity> Clone for Tracked<T> {
    #[inline]
    fn clone(&self) -> Self {
        Tracked { block: Arc::clone(&self.block), slot: self.slot }
    }
}

impl<T: Entity + fmt::Debug> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner().state.try_read_recursive() {
            Some(state) => f.debug_tuple("Tracked").field(&state.current).finish(),
            None => f.write_str("Tracked(<borrowed for writing>)"),
        }
    }
}

/// With the `serde` feature, a handle serializes as its entity, so a web
/// handler can return what it loaded without copying it; a handle borrowed
/// for writing fails to serialize with [`Error::Borrowed`]'s message.
#[cfg(feature = "serde")]
impl<T: Entity + serde::Serialize> serde::Serialize for Tracked<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let entity = self.try_read().map_err(serde::ser::Error::custom)?;
        entity.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::{Identities, Snapshots, BLOCK};

    #[test]
    fn a_slot_has_an_identity_key_only_while_the_map_holds_it() {
        let mut loaded = Identities::new(Some(10), vec![11, 12, 13]);
        let keys: Vec<Option<i32>> = (0..5).map(|slot| loaded.get(slot)).collect();
        assert_eq!(keys, [Some(10), Some(11), Some(12), Some(13), None], "every slot of a loaded block is held");
        loaded.set(2, None);
        assert_eq!((loaded.get(1), loaded.get(2), loaded.get(3)), (Some(11), None, Some(13)));
        loaded.set(2, Some(20));
        assert_eq!(loaded.get(2), Some(20), "entered again under a new key");

        let mut added = Identities::not_held(vec![0; BLOCK - 1]);
        assert!((0..64).all(|slot| added.get(slot).is_none()), "placeholders are not keys");
        added.set(63, Some(7));
        added.set(0, Some(5));
        assert_eq!((added.get(0), added.get(62), added.get(63)), (Some(5), None, Some(7)));

        let full = Identities::new(None, (1..64).collect());
        assert!((1..64).all(|slot| full.get(slot) == i32::try_from(slot).ok()), "the last slot of a full block too");
    }

    #[test]
    fn snapshots_are_found_by_slot_whatever_the_order_of_writes() {
        let mut snapshots = Snapshots::default();
        for slot in [5, 1, 9, 0, 7] {
            assert_eq!(snapshots.put(slot, slot * 10, 10), None);
        }
        assert_eq!(snapshots.put(9, 91, 10), Some(90), "a slot has one snapshot");
        let slots: Vec<u32> = snapshots.entries.iter().map(|&(slot, _)| slot).collect();
        assert_eq!(slots, [0, 1, 5, 7, 9], "kept in slot order");
        let found: Vec<Option<u32>> = (0..10).map(|slot| snapshots.get(slot).copied()).collect();
        assert_eq!(found, [Some(0), Some(10), None, None, None, Some(50), None, Some(70), None, Some(91)]);

        assert_eq!(snapshots.take(1), Some(10));
        assert_eq!((snapshots.take(1), snapshots.get(1)), (None, None), "taken once");
        assert_eq!(snapshots.put(1, 11, 10), None, "its entry is used again");
        assert_eq!(snapshots.entries.len(), 5);
        for slot in [0, 1, 5, 7] {
            assert!(snapshots.take(slot).is_some());
            assert_ne!(snapshots.entries.capacity(), 0, "a snapshot is left");
        }
        assert_eq!(snapshots.take(9), Some(91));
        assert_eq!((snapshots.live, snapshots.entries.capacity()), (0, 0), "freed with the last");
    }

    #[test]
    fn a_block_written_in_slot_order_allocates_room_twice() {
        let mut snapshots = Snapshots::default();
        let mut capacities = vec![];
        for slot in 0..u32::try_from(BLOCK).unwrap() {
            snapshots.put(slot, slot, BLOCK);
            if capacities.last() != Some(&snapshots.entries.capacity()) {
                capacities.push(snapshots.entries.capacity());
            }
        }
        assert_eq!(capacities, [4, BLOCK]);
        assert!((0..64).all(|slot| snapshots.get(slot) == Some(&slot)));
    }
}

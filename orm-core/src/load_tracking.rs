//! Tracking the rows of a load: each row becomes the session's one instance
//! for its key, either the one the identity map holds already (whose pending
//! changes win over the row) or a new one, allocated [`BLOCK`] at a time.
//!
//! A load whose rows are all decoded first ([`Registry::track_all`]) sizes
//! the identity map once for them and enters each block's new rows as the
//! block is made. A load tracked as its rows arrive
//! ([`Registry::tracking`]) does not know their count until they end, and a
//! map grown row by row rehashes every entry at each doubling (75
//! instructions and about one cache miss per row at 500,000 rows): its new
//! rows enter the map only once the load ended, sized once for them. Such a
//! load never holds its rows twice (as plain values and as instances), and
//! one that fails partway leaves the identity map as it was.

use std::hash::BuildHasher;

use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};

use crate::children_index::ChildrenIndex;
use crate::entity::Entity;
use crate::identity::Registry;
use crate::tracked::{Inner, Tracked, BLOCK};

/// What a row of a load turned out to be, before its block exists.
enum Found<T: Entity> {
    /// Tracked already: that instance wins over the row.
    Held(Tracked<T>),
    /// New: the next instance of the block, under this key and hash, with
    /// the hash of its parent key through the type's only foreign-key
    /// column if the children index files it so (see
    /// [`LoadTracking::sole_reference`]).
    New(u64, T::Key, Option<u64>),
    /// Its key's hash repeats one of this block's new rows: most likely the
    /// same key again (a join repeats its parents), so it is tracked after
    /// them, through the map.
    Repeated(T),
}

/// A new row of a load tracked as it arrives, to enter the identity map
/// once the load ended.
struct Entering<K> {
    hash: u64,
    key: K,
}

/// The rows of one load, tracked as they come (see the module's doc).
pub(crate) struct LoadTracking<'a, T: Entity> {
    registry: &'a mut Registry<T>,
    /// The rows still to come, if known up front: then the identity map was
    /// sized for them, and each block's new rows enter it as it is made.
    remaining: Option<usize>,
    /// The type's only foreign-key column, if the children index is built
    /// and files by it: each new row's parent-key hash is read before the
    /// row becomes an instance, which would then have to be locked to read.
    sole_reference: Option<usize>,
    /// What each row of the current block turned out to be, in row order.
    found: Vec<Found<T>>,
    /// The hashes of the current block's new rows.
    new_hashes: NewHashes,
    /// The current block's instances; `rest` becomes the block's storage
    /// without its instances being moved again.
    first: Option<Inner<T>>,
    rest: Vec<Inner<T>>,
    /// Whether a whole block was made: the load is large, so the next
    /// block's room is taken at once instead of grown.
    made_one: bool,
    /// The handles of the rows of the blocks made so far, in row order.
    tracked: Vec<Tracked<T>>,
    /// The new rows to enter the map at the end, in row order, when their
    /// count was not known up front.
    entering: Vec<Entering<T::Key>>,
    /// Their parent-key hashes, beside `entering` when `sole_reference` is.
    parents: Vec<Option<u64>>,
    /// The places in `tracked` of the rows that do not enter the map at the
    /// end (held already, or repeated), in order.
    skipped: Vec<usize>,
    /// Repeated rows waiting for the new rows to be in the map, each with
    /// its place in `tracked`, which holds a placeholder until then.
    repeated: Vec<(usize, T)>,
}

impl<T: Entity> Registry<T> {
    /// The tracked instances for freshly read rows, in order: as
    /// [`track_loaded`](Self::track_loaded) gives them row by row, but with
    /// the map sized once for all of them and the new instances allocated
    /// [`BLOCK`] at a time, each row's key hashed once.
    pub(crate) fn track_all(&mut self, rows: Vec<T>) -> Vec<Tracked<T>> {
        let mut tracking = self.tracking(Some(rows.len()));
        for row in rows {
            tracking.push(row);
        }
        tracking.finish()
    }

    /// Tracks the rows of a load as they are handed over, `count` of them
    /// if known (see the module's doc).
    pub(crate) fn tracking(&mut self, count: Option<usize>) -> LoadTracking<'_, T> {
        if let Some(count) = count {
            self.identity.appending().reserve(count);
            self.children_index.reserve(count);
        }
        let sole_reference =
            if self.children_index.is_built() { ChildrenIndex::<T>::sole_reference_column() } else { None };
        // A request's loads are mostly a row or a page, and a block's room
        // for 64 entities was the largest allocation of a one-row load.
        let room = count.map_or(0, |count| count.min(BLOCK));
        LoadTracking {
            registry: self,
            remaining: count,
            sole_reference,
            found: Vec::with_capacity(room),
            new_hashes: NewHashes::with_capacity(room),
            first: None,
            rest: Vec::new(),
            made_one: false,
            tracked: Vec::with_capacity(count.unwrap_or(0)),
            entering: Vec::new(),
            parents: Vec::new(),
            skipped: Vec::new(),
            repeated: Vec::new(),
        }
    }
}

impl<T: Entity> LoadTracking<'_, T> {
    /// Takes the next row of the load.
    pub(crate) fn push(&mut self, entity: T) {
        let rows_after = self.remaining.map(|remaining| remaining.saturating_sub(1));
        self.remaining = rows_after;
        let key = entity.key();
        let identity = &self.registry.identity;
        let hash = identity.hasher().hash_one(&key);
        // An empty map holds none of the rows: a large load into a fresh
        // session skips the probe.
        let held = if identity.is_empty() {
            None
        } else {
            identity.raw_entry_v1().from_key_hashed_nocheck(hash, &key).map(|(_, held)| held.clone())
        };
        if let Some(held) = held {
            self.found.push(Found::Held(held));
        } else if self.new_hashes.insert(hash) {
            let parent = self.sole_reference.and_then(|column| entity.reference_hash(column));
            let instance = Inner::new(entity, Some(key.clone()));
            if self.first.is_none() {
                self.first = Some(instance);
                // The room the block's other instances need: the rows left
                // if known, a whole block once the load proved large.
                let room = match rows_after {
                    Some(rows) => rows.min(BLOCK - 1),
                    None if self.made_one => BLOCK - 1,
                    None => 0,
                };
                self.rest.reserve_exact(room);
            } else {
                self.rest.push(instance);
            }
            self.found.push(Found::New(hash, key, parent));
            if self.new_hashes.len() == BLOCK {
                self.made_one = true;
                self.make_block();
            }
        } else {
            self.found.push(Found::Repeated(entity));
        }
    }

    /// The handles of every row of the load, in row order, all tracked.
    pub(crate) fn finish(mut self) -> Vec<Tracked<T>> {
        self.make_block();
        if self.remaining.is_none() {
            self.enter_new_rows();
        }
        self.tracked
    }

    /// Allocates the current block and appends the handles of its rows to
    /// `tracked`, entering its new rows in the map if it was sized for them.
    fn make_block(&mut self) {
        let LoadTracking {
            registry,
            remaining,
            sole_reference,
            found,
            new_hashes,
            first,
            rest,
            tracked,
            entering,
            parents,
            skipped,
            repeated,
            ..
        } = self;
        let mut made = first
            .take()
            .map(|first| Tracked::new_block(&registry.write_log, first, std::mem::take(rest)))
            .into_iter()
            .flatten();
        let entering_now = remaining.is_some();
        let generation = registry.generation();
        let mut block_first = None;
        for row in found.drain(..) {
            let at = tracked.len();
            let handle = match row {
                Found::Held(held) => {
                    if !entering_now {
                        skipped.push(at);
                    }
                    held
                }
                Found::Repeated(entity) if entering_now => registry.track_loaded(entity),
                Found::Repeated(entity) => {
                    skipped.push(at);
                    repeated.push((at, entity));
                    // A new row of this block came before the row it repeats.
                    let Some(placeholder) = &block_first else { unreachable!("a repeated row follows its first") };
                    Tracked::clone(placeholder)
                }
                Found::New(hash, key, parent) => {
                    let Some(handle) = made.next() else { unreachable!("one instance was made per new row") };
                    if block_first.is_none() {
                        block_first = Some(handle.clone());
                    }
                    if entering_now {
                        let filing = sole_reference.map(|column| (column, parent));
                        enter(registry, hash, key, &handle, filing, generation).unwrap_or(handle)
                    } else {
                        entering.push(Entering { hash, key });
                        if sole_reference.is_some() {
                            parents.push(parent);
                        }
                        handle
                    }
                }
            };
            tracked.push(handle);
        }
        new_hashes.clear();
    }

    /// Enters the load's new rows in the map, sized once for them, then
    /// resolves its repeated rows through it.
    fn enter_new_rows(&mut self) {
        let LoadTracking { registry, sole_reference, tracked, entering, parents, skipped, repeated, .. } = self;
        registry.identity.appending().reserve(entering.len());
        registry.children_index.reserve(entering.len());
        let generation = registry.generation();
        let mut skipped = skipped.iter().copied().peekable();
        let mut parents = parents.drain(..);
        let mut at = 0;
        for Entering { hash, key } in entering.drain(..) {
            while skipped.next_if_eq(&at).is_some() {
                at += 1;
            }
            let filing = sole_reference.map(|column| (column, parents.next().flatten()));
            let Some(slot) = tracked.get_mut(at) else { unreachable!("each new row has its place") };
            // The same key in an earlier block of this load: its instance
            // wins, as it would have had the rows entered as they came.
            if let Some(held) = enter(registry, hash, key, slot, filing, generation) {
                *slot = held;
            }
            at += 1;
        }
        for (at, entity) in repeated.drain(..) {
            let handle = registry.track_loaded(entity);
            if let Some(slot) = tracked.get_mut(at) {
                *slot = handle;
            }
        }
    }
}

/// Enters `handle`, a new instance made for a row keyed `key` (hashing to
/// `hash`), in `registry`'s identity map and files it in the children
/// index (by `filing`'s column and parent-key hash, or by reading the
/// instance); or, if the map holds `key` already, returns that instance
/// and leaves `handle` untracked.
fn enter<T: Entity>(
    registry: &mut Registry<T>,
    hash: u64,
    key: T::Key,
    handle: &Tracked<T>,
    filing: Option<(usize, Option<u64>)>,
    generation: u64,
) -> Option<Tracked<T>> {
    // Appended after every tracked entity: the buckets of the children
    // index stay in collection order.
    match registry.identity.appending().raw_entry_mut_v1().from_key_hashed_nocheck(hash, &key) {
        RawEntryMut::Occupied(held) => {
            handle.set_identity_key(None);
            Some(held.get().clone())
        }
        RawEntryMut::Vacant(vacant) => {
            vacant.insert_hashed_nocheck(hash, key, handle.clone());
            let filed = match filing {
                Some((column, parent)) => registry.children_index.file_new_under(handle, column, parent, generation),
                None => registry.children_index.file_new(handle, generation),
            };
            if !filed {
                registry.write_log.note_moved(handle);
            }
            None
        }
    }
}

/// The key hashes of one block's new rows, to tell a key that repeats
/// within the block. Nearly every row's hash is new: a filter of 4,096 bits
/// (a block's 64 hashes set at most 64 of them) says so with one bit,
/// instead of hashing the hash again into a set; only a row whose bit is
/// set is compared with the hashes themselves.
struct NewHashes {
    /// Bit `h >> 52` is set for each hash `h` recorded.
    filter: [u64; 64],
    hashes: Vec<u64>,
}

impl NewHashes {
    fn with_capacity(room: usize) -> Self {
        NewHashes { filter: [0; 64], hashes: Vec::with_capacity(room) }
    }

    fn clear(&mut self) {
        self.filter = [0; 64];
        self.hashes.clear();
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Records `hash`; false if it was recorded already.
    fn insert(&mut self, hash: u64) -> bool {
        // The hasher mixes its high bits as well as its low ones (hashbrown
        // takes its tags from them too).
        let bit = hash >> 52;
        let (word, mask) = (usize::try_from(bit / 64).unwrap_or(0), 1_u64 << (bit % 64));
        let maybe_seen = self.filter.get_mut(word).is_none_or(|filter| {
            let set = *filter & mask != 0;
            *filter |= mask;
            set
        });
        if maybe_seen && self.hashes.contains(&hash) {
            return false;
        }
        self.hashes.push(hash);
        true
    }
}

//! Tracking the rows of a load: each row becomes the session's one instance
//! for its key, either the one the identity map holds already (whose pending
//! changes win over the row) or a new one, allocated [`BLOCK`] at a time.
//!
//! A load whose rows are all decoded first ([`Registry::track_all`]) sizes
//! the identity map once for them and enters each block's new rows as the
//! block is made, [`ROWS_PER_YIELD`] rows a step with a yield to the
//! runtime in between. A load tracked as its rows arrive
//! ([`Registry::tracking`]) does not know their count until they end, and
//! a map grown row by row rehashes every entry at each doubling (75
//! instructions and about one cache miss per row at 500,000 rows): its new
//! rows enter the map only once the load ended, sized once for them. Such a load never holds its rows twice (as plain values and
//! as instances); one that fails before its rows end leaves the identity
//! map as it was, and one cut off while its rows enter the map (between two
//! chunks, see [`LoadTracking::finish`]) leaves those it entered tracked.

use crate::children_index::ChildrenIndex;
use crate::entity::Entity;
use crate::identity::Registry;
use crate::poll_budget::ROWS_PER_YIELD;
use crate::row_chunks::LoadedRows;
use crate::tracked::{Identities, Inner, Tracked, BLOCK};

/// What a new row counts for in a block's budget (see
/// [`Registry::track_block`]): the block is full after [`BLOCK`] of them.
const NEW_ROW_SPENDS: usize = ROWS_PER_YIELD / BLOCK;

/// What a row of a load turned out to be, before its block exists.
enum Found<T: Entity> {
    /// Tracked already: that instance wins over the row.
    Held(Tracked<T>),
    /// New: the next instance of the block, under this key, and
    /// how the children index files it.
    New(T::Key, Filing),
    /// Its key's hash repeats one of this block's new rows: most likely the
    /// same key again (a join repeats its parents), so it is tracked after
    /// them, through the map. Only rows that wait for the end of the load
    /// are told apart so; others meet their first instance in the map.
    Repeated(T),
}

/// How the children index files a new row of a block.
#[derive(Clone, Copy)]
enum Filing {
    /// Through each foreign-key column, read from the instance under its
    /// lock (or queued, if the index is not built).
    ByInstance,
    /// Through the type's only foreign-key column, here with the hash of
    /// the parent key the row held (`None` for a NULL), read before the
    /// row became an instance.
    Under(usize, Option<u64>),
}

/// What tracking one block of rows needs besides the block, kept for the
/// next block of the same load instead of being allocated for each.
struct BlockScratch<T: Entity> {
    /// What each row of the block turned out to be, in row order.
    found: Vec<Found<T>>,
    /// The hashes of the block's new rows.
    new_hashes: NewHashes,
}

impl<T: Entity> BlockScratch<T> {
    /// Room for a block of `rows` rows, at most [`BLOCK`]: a request's
    /// loads are mostly a row or a page, and a block's room for 64
    /// entities was the largest allocation of a one-row load.
    fn for_rows(rows: usize) -> Self {
        let room = rows.min(BLOCK);
        BlockScratch { found: Vec::with_capacity(room), new_hashes: NewHashes::with_capacity(room) }
    }

    fn clear(&mut self) {
        self.found.clear();
        self.new_hashes.clear();
    }
}

/// The new rows of a load tracked as they arrive, waiting for its end to
/// enter the identity map, and what is needed to put them in place then.
struct Entering<T: Entity> {
    /// Each new row's key, in row order.
    keys: Vec<T::Key>,
    /// How the children index files each, beside `keys`, when it files
    /// by a column read from the row; empty when it files by instance (all
    /// rows of a load file the same way).
    filings: Vec<Filing>,
    /// The places in the load's handles of the rows that do not enter the
    /// map at the end (held already, or repeated), in order.
    skipped: Vec<usize>,
    /// Repeated rows, each with its place in the load's handles, which
    /// holds a placeholder until the new rows are in the map.
    repeated: Vec<(usize, T)>,
    /// How many rows of the load have their place in its handles so far.
    placed: usize,
}

/// The new rows of a load whose rows ended, entering the identity map a
/// chunk at a time (see [`LoadTracking::finish`]).
struct NewRows<T: Entity> {
    /// The keys of the rows still to enter, in row order.
    keys: std::vec::IntoIter<T::Key>,
    /// How the children index files each, beside `keys`, as in [`Entering`].
    filings: std::vec::IntoIter<Filing>,
    /// The places in the load's handles of the rows that enter no map here.
    skipped: std::iter::Peekable<std::vec::IntoIter<usize>>,
    /// The place in the load's handles of the next row to enter.
    at: usize,
    /// The registry's generation, which the children index files them under.
    generation: u64,
}

impl<T: Entity> NewRows<T> {
    /// Enters the next [`ROWS_PER_YIELD`] rows, each in its place of
    /// `tracked`; whether rows are left. A loop without an `.await` in it,
    /// so that its state stays in registers rather than in the load's
    /// future.
    fn enter_chunk(&mut self, registry: &mut Registry<T>, tracked: &mut [Tracked<T>]) -> bool {
        for key in self.keys.by_ref().take(ROWS_PER_YIELD) {
            let filing = self.filings.next().unwrap_or(Filing::ByInstance);
            while self.skipped.next_if_eq(&self.at).is_some() {
                self.at += 1;
            }
            let Some(slot) = tracked.get_mut(self.at) else { unreachable!("each new row has its place") };
            // The same key in an earlier block of this load: its instance
            // wins, as it would have had the rows entered as they came.
            if let Entered::Held(held) = enter(registry, key, slot.clone(), filing, self.generation) {
                *slot = held;
            }
            self.at += 1;
        }
        self.keys.len() > 0
    }
}

/// The rows of a load whose rows were all decoded first, being tracked
/// [`ROWS_PER_YIELD`] at a time (see [`Registry::track_all`]).
struct WholeLoad<T: Entity, C: Iterator<Item = Vec<T>>> {
    /// The chunks of rows not begun yet.
    chunks: C,
    /// The rest of the chunk being tracked.
    rows: std::iter::Peekable<std::vec::IntoIter<T>>,
    scratch: BlockScratch<T>,
    probe: Probe,
}

impl<T: Entity, C: Iterator<Item = Vec<T>>> WholeLoad<T, C> {
    /// Tracks the next [`ROWS_PER_YIELD`] rows or so (whole blocks),
    /// appending their handles to `tracked`; whether rows are left.
    fn step(&mut self, registry: &mut Registry<T>, tracked: &mut impl LoadHandles<T>) -> bool {
        let mut budget = ROWS_PER_YIELD;
        loop {
            if self.rows.peek().is_none() {
                // A chunk's last block may hold fewer than BLOCK instances
                // (when some of its rows were tracked already): blocks never
                // span chunks.
                let Some(chunk) = self.chunks.next() else { return false };
                self.rows = chunk.into_iter().peekable();
            } else if budget == 0 {
                return true;
            } else {
                let before = self.rows.len();
                registry.track_block(&mut self.rows, tracked, &mut self.scratch, self.probe, None);
                budget = budget.saturating_sub(before - self.rows.len());
            }
        }
    }
}

/// The rows of one load, tracked as they arrive (see the module's doc).
pub(crate) struct LoadTracking<'a, T: Entity> {
    registry: &'a mut Registry<T>,
    /// Rows that arrived since the last block was made; grown as rows
    /// come, so that a one-row load does not make room for a block.
    arrived: Vec<T>,
    /// Made by the first block, sized by its rows.
    scratch: Option<BlockScratch<T>>,
    /// The handles of the rows tracked so far, in row order.
    tracked: Vec<Tracked<T>>,
    entering: Entering<T>,
}

impl<T: Entity> Registry<T> {
    /// The tracked instances for freshly read rows, in order: as
    /// [`track_loaded`](Self::track_loaded) gives them row by row, but with
    /// the map sized once for all of them and the new instances allocated
    /// [`BLOCK`] at a time, each row's key hashed once. It hands the thread
    /// back to the runtime every [`ROWS_PER_YIELD`] rows, as a query's load
    /// does while its rows enter the map ([`LoadTracking::finish`]); cut
    /// off at one of those points, it leaves the rows it tracked tracked,
    /// and the others not, each row at most once.
    pub(crate) async fn track_all(&mut self, rows: impl LoadedRows<T>) -> Vec<Tracked<T>> {
        let mut tracked = Vec::with_capacity(rows.len());
        self.track_all_into(rows, &mut tracked).await;
        tracked
    }

    /// [`track_all`](Self::track_all) for a load whose caller reads its
    /// rows through the session later, not through handles (the last level
    /// of an eager load, found by [`Session::children`](crate::Session::children)):
    /// no handle per row is collected, and the identity map takes each new
    /// row's handle itself instead of a clone.
    pub(crate) async fn track_all_unkept(&mut self, rows: impl LoadedRows<T>) {
        self.track_all_into(rows, &mut Unkept).await;
    }

    async fn track_all_into(&mut self, rows: impl LoadedRows<T>, tracked: &mut impl LoadHandles<T>) {
        let mut walk = self.whole_load(rows);
        while walk.step(self, tracked) {
            tokio::task::yield_now().await;
        }
    }

    /// Readies this registry for tracking `rows` a step at a time: the
    /// identity map sized once for the whole result instead of growing
    /// (and rehashing) row by row, which was the largest cost of tracked
    /// loads.
    fn whole_load(&mut self, rows: impl LoadedRows<T>) -> WholeLoad<T, impl Iterator<Item = Vec<T>>> {
        self.identity.appending().reserve(rows.len());
        let scratch = BlockScratch::for_rows(rows.len());
        let probe = Probe::at_start_of_load(self);
        WholeLoad { chunks: rows.into_chunks(), rows: Vec::new().into_iter().peekable(), scratch, probe }
    }

    /// Tracks the rows of a load as they are handed over (see the module's
    /// doc).
    pub(crate) fn tracking(&mut self) -> LoadTracking<'_, T> {
        let entering =
            Entering { keys: Vec::new(), filings: Vec::new(), skipped: Vec::new(), repeated: Vec::new(), placed: 0 };
        LoadTracking { registry: self, arrived: Vec::new(), scratch: None, tracked: Vec::new(), entering }
    }

    /// Tracks rows of `rows` until [`BLOCK`] new instances were made, or
    /// [`ROWS_PER_YIELD`] rows were read, or the rows ran out, appending their handles to `tracked`. The new
    /// rows enter the identity map at once, or wait in `entering` if given.
    fn track_block(
        &mut self,
        rows: &mut impl Iterator<Item = T>,
        tracked: &mut impl LoadHandles<T>,
        scratch: &mut BlockScratch<T>,
        probe: Probe,
        mut entering: Option<&mut Entering<T>>,
    ) {
        scratch.clear();
        let BlockScratch { found, new_hashes } = scratch;
        // Read from each new row before it becomes an instance, which would
        // then have to be locked to read it.
        let sole_reference =
            if self.children_index.is_built() { ChildrenIndex::<T>::sole_reference_column() } else { None };
        let mut first = None;
        let mut rest = Vec::new();
        let mut rest_keys = Vec::new();
        // Rows that enter the map as the block is placed need no check for
        // a key repeated within the block: the map's insert, in row order,
        // finds the first instance, as it does for a key repeated across
        // blocks (the repeat's instance is then left untracked). Rows that
        // wait for the end of the load must be told apart here.
        let within_block_check = entering.is_some();
        // A block ends after BLOCK new instances or ROWS_PER_YIELD rows
        // read, whichever comes first, counted in one sum: rows tracked
        // already make no instance, and a load of such rows would otherwise
        // be one block, one poll.
        let mut spent = 0;
        while spent < ROWS_PER_YIELD {
            let Some(entity) = rows.next() else { break };
            let key = entity.key();
            let held = match probe {
                Probe::Skip => None,
                Probe::Map => self.identity.get(&key),
            };
            if let Some(held) = held {
                spent += 1;
                found.push(Found::Held(held.clone()));
            } else if !within_block_check || new_hashes.insert(self.identity.hash(&key)) {
                spent += NEW_ROW_SPENDS;
                let filing = sole_reference
                    .map_or(Filing::ByInstance, |column| Filing::Under(column, entity.reference_hash(column)));
                let instance = Inner::new(entity);
                if first.is_none() {
                    first = Some((instance, key.clone()));
                    // The room the block's other instances need, the rows
                    // left permitting: it becomes the block's storage
                    // without being copied again.
                    let room = rows.size_hint().0.min(BLOCK - 1);
                    rest.reserve_exact(room);
                    rest_keys.reserve_exact(room);
                } else {
                    rest.push(instance);
                    rest_keys.push(key.clone());
                }
                found.push(Found::New(key, filing));
            } else {
                spent += 1;
                found.push(Found::Repeated(entity));
            }
        }
        // An `Option` of the block's handles rather than its `flatten()`,
        // whose `next` the compiler may leave out of line, a call per row.
        let mut made = first.map(|(first, first_key)| {
            Tracked::new_block(&self.write_log, first, rest, Identities::new(Some(first_key), rest_keys))
        });
        let generation = self.generation();
        let mut block_first = None;
        for row in found.drain(..) {
            let handle = match (row, entering.as_deref_mut()) {
                (Found::Held(held), None) => held,
                (Found::Held(held), Some(entering)) => {
                    entering.skipped.push(entering.placed);
                    held
                }
                (Found::Repeated(_), None) => {
                    unreachable!("rows entering the map at once are not told apart in the block")
                }
                (Found::Repeated(entity), Some(entering)) => {
                    entering.skipped.push(entering.placed);
                    entering.repeated.push((entering.placed, entity));
                    // A new row of this block came before the row it repeats.
                    let Some(placeholder) = &block_first else { unreachable!("a repeated row follows its first") };
                    Tracked::clone(placeholder)
                }
                (Found::New(key, filing), entering) => {
                    let Some(handle) = made.as_mut().and_then(Iterator::next) else {
                        unreachable!("one instance was made per new row")
                    };
                    match entering {
                        None => {
                            let kept = tracked.kept(&handle);
                            match (enter(self, key, handle, filing, generation), kept) {
                                (Entered::Held(held), _) => held,
                                (Entered::New, Some(kept)) => kept,
                                (Entered::New, None) => continue,
                            }
                        }
                        Some(entering) => {
                            if block_first.is_none() {
                                block_first = Some(handle.clone());
                            }
                            entering.keys.push(key);
                            if let Filing::Under(..) = filing {
                                entering.filings.push(filing);
                            }
                            handle
                        }
                    }
                }
            };
            tracked.push(handle);
            if let Some(entering) = entering.as_deref_mut() {
                entering.placed += 1;
            }
        }
    }
}

impl<T: Entity> LoadTracking<'_, T> {
    /// Takes the next row of the load.
    pub(crate) fn push(&mut self, row: T) {
        self.arrived.push(row);
        if self.arrived.len() == BLOCK {
            self.track_arrived();
        }
    }

    /// The handles of every row of the load, in row order, all tracked.
    /// Its new rows enter the identity map [`ROWS_PER_YIELD`] at a time,
    /// with a yield to the runtime in between; a load cut off there (its
    /// future dropped) leaves the rows it entered tracked, as rows of the
    /// transaction that a smaller load would have left, and the others not.
    pub(crate) async fn finish(mut self) -> Vec<Tracked<T>> {
        self.track_arrived();
        let LoadTracking { registry, mut tracked, entering, .. } = self;
        let Entering { keys, filings, skipped, repeated, .. } = entering;
        registry.identity.appending().reserve(keys.len());
        let mut new_rows = NewRows {
            keys: keys.into_iter(),
            filings: filings.into_iter(),
            skipped: skipped.into_iter().peekable(),
            at: 0,
            generation: registry.generation(),
        };
        while new_rows.enter_chunk(registry, &mut tracked) {
            tokio::task::yield_now().await;
        }
        let mut repeated = repeated.into_iter();
        loop {
            for (at, entity) in repeated.by_ref().take(ROWS_PER_YIELD) {
                let handle = registry.track_loaded(entity);
                if let Some(slot) = tracked.get_mut(at) {
                    *slot = handle;
                }
            }
            if repeated.len() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        tracked
    }

    /// Tracks the rows that arrived since the last block.
    fn track_arrived(&mut self) {
        let LoadTracking { registry, arrived, scratch, tracked, entering } = self;
        let scratch = scratch.get_or_insert_with(|| BlockScratch::for_rows(arrived.len()));
        // Its new rows enter the map only at the end: the map is as it was
        // when the load began.
        let probe = Probe::at_start_of_load(registry);
        let mut rows = arrived.drain(..).peekable();
        // At most BLOCK rows make at most one block.
        while rows.peek().is_some() {
            registry.track_block(&mut rows, tracked, scratch, probe, Some(entering));
        }
    }
}

/// Whether a load looks each row up in the identity map before making an
/// instance for it.
#[derive(Clone, Copy)]
enum Probe {
    /// The map held nothing when the load began (a load into a fresh
    /// session, as each level of an eager load is): a row can only repeat
    /// an earlier row of the same load, which the map's insert catches
    /// (or, for rows that enter the map only at the end of the load, their
    /// block's hashes): the first instance wins, as it does for a row found
    /// held. Saves a missed lookup per row.
    Skip,
    /// The map may hold some of the rows, whose instances win.
    Map,
}

impl Probe {
    fn at_start_of_load<T: Entity>(registry: &Registry<T>) -> Self {
        if registry.identity.is_empty() {
            Probe::Skip
        } else {
            Probe::Map
        }
    }
}

/// What became of a new instance offered to the identity map.
enum Entered<T: Entity> {
    /// The map held its key already: this is the session's instance, and
    /// the new one was left untracked.
    Held(Tracked<T>),
    /// The map took it.
    New,
}

/// Enters `handle`, a new instance made for a row keyed `key`, in
/// `registry`'s identity map and files it in the children
/// index as `filing` says; or, if the map holds `key` already, returns that
/// instance and leaves `handle` untracked. Always inlined: every new row
/// of a block whose rows enter the map at once goes through it, and with
/// a plain `#[inline]` the compiler called it per row, which cost W7's
/// ORM side 2.4% more instructions (81.2 M against 79.2 M).
#[allow(clippy::inline_always)]
#[inline(always)]
fn enter<T: Entity>(
    registry: &mut Registry<T>,
    key: T::Key,
    handle: Tracked<T>,
    filing: Filing,
    generation: u64,
) -> Entered<T> {
    // Filed before the map takes the handle: the insert that hands back a
    // reference to it costs more than filing first.
    let filed = match filing {
        Filing::Under(column, parent) => registry.children_index.file_new_under(&handle, column, parent, generation),
        Filing::ByInstance => registry.children_index.file_new(&handle, generation),
    };
    if !filed {
        registry.write_log.note_moved(&handle);
    }
    // One probe: the insert finds the key's slot or an empty one in the
    // same pass, where a lookup before an insert probed twice for every
    // new row. Appended after every tracked entity, so the buckets of the
    // children index stay in collection order; a key the map held already
    // gets its instance back, in its place, and the new one leaves the
    // index it was just filed in.
    match registry.identity.appending().insert_full(key, handle) {
        (_, None) => Entered::New,
        (at, Some(held)) => Entered::Held(put_back(registry, at, held)),
    }
}

/// Puts `held`, the instance the identity map held for a key, back in
/// its place `at`, which an insert just gave to a new instance of the same
/// key; takes that one out of the children index, and returns `held`.
#[cold]
fn put_back<T: Entity>(registry: &mut Registry<T>, at: usize, held: Tracked<T>) -> Tracked<T> {
    let Some((_, new)) = registry.identity.appending().get_index_mut(at) else {
        unreachable!("the insert just found this entry")
    };
    let new = std::mem::replace(new, held.clone());
    new.set_identity_key(None);
    registry.children_index.remove(&new);
    held
}

/// Where a load puts the handles of its rows.
trait LoadHandles<T: Entity> {
    /// Puts the next row's handle.
    fn push(&mut self, handle: Tracked<T>);
    /// The handle a new row's place gets, taken before the identity map
    /// takes the row's own; `None` if the load keeps no handles.
    fn kept(&self, handle: &Tracked<T>) -> Option<Tracked<T>>;
}

impl<T: Entity> LoadHandles<T> for Vec<Tracked<T>> {
    fn push(&mut self, handle: Tracked<T>) {
        Vec::push(self, handle);
    }

    fn kept(&self, handle: &Tracked<T>) -> Option<Tracked<T>> {
        Some(handle.clone())
    }
}

/// A load that keeps no handles (see [`Registry::track_all_unkept`]).
struct Unkept;

impl<T: Entity> LoadHandles<T> for Unkept {
    fn push(&mut self, _: Tracked<T>) {}

    fn kept(&self, _: &Tracked<T>) -> Option<Tracked<T>> {
        None
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

//! [`PendingInserts`]: the entities a registry will insert, in the order
//! they were added, found by handle address.
//!
//! An `IndexMap` held them before. Forgetting one (deleting or expunging an
//! entity that was never flushed) had to keep the others in order, so it
//! shifted every later entry and fixed up each one's index: deleting all of
//! n pending entities one by one cost O(n²), 23 s for 20,000 in a debug
//! build (0.04 s now). Here a forgotten entity leaves a hole that a later
//! compaction closes, so forgetting costs O(1) amortized and the others
//! keep their order.

use crate::entity::Entity;
use crate::tracked::Tracked;

/// Below this many slots the holes are left alone: closing them would cost
/// more than stepping over them.
const COMPACT_FROM: usize = 64;

/// Pending inserts in the order added, by handle address.
pub(crate) struct PendingInserts<T: Entity> {
    /// The entities in the order added, each with its handle's address
    /// (which a flush reads for every pending entity, and finding it
    /// through the handle costs a read of the handle's block); `None`
    /// where one was forgotten since the last compaction.
    slots: Vec<(usize, Option<Tracked<T>>)>,
    /// Each entity's place in `slots`, by handle address.
    places: hashbrown::HashMap<usize, usize, foldhash::fast::RandomState>,
}

impl<T: Entity> Default for PendingInserts<T> {
    fn default() -> Self {
        PendingInserts { slots: Vec::new(), places: hashbrown::HashMap::default() }
    }
}

impl<T: Entity> PendingInserts<T> {
    /// Adds `tracked` after every other. It is a handle just made for the
    /// entity the session was given, so it cannot be pending already.
    pub(crate) fn push(&mut self, tracked: Tracked<T>) {
        let address = tracked.address();
        let previous = self.places.insert(address, self.slots.len());
        debug_assert!(previous.is_none(), "a new handle is not pending already");
        self.slots.push((address, Some(tracked)));
    }

    /// Forgets the entity whose handle has this address; returns it if it
    /// was pending.
    pub(crate) fn remove(&mut self, address: usize) -> Option<Tracked<T>> {
        let place = self.places.remove(&address)?;
        let removed = self.slots[place].1.take();
        if self.slots.len() >= COMPACT_FROM && self.places.len() * 2 < self.slots.len() {
            self.compact();
        }
        removed
    }

    /// Keeps only the entities `keep` says to keep, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(usize, &Tracked<T>) -> bool) {
        for (address, slot) in &mut self.slots {
            if slot.as_ref().is_some_and(|tracked| !keep(*address, tracked)) {
                *slot = None;
            }
        }
        self.compact();
    }

    /// Closes the holes, keeping the order, and renumbers the places.
    fn compact(&mut self) {
        self.slots.retain(|(_, slot)| slot.is_some());
        self.places.clear();
        for (place, &(address, _)) in self.slots.iter().enumerate() {
            self.places.insert(address, place);
        }
    }

    /// Forgets every entity.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.places.clear();
    }

    /// Makes room for `additional` more entities.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        self.places.reserve(additional);
    }

    /// Whether the handle with this address is pending.
    pub(crate) fn contains(&self, address: usize) -> bool {
        self.places.contains_key(&address)
    }

    /// Where the handle with this address stands among the pending
    /// entities: the order of two such places is the order they were
    /// added in (until the next change).
    pub(crate) fn place_of(&self, address: usize) -> Option<usize> {
        self.places.get(&address).copied()
    }

    /// How many entities are pending.
    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether none is.
    pub(crate) fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The pending entities in the order added.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Tracked<T>> {
        self.slots.iter().filter_map(|(_, slot)| slot.as_ref())
    }

    /// Their handles' addresses, in the same order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter().map(|(address, _)| address)
    }

    /// The entities with their handles' addresses, in the same order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Tracked<T>)> {
        self.slots.iter().filter_map(|(address, slot)| slot.as_ref().map(|tracked| (*address, tracked)))
    }
}

//! [`KeyTable`]: the identity map's table of one entity type, from each
//! primary key to the session's one instance for it, in the order the keys
//! were entered.

use std::hash::{BuildHasher, Hash};

use hashbrown::hash_table::{Entry, HashTable};

/// Keys and their values in the order they were entered, each found by
/// its key in one probe.
///
/// Laid out as an `IndexMap` is (the entries in a vector, in order, and a
/// hash table of their positions), with the same order and removal (see
/// [`swap_remove`](Self::swap_remove)), but leaner for a table of many
/// small keys, as a tracked load of 500,000 rows fills: an entry is its key
/// and value without the key's hash, and a position is a `u32`, not a
/// `usize`. For an `i32` key and a 16-byte handle that is 24 bytes an
/// entry instead of 32, and 5 bytes a slot of the table instead of 9. A
/// key's hash is computed again where `IndexMap` would read it back: when
/// the table grows, and when an entry moves at a removal; primary keys
/// (integers, uuids, a short string) hash in a few instructions.
///
/// The order matters: the flush sends the rows it updates in it, see
/// [`KeyMap`](crate::identity::KeyMap). The hasher is foldhash's randomly
/// seeded one, as `KeyMap`'s.
pub(crate) struct KeyTable<K, V> {
    /// The entries, in order.
    entries: Vec<(K, V)>,
    /// The position in `entries` of each entry, found by its key's hash.
    positions: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl<K, V> Default for KeyTable<K, V> {
    fn default() -> Self {
        KeyTable { entries: Vec::new(), positions: HashTable::new(), hasher: foldhash::fast::RandomState::default() }
    }
}

impl<K: Hash + Eq, V> KeyTable<K, V> {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The hash the table files `key` under: equal keys hash alike, and
    /// different ones mostly differently.
    #[inline]
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value entered for `key`.
    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.get_full(key).map(|(_, _, value)| value)
    }

    /// The position, key and value of the entry for `key`.
    #[inline]
    pub(crate) fn get_full(&self, key: &K) -> Option<(usize, &K, &V)> {
        let Self { entries, positions, .. } = self;
        let &at = positions.find(self.hash(key), |&at| holds(entries, at, key))?;
        let at = index(at);
        let (key, value) = entries.get(at)?;
        Some((at, key, value))
    }

    /// Whether it holds an entry for `key`.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get_full(key).is_some()
    }

    /// The entry at position `at`, its value to change.
    pub(crate) fn get_index_mut(&mut self, at: usize) -> Option<(&K, &mut V)> {
        self.entries.get_mut(at).map(|(key, value)| (&*key, value))
    }

    /// The values, in order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// Makes room for `additional` more entries, so that entering them
    /// neither grows the table nor moves the entries.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let Self { entries, positions, hasher } = self;
        positions.reserve(additional, |&at| rehash(hasher, entries, at));
        entries.reserve_exact(additional);
    }

    /// Enters `value` for `key` after every entry, and returns its
    /// position and `None`; or, if an entry for `key` is held, makes
    /// `value` its value, in its place, and returns that place and the
    /// value it held.
    #[inline]
    pub(crate) fn insert_full(&mut self, key: K, value: V) -> (usize, Option<V>) {
        let hash = self.hash(&key);
        let Self { entries, positions, hasher } = self;
        match positions.entry(hash, |&at| holds(entries, at, &key), |&at| rehash(hasher, entries, at)) {
            Entry::Occupied(found) => {
                let at = index(*found.get());
                let held = entries.get_mut(at).map(|(_, held)| std::mem::replace(held, value));
                (at, held)
            }
            Entry::Vacant(free) => {
                let at = entries.len();
                free.insert(position(at));
                entries.push((key, value));
                (at, None)
            }
        }
    }

    /// [`insert_full`](Self::insert_full) without the position.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.insert_full(key, value).1
    }

    /// The value entered for `key`; if there is none, `make`'s, entered
    /// after every entry. One probe either way.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce(&K) -> V) -> &V {
        let hash = self.hash(&key);
        let Self { entries, positions, hasher } = self;
        let at = match positions.entry(hash, |&at| holds(entries, at, &key), |&at| rehash(hasher, entries, at)) {
            Entry::Occupied(found) => index(*found.get()),
            Entry::Vacant(free) => {
                let value = make(&key);
                let at = entries.len();
                free.insert(position(at));
                entries.push((key, value));
                at
            }
        };
        match entries.get(at) {
            Some((_, value)) => value,
            None => unreachable!("the table holds positions of entries only"),
        }
    }

    /// Takes the entry for `key` out and returns its value; the last entry
    /// takes its place (as `IndexMap::swap_remove` does), so no other entry
    /// moves.
    pub(crate) fn swap_remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hash(key);
        let Self { entries, positions, hasher } = self;
        let (at, _) = positions.find_entry(hash, |&at| holds(entries, at, key)).ok()?.remove();
        let (at, last) = (index(at), entries.len().checked_sub(1)?);
        if at != last {
            let moved = entries.get(last).map(|(key, _)| hasher.hash_one(key))?;
            if let Some(moved) = positions.find_mut(moved, |&held| index(held) == last) {
                *moved = position(at);
            }
        }
        Some(entries.swap_remove(at).1)
    }
}

/// Whether the entry at `at` is `key`'s.
#[inline]
fn holds<K: Eq, V>(entries: &[(K, V)], at: u32, key: &K) -> bool {
    entries.get(index(at)).is_some_and(|(held, _)| held == key)
}

/// The hash of the key of the entry at `at`, for the table to move it as
/// it grows.
#[inline]
fn rehash<K: Hash, V>(hasher: &foldhash::fast::RandomState, entries: &[(K, V)], at: u32) -> u64 {
    entries.get(index(at)).map_or(0, |(key, _)| hasher.hash_one(key))
}

/// A position as the table keeps it.
///
/// # Panics
///
/// At the 2^32nd entry, as a `Vec` panics when its capacity overflows: by
/// then the entries alone would take 32 GiB or more.
#[inline]
fn position(at: usize) -> u32 {
    u32::try_from(at).unwrap_or_else(|_| panic!("a session tracks fewer than 2^32 entities of one type"))
}

/// A position kept by the table, as an index into the entries.
#[inline]
fn index(at: u32) -> usize {
    usize::try_from(at).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use indexmap::IndexMap;

    use super::KeyTable;

    /// A table and an `IndexMap` given the same operations: a random mix
    /// of inserts (new keys and held ones), removals and lookups, drawn
    /// from a small key range so that each kind happens often, across
    /// several growths of the table.
    #[test]
    fn behaves_as_an_index_map_with_swap_remove() {
        let mut table = KeyTable::default();
        let mut model: IndexMap<u32, u64> = IndexMap::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000_u64 {
            let draw = next();
            let key = u32::try_from(draw % 3_000).unwrap();
            match draw >> 62 {
                0 | 1 => assert_eq!(table.insert_full(key, step), model.insert_full(key, step), "insert {key}"),
                2 => assert_eq!(table.swap_remove(&key), model.swap_remove(&key), "remove {key}"),
                _ => {
                    let found = table.get_full(&key).map(|(at, &k, &v)| (at, k, v));
                    assert_eq!(found, model.get_full(&key).map(|(at, &k, &v)| (at, k, v)), "get {key}");
                }
            }
            assert_eq!(table.len(), model.len());
        }
        let expected: Vec<(u32, u64)> = model.iter().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(table.entries, expected, "same entries in the same order");
        assert!(model.keys().all(|key| table.contains_key(key)));
    }

    #[test]
    fn a_held_key_keeps_its_place_and_gets_the_new_value() {
        let mut table = KeyTable::default();
        table.reserve(3);
        for (key, value) in [(10, "a"), (20, "b"), (30, "c")] {
            assert_eq!(table.insert(key, value), None);
        }
        assert_eq!(table.insert_full(20, "B"), (1, Some("b")));
        assert_eq!(*table.get_or_insert_with(30, |_| unreachable!("held")), "c");
        assert_eq!(*table.get_or_insert_with(40, |&key| if key == 40 { "d" } else { "?" }), "d");
        assert_eq!(table.values().copied().collect::<Vec<_>>(), ["a", "B", "c", "d"]);
        if let Some((&key, value)) = table.get_index_mut(0) {
            assert_eq!(key, 10);
            *value = "A";
        }
        assert_eq!(table.get(&10), Some(&"A"));
    }

    #[test]
    fn removal_moves_the_last_entry_into_the_hole() {
        let mut table = KeyTable::default();
        for key in 0..5 {
            table.insert(key, key * 10);
        }
        assert_eq!(table.swap_remove(&1), Some(10));
        assert_eq!(table.swap_remove(&1), None);
        assert_eq!(table.values().copied().collect::<Vec<_>>(), [0, 40, 20, 30]);
        assert_eq!(table.get_full(&4), Some((1, &4, &40)), "the moved entry is found at its new place");
        assert_eq!(table.swap_remove(&30), None);
        assert_eq!(table.swap_remove(&3), Some(30), "the last entry leaves without moving another");
        assert_eq!(table.values().copied().collect::<Vec<_>>(), [0, 40, 20]);
        for key in [0, 4, 2] {
            assert_eq!(table.swap_remove(&key), Some(key * 10));
        }
        assert!(table.is_empty());
    }
}

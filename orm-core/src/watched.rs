//! [`Watched`]: a collection that counts the changes made to it, so that
//! what was derived from it (the children index's buckets, known to be in
//! collection order and all still tracked) can tell at a glance that it
//! still holds, instead of verifying every entry again.

use std::ops::{Deref, DerefMut};

/// A collection and the number of times it was borrowed mutably.
///
/// Every mutable borrow counts as a change, whatever it did, so no path
/// that changes the collection can forget to say so; reading is free. The
/// one exception, [`appending`](Self::appending), is for a caller that
/// only adds entries after every existing one, which leaves each existing
/// entry where it was.
#[derive(Default)]
pub(crate) struct Watched<M> {
    inner: M,
    changes: u64,
}

impl<M> Watched<M> {
    /// How many changes were made so far.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// The collection, to append to without counting a change: the caller
    /// only adds new entries at the end (or looks entries up), so every
    /// entry already there keeps its place and its value.
    pub(crate) fn appending(&mut self) -> &mut M {
        &mut self.inner
    }
}

impl<M> Deref for Watched<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.inner
    }
}

impl<M> DerefMut for Watched<M> {
    fn deref_mut(&mut self) -> &mut M {
        self.changes += 1;
        &mut self.inner
    }
}

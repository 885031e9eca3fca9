//! Which tracked instances this thread holds a user's guard on.
//!
//! A borrow that conflicts with a guard of the same thread would wait for
//! itself; [`held_here`] lets it fail at once instead. Every
//! [`Tracked::read`](crate::Tracked::read) and
//! [`write`](crate::Tracked::write) records its guard and every guard's drop
//! takes it out again, so the record sits on the hottest read path (a
//! tracked load read back row by row): its first entries live in a
//! thread-local without a destructor, which the compiler reaches as a plain
//! thread-local address, and only a thread holding more guards at once than
//! that spills into a vector.

use std::cell::{Cell, RefCell};

/// How many guards a thread records without the spill vector: code holds
/// one or two at a time, a few when it compares instances.
const INLINE: usize = 8;

/// The record: `len` guards, the first [`INLINE`] of them in `inline`, the
/// rest in [`SPILLED`], in the order they were taken (one entry per guard,
/// so two guards on one instance are two entries).
struct Held {
    len: Cell<usize>,
    inline: [Cell<usize>; INLINE],
}

thread_local! {
    static HELD: Held = const { Held { len: Cell::new(0), inline: [const { Cell::new(0) }; INLINE] } };
    static SPILLED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread holds a guard on the instance at `address`.
pub(crate) fn held_here(address: usize) -> bool {
    HELD.with(|held| {
        let len = held.len.get();
        held.inline[..len.min(INLINE)].iter().any(|slot| slot.get() == address)
            || (len > INLINE && SPILLED.with(|spilled| spilled.borrow().contains(&address)))
    })
}

/// Records a guard on the instance at `address`, taken by this thread.
#[inline]
pub(crate) fn hold(address: usize) {
    // `try_with`, unlike `with`, is inlined into the caller. It cannot
    // fail: a thread-local without a destructor is never torn down.
    let _never_torn_down = HELD.try_with(|held| {
        let len = held.len.get();
        match held.inline.get(len) {
            Some(slot) => slot.set(address),
            None => SPILLED.with(|spilled| spilled.borrow_mut().push(address)),
        }
        held.len.set(len + 1);
    });
}

/// Takes out one record of a guard on the instance at `address`, which
/// this thread is dropping.
#[inline]
pub(crate) fn release(address: usize) {
    // Guards are usually dropped in the reverse order of their taking.
    let was_last = HELD
        .try_with(|held| {
            let len = held.len.get();
            let last = len.checked_sub(1).and_then(|at| held.inline.get(at));
            let was_last = last.is_some_and(|last| last.get() == address);
            if was_last {
                held.len.set(len - 1);
            }
            was_last
        })
        .unwrap_or(false);
    if !was_last {
        release_out_of_order(address);
    }
}

/// [`release`] of a guard that is not the last one recorded (or is a
/// spilled one): the last record moves into its place.
#[cold]
fn release_out_of_order(address: usize) {
    HELD.with(|held| {
        let len = held.len.get();
        let inline = &held.inline[..len.min(INLINE)];
        // The latest record of `address`, as a guard dropped early is more
        // likely a recent one.
        let spilled_at = if len > INLINE {
            SPILLED.with(|spilled| spilled.borrow().iter().rposition(|&a| a == address))
        } else {
            None
        };
        let inline_at = if spilled_at.is_none() { inline.iter().rposition(|slot| slot.get() == address) } else { None };
        if spilled_at.is_none() && inline_at.is_none() {
            return;
        }
        let last = if len > INLINE {
            SPILLED.with(|spilled| spilled.borrow_mut().pop())
        } else {
            inline.last().map(Cell::get)
        };
        let Some(last) = last else { return };
        held.len.set(len - 1);
        if let Some(at) = spilled_at {
            SPILLED.with(|spilled| {
                if let Some(slot) = spilled.borrow_mut().get_mut(at) {
                    *slot = last;
                }
            });
        } else if let Some(slot) = inline_at.and_then(|at| inline.get(at)) {
            slot.set(last);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{held_here, hold, release, INLINE};

    #[test]
    fn records_guards_in_any_order_past_the_inline_ones() {
        let addresses: Vec<usize> = (1..=INLINE * 2 + 3).map(|n| n * 16).collect();
        for &address in &addresses {
            hold(address);
        }
        assert!(addresses.iter().all(|&address| held_here(address)));
        // Out of order: from the middle of the inline part, from the
        // spilled part, then the rest newest first.
        let (early, rest): (Vec<usize>, Vec<usize>) =
            addresses.iter().partition(|&&address| address == addresses[2] || address == addresses[INLINE + 1]);
        for &address in &early {
            release(address);
            assert!(!held_here(address), "{address} still recorded");
        }
        assert!(rest.iter().all(|&address| held_here(address)));
        for &address in rest.iter().rev() {
            release(address);
            assert!(!held_here(address));
        }
        assert!(addresses.iter().all(|&address| !held_here(address)));
    }

    #[test]
    fn two_guards_on_one_instance_are_two_records() {
        hold(64);
        hold(64);
        release(64);
        assert!(held_here(64), "one guard is still held");
        release(64);
        assert!(!held_here(64));
    }
}

//! Sets of ids, hashed with foldhash (randomly seeded, as the ORM's
//! identity map is) instead of std's `SipHash`: a page's loads build a few
//! of them per request, and `SipHash` cost about 140 instructions a key
//! there.

use std::collections::HashSet;

/// A set of ids.
pub type IdSet = HashSet<i64, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_apart() {
        let ids: IdSet = (-500..500).chain([i64::MIN, i64::MAX]).collect();
        assert_eq!(ids.len(), 1002);
        assert!(ids.contains(&-500) && ids.contains(&499) && ids.contains(&i64::MIN) && !ids.contains(&500));
    }
}
